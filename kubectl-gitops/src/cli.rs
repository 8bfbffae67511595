//! Command-line surface of `kubectl gitops`.

use std::io::Write;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use kube::CustomResourceExt as _;

use crate::cmd;
use crate::exit;
use crate::kube_context::KubeArgs;

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
    #[command(flatten)]
    pub kube: KubeArgs,
    /// How long an HTTP(S) Git remote may stay silent (connecting, answering, between two reads
    /// of a pack) before a fetch fails; what was fetched before stays in force.
    #[arg(long, global = true, default_value = "30s", value_name = "DURATION",
          value_parser = cmd::sync::parse_duration)]
    pub git_timeout: std::time::Duration,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage app definitions: which repository, branch and path a namespace is synced from.
    #[command(subcommand)]
    App(cmd::app::AppCommand),
    /// Manage projects (cluster admins): which repositories and branches may write where.
    #[command(subcommand)]
    Project(cmd::project::ProjectCommand),
    /// Apply what the protected branch declares, stamped with the commit it came from.
    Sync(cmd::sync::SyncArgs),
    /// Show what a sync would change, as a unified diff (exit 0 same, 1 different, 2 error).
    Diff(cmd::diff::DiffArgs),
    /// Show, per app, the synced commit against the branch head, drift, health and last result.
    Status(cmd::status::StatusArgs),
    /// Show the recorded syncs of an app.
    History(cmd::history::HistoryArgs),
    /// See and steer canary rollouts: list, status, get, promote, pause, resume, abort, undo.
    #[command(subcommand)]
    Rollout(cmd::rollout::RolloutCommand),
    /// Show the writes the admission webhook refused, warned about or admitted by break-glass.
    Audit(cmd::audit::AuditArgs),
    /// Render an app's Helm chart, Kustomize overlay or plain manifests from its source branch
    /// and commit the result to its path on the protected branch (or a branch for review).
    Hydrate(cmd::hydrate::HydrateArgs),
    /// Check that manifests load and validate, in a working tree or at a commit.
    Verify(cmd::verify::VerifyArgs),
    /// Serve a local web page of apps, drift, refused writes and rollouts (loopback, your RBAC).
    Dashboard(cmd::dashboard::DashboardArgs),
    /// Reconcile every app on its interval and on request (runs in the cluster; one leader).
    Agent(cmd::agent::AgentArgs),
    /// Print the CustomResourceDefinitions: App, Project, Canary and AuditRecord.
    #[command(after_help = "Examples:\n  \
        kubectl gitops crd | kubectl apply -f -\n  \
        kubectl gitops crd auditrecords")]
    Crd {
        /// Print only this one.
        #[arg(value_enum)]
        only: Option<CrdName>,
    },
    /// Print the version of kubectl gitops and the provenance annotations it writes.
    #[command(after_help = "Examples:\n  kubectl gitops version")]
    Version,
    /// Print a shell completion script, or the kubectl_complete-gitops script through which
    /// kubectl's own completion completes `kubectl gitops …` (kubectl 1.26 and later).
    #[command(after_help = "Examples:\n  \
        source <(kubectl gitops completion bash)\n  \
        kubectl gitops completion zsh > \"${fpath[1]}/_kubectl-gitops\"\n  \
        kubectl gitops completion kubectl-plugin > ~/.local/bin/kubectl_complete-gitops\n  \
        chmod +x ~/.local/bin/kubectl_complete-gitops")]
    Completion {
        /// The shell to complete for, or kubectl-plugin: the executable kubectl runs from PATH
        /// to complete `kubectl gitops …`.
        target: CompletionTarget,
    },
}

/// What `completion` prints a script for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompletionTarget {
    Bash,
    Elvish,
    Fish,
    Powershell,
    Zsh,
    /// `kubectl_complete-gitops`, for kubectl's own completion.
    KubectlPlugin,
}

/// The project's CustomResourceDefinitions, by plural name.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CrdName {
    Apps,
    Projects,
    Canaries,
    Auditrecords,
}

pub async fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<exit::Code> {
    match cli.command {
        Command::Version => {
            writeln!(out, "kubectl-gitops {}", env!("CARGO_PKG_VERSION"))?;
            writeln!(out, "provenance annotations:")?;
            for key in shared::provenance::ANNOTATIONS {
                writeln!(out, "  {key}")?;
            }
            Ok(exit::Code::Success)
        }
        Command::Completion { target } => {
            let shell = match target {
                CompletionTarget::Bash => Shell::Bash,
                CompletionTarget::Elvish => Shell::Elvish,
                CompletionTarget::Fish => Shell::Fish,
                CompletionTarget::Powershell => Shell::PowerShell,
                CompletionTarget::Zsh => Shell::Zsh,
                CompletionTarget::KubectlPlugin => {
                    write!(out, "{}", crate::complete::KUBECTL_PLUGIN_SHIM)?;
                    return Ok(exit::Code::Success);
                }
            };
            // kubectl looks plugins up as `kubectl-gitops`; the completion is for that command.
            clap_complete::generate(shell, &mut Cli::command(), "kubectl-gitops", out);
            Ok(exit::Code::Success)
        }
        Command::Crd { only } => {
            let app = serde_saphyr::to_string(&shared::app::App::crd())?;
            let project = serde_saphyr::to_string(&shared::project::Project::crd())?;
            let canary = serde_saphyr::to_string(&shared::canary::Canary::crd())?;
            let audit = serde_saphyr::to_string(&shared::audit::AuditRecord::crd())?;
            match only {
                Some(CrdName::Apps) => write!(out, "{app}")?,
                Some(CrdName::Projects) => write!(out, "{project}")?,
                Some(CrdName::Canaries) => write!(out, "{canary}")?,
                Some(CrdName::Auditrecords) => write!(out, "{audit}")?,
                None => write!(out, "{app}---\n{project}---\n{canary}---\n{audit}")?,
            }
            Ok(exit::Code::Success)
        }
        Command::Verify(args) => cmd::verify::run(args, out),
        Command::Hydrate(args) => cmd::hydrate::run(args, &cli.kube, out).await,
        Command::App(command) => cmd::app::run(command, &cli.kube.connect().await?, out).await,
        Command::Project(command) => {
            cmd::project::run(command, &cli.kube.connect().await?, out).await
        }
        Command::Agent(args) => cmd::agent::run(args, &cli.kube).await,
        Command::Dashboard(args) => cmd::dashboard::run(args, &cli.kube, out).await,
        Command::Diff(args) => Ok(cmd::diff::run(args, &cli.kube, out).await),
        Command::Sync(args) => cmd::sync::run(args, &cli.kube.connect().await?, out).await,
        Command::Status(args) => cmd::status::run(args, &cli.kube.connect().await?, out).await,
        Command::Audit(args) => cmd::audit::run(args, &cli.kube.connect().await?, out).await,
        Command::Rollout(command) => {
            cmd::rollout::run(command, &cli.kube.connect().await?, out).await
        }
        Command::History(args) => cmd::history::run(args, &cli.kube.connect().await?, out).await,
    }
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
        assert!(
            help.contains("Usage: kubectl gitops [OPTIONS] <COMMAND>"),
            "{help}"
        );
        assert!(help.contains("2  usage error"), "{help}");
    }

    #[tokio::test]
    async fn version_lists_every_provenance_annotation() {
        let mut out = Vec::new();
        let cli = Cli::parse_from(["kubectl-gitops", "version"]);
        let code = run(cli, &mut out).await.expect("writing to a Vec");
        let text = String::from_utf8(out).expect("utf-8 output");
        assert_eq!(code, exit::Code::Success);
        for key in shared::provenance::ANNOTATIONS {
            assert!(text.contains(key), "{key} missing from {text}");
        }
    }
}
