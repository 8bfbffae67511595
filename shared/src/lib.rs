//! The provenance contract shared by `kubectl gitops` and the `admission` webhook.
//!
//! Both binaries call this crate, so what the plugin stamps on an object and what the webhook
//! checks can never disagree.

pub mod provenance;
