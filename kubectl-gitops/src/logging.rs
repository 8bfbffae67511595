//! Where the plugin's progress lines and the agent's logs go: `tracing`, with one subscriber per
//! process. A person at a terminal gets the plain messages the commands always printed on stderr;
//! the agent writes one JSON object a line (time, level, target, message, fields and spans), as
//! log collectors read it. `RUST_LOG` (an `EnvFilter` directive such as `info,kube=debug`)
//! chooses what is shown; kube's and gix's own events come through the same subscriber.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object a line.
    Json,
    /// Human-readable lines with time and level.
    Text,
}

/// The filter from `RUST_LOG`, else `default`.
fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// For the commands a person runs: the plugin's own messages, as plain lines on stderr.
pub fn init_cli() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter("kubectl_gitops=info"))
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_level(false)
        .with_ansi(false)
        .try_init();
}

/// For the agent: every event at `info` and above (the plugin's, kube's, gix's), in `format`.
pub fn init_agent(format: Format) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter("info"))
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = match format {
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        Format::Text => builder.try_init(),
    };
}
