//! The validating admission webhook of kubectl-gitops: serving (TLS with reload, HTTP/1.1 and
//! HTTP/2), what it knows of apps and Git, audit records, metrics and its registration with the
//! apiserver. The decision itself lives in `shared::admission`.

pub mod audit;
pub mod config;
pub mod guard;
pub mod knowledge;
pub mod metrics;
pub mod server;
pub mod tls;
