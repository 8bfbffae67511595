//! One module per verb; each takes its validated options and writes data to `out`.

pub mod agent;
pub mod app;
pub mod audit;
pub mod dashboard;
pub mod diff;
pub mod history;
pub mod hydrate;
pub mod project;
pub mod rollout;
pub mod status;
pub mod sync;
pub mod verify;
