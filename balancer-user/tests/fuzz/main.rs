//! The fuzzed data plane: seeded frames — valid frames of VIP and other flows, replies of
//! `nat`/`fullnat` backends and ICMP errors about their flows, mutations of all of them,
//! random bytes (see [`frames`]) — run through the real XDP program with
//! `BPF_PROG_TEST_RUN`, each checked against the independent model of the data-plane tests
//! ([`Fixture::outcome`]: the README's parser rules in `support::verdict`, the VIPs of the
//! desired state, the selection model; [`routed`] and [`replies`] for the routed modes).
//!
//! The services cover every forwarding mode: direct server return (see [`services`]) and
//! `ipip`, `gue`, `nat` and `fullnat` over IPv4 and IPv6, TCP and UDP, whose backends sit
//! behind every kind of route of a network namespace the run builds ([`routed`]: a resolved
//! next hop, a small MTU, an unresolved next hop, a blackhole). All frames of a run go to
//! one data plane in that namespace, so about a third of the VIP frames reach DSR services
//! and the rest the routed ones; about one frame in ten (mutated or not) is a reply and one
//! in ten an ICMP error.
//!
//! For every frame: the XDP action is the model's. A frame forwarded to a DSR backend goes
//! to the model's backend (XDP_TX, or XDP_REDIRECT for the backend behind another
//! interface) with only the 12 MAC bytes changed, to that backend's; one to a routed backend
//! leaves exactly as [`routed`] builds it (outer headers, translated addresses and ports, the
//! flow's pool port, checksums by recomputation, or the ICMP answer to a packet too big); a
//! backend's reply or an ICMP error about a translated flow exactly as [`replies`] builds it;
//! any other passed or dropped frame is not changed at all. Every
//! `BALANCER_FUZZ_CHECK_EVERY` frames and at the end: the global counters (`TUNNEL_STATS`
//! and `NAT_STATS` included) are exactly the model's verdicts added up, each backend's
//! packets and bytes exactly the frames forwarded to it, and its new flows, FIN closes,
//! resets and SYN retransmits exactly what the tracking model ([`support::tracking`]: pending
//! and established flows, promotion, FIN and RST marks, the two-slot pending pairs) says of
//! each packet; both connection-tracking tables hold exactly the model's flows; each
//! `nat`/`fullnat` backend's reply counters (`REPLY_STATS`: packets, bytes, resets,
//! handshakes timed from a pending SYN) are the model's; `TRANSLATIONS` and `ALLOCATIONS`
//! hold exactly the full-NAT flows and pool ports the model knows. Then connection tracking
//! is emptied, so that the established flows' LRU never fills (an LRU that evicts would make
//! them unknowable) and the next stretch starts from nothing tracked (full NAT's
//! translations stay, as no daemon sweeps them).
//!
//! The tables do not change during a run, so a tracked flow's backend is the one its hash
//! picks: a frame's outcome by the selection model holds whether its flow is new or
//! tracked, and the tracking model must agree with it.
//!
//! Parameters (environment variables):
//! * `BALANCER_FUZZ_FRAMES`: how many frames (default 200,000, the pass `cargo test` runs;
//!   `cargo xtask fuzz` runs 1,000,000); a run of at least 10,000 frames must take every
//!   DSR path, one of at least 100,000 every routed path but the rarest;
//! * `BALANCER_FUZZ_SEED`: the seed, decimal or `0x` hex (default: a fresh one, printed);
//! * `BALANCER_FUZZ_CHECK_EVERY`: frames between counter and tracking checks (default
//!   16,384, at most 32,768; 1 finds the frame after which a check fails);
//! * `BALANCER_FUZZ_REPLAY`: one frame in hex, run alone on a fresh data plane.
//!
//! A failure names the seed, the frame's number and bytes, how it was made, the model's
//! outcome and what the program did (for a routed path, what the model expected), and the
//! command lines that replay it. (A replayed reply to a pool port finds no flow holding it,
//! as on a fresh data plane.)

#[allow(
    dead_code,
    reason = "the fuzzer uses a part of the data-plane tests' helpers"
)]
#[path = "../support/mod.rs"]
mod support;

mod checksums;
mod expect;
mod frames;
mod replies;
mod routed;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    panic::{catch_unwind, AssertUnwindSafe},
    time::Instant,
};

use balancer_common::{Backend, BackendStats, ReplyStats};
use balancer_user::{
    dataplane::{fullnat::Pool, GlobalCounters, TestRun},
    state::Affinity,
    vip::Protocol,
};
use expect::Expect;
use frames::{Answerer, Base, Generator, Made, Target};
use replies::Answer;
use routed::{Held, Mode, Routed};
use support::{
    fixture::{add_events, Counter, Fixture, Outcome},
    packet::Transport,
    plane::{INGRESS_IFINDEX, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
    tracking::Step,
    verdict::{classify, tcp_header, Verdict},
};

/// Frames of the pass `cargo test` runs.
const DEFAULT_FRAMES: u64 = 200_000;

/// Frames between two checks of counters and connection tracking.
const DEFAULT_CHECK_EVERY: u64 = 16_384;

/// The most frames between two checks: the established flows of one stretch stay far below
/// the test data plane's 65,536 tracking entries, so the LRU never evicts one.
const MAX_CHECK_EVERY: u64 = 32_768;

/// Interface index of the backend reached with XDP_REDIRECT (any index but the ingress).
const OTHER_IFINDEX: u32 = 7;

/// The same seed gives the same frames: what a failure's seed and frame number rest on.
#[test]
fn the_generator_is_reproducible() {
    let targets = vec![Target {
        addr: "198.19.0.1".parse().expect("address"),
        port: 80,
        transport: Transport::Tcp,
    }];
    let answerers = vec![Answerer {
        addr: "198.18.210.3".parse().expect("address"),
        port: 8080,
        transport: Transport::Tcp,
        pool: Some(("198.18.202.1".parse().expect("address"), [2000, 2999])),
    }];
    let frames = |seed| {
        let mut generator = Generator::new(seed, targets.clone(), answerers.clone());
        (0..2000)
            .map(|_| generator.next_frame().frame)
            .collect::<Vec<_>>()
    };
    assert_eq!(frames(7), frames(7), "seed 7 twice");
    assert_ne!(frames(7), frames(8), "seeds 7 and 8");
    let frame = &frames(7)[0];
    assert_eq!(
        from_hex(&hex(frame)).as_ref(),
        Some(frame),
        "hex round trip"
    );
}

#[test]
fn fuzzed_frames_match_the_model() {
    let config = Config::from_env();
    let ns = routed::namespace();
    ns.enter(|| fuzz(&config));
}

/// The fuzzing run of `config`, in the routed namespace.
fn fuzz(config: &Config) {
    let mut run = Run::new(Fixture::new("fuzz"), config);
    if let Some(frame) = &config.replay {
        run.replay(frame.clone());
        return;
    }
    println!(
        "fuzz: seed {:#018x}, {} frames, checks every {} frames",
        config.seed, config.frames, config.check_every
    );
    let mut generator = Generator::new(config.seed, run.targets(), run.answerers());
    let mut made_by = BTreeMap::<String, u64>::new();
    let start = Instant::now();
    for n in 0..config.frames {
        let made = generator.next_frame();
        *made_by.entry(format!("{:?}", made.base)).or_default() += 1;
        if let Some(held) = run.frame(n, &made) {
            generator.learn(held);
        }
        if (n + 1) % config.check_every == 0 {
            run.checkpoint(n + 1, Some(&made));
        }
    }
    run.checkpoint(config.frames, None);
    let elapsed = start.elapsed();
    println!(
        "fuzz: {} frames in {:.1} s: {:.0} frames/s (each run, model and check included)",
        config.frames,
        elapsed.as_secs_f64(),
        config.frames as f64 / elapsed.as_secs_f64().max(1e-9),
    );
    println!("fuzz: made {made_by:?}");
    println!("fuzz: {}", run.totals());
    println!("fuzz: routed paths {:?}", run.paths);
    run.assert_every_path_taken(config.frames);
}

/// The run's parameters, from the environment.
struct Config {
    /// Frames to send.
    frames: u64,
    /// Seed of the generator.
    seed: u64,
    /// Frames between two checkpoints.
    check_every: u64,
    /// A frame to run alone instead.
    replay: Option<Vec<u8>>,
}

impl Config {
    /// Reads the `BALANCER_FUZZ_*` variables (see the crate's documentation).
    fn from_env() -> Self {
        let check_every = number("BALANCER_FUZZ_CHECK_EVERY").unwrap_or(DEFAULT_CHECK_EVERY);
        assert!(
            (1..=MAX_CHECK_EVERY).contains(&check_every),
            "BALANCER_FUZZ_CHECK_EVERY must be within 1..={MAX_CHECK_EVERY}"
        );
        let replay = std::env::var("BALANCER_FUZZ_REPLAY").ok().map(|hex| {
            from_hex(&hex).unwrap_or_else(|| panic!("BALANCER_FUZZ_REPLAY is not hex: {hex:?}"))
        });
        Self {
            frames: number("BALANCER_FUZZ_FRAMES").unwrap_or(DEFAULT_FRAMES),
            seed: number("BALANCER_FUZZ_SEED").unwrap_or_else(|| fastrand::u64(..)),
            check_every,
            replay,
        }
    }
}

/// The number in environment variable `name` (decimal or `0x` hex, `_` allowed), if set.
fn number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let digits = text.trim().replace('_', "");
    let parsed = match digits.strip_prefix("0x").or(digits.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => digits.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={text:?} is not a number: {e}")))
}

/// The services the frames are aimed at, covering every way the program decides: connection
/// and client affinity, two groups split evenly and unevenly, different weights, a drained
/// backend, a backend behind another interface (XDP_REDIRECT), client pins (one to a group
/// at 0%), and a TCP and a UDP VIP without any backend (dropped); IPv4 and IPv6, TCP and
/// UDP on one address. Then the routed services ([`routed::services`]).
fn services(fx: &mut Fixture) -> Routed {
    fx.add_service("web4", "198.19.0.1:80/tcp", Affinity::Connection);
    fx.add_two_groups(
        "web4",
        &[
            "198.18.0.101",
            "198.18.0.102",
            "198.18.0.103",
            "198.18.0.104",
        ],
    );

    fx.add_service("dns4", "198.19.0.1:53/udp", Affinity::Client);
    fx.add_backend("dns4", "198.18.1.101", "blue", 100);
    fx.add_backend_via("dns4", "198.18.1.102", "green", 100, OTHER_IFINDEX);
    fx.add_backend("dns4", "198.18.1.103", "green", 0);
    fx.set_split("dns4", &[("blue", 7000), ("green", 3000)]);
    fx.add_pin("dns4", "203.0.113.0/29", "green");
    fx.publish("dns4");

    fx.add_service("web6", "[2001:db8:ffff::1]:443/tcp", Affinity::Connection);
    fx.add_backend("web6", "2001:db8::101", "blue", 100);
    fx.add_backend("web6", "2001:db8::102", "blue", 50);
    fx.add_backend("web6", "2001:db8::103", "green", 200);
    fx.set_split("web6", &[("blue", 9000), ("green", 1000)]);
    fx.publish("web6");

    fx.add_service("dns6", "[2001:db8:ffff::1]:53/udp", Affinity::Client);
    fx.add_backend("dns6", "2001:db8::201", "blue", 100);
    fx.add_backend("dns6", "2001:db8::202", "blue", 100);
    fx.add_backend("dns6", "2001:db8::203", "green", 100);
    fx.add_pin("dns6", "2001:db8:c::/125", "green");
    fx.publish("dns6");

    fx.add_service("empty4", "198.19.0.2:80/tcp", Affinity::Connection);
    fx.publish("empty4");
    fx.add_service("empty6", "[2001:db8:ffff::2]:53/udp", Affinity::Connection);
    fx.publish("empty6");
    routed::services(fx)
}

/// One fuzzing run: the data plane, and what the model says it should have counted and
/// tracked so far.
struct Run {
    fx: Fixture,
    seed: u64,
    check_every: u64,
    /// Every backend index of the fixture and its forwarding entry.
    backends: BTreeMap<u32, Backend>,
    /// The global counters the model's verdicts add up to.
    globals: GlobalCounters,
    /// Per-backend counters the model's verdicts add up to.
    counters: BTreeMap<u32, BackendStats>,
    /// The first frame after the last checkpoint.
    stretch_start: u64,
    /// Frames forwarded to DSR backends with XDP_TX and with XDP_REDIRECT.
    forwarded: [u64; 2],
    /// The routed backends and the model of full NAT's pool ports.
    routed: Routed,
    /// Reply counters of the `nat`/`fullnat` backends that the model's replies add up to.
    answers: BTreeMap<u32, ReplyStats>,
    /// Frames by the routed path the model gave them (see [`Expect::path`]).
    paths: BTreeMap<String, u64>,
}

impl Run {
    /// A run on `fx`, which gets the services of [`services`].
    fn new(mut fx: Fixture, config: &Config) -> Self {
        let routed = services(&mut fx);
        let backends: BTreeMap<u32, Backend> = fx
            .state
            .services
            .values()
            .flat_map(|s| s.backends().map(|(_, b)| b.index))
            .map(|index| (index, fx.backend(index)))
            .collect();
        Self {
            counters: backends
                .keys()
                .map(|&i| (i, BackendStats::default()))
                .collect(),
            backends,
            fx,
            seed: config.seed,
            check_every: config.check_every,
            globals: GlobalCounters::default(),
            stretch_start: 0,
            forwarded: [0; 2],
            answers: routed
                .replies
                .values()
                .map(|&i| (i, ReplyStats::default()))
                .collect(),
            routed,
            paths: BTreeMap::new(),
        }
    }

    /// The `nat`/`fullnat` backend endpoints, for the generator's replies and errors.
    fn answerers(&self) -> Vec<Answerer> {
        self.routed
            .backends
            .values()
            .filter(|b| matches!(b.mode, Mode::Nat | Mode::Fullnat))
            .map(|b| Answerer {
                addr: b.addr,
                port: b.port,
                transport: b.transport,
                pool: (b.mode == Mode::Fullnat).then_some((b.source, b.ports)),
            })
            .collect()
    }

    /// The VIPs of the services, for the generator to aim at.
    fn targets(&self) -> Vec<Target> {
        self.fx
            .state
            .services
            .values()
            .map(|s| Target {
                addr: s.vip.addr.ip(),
                port: s.vip.addr.port(),
                transport: match s.vip.protocol {
                    Protocol::Tcp => Transport::Tcp,
                    Protocol::Udp => Transport::Udp,
                },
            })
            .collect()
    }

    /// Sends frame number `n`, checks what the program did with it against the model, and
    /// adds the model's verdict to the expected counters and tracking. Returns the pool port
    /// a new full-NAT flow was given, if it was one.
    fn frame(&mut self, n: u64, made: &Made) -> Option<Held> {
        let frame = &made.frame;
        let fx = &self.fx;
        let Ok(outcome) = catch_unwind(AssertUnwindSafe(|| fx.outcome(frame))) else {
            self.fail(n, made, None, None, "the model panicked (message above)");
        };
        let run = self.fx.send(frame);
        let held = self.routed.held.len();
        let routed = match catch_unwind(AssertUnwindSafe(|| {
            self.routed_expect(outcome, frame, &run)
        })) {
            Ok(Ok(routed)) => routed,
            Ok(Err(what)) => self.fail(n, made, Some(outcome), Some(&run), &what),
            Err(_) => self.fail(
                n,
                made,
                Some(outcome),
                Some(&run),
                "the model panicked (message above)",
            ),
        };
        let checked = match &routed {
            Some((expect, _)) => expect.check(frame, &run),
            None => self.check_run(outcome, frame, &run),
        };
        if let Err(what) = checked {
            self.fail(n, made, Some(outcome), Some(&run), &what);
        }
        match (outcome, &routed) {
            // A known reply or ICMP error: counted by the routed counters alone.
            (Outcome::Pass(_) | Outcome::Drop(_), Some(_)) => {}
            (Outcome::Pass(counter) | Outcome::Drop(counter), None) => {
                self.globals = counter.plus_one(self.globals);
            }
            (Outcome::Forward(index), _) => {
                let counters = self.counters.get_mut(&index).expect("a fixture backend");
                counters.packets += 1;
                counters.bytes += frame.len() as u64;
                if routed.is_none() {
                    let redirected = self.backends[&index].ifindex != INGRESS_IFINDEX;
                    self.forwarded[usize::from(redirected)] += 1;
                }
            }
        }
        if let Some((expect, answer)) = &routed {
            for count in &expect.counts {
                self.globals = count.plus_one(self.globals);
            }
            if let Some(answer) = answer.filter(|_| expect.action != XDP_DROP) {
                self.answered(answer);
            }
            *self.paths.entry(expect.path.clone()).or_default() += 1;
        }
        if let Err(what) = self.track(frame, outcome) {
            self.fail(n, made, Some(outcome), Some(&run), &what);
        }
        match (outcome, classify(frame)) {
            (Outcome::Forward(_), Verdict::Flow(flow)) if self.routed.held.len() > held => {
                self.routed.held_by(&flow.key())
            }
            _ => None,
        }
    }

    /// What the routed model expects of `frame` (with the selection model's `outcome`; `run`
    /// is what the program did, which gives a new full-NAT flow's pool port): a packet to a
    /// routed backend, a reply or an ICMP error about a translated flow, with what a reply
    /// adds to its backend's reply counters; `None` for anything else.
    fn routed_expect(
        &mut self,
        outcome: Outcome,
        frame: &[u8],
        run: &TestRun,
    ) -> Result<Option<(Expect, Option<Answer>)>, String> {
        Ok(match (outcome, classify(frame)) {
            (Outcome::Forward(index), Verdict::Flow(flow))
                if self.routed.backends.contains_key(&index) =>
            {
                Some((self.routed.forward(index, frame, &flow, run)?, None))
            }
            (Outcome::Pass(Counter::Passed), Verdict::Flow(flow))
                if self.routed.reply_port(flow.sport, flow.transport) =>
            {
                self.routed.reply(frame, &flow, &self.fx.tracking)
            }
            (Outcome::Pass(Counter::Passed), Verdict::Other) => {
                self.routed.error(frame).map(|expect| (expect, None))
            }
            _ => None,
        })
    }

    /// Adds a reply the program rewrote to its backend's expected reply counters.
    fn answered(&mut self, answer: Answer) {
        let stats = self.answers.get_mut(&answer.index).expect("a nat backend");
        stats.packets += 1;
        stats.bytes += answer.bytes as u64;
        stats.resets += u64::from(answer.reset);
        stats.handshakes += u64::from(answer.handshake);
    }

    /// Feeds `frame` (with `outcome`) to the tracking model, counting a flow the model
    /// balances afresh as a new flow of its backend; an error if the tracking model and
    /// the selection model disagree.
    fn track(&mut self, frame: &[u8], outcome: Outcome) -> Result<(), String> {
        let Verdict::Flow(flow) = classify(frame) else {
            return match outcome {
                Outcome::Forward(_) => Err("forwarded, but not a flow".into()),
                _ => Ok(()),
            };
        };
        let flags = tcp_header(frame);
        let backends = &self.backends;
        let live = |i: u32, e: u32| e != 0 && backends.get(&i).is_some_and(|b| b.epoch == e);
        let vip_port = self.fx.vip_port(&flow);
        match (
            self.fx.tracking.packet(flow.key(), flags, vip_port, live),
            outcome,
        ) {
            (Step::Choose, Outcome::Forward(index)) => {
                let epoch = backends[&index].epoch;
                let events = self
                    .fx
                    .tracking
                    .record(flow.key(), flags, index, epoch, live);
                add_events(self.counters.get_mut(&index).expect("a backend"), events);
                Ok(())
            }
            (Step::Follow { backend, events }, Outcome::Forward(index)) if backend == index => {
                add_events(self.counters.get_mut(&index).expect("a backend"), events);
                Ok(())
            }
            (Step::Follow { backend, .. }, _) => Err(format!(
                "the tracking model follows backend {backend} where the selection model says \
                 {outcome:?}"
            )),
            (Step::Filtered, Outcome::Forward(_)) => {
                Err("forwarded, but the pre-filter passes its port".into())
            }
            (Step::Choose | Step::Filtered, _) => Ok(()),
        }
    }

    /// Whether `run` is what `outcome` says about `frame`: the action, and the frame
    /// untouched, or changed in its MAC addresses alone, to the backend's.
    fn check_run(&self, outcome: Outcome, frame: &[u8], run: &TestRun) -> Result<(), String> {
        let (action, backend) = match outcome {
            Outcome::Pass(_) => (XDP_PASS, None),
            Outcome::Drop(_) => (XDP_DROP, None),
            Outcome::Forward(index) => {
                let backend = self.backends[&index];
                let action = if backend.ifindex == INGRESS_IFINDEX {
                    XDP_TX
                } else {
                    XDP_REDIRECT
                };
                (action, Some(backend))
            }
        };
        if run.action != action {
            return Err(format!(
                "XDP action {} where the model says {}",
                action_name(run.action),
                action_name(action)
            ));
        }
        let Some(backend) = backend else {
            if run.packet != frame {
                return Err("the frame was changed".into());
            }
            return Ok(());
        };
        if run.packet.len() != frame.len() {
            return Err(format!("frame length changed to {}", run.packet.len()));
        }
        if run.packet[0..6] != backend.dst_mac || run.packet[6..12] != backend.src_mac {
            return Err("MAC addresses are not the backend's".into());
        }
        if run.packet[12..] != frame[12..] {
            return Err("bytes after the MAC addresses changed".into());
        }
        Ok(())
    }

    /// Checks the counters and connection tracking after frame `upto` (exclusive), the
    /// last of which was `last` (if at hand), then empties connection tracking for the next
    /// stretch.
    fn checkpoint(&mut self, upto: u64, last: Option<&Made>) {
        if let Err(what) = self.check_stretch() {
            let mut message = format!(
                "fuzz: seed {:#018x}, after frames {}..{upto}: {what}\n",
                self.seed, self.stretch_start
            );
            if let Some(last) = last.filter(|_| upto == self.stretch_start + 1) {
                let _ = writeln!(
                    message,
                    "  frame {} ({}): {}",
                    self.stretch_start,
                    last.recipe(),
                    hex(&last.frame)
                );
            }
            let _ = writeln!(
                message,
                "  find the frame: BALANCER_FUZZ_SEED={:#x} BALANCER_FUZZ_FRAMES={upto} \
                 BALANCER_FUZZ_CHECK_EVERY=1 cargo test -p balancer-user --test fuzz",
                self.seed
            );
            panic!("{message}");
        }
        self.fx.forget_all();
        self.stretch_start = upto;
    }

    /// Compares the kernel's counters and connection tracking with the model's.
    fn check_stretch(&self) -> Result<(), String> {
        let globals = self.fx.plane.global_counters().expect("global counters");
        if globals != self.globals {
            return Err(format!(
                "global counters are {globals:?}, the model's verdicts {:?}",
                self.globals
            ));
        }
        self.fx.tracking_differs()?;
        for (&index, expected) in &self.counters {
            let counted = self.fx.counters(index);
            if counted != *expected {
                return Err(format!(
                    "backend {index} counted {counted:?}, the model {expected:?}"
                ));
            }
        }
        for (&index, expected) in &self.answers {
            let counted = self.fx.plane.reply_counters(index).expect("reply counters");
            let timed: u64 = counted.buckets.iter().sum();
            let seen = (
                counted.packets,
                counted.bytes,
                counted.resets,
                counted.handshakes,
            );
            let model = (
                expected.packets,
                expected.bytes,
                expected.resets,
                expected.handshakes,
            );
            if seen != model || timed != counted.handshakes {
                return Err(format!(
                    "backend {index}'s replies counted (packets, bytes, resets, handshakes) \
                     {seen:?} with {timed} in the histogram, the model {model:?}"
                ));
            }
        }
        let pool = Pool::open(&self.fx.plane.maps_dir()).expect("open the full-NAT maps");
        let translations = pool.translations().expect("TRANSLATIONS");
        let allocations = pool.allocations().expect("ALLOCATIONS");
        self.routed.pools_differ(&translations, &allocations)
    }

    /// Runs `frame` alone (`BALANCER_FUZZ_REPLAY`) and checks it, counters and tracking
    /// included.
    fn replay(&mut self, frame: Vec<u8>) {
        let made = Made {
            frame,
            base: Base::Replayed,
            mutations: Vec::new(),
        };
        println!("fuzz: replaying {}", hex(&made.frame));
        println!("fuzz: the model says {:?}", self.fx.outcome(&made.frame));
        self.frame(0, &made);
        self.checkpoint(1, Some(&made));
        println!("fuzz: the program agrees");
    }

    /// Fails frame `n` with everything needed to replay it.
    fn fail(
        &self,
        n: u64,
        made: &Made,
        outcome: Option<Outcome>,
        run: Option<&TestRun>,
        what: &str,
    ) -> ! {
        let frame = hex(&made.frame);
        let mut message = format!(
            "fuzz: seed {:#018x}, frame {n} ({}): {what}\n  frame   {frame}\n",
            self.seed,
            made.recipe()
        );
        if let Some(outcome) = outcome {
            let _ = writeln!(message, "  model   {outcome:?}");
        }
        if let Some(run) = run {
            let _ = writeln!(
                message,
                "  program {} {}",
                action_name(run.action),
                hex(&run.packet)
            );
        }
        let _ = writeln!(
            message,
            "  replay the frame: BALANCER_FUZZ_REPLAY={frame} cargo test -p balancer-user \
             --test fuzz -- --nocapture"
        );
        if made.base != Base::Replayed {
            let _ = writeln!(
                message,
                "  replay the run: BALANCER_FUZZ_SEED={:#x} BALANCER_FUZZ_FRAMES={} \
                 BALANCER_FUZZ_CHECK_EVERY={} cargo test -p balancer-user --test fuzz",
                self.seed,
                n + 1,
                self.check_every
            );
        }
        panic!("{message}");
    }

    /// New flows of the DSR backends.
    fn dsr_new_flows(&self) -> u64 {
        self.counters
            .iter()
            .filter(|(i, _)| !self.routed.backends.contains_key(i))
            .map(|(_, c)| c.new_flows)
            .sum()
    }

    /// The verdict totals, one line.
    fn totals(&self) -> String {
        let g = &self.globals;
        let new_flows = self.dsr_new_flows();
        format!(
            "forwarded to DSR backends {} (XDP_TX {}, XDP_REDIRECT {}; {new_flows} new flows), \
             passed {} (not \
             a VIP {}, malformed {}, unbalanceable {}), dropped {} (no backend {}, martian {})",
            self.forwarded[0] + self.forwarded[1],
            self.forwarded[0],
            self.forwarded[1],
            g.passed + g.malformed + g.unbalanceable,
            g.passed,
            g.malformed,
            g.unbalanceable,
            g.dropped + g.martian,
            g.dropped,
            g.martian,
        )
    }

    /// Fails a run of at least 10,000 frames that never took one of the program's paths:
    /// the generator no longer reaches it, and the fuzzer would say nothing about it.
    fn assert_every_path_taken(&self, frames: u64) {
        if frames < 10_000 {
            return;
        }
        let g = &self.globals;
        let new_flows = self.dsr_new_flows();
        let established = self.forwarded[0] + self.forwarded[1] - new_flows;
        let paths = [
            ("forwarded with XDP_TX", self.forwarded[0]),
            ("forwarded with XDP_REDIRECT", self.forwarded[1]),
            ("forwarded on an established flow", established),
            ("passed, not a VIP", g.passed),
            ("passed, malformed", g.malformed),
            ("passed, unbalanceable", g.unbalanceable),
            ("dropped, no backend", g.dropped),
            ("dropped, martian", g.martian),
        ];
        for (path, count) in paths {
            assert!(count > 0, "{frames} frames, none {path}: {}", self.totals());
        }
        if frames < ROUTED_PATHS_FROM {
            return;
        }
        let mut routed: Vec<String> = ROUTED_PATHS.iter().map(|p| p.to_string()).collect();
        for mode in [Mode::Ipip, Mode::Gue, Mode::Nat, Mode::Fullnat] {
            for path in [
                "out",
                "unresolved, to the kernel",
                "unroutable",
                "too big, answered",
            ] {
                routed.push(format!("{mode}: {path}"));
            }
            if matches!(mode, Mode::Nat | Mode::Fullnat) {
                for (version, who) in [(4, "backend"), (4, "router"), (6, "backend"), (6, "router")]
                {
                    routed.push(format!("{mode} ICMPv{version} error from the {who}"));
                }
            }
        }
        for path in routed {
            assert!(
                self.paths.get(&path).is_some_and(|&n| n > 0),
                "{frames} frames, none {path}: {:?}",
                self.paths
            );
        }
    }
}

/// Routed paths every run of at least [`ROUTED_PATHS_FROM`] frames takes, besides each
/// mode's forwarding paths and each translating mode's ICMP errors (rarer paths — an IPv4
/// packet too big without DF, a reply too big — are not required).
const ROUTED_PATHS: [&str; 4] = [
    "nat reply: out",
    "nat reply: unresolved, to the kernel",
    "nat reply: unroutable",
    "fullnat reply: out",
];

/// The fewest frames whose run must take every routed path (each is taken dozens of times
/// in 100,000 frames).
const ROUTED_PATHS_FROM: u64 = 100_000;

/// XDP action names.
fn action_name(action: u32) -> String {
    match action {
        XDP_DROP => "XDP_DROP".into(),
        XDP_PASS => "XDP_PASS".into(),
        XDP_TX => "XDP_TX".into(),
        XDP_REDIRECT => "XDP_REDIRECT".into(),
        other => format!("action {other}"),
    }
}

/// `bytes` as lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The bytes of a hex string (whitespace ignored), if it is one.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}
