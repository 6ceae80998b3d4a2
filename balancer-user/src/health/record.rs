//! The observed health of checked backends as it is stored beside the desired state, so
//! that a restarted daemon starts from what it last saw instead of assuming every backend
//! up.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

/// The health of every checked backend, by service and address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthRecord {
    /// By service name, then backend address.
    pub services: BTreeMap<String, BTreeMap<IpAddr, Observed>>,
}

/// One backend's last known health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observed {
    /// Whether it may get new flows.
    pub healthy: bool,
    /// When that last changed (Unix milliseconds), if known.
    pub since_ms: Option<u64>,
    /// Why its last check failed, if it did.
    pub error: Option<String>,
}
