//! End-to-end suites against the real local control plane.

mod krew;
mod manifests;
mod smoke;
mod webhook;
