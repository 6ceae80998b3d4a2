//! Why a change to the desired state was refused.

use std::net::IpAddr;

use crate::{basis_points::BadPercent, split::SplitError, vip::Vip};

/// A refused change of the desired state. Messages are one line, for operators.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No such service.
    #[error("no service named {0:?}")]
    UnknownService(String),
    /// Name taken.
    #[error("a service named {0:?} already exists")]
    ServiceExists(String),
    /// VIP taken.
    #[error("VIP {0} is already served by service {1:?}")]
    VipInUse(Vip, String),
    /// A `nat` backend endpoint (address, port, protocol) already answering for another
    /// service: its replies could be rewritten to come from one VIP only.
    #[error("backend {0} of service {1:?} already answers for nat service {2:?} (serving or retired): its replies can come from one VIP only")]
    ReplyInUse(Vip, String, String),
    /// All service slots used.
    #[error("no room for another service (at most {max})", max = balancer_common::MAX_SERVICES)]
    TooManyServices,
    /// All backend slots used.
    #[error("no room for another backend (at most {max})", max = balancer_common::MAX_BACKENDS)]
    TooManyBackends,
    /// Epoch counter exhausted (after 4 billion backend additions).
    #[error("backend epochs exhausted; tear down and start afresh")]
    EpochsExhausted,
    /// Invalid name.
    #[error("bad {0} name {1:?}: use 1-64 characters from A-Z a-z 0-9 - _ .")]
    BadName(&'static str, String),
    /// Table size not a suitable prime.
    #[error("table size {0} must be a prime between 3 and {1}")]
    BadTableSize(u32, usize),
    /// Backend address unusable.
    #[error("backend address {0} is not a unicast, non-loopback address")]
    BadBackendAddr(IpAddr),
    /// Backend of the other family than the VIP.
    #[error("backend {0} and VIP {1} are of different address families")]
    FamilyMismatch(IpAddr, Vip),
    /// Backend already present.
    #[error("backend {0} already exists in service {1:?}")]
    DuplicateBackend(IpAddr, String),
    /// Removing a backend that already retired, without cutting it.
    #[error("backend {0} of service {1:?} is already retired: remove it with --cut to re-balance its flows now")]
    AlreadyRetired(IpAddr, String),
    /// No such backend.
    #[error("no backend {0} in service {1:?}")]
    UnknownBackend(IpAddr, String),
    /// `undrain` of a backend that is not drained.
    #[error("backend {0} of service {1:?} is not drained")]
    NotDrained(IpAddr, String),
    /// `undrain` of a drain that did not keep the weight it replaced (an older state file).
    #[error("the drain of backend {0} in service {1:?} did not keep the weight it replaced: set one with `backend set-weight`")]
    NoWeightBefore(IpAddr, String),
    /// Group limit reached.
    #[error("service {0:?} already has the most groups allowed ({max})", max = balancer_common::MAX_GROUPS)]
    TooManyGroups(String),
    /// No such group.
    #[error("no group {0:?} in service {1:?}")]
    UnknownGroup(String, String),
    /// A group named twice in one split.
    #[error("group {0:?} is named twice")]
    GroupTwice(String),
    /// Flip to the group that already takes every new flow.
    #[error("group {0:?} already takes 100% of new flows of service {1:?}")]
    AlreadyLive(String, String),
    /// Pin prefix with host bits.
    #[error("{0} has host bits set; did you mean {1}?")]
    HostBits(ipnet::IpNet, ipnet::IpNet),
    /// Pin of the other family than the VIP.
    #[error("pin {0} and VIP {1} are of different address families")]
    PinFamily(ipnet::IpNet, Vip),
    /// Pin already present.
    #[error("{0} is already pinned in service {1:?}")]
    PinExists(ipnet::IpNet, String),
    /// No such pin.
    #[error("no pin {0} in service {1:?}")]
    UnknownPin(ipnet::IpNet, String),
    /// Pin limit reached.
    #[error("service {0:?} already has the most pins allowed ({max})", max = balancer_common::MAX_CLIENT_PINS)]
    TooManyPins(String),
    /// Invalid health-check settings.
    #[error("{0}")]
    Health(String),
    /// A rollout command that does not fit.
    #[error("{0}")]
    Rollout(String),
    /// A canary command that does not fit.
    #[error("{0}")]
    Canary(String),
    /// A running analysis (of a canary or a rollout) checks a signal counted from the
    /// backends' replies on a service whose replies do not pass the LB.
    #[error("the analysis of service {0:?} checks {1}, which is counted from the backends' replies: only a nat or fullnat service's pass the LB (this one forwards by {2})")]
    NoReplies(String, &'static str, crate::state::Mode),
    /// Split on a service without groups.
    #[error("service {0:?} has no groups yet: add a backend first")]
    NoGroups(String),
    /// Invalid split.
    #[error(transparent)]
    Split(#[from] SplitError),
    /// Invalid forwarding.
    #[error(transparent)]
    Forward(#[from] super::ForwardError),
    /// Invalid percentage.
    #[error(transparent)]
    Percent(#[from] BadPercent),
    /// A duration past [`crate::duration::MAX_MS`].
    #[error("{0} of {1} ms is longer than the longest allowed ({max} days)", max = crate::duration::MAX_DAYS)]
    TooLong(&'static str, u64),
    /// An inconsistent state (a change or a file that breaks an invariant).
    #[error("{0}")]
    Corrupt(String),
}
