//! `kubectl gitops`: the kubectl plugin. `main` only parses, runs and maps the outcome to an exit
//! code; each verb lives in its own module under `cmd/`.

mod cli;
mod cmd;
mod color;
mod complete;
mod engine;
mod error_text;
mod exit;
mod health;
mod identity;
mod kube_context;
mod logging;
mod mirror;
mod output;
mod reconcile;
mod render;
mod rollout;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `kubectl_complete-gitops` asks for completions with the raw words typed so far; they are
    // not a command line to parse (the last one is unfinished).
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|first| first == complete::COMMAND) {
        let words: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
        return run_completion(&words);
    }
    let cli = cli::Cli::parse();
    match &cli.command {
        cli::Command::Agent(args) => logging::init_agent(args.log_format),
        _ => logging::init_cli(),
    }
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

/// Answers `kubectl-gitops __complete WORDS…`; never fails loudly, a shell is waiting.
fn run_completion(words: &[String]) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return exit::Code::Failure.into();
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match runtime
        .block_on(complete::run(words, &mut out))
        .and_then(|()| out.flush())
    {
        Ok(()) => exit::Code::Success.into(),
        Err(_) => exit::Code::Failure.into(),
    }
}
