//! The controller's side of analyses: reading the signals of a canary's two groups (or of
//! a rollout's NEW and the rest of its group) when a window ends — client-side ones, and
//! for services whose replies pass the LB the reply-side ones — handing out the questions
//! for external gates (once each, to be asked off the lock), and taking their answers.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
};

use balancer_common::ReplyStats;

use super::Controller;
use crate::{
    dataplane::FlowCounts,
    error::Error,
    fleet::report::{Counted, Peers},
    release::{
        analysis::{GateResult, Pair, Question, Sample},
        canary, rollout,
    },
    state::Service,
};

/// The questions handed out and not answered yet, by (service, ticket).
pub(super) type Asked = HashSet<(String, u64)>;

impl Controller {
    /// Whether the next tick needs the unanswered flows (an analysis window or warm-up of
    /// a canary or a rollout ends).
    pub fn sampling_due(&self) -> bool {
        let now_ms = self.clock.now_ms();
        canary::any_sampling(&self.state, now_ms)
            || !rollout::sampling(&self.state, now_ms).is_empty()
    }

    /// Moves the analyses whose window ended, reading their groups' signals (with the
    /// `unanswered` flows counted by the caller; without them they wait for a tick that has
    /// them).
    pub(super) fn analyse(
        &mut self,
        now_ms: u64,
        unanswered: Option<&FlowCounts>,
    ) -> Result<(), Error> {
        let canaries = canary::sampling(&self.state, now_ms);
        let rollouts = rollout::sampling(&self.state, now_ms);
        let Some(unanswered) = unanswered else {
            return Ok(());
        };
        for name in canaries {
            let service = &self.state.services[&name];
            let Some(c) = &service.canary else { continue };
            // Old group: from; new group: to.
            let sample = self.sample(&name, service, unanswered, |group, _| {
                (group == c.from)
                    .then_some(false)
                    .or((group == c.to).then_some(true))
            })?;
            self.change(|s, now_ms| canary::analyse(s, &name, sample, now_ms))?;
        }
        for name in rollouts {
            let service = &self.state.services[&name];
            let Some(r) = &service.rollout else { continue };
            // The rest of the group against the NEW under comparison.
            let compared = r.compared();
            let sample = self.sample(&name, service, unanswered, |group, addr| {
                (group == r.group).then_some(addr == compared)
            })?;
            self.change(|s, now_ms| rollout::analyse(s, &name, sample, now_ms))?;
        }
        Ok(())
    }

    /// The signals of two sets of backends of service `name`, summed: `side(group, addr)`
    /// puts a backend on the old side (false), the new side (true) or neither (none). In a
    /// fleet, the leader adds the other hosts' counters of each backend ([`Peers`]).
    fn sample(
        &self,
        name: &str,
        service: &Service,
        unanswered: &FlowCounts,
        side: impl Fn(&str, IpAddr) -> Option<bool>,
    ) -> Result<Pair, Error> {
        let mut pair = Pair::default();
        for (g, b) in service.backends() {
            let into = match side(&service.groups[g].name, b.addr) {
                Some(false) => &mut pair.from,
                Some(true) => &mut pair.to,
                None => continue,
            };
            into.add(&self.counted(service, b, unanswered)?);
            if let Some(peers) = self.peers.get(name, b.addr, b.epoch) {
                into.add(peers);
            }
        }
        Ok(pair)
    }

    /// This host's signals of backend `b` of `service`. Reply counters are read only for a
    /// service whose replies pass the LB.
    fn counted(
        &self,
        service: &Service,
        b: &crate::state::BackendEntry,
        unanswered: &FlowCounts,
    ) -> Result<Sample, Error> {
        let counters = self.plane.backend_counters(b.index)?;
        let replies = match service.forward.mode.translated() {
            true => self.plane.reply_counters(b.index)?,
            false => ReplyStats::default(),
        };
        Ok(Sample {
            new_flows: counters.new_flows,
            handshake_failures: unanswered.get(&(b.index, b.epoch)).copied().unwrap_or(0),
            resets: counters.resets,
            syn_retransmits: counters.syn_retransmits,
            backend_resets: replies.resets,
            handshake_buckets: replies.buckets,
        })
    }

    /// In a fleet: this host's counters of every backend of the services whose canary or
    /// rollout is analysed, for the leader (with the `unanswered` flows counted so far).
    pub fn own_counters(
        &self,
        unanswered: &FlowCounts,
    ) -> Result<BTreeMap<String, BTreeMap<IpAddr, Counted>>, Error> {
        let mut counters = BTreeMap::new();
        for (name, service) in &self.state.services {
            let canary = service.canary.as_ref().filter(|c| c.outcome.is_none());
            let rollout = service.rollout.as_ref().filter(|r| r.outcome.is_none());
            let analysed = canary.is_some_and(|c| c.analysis.is_some())
                || rollout.is_some_and(|r| r.analysis.is_some());
            if !analysed {
                continue;
            }
            let mut backends = BTreeMap::new();
            for (_, b) in service.backends() {
                let sample = self.counted(service, b, unanswered)?;
                backends.insert(
                    b.addr,
                    Counted {
                        epoch: b.epoch,
                        sample,
                    },
                );
            }
            counters.insert(name.clone(), backends);
        }
        Ok(counters)
    }

    /// For the fleet's leader: the other live hosts' counters, added to its own in every
    /// analysis window from now on. When the hosts that count are not the same as before
    /// (one joined, left or restarted), every window in progress starts again
    /// ([`Controller::restart_windows`]): a window counts the same hosts from its start to
    /// its end. The services whose windows started again.
    pub fn count_peers(&mut self, peers: Peers) -> Result<Vec<String>, Error> {
        let moved = peers.counted_by != self.peers.counted_by;
        self.peers = peers;
        match moved {
            true => self.restart_windows(),
            false => Ok(Vec::new()),
        }
    }

    /// Starts every analysis window in progress again from the counters as they are now
    /// (see [`crate::release::analysis::Analysis::remeasure`]), as a change of its own (in
    /// a fleet: stored, fenced by the leader's term): for a daemon that has just become
    /// the fleet's leader (the former leader's counters are not its own), and when the
    /// hosts that count change. The services whose windows started again.
    pub fn restart_windows(&mut self) -> Result<Vec<String>, Error> {
        let now_ms = self.clock.now_ms();
        let mut next = self.state.clone();
        let mut names = Vec::new();
        for (name, service) in &mut next.services {
            let canary = service.canary.as_mut().and_then(|c| c.analysis.as_mut());
            let rollout = service.rollout.as_mut().and_then(|r| r.analysis.as_mut());
            let mut again = false;
            for analysis in canary.into_iter().chain(rollout) {
                again |= analysis.remeasure(now_ms);
            }
            if again {
                names.push(name.clone());
            }
        }
        if !names.is_empty() {
            self.change(move |s, _| {
                *s = next;
                Ok::<(), Error>(())
            })?;
        }
        Ok(names)
    }

    /// The open questions not handed out yet; each is handed out once (again after a
    /// restart of the daemon).
    pub(super) fn new_questions(&mut self) -> Vec<Question> {
        let open = canary::questions(&self.state);
        let asked = &mut self.asked;
        asked.retain(|(service, ticket)| {
            open.iter()
                .any(|q| q.service == *service && q.ticket == *ticket)
        });
        open.into_iter()
            .filter(|q| asked.insert((q.service.clone(), q.ticket)))
            .collect()
    }

    /// The answers of the gates to the question of `service` under `ticket`; a question
    /// that is no longer open (the canary ended or moved on) is ignored.
    pub fn answer(
        &mut self,
        service: &str,
        ticket: u64,
        results: Vec<GateResult>,
    ) -> Result<(), Error> {
        self.asked.remove(&(service.to_string(), ticket));
        if !canary::asks(&self.state, service, ticket) {
            return Ok(());
        }
        self.change(|s, now_ms| canary::answer(s, service, ticket, results, now_ms))
    }
}

#[cfg(test)]
mod tests {
    use balancer_common::{BackendStats, ReplyStats};

    use super::*;
    use crate::{
        basis_points::BasisPoints,
        clock::Clock as _,
        controller::fakes::Rig,
        release::{
            analysis::{AnalysisPlan, Check, PrometheusGate, Signal, Verdict},
            canary::{CanaryPlan, Outcome},
        },
        state::{tests::sample, Affinity, Forward, Mode, State},
    };

    fn plan(prometheus: Vec<PrometheusGate>) -> CanaryPlan {
        CanaryPlan {
            from: "blue".into(),
            to: "green".into(),
            steps: vec![BasisPoints::new(1000).unwrap(), BasisPoints::ALL],
            interval_ms: 5000,
            auto_rollback: None,
            analysis: Some(AnalysisPlan {
                warmup_ms: 6000,
                window_ms: 10_000,
                min_flows: 100,
                prometheus,
                ..AnalysisPlan::default()
            }),
        }
    }

    /// Sets web's counters: `blue` new flows on each blue backend, `green` on green's one.
    fn count(rig: &Rig, c: &Controller, blue: u64, green: u64) -> FlowCounts {
        let web = c.state().service("web").unwrap();
        let mut unanswered = FlowCounts::new();
        for (g, b) in web.backends() {
            let new_flows = match web.groups[g].name.as_str() {
                "blue" => blue,
                _ => green,
            };
            let stats = BackendStats {
                new_flows,
                ..BackendStats::default()
            };
            rig.plane.maps().counters.insert(b.index, stats);
            unanswered.insert((b.index, b.epoch), 0);
        }
        unanswered
    }

    fn shares(c: &Controller) -> Vec<u16> {
        let web = c.state().service("web").unwrap();
        web.shares().unwrap().iter().map(|b| b.get()).collect()
    }

    fn canary(c: &Controller) -> canary::Canary {
        c.state().service("web").unwrap().canary.clone().unwrap()
    }

    #[test]
    fn a_step_waits_for_a_passing_window_then_is_taken() {
        let rig = Rig::new(sample());
        let mut c = rig.start();
        let t0 = rig.clock.now_ms();
        c.change(|s, now| canary::start(s, "web", plan(vec![]), now))
            .unwrap();
        assert_eq!(shares(&c), [9000, 1000]);
        rig.clock.set(t0 + 6000);
        let counts = count(&rig, &c, 0, 0);
        assert!(c.sampling_due());
        c.tick_counted(None, Some(&counts), true).unwrap();
        // The interval (5 s) passes, no window has: the step holds.
        rig.clock.set(t0 + 8000);
        c.tick_counted(None, Some(&counts), true).unwrap();
        assert_eq!(shares(&c), [9000, 1000], "held without a verdict");
        // The window ends with 200 clean new flows on green: passed, and the step is taken
        // in the same tick.
        rig.clock.set(t0 + 16_000);
        let counts = count(&rig, &c, 900, 200);
        c.tick_counted(None, Some(&counts), true).unwrap();
        assert_eq!(shares(&c), [0, 10_000]);
        let canary = canary(&c);
        assert_eq!(canary.outcome, Some(Outcome::Completed));
        let whats: Vec<&str> = canary.decisions.iter().map(|d| d.what.as_str()).collect();
        assert!(
            whats[1].starts_with("analysis: window passed: handshake-failures 0.00%"),
            "{whats:?}"
        );
        assert!(
            whats[1].ends_with("green 200 new flows, blue 1800"),
            "{whats:?}"
        );
        assert_eq!(
            whats[2],
            "interval elapsed, analysis passed; step 2/2: 100.00% to green"
        );
    }

    #[test]
    fn a_new_leader_starts_the_window_in_progress_again_from_its_own_counters() {
        let rig = Rig::new(sample());
        let mut c = rig.start();
        let t0 = rig.clock.now_ms();
        c.change(|s, now| canary::start(s, "web", plan(vec![]), now))
            .unwrap();
        // Still warming up: nothing to start again.
        assert!(c.restart_windows().unwrap().is_empty());
        // A window begins on the former leader's counters (900 and 200 so far).
        rig.clock.set(t0 + 6000);
        c.tick_counted(None, Some(&count(&rig, &c, 900, 200)), true)
            .unwrap();
        assert!(matches!(
            canary(&c).analysis.unwrap().stage,
            crate::release::analysis::Stage::Measuring { .. }
        ));
        // This host takes over with counters of its own (fewer): the window starts again
        // at once, and the next tick takes its base from them.
        rig.clock.set(t0 + 7000);
        assert_eq!(c.restart_windows().unwrap(), ["web"]);
        assert_eq!(
            canary(&c).analysis.unwrap().stage,
            crate::release::analysis::Stage::Warming {
                until_ms: t0 + 7000
            }
        );
        assert!(
            c.restart_windows().unwrap().is_empty(),
            "started again twice"
        );
        c.tick_counted(None, Some(&count(&rig, &c, 0, 0)), true)
            .unwrap();
        // Ten seconds later, 200 clean new flows on green counted from this host's base:
        // the window passes (on the former base the counters would have gone back).
        rig.clock.set(t0 + 17_000);
        c.tick_counted(None, Some(&count(&rig, &c, 100, 200)), true)
            .unwrap();
        assert_eq!(
            canary(&c).outcome,
            Some(Outcome::Completed),
            "{:?}",
            canary(&c)
        );
    }

    /// Other hosts' counters, summed: `green` new flows on each of web's green backends,
    /// counted by `hosts` (each started at 1).
    fn peers(c: &Controller, hosts: &[&str], green: u64) -> Peers {
        let web = c.state().service("web").unwrap();
        let mut backends = BTreeMap::new();
        for (g, b) in web.backends() {
            if web.groups[g].name == "green" {
                let sample = Sample {
                    new_flows: green,
                    ..Sample::default()
                };
                backends.insert(
                    b.addr,
                    Counted {
                        epoch: b.epoch,
                        sample,
                    },
                );
            }
        }
        Peers {
            counted_by: hosts.iter().map(|h| (h.to_string(), 1)).collect(),
            counters: [("web".to_string(), backends)].into(),
        }
    }

    #[test]
    fn the_leader_judges_a_window_on_the_whole_fleets_counters() {
        let rig = Rig::new(sample());
        let mut c = rig.start();
        let t0 = rig.clock.now_ms();
        c.change(|s, now| canary::start(s, "web", plan(vec![]), now))
            .unwrap();
        c.count_peers(peers(&c, &["lb-1", "lb-2"], 0)).unwrap();
        rig.clock.set(t0 + 6000);
        c.tick_counted(None, Some(&count(&rig, &c, 0, 0)), true)
            .unwrap();
        // This host saw 60 new flows on green, too few (100) for a verdict alone; the two
        // other hosts 70 more each: the fleet's 200 pass the window.
        rig.clock.set(t0 + 16_000);
        c.count_peers(peers(&c, &["lb-1", "lb-2"], 140)).unwrap();
        c.tick_counted(None, Some(&count(&rig, &c, 300, 60)), true)
            .unwrap();
        let done = canary(&c);
        assert_eq!(done.outcome, Some(Outcome::Completed), "{done:?}");
        assert!(
            done.decisions[1]
                .what
                .ends_with("green 200 new flows, blue 600"),
            "{:?}",
            done.decisions
        );
    }

    #[test]
    fn a_window_starts_again_when_the_hosts_that_count_change() {
        let rig = Rig::new(sample());
        let mut c = rig.start();
        let t0 = rig.clock.now_ms();
        c.change(|s, now| canary::start(s, "web", plan(vec![]), now))
            .unwrap();
        assert!(c
            .count_peers(peers(&c, &["lb-1", "lb-2"], 0))
            .unwrap()
            .is_empty());
        rig.clock.set(t0 + 6000);
        c.tick_counted(None, Some(&count(&rig, &c, 0, 0)), true)
            .unwrap();
        // The same hosts with more counted: the window goes on.
        rig.clock.set(t0 + 8000);
        assert!(c
            .count_peers(peers(&c, &["lb-1", "lb-2"], 40))
            .unwrap()
            .is_empty());
        assert!(matches!(
            canary(&c).analysis.unwrap().stage,
            crate::release::analysis::Stage::Measuring { since_ms, .. } if since_ms == t0 + 6000
        ));
        // lb-2 is gone: its counters leave the sum, and the window starts again.
        assert_eq!(c.count_peers(peers(&c, &["lb-1"], 40)).unwrap(), ["web"]);
        assert_eq!(
            canary(&c).analysis.unwrap().stage,
            crate::release::analysis::Stage::Warming {
                until_ms: t0 + 8000
            }
        );
    }

    #[test]
    fn failing_signals_roll_back_in_one_write_with_the_values() {
        let rig = Rig::new(sample());
        let mut c = rig.start();
        let t0 = rig.clock.now_ms();
        c.change(|s, now| canary::start(s, "web", plan(vec![]), now))
            .unwrap();
        rig.clock.set(t0 + 6000);
        c.tick_counted(None, Some(&count(&rig, &c, 0, 0)), true)
            .unwrap();
        rig.clock.set(t0 + 16_000);
        let mut counts = count(&rig, &c, 900, 200);
        let web = c.state().service("web").unwrap();
        let green = web
            .backends()
            .find(|(g, _)| web.groups[*g].name == "green")
            .unwrap()
            .1;
        counts.insert((green.index, green.epoch), 50);
        rig.plane
            .maps()
            .counters
            .get_mut(&green.index)
            .unwrap()
            .resets = 2;
        let writes = rig.plane.maps().writes;
        c.tick_counted(None, Some(&counts), true).unwrap();
        assert_eq!(shares(&c), [10_000, 0]);
        assert_eq!(
            rig.plane.maps().writes,
            writes + 1,
            "one write of web's tables"
        );
        let canary = canary(&c);
        assert_eq!(canary.outcome, Some(Outcome::RolledBack));
        let last = canary.analysis.as_ref().unwrap().last.as_ref().unwrap();
        assert_eq!(last.verdict, Verdict::Fail);
        assert_eq!(
            canary.decisions.last().unwrap().what,
            "rolled back: analysis: handshake-failures 25.00% > limit 0.50% (blue 0.00%); \
             resets 1.00% > limit 0.50% (blue 0.00%); green 200 new flows, blue 1800"
        );
        assert!(!c.sampling_due(), "an ended canary measures nothing");
    }

    /// State `sample` with web forwarding by `nat` (set before its backends were added).
    fn nat_sample() -> State {
        let mut s = State::default();
        s.add_service(
            "web",
            "198.19.0.1:80/tcp".parse().unwrap(),
            Affinity::Client,
            None,
        )
        .unwrap();
        let nat = Forward {
            mode: Mode::Nat,
            ..Forward::default()
        };
        s.set_forward("web", nat).unwrap();
        for (addr, group) in [("198.18.0.101", "blue"), ("198.18.0.103", "green")] {
            s.add_backend("web", addr.parse().unwrap(), group, 100)
                .unwrap();
        }
        let bp = |v| BasisPoints::new(v).unwrap();
        s.set_split(
            "web",
            &[("blue".into(), bp(9000)), ("green".into(), bp(1000))],
        )
        .unwrap();
        s
    }

    /// A canary plan of web whose analysis checks only the handshake time: at most 5 × the
    /// old group's.
    fn timed_plan() -> CanaryPlan {
        let mut plan = plan(vec![]);
        plan.analysis.as_mut().unwrap().checks = vec![Check {
            signal: Signal::HandshakeTime,
            max_percent: None,
            max_ms: None,
            max_factor: Some(5.0),
        }];
        plan
    }

    #[test]
    fn a_nat_canary_whose_handshakes_are_slower_is_rolled_back_with_the_times() {
        let rig = Rig::new(nat_sample());
        let mut c = rig.start();
        let t0 = rig.clock.now_ms();
        c.change(|s, now| canary::start(s, "web", timed_plan(), now))
            .unwrap();
        rig.clock.set(t0 + 6000);
        c.tick_counted(None, Some(&count(&rig, &c, 0, 0)), true)
            .unwrap();
        rig.clock.set(t0 + 16_000);
        let counts = count(&rig, &c, 900, 200);
        // Blue's handshakes all within 100 µs; 150 of green's 200 above 1 s (dropped SYNs).
        let web = c.state().service("web").unwrap();
        for (g, b) in web.backends() {
            let mut answers = ReplyStats::default();
            match web.groups[g].name.as_str() {
                "blue" => answers.buckets[0] = 900,
                _ => (answers.buckets[0], answers.buckets[12]) = (50, 150),
            }
            rig.plane.maps().answers.insert(b.index, answers);
        }
        c.tick_counted(None, Some(&counts), true).unwrap();
        let canary = canary(&c);
        assert_eq!(canary.outcome, Some(Outcome::RolledBack));
        assert_eq!(
            canary.decisions.last().unwrap().what,
            "rolled back: analysis: handshake-time 1 s or more > limit 0.45 ms (blue 0.09 ms); \
             green 200 new flows, blue 900"
        );
        let last = canary.analysis.as_ref().unwrap().last.as_ref().unwrap();
        assert_eq!(last.counted.to.handshakes(), 200);
        assert_eq!(shares(&c), [10_000, 0]);
    }

    #[test]
    fn a_reply_signal_is_refused_where_replies_do_not_pass_the_lb() {
        // A canary of a service forwarding by dsr: refused in one line, nothing changed.
        let rig = Rig::new(sample());
        let mut c = rig.start();
        let before = c.state().clone();
        let err = c
            .change(|s, now| canary::start(s, "web", timed_plan(), now))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "the analysis of service \"web\" checks handshake-time, which is counted from the \
             backends' replies: only a nat or fullnat service's pass the LB (this one forwards by dsr)"
        );
        assert_eq!(c.state(), &before);
        // A nat service's running canary keeps its forwarding even once it has no backends.
        let mut s = nat_sample();
        canary::start(&mut s, "web", timed_plan(), 0).unwrap();
        s.validate().unwrap();
        let web = s.service_mut("web").unwrap();
        web.groups.iter_mut().for_each(|g| g.backends.clear());
        s.set_forward("web", Forward::default()).unwrap();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("checks handshake-time"), "{err}");
        // An ended canary does not hold it.
        let mut s = nat_sample();
        canary::start(&mut s, "web", timed_plan(), 0).unwrap();
        canary::act(&mut s, "web", canary::CanaryAction::Abort, 1).unwrap();
        let web = s.service_mut("web").unwrap();
        web.groups.iter_mut().for_each(|g| g.backends.clear());
        s.set_forward("web", Forward::default()).unwrap();
        s.validate().unwrap();
    }

    #[test]
    fn questions_are_handed_out_once_and_stale_answers_change_nothing() {
        let rig = Rig::new(sample());
        let mut c = rig.start();
        let t0 = rig.clock.now_ms();
        let gate = PrometheusGate {
            url: "http://198.18.0.1:9090".into(),
            query: "up".into(),
            max: None,
            min: Some(1.0),
        };
        c.change(|s, now| canary::start(s, "web", plan(vec![gate]), now))
            .unwrap();
        rig.clock.set(t0 + 6000);
        c.tick_counted(None, Some(&count(&rig, &c, 0, 0)), true)
            .unwrap();
        rig.clock.set(t0 + 16_000);
        let tick = c
            .tick_counted(None, Some(&count(&rig, &c, 900, 200)), true)
            .unwrap();
        assert_eq!(tick.questions.len(), 1);
        let ticket = tick.questions[0].ticket;
        assert_eq!(shares(&c), [9000, 1000], "no step before the gate answers");
        let again = c
            .tick_counted(None, Some(&count(&rig, &c, 900, 200)), true)
            .unwrap();
        assert!(again.questions.is_empty(), "asked once");
        let before = c.state().clone();
        c.answer("web", ticket + 7, vec![]).unwrap();
        assert_eq!(c.state(), &before, "a stale answer");
        let up = GateResult {
            gate: "prometheus up".into(),
            verdict: Verdict::Pass,
            detail: "1 within bounds".into(),
        };
        c.answer("web", ticket, vec![up]).unwrap();
        c.tick_counted(None, Some(&count(&rig, &c, 900, 200)), true)
            .unwrap();
        assert_eq!(shares(&c), [0, 10_000], "the step follows the gate's go");
    }

    #[test]
    fn a_restarted_daemon_asks_the_open_question_again() {
        let rig = Rig::new(sample());
        let mut c = rig.start();
        let t0 = rig.clock.now_ms();
        let gate = PrometheusGate {
            url: "http://198.18.0.1:9090".into(),
            query: "up".into(),
            max: Some(1.0),
            min: None,
        };
        c.change(|s, now| canary::start(s, "web", plan(vec![gate]), now))
            .unwrap();
        rig.clock.set(t0 + 6000);
        c.tick_counted(None, Some(&count(&rig, &c, 0, 0)), true)
            .unwrap();
        rig.clock.set(t0 + 16_000);
        let asked = c
            .tick_counted(None, Some(&count(&rig, &c, 900, 200)), true)
            .unwrap();
        drop(c);
        let mut restarted = rig.start();
        let tick = restarted.tick_counted(None, None, true).unwrap();
        assert_eq!(tick.questions, asked.questions);
    }
}
