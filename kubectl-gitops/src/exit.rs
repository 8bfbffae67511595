//! The exit codes of `kubectl gitops`: a documented contract for scripts and pipelines.

use std::process::ExitCode;

/// How `kubectl gitops` ends. Usage errors exit with 2, as clap reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The command did what was asked (`diff`: Git and the cluster agree).
    Success,
    /// The command failed; the reason is on stderr.
    Failure,
    /// `diff`: a sync would change the cluster.
    Differs,
    /// `diff`: the comparison itself failed (like `diff(1)` and `kubectl diff`).
    DiffTrouble,
}

impl Code {
    pub fn value(self) -> u8 {
        match self {
            Code::Success => 0,
            Code::Failure | Code::Differs => 1,
            Code::DiffTrouble => 2,
        }
    }
}

/// The text `--help` shows, kept next to the codes it documents.
pub const HELP: &str = "\
Exit codes:
  0  success; for diff: no difference
  1  the command failed (the reason is printed on stderr); for diff: differences found
  2  usage error: unknown command, flag or value; for diff: the diff could not be made";

impl From<Code> for ExitCode {
    fn from(code: Code) -> Self {
        ExitCode::from(code.value())
    }
}

/// Prints an error on stderr: what the apiserver said as kubectl prints it, then the context; or
/// a headline followed by its causes (see [`crate::error_text`]).
pub fn report(err: &anyhow::Error) {
    for line in crate::error_text::lines(err.as_ref()) {
        eprintln!("{line}");
    }
}
