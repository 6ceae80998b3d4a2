//! The control API's server side: [`routes`] decode each request into an
//! [`Operation`](crate::operation::Operation) and encode the answer; the [`executor`] owns
//! the controller behind its lock and runs operations and timers on it; the [`listener`]
//! bounds the connections served at once and how long one may idle. [`scrape`] serves the
//! Prometheus metrics.

pub mod executor;
pub mod listener;
pub mod routes;
pub mod scrape;
