//! What an analysis is asked to check: the window, the minimum sample, the limits on each
//! signal (client-side, and reply-side for services whose replies pass the LB), and the
//! optional external gates. Carried in the canary plan over
//! the API and kept with the canary in the state file.

use serde::{Deserialize, Serialize};

use crate::state::StateError;

/// How one canary is judged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisPlan {
    /// Time after each step before the first window, milliseconds.
    pub warmup_ms: u64,
    /// Length of one window, milliseconds.
    pub window_ms: u64,
    /// New flows the new group must receive in a window for it to count.
    pub min_flows: u64,
    /// Windows in a row without a verdict (too few flows, a gate without an answer) after
    /// which the canary rolls back: no data is never success.
    pub max_inconclusive: u32,
    /// Limits on the signals of the new group.
    pub checks: Vec<Check>,
    /// Prometheus queries, asked at the end of every window the checks passed.
    #[serde(default)]
    pub prometheus: Vec<PrometheusGate>,
    /// Webhooks, asked before each step and before promotion.
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

/// A limit on one signal: the new group's value may be at most the larger of the absolute
/// limit (`max_percent` for a ratio to new flows, `max_ms` for a time) and `max_factor`
/// times the old group's value in the same window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// The signal.
    pub signal: Signal,
    /// A ratio signal's limit that holds whatever the old group does, percent of new
    /// flows; required for ratios, refused for times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_percent: Option<f64>,
    /// A time signal's limit that holds whatever the old group does, milliseconds; refused
    /// for ratios.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
    /// The limit relative to the old group's value; none: only the absolute limit.
    #[serde(default)]
    pub max_factor: Option<f64>,
}

/// A signal of one group: client-side ones counted per backend by the data plane and the
/// daemon for every service, reply-side ones ([`Signal::replies`]) by the data plane from
/// the backends' replies, which only a `nat` service's pass through the LB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signal {
    /// Handshakes the client never completed within 5 s (and UDP flows of one datagram).
    HandshakeFailures,
    /// Connections the client closed with a reset.
    Resets,
    /// SYNs the client had to send again.
    SynRetransmits,
    /// Replies with RST: connections the backends reset or refused.
    BackendResets,
    /// The group's handshake time (from the client's first SYN to the backend's SYN-ACK):
    /// the [`HANDSHAKE_QUANTILE`] of the handshakes timed in the window, milliseconds.
    HandshakeTime,
}

/// The quantile of the handshake times that [`Signal::HandshakeTime`] takes: the time 9 in
/// 10 handshakes beat. Unlike the mean it does not move for one stray slow handshake, and
/// unlike the median it sees a slow tail of a tenth of the connections (SYNs a full accept
/// queue dropped, answered after the client's retransmit 1 s later).
pub const HANDSHAKE_QUANTILE: f64 = 0.9;

/// The longest handshake time told apart, milliseconds: the data plane's last bucket holds
/// every handshake above 1 s, so a quantile there reads 1000 ms (1 s or more).
pub const LONGEST_HANDSHAKE_MS: f64 = 1000.0;

/// A PromQL query whose single value must stay within bounds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusGate {
    /// Base URL of the Prometheus server (`http://host:port`).
    pub url: String,
    /// An instant query returning one sample.
    pub query: String,
    /// Fail above this value.
    #[serde(default)]
    pub max: Option<f64>,
    /// Fail below this value.
    #[serde(default)]
    pub min: Option<f64>,
}

/// An HTTP endpoint asked before a step: a 2xx answer lets it go, anything else (another
/// status, no answer within the timeout) rolls the canary back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://host:port/path`.
    pub url: String,
    /// Before which steps it is asked.
    #[serde(default)]
    pub before: Phase,
}

/// Which steps a webhook gates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Every step, the one that completes the canary included.
    #[default]
    Both,
    /// Every step but the one that completes the canary.
    Step,
    /// Only the step that completes the canary (promotion).
    Promotion,
}

impl Phase {
    /// Whether a webhook of this phase is asked before a step that `completes` the canary
    /// or not.
    pub fn gates(self, completes: bool) -> bool {
        match self {
            Phase::Both => true,
            Phase::Step => !completes,
            Phase::Promotion => completes,
        }
    }
}

/// Shortest window: the daemon counts unanswered handshakes 5 s after they began.
pub const MIN_WINDOW_MS: u64 = 5_000;

/// Shortest warm-up: the handshakes that failed before a step (counted 5 s late, by a pass
/// once a second) are counted before its first window begins, so a canary started right
/// after a rolled-back one is not judged on the old one's failures.
pub const MIN_WARMUP_MS: u64 = 6_000;

impl Default for AnalysisPlan {
    /// Windows of 30 s after 10 s of warm-up, at least 50 new flows, 3 windows without
    /// data: handshake failures and resets at most max(0.5%, 2 × the old group's).
    fn default() -> Self {
        let check = |signal| Check {
            signal,
            max_percent: Some(0.5),
            max_ms: None,
            max_factor: Some(2.0),
        };
        Self {
            warmup_ms: 10_000,
            window_ms: 30_000,
            min_flows: 50,
            max_inconclusive: 3,
            checks: vec![check(Signal::HandshakeFailures), check(Signal::Resets)],
            prometheus: Vec::new(),
            webhooks: Vec::new(),
        }
    }
}

impl AnalysisPlan {
    /// Checks the plan; the error says what is wrong in one line.
    pub fn check(&self) -> Result<(), StateError> {
        let bad = |why: String| Err(StateError::Canary(format!("analysis: {why}")));
        crate::duration::check("the analysis warm-up", self.warmup_ms)?;
        crate::duration::check("the analysis window", self.window_ms)?;
        if self.warmup_ms < MIN_WARMUP_MS {
            return bad(format!(
                "the warm-up must be at least {} s (failed handshakes are counted 5 s late)",
                MIN_WARMUP_MS / 1000
            ));
        }
        if self.window_ms < MIN_WINDOW_MS {
            return bad(format!(
                "the window must be at least {} s (unanswered handshakes are counted 5 s \
                 after they begin)",
                MIN_WINDOW_MS / 1000
            ));
        }
        if self.min_flows == 0 {
            return bad("the minimum sample must be at least 1 new flow".into());
        }
        if self.max_inconclusive == 0 {
            return bad("max-inconclusive must be at least 1 window".into());
        }
        if self.checks.is_empty() && self.prometheus.is_empty() && self.webhooks.is_empty() {
            return bad("nothing to check: give a check, a Prometheus query or a webhook".into());
        }
        for c in &self.checks {
            c.check()
                .map_err(|why| StateError::Canary(format!("analysis: {why}")))?;
        }
        for g in &self.prometheus {
            crate::gate::Target::parse(&g.url).map_err(|e| StateError::Canary(e.to_string()))?;
            if g.query.trim().is_empty() {
                return bad(format!("the Prometheus query for {} is empty", g.url));
            }
            if g.max.is_none() && g.min.is_none() {
                return bad(format!(
                    "the Prometheus query {:?} has no max or min",
                    g.query
                ));
            }
            if [g.max, g.min].into_iter().flatten().any(|v| !v.is_finite()) {
                return bad(format!(
                    "the bounds of {:?} must be finite numbers",
                    g.query
                ));
            }
        }
        for w in &self.webhooks {
            crate::gate::Target::parse(&w.url).map_err(|e| StateError::Canary(e.to_string()))?;
        }
        Ok(())
    }
}

impl AnalysisPlan {
    /// The first signal it checks that only a service whose replies pass the LB counts.
    pub fn reply_signal(&self) -> Option<Signal> {
        self.checks.iter().map(|c| c.signal).find(|s| s.replies())
    }
}

impl Check {
    /// Checks that the limits fit the signal; the error says what is wrong in one line.
    fn check(&self) -> Result<(), String> {
        let name = self.signal.name();
        if self.signal.timed() {
            if self.max_percent.is_some() {
                return Err(format!(
                    "{name} is a time: give max_ms and/or max_factor, not max_percent"
                ));
            }
            if self.max_ms.is_none() && self.max_factor.is_none() {
                return Err(format!("{name} needs a limit: max_ms and/or max_factor"));
            }
            if self
                .max_ms
                .is_some_and(|ms| !(ms.is_finite() && ms > 0.0 && ms < LONGEST_HANDSHAKE_MS))
            {
                return Err(format!(
                    "max_ms of {name} must be above 0 and below {LONGEST_HANDSHAKE_MS} \
                     (longer handshakes are not told apart)"
                ));
            }
        } else {
            if self.max_ms.is_some() {
                return Err(format!(
                    "{name} is a ratio to new flows: give max_percent, not max_ms"
                ));
            }
            let Some(percent) = self.max_percent else {
                return Err(format!("{name} needs max_percent"));
            };
            if !(percent.is_finite() && (0.0..=100.0).contains(&percent)) {
                return Err(format!("max_percent of {name} must be from 0 to 100"));
            }
        }
        if self
            .max_factor
            .is_some_and(|f| !(f.is_finite() && f >= 1.0))
        {
            return Err(format!(
                "max_factor of {name} must be a number of at least 1"
            ));
        }
        Ok(())
    }
}

impl Signal {
    /// The name operators write and read.
    pub fn name(self) -> &'static str {
        match self {
            Signal::HandshakeFailures => "handshake-failures",
            Signal::Resets => "resets",
            Signal::SynRetransmits => "syn-retransmits",
            Signal::BackendResets => "backend-resets",
            Signal::HandshakeTime => "handshake-time",
        }
    }

    /// Whether it is a time in milliseconds (else a percentage of new flows).
    pub fn timed(self) -> bool {
        self == Signal::HandshakeTime
    }

    /// Whether it is counted from the backends' replies: only services whose replies pass
    /// the LB (`nat`) have it.
    pub fn replies(self) -> bool {
        matches!(self, Signal::BackendResets | Signal::HandshakeTime)
    }
}
