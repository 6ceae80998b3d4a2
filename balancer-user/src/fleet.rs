//! A fleet of LB hosts sharing one desired state in etcd (`daemon --store`).
//!
//! The whole state is one etcd key, `PREFIX/state` ([`keys`]), its JSON the state file's;
//! its mod revision is the fleet's revision. A change is written with compare-and-swap on
//! that revision ([`commit`]), off the controller's lock; every daemon watches the key and
//! adopts each newer revision into its data plane, so the tables are the same on every host
//! (same `--hash-seed`). Each daemon registers itself under `PREFIX/hosts/NAME` with a
//! lease ([`host`]), which `balancer fleet status` lists ([`view`]). The local state file
//! stays the daemon's last copy ([`cache`]): a daemon that starts while etcd is down
//! forwards with it and catches up when etcd answers. [`remote`] is the store as the daemon
//! sees it; [`etcd`] its implementation with etcd's client.
//!
//! One daemon leads ([`member::Member::leading`]): it holds `PREFIX/leader` under a lease
//! of `--leader-ttl` and alone drives the fleet's timed work; its own changes are stored
//! only while its term lasts ([`commit::commit_fenced`]). Each host publishes what its own
//! health checks say; the leader decides the fleet's view of each backend from them
//! ([`ruling`]) and stores it, and every host compiles its tables from that view.

pub mod cache;
pub mod commit;
pub mod etcd;
pub mod host;
pub mod keys;
pub mod member;
pub mod remote;
pub mod report;
pub mod ruling;
pub mod url;
pub mod view;

/// Why a fleet operation did not happen. Every one is a refusal: nothing changed anywhere.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// `--store` is not a valid URL.
    #[error("store URL {0}")]
    Url(String),
    /// The stored state moved on since the change was prepared (compare-and-swap lost).
    #[error("the state changed meanwhile (revision {revision}): try again")]
    Moved {
        /// The revision that is stored now.
        revision: i64,
    },
    /// etcd did not answer (or answered with an error).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// What is stored does not load.
    #[error("the stored state at revision {revision} is unusable: {why}")]
    Unusable {
        /// Its revision.
        revision: i64,
        /// What is wrong.
        why: String,
    },
    /// A leader's own change, refused because its term is over (its lease expired: another
    /// host leads now, or none does).
    #[error("this daemon no longer leads the fleet (term {term} is over)")]
    Deposed {
        /// The term the change was made in.
        term: i64,
    },
    /// The daemon runs alone: its state is a file.
    #[error("this daemon keeps its state in a file, not in a fleet's store (daemon --store)")]
    Alone,
}
