//! How an [`Operation`] travels: HTTP + JSON on the daemon's Unix socket, one route per
//! operation (`curl --unix-socket /run/balancer.sock http://x/status`). Encoding and
//! decoding sit side by side here, and a round-trip test covers every operation.

use std::net::IpAddr;

use hyper::{Method, StatusCode};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{de::DeserializeOwned, Serialize};

use super::{Change, Operation};
use crate::{
    api::{
        Flip, PinRequest, RemoveBackend, SetForward, SetHealth, SetSplit, SetWeight, StartDrain,
    },
    error::Refused,
    history::{Query, MAX_PAGE},
    state::check_name,
};

/// A request as it goes over the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// HTTP method.
    pub method: Method,
    /// Path and query, percent-encoded.
    pub path: String,
    /// Body.
    pub body: Body,
}

/// A request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// None.
    Empty,
    /// JSON.
    Json(Vec<u8>),
    /// A TOML configuration.
    Toml(String),
}

impl Body {
    /// The bytes and their content type, if any.
    pub fn into_parts(self) -> Option<(Vec<u8>, &'static str)> {
        match self {
            Body::Empty => None,
            Body::Json(bytes) => Some((bytes, "application/json")),
            Body::Toml(text) => Some((text.into_bytes(), "application/toml")),
        }
    }
}

/// Characters kept as they are in a path segment: names are `A-Z a-z 0-9 - _ .`, IPv6
/// addresses have colons.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b':')
    .remove(b'~');

/// Percent-encodes a path segment.
fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

fn json<T: Serialize>(body: &T) -> Body {
    Body::Json(serde_json::to_vec(body).expect("request bodies serialise"))
}

impl Operation {
    /// The request that carries this operation.
    pub fn to_request(&self) -> Request {
        let service_path = |name: &str, rest: &str| format!("/services/{}{rest}", segment(name));
        let (method, path, body) = match self {
            Operation::Status { service: None } => (Method::GET, "/status".into(), Body::Empty),
            Operation::Status {
                service: Some(name),
            } => (
                Method::GET,
                format!("/status?service={}", segment(name)),
                Body::Empty,
            ),
            Operation::Export => (Method::GET, "/export".into(), Body::Empty),
            Operation::Fleet => (Method::GET, "/fleet".into(), Body::Empty),
            Operation::Leave => (Method::POST, "/fleet/leave".into(), Body::Empty),
            Operation::Join => (Method::POST, "/fleet/join".into(), Body::Empty),
            Operation::Teardown => (Method::POST, "/teardown".into(), Body::Empty),
            Operation::Events(query) => {
                let mut pairs = form_urlencoded::Serializer::new(String::new());
                if let Some(name) = &query.service {
                    pairs.append_pair("service", name);
                }
                pairs
                    .append_pair("after", &query.after.to_string())
                    .append_pair("limit", &query.limit.to_string());
                (
                    Method::GET,
                    format!("/events?{}", pairs.finish()),
                    Body::Empty,
                )
            }
            Operation::Change(change) => match change {
                Change::AddService(body) => (Method::POST, "/services".into(), json(body)),
                Change::SetHealth { service, health } => (
                    Method::PUT,
                    service_path(service, "/health"),
                    json(&SetHealth {
                        health: health.clone(),
                    }),
                ),
                Change::SetForward { service, forward } => (
                    Method::PUT,
                    service_path(service, "/forward"),
                    json(&SetForward { forward: *forward }),
                ),
                Change::RemoveService { service } => {
                    (Method::DELETE, service_path(service, ""), Body::Empty)
                }
                Change::AddBackend { service, backend } => (
                    Method::POST,
                    service_path(service, "/backends"),
                    json(backend),
                ),
                Change::SetWeight {
                    service,
                    addr,
                    weight,
                } => (
                    Method::PUT,
                    service_path(service, &format!("/backends/{addr}/weight")),
                    json(&SetWeight { weight: *weight }),
                ),
                Change::Drain {
                    service,
                    addr,
                    timeout_ms,
                    cut,
                } => (
                    Method::POST,
                    service_path(service, &format!("/backends/{addr}/drain")),
                    json(&StartDrain {
                        timeout_ms: *timeout_ms,
                        cut: *cut,
                    }),
                ),
                Change::Undrain { service, addr } => (
                    Method::DELETE,
                    service_path(service, &format!("/backends/{addr}/drain")),
                    Body::Empty,
                ),
                Change::RemoveBackend { service, addr, cut } => (
                    Method::DELETE,
                    service_path(service, &format!("/backends/{addr}")),
                    json(&RemoveBackend { cut: *cut }),
                ),
                Change::Split { service, shares } => (
                    Method::PUT,
                    service_path(service, "/split"),
                    json(&SetSplit {
                        shares: shares.clone(),
                    }),
                ),
                Change::Flip {
                    service,
                    to,
                    drain_timeout_ms,
                    cut,
                } => (
                    Method::PUT,
                    service_path(service, "/flip"),
                    json(&Flip {
                        to: to.clone(),
                        drain_timeout_ms: *drain_timeout_ms,
                        cut: *cut,
                    }),
                ),
                Change::AddPin {
                    service,
                    cidr,
                    group,
                } => (
                    Method::POST,
                    service_path(service, "/pins"),
                    json(&PinRequest {
                        cidr: cidr.to_string(),
                        group: group.clone(),
                    }),
                ),
                Change::RemovePin { service, cidr } => (
                    Method::DELETE,
                    service_path(service, "/pins"),
                    json(&PinRequest {
                        cidr: cidr.to_string(),
                        group: String::new(),
                    }),
                ),
                Change::StartCanary { service, plan } => {
                    (Method::POST, service_path(service, "/canary"), json(plan))
                }
                Change::Canary { service, action } => {
                    let action = serde_json::to_value(action).expect("actions serialise");
                    let action = action.as_str().expect("actions are strings").to_string();
                    (
                        Method::POST,
                        service_path(service, &format!("/canary/{action}")),
                        Body::Empty,
                    )
                }
                Change::StartRollout { service, plan } => {
                    (Method::POST, service_path(service, "/rollout"), json(plan))
                }
                Change::AbortRollout { service } => (
                    Method::POST,
                    service_path(service, "/rollout/abort"),
                    Body::Empty,
                ),
                Change::Apply { toml } => (Method::POST, "/apply".into(), Body::Toml(toml.clone())),
            },
        };
        Request { method, path, body }
    }

    /// The operation a request carries; a request that names none, or whose body does not
    /// fit, is refused with one line.
    pub fn from_request(method: &Method, path: &str, body: &[u8]) -> Result<Self, Refused> {
        let (route, query) = path.split_once('?').unwrap_or((path, ""));
        let parts: Vec<String> = route
            .trim_start_matches('/')
            .split('/')
            .map(|p| percent_decode_str(p).decode_utf8_lossy().into_owned())
            .collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let unknown = || Refused::NoOperation(format!("{method} {route}"));
        let change = |c: Change| Ok(Operation::Change(c));
        let service = |name: &str| name.to_string();
        match (method, parts.as_slice()) {
            (&Method::GET, ["status"]) => Ok(Operation::Status {
                service: form_urlencoded::parse(query.as_bytes())
                    .find(|(key, _)| key == "service")
                    .map(|(_, value)| value.into_owned()),
            }),
            (&Method::GET, ["export"]) => Ok(Operation::Export),
            (&Method::GET, ["fleet"]) => Ok(Operation::Fleet),
            (&Method::POST, ["fleet", "leave"]) => Ok(Operation::Leave),
            (&Method::POST, ["fleet", "join"]) => Ok(Operation::Join),
            (&Method::GET, ["events"]) => Ok(Operation::Events(events_query(query)?)),
            (&Method::POST, ["teardown"]) => Ok(Operation::Teardown),
            (&Method::POST, ["apply"]) => change(Change::Apply {
                toml: String::from_utf8(body.to_vec())
                    .map_err(|_| Refused::Request("the configuration is not UTF-8".into()))?,
            }),
            (&Method::POST, ["services"]) => change(Change::AddService(decode(body)?)),
            (&Method::DELETE, ["services", name]) => change(Change::RemoveService {
                service: service(name),
            }),
            (&Method::PUT, ["services", name, "health"]) => {
                let SetHealth { health } = decode(body)?;
                change(Change::SetHealth {
                    service: service(name),
                    health,
                })
            }
            (&Method::PUT, ["services", name, "forward"]) => {
                let SetForward { forward } = decode(body)?;
                change(Change::SetForward {
                    service: service(name),
                    forward,
                })
            }
            (&Method::POST, ["services", name, "backends"]) => change(Change::AddBackend {
                service: service(name),
                backend: decode(body)?,
            }),
            (&Method::DELETE, ["services", name, "backends", addr]) => {
                // An empty body (a client of an earlier version) removes without cutting.
                let RemoveBackend { cut } = match body.is_empty() {
                    true => RemoveBackend::default(),
                    false => decode(body)?,
                };
                change(Change::RemoveBackend {
                    service: service(name),
                    addr: ip(addr)?,
                    cut,
                })
            }
            (&Method::PUT, ["services", name, "backends", addr, "weight"]) => {
                let SetWeight { weight } = decode(body)?;
                change(Change::SetWeight {
                    service: service(name),
                    addr: ip(addr)?,
                    weight,
                })
            }
            (&Method::POST, ["services", name, "backends", addr, "drain"]) => {
                let StartDrain { timeout_ms, cut } = decode(body)?;
                change(Change::Drain {
                    service: service(name),
                    addr: ip(addr)?,
                    timeout_ms,
                    cut,
                })
            }
            (&Method::DELETE, ["services", name, "backends", addr, "drain"]) => {
                change(Change::Undrain {
                    service: service(name),
                    addr: ip(addr)?,
                })
            }
            (&Method::PUT, ["services", name, "split"]) => {
                let SetSplit { shares } = decode(body)?;
                change(Change::Split {
                    service: service(name),
                    shares,
                })
            }
            (&Method::PUT, ["services", name, "flip"]) => {
                let Flip {
                    to,
                    drain_timeout_ms,
                    cut,
                } = decode(body)?;
                change(Change::Flip {
                    service: service(name),
                    to,
                    drain_timeout_ms,
                    cut,
                })
            }
            (&Method::POST, ["services", name, "pins"]) => {
                let PinRequest { cidr, group } = decode(body)?;
                change(Change::AddPin {
                    service: service(name),
                    cidr: prefix(&cidr)?,
                    group,
                })
            }
            (&Method::DELETE, ["services", name, "pins"]) => {
                let PinRequest { cidr, .. } = decode(body)?;
                change(Change::RemovePin {
                    service: service(name),
                    cidr: prefix(&cidr)?,
                })
            }
            (&Method::POST, ["services", name, "canary"]) => change(Change::StartCanary {
                service: service(name),
                plan: decode(body)?,
            }),
            (&Method::POST, ["services", name, "canary", action]) => change(Change::Canary {
                service: service(name),
                action: serde_json::from_value(serde_json::Value::String(action.to_string()))
                    .map_err(|_| Refused::Request(format!("unknown canary action {action:?}")))?,
            }),
            (&Method::POST, ["services", name, "rollout"]) => change(Change::StartRollout {
                service: service(name),
                plan: decode(body)?,
            }),
            (&Method::POST, ["services", name, "rollout", "abort"]) => {
                change(Change::AbortRollout {
                    service: service(name),
                })
            }
            _ => Err(unknown()),
        }
    }

    /// The HTTP status of success: 201 for what creates or starts something, 204 for other
    /// changes, 200 for answers with a body.
    pub fn success(&self) -> StatusCode {
        match self {
            Operation::Status { .. }
            | Operation::Export
            | Operation::Fleet
            | Operation::Events(_) => StatusCode::OK,
            Operation::Teardown | Operation::Leave | Operation::Join => StatusCode::NO_CONTENT,
            Operation::Change(
                Change::AddService(_)
                | Change::AddBackend { .. }
                | Change::AddPin { .. }
                | Change::StartCanary { .. }
                | Change::StartRollout { .. },
            ) => StatusCode::CREATED,
            Operation::Change(_) => StatusCode::NO_CONTENT,
        }
    }
}

/// The query of `GET /events`: `service=NAME`, `after=SEQ` (default 0), `limit=N` (1 to
/// [`MAX_PAGE`], the default).
fn events_query(query: &str) -> Result<Query, Refused> {
    let mut events = Query {
        service: None,
        after: 0,
        limit: MAX_PAGE,
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "service" => {
                check_name("service", &value)?;
                events.service = Some(value.into_owned());
            }
            "after" => {
                events.after = value.parse().map_err(|_| {
                    Refused::Request(format!("after={value:?} is not a sequence number"))
                })?;
            }
            "limit" => {
                events.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        Refused::Request(format!(
                            "limit={value:?} is not a number from 1 to {MAX_PAGE}"
                        ))
                    })?;
            }
            _ => return Err(Refused::Request(format!("unknown query parameter {key:?}"))),
        }
    }
    Ok(events)
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refused> {
    serde_json::from_slice(body).map_err(|e| Refused::Request(format!("bad request body: {e}")))
}

fn ip(text: &str) -> Result<IpAddr, Refused> {
    text.parse()
        .map_err(|_| Refused::Request(format!("{text:?} is not an IP address")))
}

fn prefix(text: &str) -> Result<ipnet::IpNet, Refused> {
    text.parse()
        .map_err(|_| Refused::Request(format!("{text:?} is not a CIDR prefix (ADDR/LEN)")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::{AddBackend, AddService},
        basis_points::BasisPoints,
        release::{
            analysis::{AnalysisPlan, Phase, PrometheusGate, Webhook},
            canary::{CanaryAction, CanaryPlan},
            rollout::RolloutPlan,
        },
        state::{Affinity, CheckKind, Forward, HealthCheck, Mode},
    };

    fn every_operation() -> Vec<Operation> {
        let service = || "web-1".to_string();
        let v6: IpAddr = "2001:db8::101".parse().unwrap();
        let health = HealthCheck {
            kind: CheckKind::Http {
                path: "/healthz".into(),
            },
            interval_ms: 2000,
            timeout_ms: 1000,
            rise: 2,
            fall: 3,
        };
        let changes = vec![
            Change::AddService(AddService {
                name: service(),
                vip: "[2001:db8::1]:443/tcp".parse().unwrap(),
                affinity: Affinity::Client,
                table_size: Some(251),
                health: Some(health.clone()),
                forward: Forward {
                    mode: Mode::Gue,
                    source: Some("2001:db8::9".parse().unwrap()),
                    port: Some(7000),
                    backend_port: None,
                    source_ports: None,
                },
            }),
            Change::AddService(AddService {
                name: service(),
                vip: "198.19.0.1:80/tcp".parse().unwrap(),
                affinity: Affinity::Connection,
                table_size: None,
                health: None,
                forward: Forward::default(),
            }),
            Change::SetForward {
                service: service(),
                forward: Forward {
                    mode: Mode::Ipip,
                    source: None,
                    port: None,
                    backend_port: None,
                    source_ports: None,
                },
            },
            Change::SetHealth {
                service: service(),
                health: Some(health),
            },
            Change::SetHealth {
                service: service(),
                health: None,
            },
            Change::RemoveService { service: service() },
            Change::AddBackend {
                service: service(),
                backend: AddBackend {
                    addr: v6,
                    group: "green".into(),
                    weight: Some(7),
                },
            },
            Change::SetWeight {
                service: service(),
                addr: v6,
                weight: 0,
            },
            Change::Drain {
                service: service(),
                addr: v6,
                timeout_ms: Some(5000),
                cut: true,
            },
            Change::Undrain {
                service: service(),
                addr: v6,
            },
            Change::RemoveBackend {
                service: service(),
                addr: "198.18.0.101".parse().unwrap(),
                cut: false,
            },
            Change::RemoveBackend {
                service: service(),
                addr: "198.18.0.101".parse().unwrap(),
                cut: true,
            },
            Change::Split {
                service: service(),
                shares: vec![
                    ("blue".into(), BasisPoints::new(8750).unwrap()),
                    ("green".into(), BasisPoints::new(1250).unwrap()),
                ],
            },
            Change::Flip {
                service: service(),
                to: "green".into(),
                drain_timeout_ms: None,
                cut: false,
            },
            Change::Flip {
                service: service(),
                to: "green".into(),
                drain_timeout_ms: Some(5000),
                cut: true,
            },
            Change::AddPin {
                service: service(),
                cidr: "2001:db8:2::/48".parse().unwrap(),
                group: "green".into(),
            },
            Change::RemovePin {
                service: service(),
                cidr: "198.18.2.0/28".parse().unwrap(),
            },
            Change::StartCanary {
                service: service(),
                plan: CanaryPlan {
                    from: "blue".into(),
                    to: "green".into(),
                    steps: vec![BasisPoints::new(500).unwrap(), BasisPoints::ALL],
                    interval_ms: 30_000,
                    auto_rollback: Some(BasisPoints::new(5000).unwrap()),
                    analysis: Some(AnalysisPlan {
                        prometheus: vec![PrometheusGate {
                            url: "http://198.18.0.1:9090".into(),
                            query: "sum(rate(balancer_backend_resets_total[1m]))".into(),
                            max: Some(0.5),
                            min: None,
                        }],
                        webhooks: vec![Webhook {
                            url: "http://198.18.0.1:8080/gate".into(),
                            before: Phase::Promotion,
                        }],
                        ..AnalysisPlan::default()
                    }),
                },
            },
            Change::StartRollout {
                service: service(),
                plan: RolloutPlan {
                    group: "blue".into(),
                    pairs: vec![(
                        "198.18.0.101".parse().unwrap(),
                        "198.18.0.111".parse().unwrap(),
                    )],
                    ready_timeout_ms: 60_000,
                    slow_start_ms: 0,
                    cut: true,
                    drain_timeout_ms: Some(1),
                    analysis: Some(AnalysisPlan::default()),
                },
            },
            Change::AbortRollout { service: service() },
            Change::Apply {
                toml: "[[service]]\nname = \"web\"\n".into(),
            },
        ];
        let actions = [
            CanaryAction::Pause,
            CanaryAction::Resume,
            CanaryAction::Promote,
            CanaryAction::Abort,
        ]
        .map(|action| Change::Canary {
            service: service(),
            action,
        });
        let mut all = vec![
            Operation::Status { service: None },
            Operation::Status {
                service: Some("a b/c".into()),
            },
            Operation::Export,
            Operation::Teardown,
        ];
        all.extend(changes.into_iter().chain(actions).map(Operation::Change));
        all.extend([
            Operation::Events(Query {
                service: None,
                after: 0,
                limit: MAX_PAGE,
            }),
            Operation::Events(Query {
                service: Some("web-1".into()),
                after: 41,
                limit: 7,
            }),
            Operation::Fleet,
            Operation::Leave,
            Operation::Join,
        ]);
        all
    }

    fn bytes(body: &Body) -> Vec<u8> {
        match body {
            Body::Empty => Vec::new(),
            Body::Json(bytes) => bytes.clone(),
            Body::Toml(text) => text.clone().into_bytes(),
        }
    }

    #[test]
    fn every_operation_survives_the_wire() {
        for operation in every_operation() {
            let request = operation.to_request();
            let decoded =
                Operation::from_request(&request.method, &request.path, &bytes(&request.body))
                    .unwrap_or_else(|e| panic!("{request:?}: {e}"));
            assert_eq!(decoded, operation, "{request:?}");
        }
    }

    #[test]
    fn routes_and_bodies_keep_the_published_format() {
        let ops = every_operation();
        let request = ops[4].to_request();
        assert_eq!(
            (request.method, request.path.as_str()),
            (Method::POST, "/services")
        );
        let split = Operation::Change(Change::Split {
            service: "web".into(),
            shares: vec![("blue".into(), BasisPoints::ALL)],
        })
        .to_request();
        assert_eq!(split.path, "/services/web/split");
        assert_eq!(
            split.body,
            Body::Json(br#"{"shares":[["blue","100.00"]]}"#.to_vec())
        );
        let status = Operation::Status {
            service: Some("a b/c".into()),
        };
        assert_eq!(status.to_request().path, "/status?service=a%20b%2Fc");
        let events = Operation::Events(Query {
            service: Some("web".into()),
            after: 3,
            limit: 10,
        });
        assert_eq!(
            events.to_request().path,
            "/events?service=web&after=3&limit=10"
        );
        // What the CLI of the previous release sent is still understood.
        let old = br#"{"from":"blue","to":"green","steps":["5","100"],"interval_ms":1000}"#;
        let decoded = Operation::from_request(&Method::POST, "/services/web/canary", old).unwrap();
        let Operation::Change(Change::StartCanary { plan, .. }) = decoded else {
            panic!("not a canary start: {decoded:?}");
        };
        assert_eq!(
            plan.steps,
            [BasisPoints::new(500).unwrap(), BasisPoints::ALL]
        );
        assert_eq!(plan.auto_rollback, None);
    }

    #[test]
    fn malformed_requests_are_refused_with_one_line() {
        let cases: [(Method, &str, &[u8], &str); 10] = [
            (
                Method::GET,
                "/events?after=x",
                b"",
                "after=\"x\" is not a sequence number",
            ),
            (
                Method::GET,
                "/events?limit=0",
                b"",
                "limit=\"0\" is not a number from 1 to 1000",
            ),
            (
                Method::GET,
                "/events?service=a%20b",
                b"",
                "bad service name \"a b\": use 1-64 characters from A-Z a-z 0-9 - _ .",
            ),
            (
                Method::GET,
                "/events?since=3",
                b"",
                "unknown query parameter \"since\"",
            ),
            (Method::GET, "/nothing", b"", "no such operation: GET /nothing"),
            (Method::POST, "/status", b"", "no such operation: POST /status"),
            (
                Method::DELETE,
                "/services/web/backends/not-an-ip",
                b"",
                "\"not-an-ip\" is not an IP address",
            ),
            (
                Method::POST,
                "/services/web/pins",
                br#"{"cidr":"198.18.2.0","group":"g"}"#,
                "\"198.18.2.0\" is not a CIDR prefix (ADDR/LEN)",
            ),
            (
                Method::POST,
                "/services/web/canary/explode",
                b"",
                "unknown canary action \"explode\"",
            ),
            (
                Method::PUT,
                "/services/web/split",
                br#"{"shares":[["blue","100.5"]]}"#,
                "bad request body: bad percentage \"100.5\": use a number from 0 to 100 with at most 2 decimals at line 1 column 27",
            ),
        ];
        for (method, path, body, why) in cases {
            let err = Operation::from_request(&method, path, body).unwrap_err();
            assert_eq!(err.to_string(), why, "{method} {path}");
        }
    }
}
