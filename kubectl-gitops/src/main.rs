//! `kubectl gitops`: the kubectl plugin. `main` only parses, runs and maps the outcome to an exit
//! code; each verb lives in its own module under `cmd/`.

mod cli;
mod cmd;
mod color;
mod engine;
mod error_text;
mod exit;
mod health;
mod kube_context;
mod mirror;
mod output;
mod reconcile;
mod rollout;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    mirror::set_timeout(cli.git_timeout);
    // Git over HTTPS (reqwest) finds the process-wide provider; kube uses ring explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return exit::Code::Failure.into();
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = runtime
        .block_on(cli::run(cli, &mut out))
        .and_then(|code| out.flush().map(|()| code).map_err(Into::into));
    match result {
        Ok(code) => code.into(),
        // A closed pipe (`kubectl gitops … | head`) is the reader's choice, not an error.
        Err(err)
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            exit::Code::Success.into()
        }
        Err(err) => {
            exit::report(&err);
            exit::Code::Failure.into()
        }
    }
}
