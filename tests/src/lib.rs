//! Network-namespace test harness for the `balancer` XDP load balancer.
//!
//! * [`topology`] builds a bridge with a client, a load-balancer host and
//!   backends, each in its own network namespace, and removes it on drop.
//! * [`balancer`] runs the real daemon in the LB namespace and drives its CLI.
//! * [`lab`] puts the two together: four serving backends and a running daemon.
//! * [`pair`] puts two LB hosts on one segment in a fleet on a real etcd ([`etcd`]), the
//!   client's route switched from one to the other (the flow-state sync's tests and bench).
//! * [`routed`] builds the routed topology (the LB and the backends on different subnets
//!   behind a router namespace) and its lab, [`routed::RoutedLab`].
//! * [`bgp_fleet`] builds a fleet over BGP: a client, a router with bird2 and ECMP, three
//!   LB hosts (daemon on a real etcd, bird2 announcing the VIPs), backends on their segment.
//! * [`netns`] runs commands, long-lived processes and closures inside a
//!   namespace.
//! * [`prometheus`] runs a real Prometheus server in a namespace and queries it; [`http`]
//!   is the plain GET both use.
//! * [`webhook`] receives the webhooks of canary analyses in a namespace.
//! * [`split`] computes which group a client reaches under the stored split.
//! * [`traffic`] hosts backend servers and drives client traffic from inside
//!   the namespaces, without external tools.
//! * [`test_programs`] embeds the test-only XDP programs (crate
//!   `balancer-test-ebpf`).
//!
//! Everything must run as root. Only 198.18.0.0/15 and 2001:db8::/32
//! addresses are used, and only inside namespaces created here.

pub mod balancer;
pub mod bgp_fleet;
mod command;
pub mod etcd;
pub mod http;
pub mod lab;
pub mod netns;
pub mod pair;
pub mod prometheus;
pub mod routed;
pub mod split;
pub mod test_programs;
pub mod topology;
pub mod traffic;
pub mod webhook;
