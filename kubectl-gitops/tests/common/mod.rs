//! Fixtures shared by the plugin's end-to-end suites.
#![allow(dead_code, unused_imports)]

pub use e2e::gitops::{
    APP, COMMIT, Gitops, Run, SOURCE, annotations, app_status, config_map, deployment,
};

/// The plugin binary under test (Cargo builds it before these suites run).
pub fn plugin() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-gitops"))
}
