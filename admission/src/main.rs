//! `admission`: the validating admission webhook of kubectl-gitops. `main` only parses, runs and
//! maps the outcome to an exit code.

mod tls;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the command failed (the reason is printed on stderr)
  2  usage error: unknown command, flag or value";

/// Validating admission webhook: refuses every write to a GitOps-managed object that is not
/// traceable to a commit on the protected branch.
#[derive(Debug, Parser)]
#[command(name = "admission", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load a serving certificate and key as the webhook would at start, and report what is wrong.
    CheckTls {
        /// PEM certificate chain, leaf first.
        #[arg(long, value_name = "FILE")]
        tls_cert_file: PathBuf,
        /// PEM private key (PKCS#8, PKCS#1 or SEC1) for the leaf certificate.
        #[arg(long, value_name = "FILE")]
        tls_key_file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckTls {
            tls_cert_file,
            tls_key_file,
        } => match tls::load_server_config(&tls_cert_file, &tls_key_file) {
            Ok(_) => {
                eprintln!(
                    "{} and {} form a usable serving identity",
                    tls_cert_file.display(),
                    tls_key_file.display()
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {}", tls::report(&err));
                ExitCode::FAILURE
            }
        },
    }
}
