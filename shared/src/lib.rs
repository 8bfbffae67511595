//! The provenance contract shared by `kubectl gitops` and the `admission` webhook: app
//! definitions, Git access, manifest loading and the provenance annotations.
//!
//! Both binaries call this crate, so what the plugin stamps on an object and what the webhook
//! checks can never disagree.

pub mod admission;
pub mod app;
pub mod audit;
pub mod canary;
pub mod client;
pub mod commit_graph;
pub mod credentials;
pub mod git;
pub mod manifest;
pub mod normalise;
pub mod project;
pub mod provenance;
pub mod request_timeout;
pub mod signature;

/// An error and its causes on one line, as logs and refusals show them.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
