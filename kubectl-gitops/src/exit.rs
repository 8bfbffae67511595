//! The exit codes of `kubectl gitops`: a documented contract for scripts and pipelines.

use std::process::ExitCode;

/// How `kubectl gitops` ends. Usage errors exit with 2, as clap reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The command did what was asked.
    Success = 0,
    /// The command failed; the reason is on stderr.
    Failure = 1,
}

/// The text `--help` shows, kept next to the codes it documents.
pub const HELP: &str = "\
Exit codes:
  0  success
  1  the command failed (the reason is printed on stderr)
  2  usage error: unknown command, flag or value";

impl From<Code> for ExitCode {
    fn from(code: Code) -> Self {
        ExitCode::from(code as u8)
    }
}
