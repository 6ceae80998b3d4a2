//! The control API's server side: [`routes`] decode each request into an
//! [`Operation`](crate::operation::Operation) and encode the answer; the [`executor`] owns
//! the controller behind its lock and runs operations and timers on it.

pub mod executor;
pub mod routes;
