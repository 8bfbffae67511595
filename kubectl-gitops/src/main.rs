//! `kubectl gitops`: the kubectl plugin. `main` only parses, runs and maps the outcome to an exit
//! code; each verb lives in its own module.

mod cli;
mod exit;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = cli::run(cli, &mut out).and_then(|code| out.flush().map(|()| code));
    match result {
        Ok(code) => code.into(),
        // A closed pipe (`kubectl gitops … | head`) is the reader's choice, not an error.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => exit::Code::Success.into(),
        Err(err) => {
            eprintln!("error: {err}");
            exit::Code::Failure.into()
        }
    }
}
