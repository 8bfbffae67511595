//! End-to-end suites against the real local control plane.

mod manifests;
mod smoke;
mod webhook;
