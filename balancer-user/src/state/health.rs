//! Health-check settings of a service (the checks themselves run in the daemon).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::{State, StateError};

/// Shortest allowed check interval.
const MIN_INTERVAL_MS: u64 = 100;

/// How backends of a service are checked: from the LB host, to each backend's own address
/// on the service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// What a check does.
    pub kind: CheckKind,
    /// Time between two checks of a backend, milliseconds.
    pub interval_ms: u64,
    /// Time a check may take, milliseconds.
    pub timeout_ms: u64,
    /// Consecutive passes that bring a backend up.
    pub rise: u32,
    /// Consecutive failures that take a backend down.
    pub fall: u32,
}

/// What a health check does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connection is accepted.
    Tcp,
    /// `GET path` answers 2xx or 3xx.
    Http {
        /// Request path, starting with `/`.
        path: String,
    },
}

impl FromStr for CheckKind {
    type Err = StateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "tcp" {
            return Ok(CheckKind::Tcp);
        }
        match s.strip_prefix("http:") {
            Some(path) if path.starts_with('/') && !path.chars().any(char::is_whitespace) => {
                Ok(CheckKind::Http {
                    path: path.to_string(),
                })
            }
            _ => Err(StateError::Health(format!(
                "health check {s:?} is not tcp or http:/PATH"
            ))),
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckKind::Tcp => f.write_str("tcp"),
            CheckKind::Http { path } => write!(f, "http:{path}"),
        }
    }
}

impl HealthCheck {
    fn validate(&self) -> Result<(), StateError> {
        let bad = |why: &str| Err(StateError::Health(why.to_string()));
        crate::duration::check("the health-check interval", self.interval_ms)?;
        if self.interval_ms < MIN_INTERVAL_MS {
            return bad("the health-check interval must be at least 100ms");
        }
        if self.timeout_ms == 0 || self.timeout_ms > self.interval_ms {
            return bad("the health-check timeout must be above 0 and at most the interval");
        }
        if self.rise == 0 || self.fall == 0 || self.rise > 100 || self.fall > 100 {
            return bad("rise and fall must be between 1 and 100");
        }
        Ok(())
    }
}

impl State {
    /// Sets (or with `None` removes) the health checks of `service`.
    pub fn set_health(
        &mut self,
        service: &str,
        check: Option<HealthCheck>,
    ) -> Result<(), StateError> {
        if let Some(check) = &check {
            check.validate()?;
        }
        self.service_mut(service)?.health = check;
        Ok(())
    }
}
