//! `daemon --store etcd://HOST:PORT[,HOST:PORT...]/PREFIX`: where the fleet's desired
//! state is kept.

use std::{fmt, str::FromStr};

use super::FleetError;

/// A parsed `--store` URL: etcd's client endpoints and the key prefix of the fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreUrl {
    /// `HOST:PORT` of each etcd member, as given (at least one).
    pub endpoints: Vec<String>,
    /// The key prefix: every key of the fleet starts with it (no trailing `/`).
    pub prefix: String,
}

impl StoreUrl {
    /// The endpoints as etcd's client takes them (`http://HOST:PORT`).
    pub fn urls(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| format!("http://{e}"))
            .collect()
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd://{}{}", self.endpoints.join(","), self.prefix)
    }
}

impl FromStr for StoreUrl {
    type Err = FleetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| FleetError::Url(format!("{text:?}: {why}"));
        let rest = text
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("must start with etcd://"))?;
        let (hosts, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no /PREFIX after the endpoints"))?;
        let prefix = format!("/{}", path.trim_end_matches('/'));
        if prefix == "/" {
            return Err(bad("the PREFIX is empty"));
        }
        if prefix.contains("//") || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(
                "the PREFIX has an empty segment, a space or a control character",
            ));
        }
        let endpoints = hosts
            .split(',')
            .map(|endpoint| endpoint_of(endpoint).map_err(|why| bad(&why)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { endpoints, prefix })
    }
}

/// Checks one `HOST:PORT` (a name, an IPv4 address, or `[IPv6]`).
fn endpoint_of(endpoint: &str) -> Result<String, String> {
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| format!("endpoint {endpoint:?} has no :PORT"))?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("endpoint {endpoint:?} has no valid port (1-65535)"))?;
    let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        }
    };
    match valid {
        true => Ok(endpoint.to_string()),
        false => Err(format!("endpoint {endpoint:?} has no valid host")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::one_line;

    #[test]
    fn endpoints_and_the_prefix_are_read() {
        let url: StoreUrl = "etcd://198.18.0.1:2379,etcd-2.lan:2379,[2001:db8::1]:2379/lb/prod/"
            .parse()
            .unwrap();
        assert_eq!(
            url.endpoints,
            ["198.18.0.1:2379", "etcd-2.lan:2379", "[2001:db8::1]:2379"]
        );
        assert_eq!(url.prefix, "/lb/prod");
        assert_eq!(url.urls()[2], "http://[2001:db8::1]:2379");
        assert_eq!(
            url.to_string(),
            "etcd://198.18.0.1:2379,etcd-2.lan:2379,[2001:db8::1]:2379/lb/prod"
        );
        assert_eq!(url.to_string().parse::<StoreUrl>().unwrap(), url);
    }

    #[test]
    fn bad_urls_are_refused_in_one_line_naming_what_is_wrong() {
        let cases = [
            ("http://198.18.0.1:2379/lb", "must start with etcd://"),
            ("etcd://198.18.0.1:2379", "no /PREFIX"),
            ("etcd://198.18.0.1:2379/", "the PREFIX is empty"),
            ("etcd://198.18.0.1:2379/a//b", "empty segment"),
            ("etcd://198.18.0.1:2379/a b", "a space"),
            ("etcd://198.18.0.1/lb", "has no :PORT"),
            ("etcd://198.18.0.1:0/lb", "no valid port"),
            ("etcd://198.18.0.1:65536/lb", "no valid port"),
            ("etcd://198.18.0.1:2379,/lb", "has no :PORT"),
            ("etcd://:2379/lb", "no valid host"),
            ("etcd://[2001:db8::zz]:2379/lb", "no valid host"),
            ("etcd://a_b:2379/lb", "no valid host"),
        ];
        for (text, why) in cases {
            let err = one_line(&text.parse::<StoreUrl>().unwrap_err());
            assert!(err.starts_with("store URL "), "{text}: {err}");
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.contains(text), "{text}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}
