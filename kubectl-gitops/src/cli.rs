//! Command-line surface of `kubectl gitops`.

use std::io::{self, Write};

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

use crate::exit;

/// Keep a Kubernetes cluster in sync with a protected Git branch, and see what is live, from which
/// commit, and what differs.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-gitops",
    bin_name = "kubectl gitops",
    version,
    after_help = exit::HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version of kubectl gitops and the provenance annotations it writes.
    #[command(after_help = "Examples:\n  kubectl gitops version")]
    Version,
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  \
        source <(kubectl gitops completion bash)\n  \
        kubectl gitops completion zsh > \"${fpath[1]}/_kubectl-gitops\"")]
    Completion {
        /// The shell to complete for.
        shell: Shell,
    },
}

pub fn run(cli: Cli, out: &mut dyn Write) -> io::Result<exit::Code> {
    match cli.command {
        Command::Version => {
            writeln!(out, "kubectl-gitops {}", env!("CARGO_PKG_VERSION"))?;
            writeln!(out, "provenance annotations:")?;
            for key in shared::provenance::ANNOTATIONS {
                writeln!(out, "  {key}")?;
            }
        }
        Command::Completion { shell } => {
            // kubectl looks plugins up as `kubectl-gitops`; the completion is for that command.
            clap_complete::generate(shell, &mut Cli::command(), "kubectl-gitops", out);
        }
    }
    Ok(exit::Code::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_reads_as_the_user_types_it() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Usage: kubectl gitops <COMMAND>"), "{help}");
        assert!(help.contains("2  usage error"), "{help}");
    }

    #[test]
    fn version_lists_every_provenance_annotation() {
        let mut out = Vec::new();
        let code = run(
            Cli {
                command: Command::Version,
            },
            &mut out,
        )
        .expect("writing to a Vec");
        let text = String::from_utf8(out).expect("utf-8 output");
        assert_eq!(code, exit::Code::Success);
        for key in shared::provenance::ANNOTATIONS {
            assert!(text.contains(key), "{key} missing from {text}");
        }
    }
}
