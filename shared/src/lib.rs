//! The provenance contract shared by `kubectl gitops` and the `admission` webhook: app
//! definitions, Git access, manifest loading and the provenance annotations.
//!
//! Both binaries call this crate, so what the plugin stamps on an object and what the webhook
//! checks can never disagree.

pub mod admission;
pub mod app;
pub mod audit;
pub mod canary;
pub mod credentials;
pub mod git;
pub mod manifest;
pub mod normalise;
pub mod provenance;
