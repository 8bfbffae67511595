//! End-to-end suites against the real local control plane.

mod smoke;
mod webhook;
