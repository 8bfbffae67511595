//! `kubectl gitops project add|list|get|delete`: the projects cluster admins define, which say
//! which repositories and branches may write into which namespaces.

use std::io::Write;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt as _};
use shared::project::{
    ConnectPolicy, Enforcement, KindPattern, KindRules, Project, ProjectSpec, SecretRef,
    ServiceAccountRef, SourceRule,
};
use shared::signature::{Keyring, SignatureMode, SignaturePolicy};

use crate::exit::Code;
use crate::kube_context::KubeContext;
use crate::output::{self, Format};

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Define a project (cluster-scoped): where its apps may sync from, write to and live.
    #[command(after_help = "Examples:\n  \
        kubectl gitops project add shop --repo 'https://git.example.com/shop/*' --destination 'shop-*'\n  \
        kubectl gitops project add shop --repo 'https://git.example.com/shop/*' --branch main --branch 'release-*' \\\n      \
        --repo '!https://git.example.com/shop/sandbox' --destination shop --app-namespace gitops-apps \\\n      \
        --allow-cluster-kind ClusterRole.rbac.authorization.k8s.io --deny-kind ResourceQuota --warn \\\n      \
        --sync-service-account gitops-sync\n  \
        kubectl gitops project add default --repo 'file:///srv/git/**' --destination '*' --overwrite")]
    Add(Box<AddArgs>),
    /// List projects.
    List {
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Show one project.
    Get {
        name: String,
        #[arg(short = 'o', long, value_enum, default_value = "yaml")]
        output: Format,
    },
    /// Delete a project. Its apps are refused (and their objects stay guarded) until it exists
    /// again.
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Name of the project (Apps name it in spec.project).
    pub name: String,
    /// Repository URL pattern its apps may sync from (`*` any run of characters within a path
    /// segment, `**` across segments); `!PATTERN` denies. Repeat for several.
    #[arg(long = "repo", value_name = "PATTERN", required = true)]
    pub repos: Vec<String>,
    /// Branch pattern its apps may name as the protected branch, for every --repo (default:
    /// main); `!PATTERN` denies. Repeat for several.
    #[arg(long = "branch", value_name = "PATTERN")]
    pub branches: Vec<String>,
    /// Namespace pattern its apps may write into; `!PATTERN` denies. Repeat for several.
    #[arg(long = "destination", value_name = "PATTERN", required = true)]
    pub destinations: Vec<String>,
    /// Namespace pattern where its Apps may be defined (default: the destinations).
    #[arg(long = "app-namespace", value_name = "PATTERN")]
    pub app_namespaces: Vec<String>,
    /// Namespaced kind its apps may create (Kind, Kind.group or *; default: every kind).
    #[arg(long = "allow-kind", value_name = "KIND", value_parser = KindPattern::parse)]
    pub allow_kinds: Vec<KindPattern>,
    /// Namespaced kind its apps may not create.
    #[arg(long = "deny-kind", value_name = "KIND", value_parser = KindPattern::parse)]
    pub deny_kinds: Vec<KindPattern>,
    /// Cluster-scoped kind its apps may create (default: none).
    #[arg(long = "allow-cluster-kind", value_name = "KIND", value_parser = KindPattern::parse)]
    pub allow_cluster_kinds: Vec<KindPattern>,
    /// Cluster-scoped kind its apps may not create.
    #[arg(long = "deny-cluster-kind", value_name = "KIND", value_parser = KindPattern::parse)]
    pub deny_cluster_kinds: Vec<KindPattern>,
    /// Only warn about (and record) writes to its apps' objects that Git does not explain.
    #[arg(long)]
    pub warn: bool,
    /// Allow exec, attach, port-forward and proxy into pods of its namespaces (always recorded).
    #[arg(long)]
    pub allow_connect: bool,
    /// Secret (NAMESPACE/NAME) with `username` and `password` for its HTTPS repositories.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_secret)]
    pub credentials_secret: Option<SecretRef>,
    /// Service account the in-cluster agent writes its apps' objects as (impersonated): NAME in
    /// each app's destination namespace, or NAMESPACE/NAME. Without it the agent does not sync
    /// the project's apps.
    #[arg(long, value_name = "[NAMESPACE/]NAME", value_parser = ServiceAccountRef::parse)]
    pub sync_service_account: Option<ServiceAccountRef>,
    /// Require signed commits: `head` (the commit synced, and stamped on every write) or
    /// `strict` (every commit after --seal-commit). Keys from --ssh-allowed-signers and
    /// --openpgp-key.
    #[arg(long, value_name = "MODE", value_enum)]
    pub require_signatures: Option<SignatureModeArg>,
    /// Strict mode: the last commit not required to be signed (full id).
    #[arg(long, value_name = "SHA", requires = "require_signatures")]
    pub seal_commit: Option<String>,
    /// File of trusted SSH keys in OpenSSH's allowed_signers format (ssh-keygen(1)).
    #[arg(long, value_name = "FILE", requires = "require_signatures")]
    pub ssh_allowed_signers: Option<std::path::PathBuf>,
    /// File with a trusted ASCII-armored OpenPGP public key (gpg --export --armor). Repeat for
    /// several.
    #[arg(
        long = "openpgp-key",
        value_name = "FILE",
        requires = "require_signatures"
    )]
    pub openpgp_keys: Vec<std::path::PathBuf>,
    /// What the project is for.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Replace a project of that name.
    #[arg(long)]
    pub overwrite: bool,
}

/// `--require-signatures`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SignatureModeArg {
    Head,
    Strict,
}

fn parse_secret(text: &str) -> Result<SecretRef, String> {
    match text.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => Ok(SecretRef {
            namespace: namespace.into(),
            name: name.into(),
        }),
        _ => Err(format!("{text:?} is not NAMESPACE/NAME")),
    }
}

impl AddArgs {
    fn spec(self) -> anyhow::Result<ProjectSpec> {
        for repo in &self.repos {
            let pattern = repo.strip_prefix('!').unwrap_or(repo);
            if !pattern.contains("://") {
                anyhow::bail!(
                    "--repo {repo:?} is not a URL pattern (file://, http:// or https://, `*` for any run of characters)"
                );
            }
        }
        let signatures = match self.require_signatures {
            None => None,
            Some(mode) => {
                let read = |file: &std::path::Path| {
                    std::fs::read_to_string(file)
                        .with_context(|| format!("cannot read {}", file.display()))
                };
                let policy = SignaturePolicy {
                    mode: match mode {
                        SignatureModeArg::Head => SignatureMode::Head,
                        SignatureModeArg::Strict => SignatureMode::Strict,
                    },
                    seal_commit: self.seal_commit.clone(),
                    ssh_allowed_signers: match &self.ssh_allowed_signers {
                        Some(file) => read(file)?,
                        None => String::new(),
                    },
                    openpgp_keys: self
                        .openpgp_keys
                        .iter()
                        .map(|f| read(f))
                        .collect::<anyhow::Result<_>>()?,
                };
                if policy.ssh_allowed_signers.trim().is_empty() && policy.openpgp_keys.is_empty() {
                    anyhow::bail!(
                        "--require-signatures needs trusted keys: --ssh-allowed-signers FILE or --openpgp-key FILE"
                    );
                }
                Keyring::from_policy(&policy)
                    .map_err(|e| anyhow::anyhow!("project {}: {e}", self.name))?;
                Some(policy)
            }
        };
        Ok(ProjectSpec {
            description: self.description,
            sources: self
                .repos
                .into_iter()
                .map(|repo| SourceRule {
                    branches: if repo.starts_with('!') {
                        Vec::new()
                    } else {
                        self.branches.clone()
                    },
                    repo,
                })
                .collect(),
            destinations: self.destinations,
            app_namespaces: self.app_namespaces,
            namespaced_kinds: KindRules {
                allow: self.allow_kinds,
                deny: self.deny_kinds,
            },
            cluster_kinds: KindRules {
                allow: self.allow_cluster_kinds,
                deny: self.deny_cluster_kinds,
            },
            enforcement: if self.warn {
                Enforcement::Warn
            } else {
                Enforcement::Enforce
            },
            connect: if self.allow_connect {
                ConnectPolicy::Allow
            } else {
                ConnectPolicy::Deny
            },
            credentials_secret: self.credentials_secret,
            sync_service_account: self.sync_service_account,
            signatures,
        })
    }
}

pub async fn run(
    command: ProjectCommand,
    ctx: &KubeContext,
    out: &mut dyn Write,
) -> anyhow::Result<Code> {
    let projects: Api<Project> = Api::all(ctx.client.clone());
    match command {
        ProjectCommand::Add(args) => {
            let args = *args;
            let name = args.name.clone();
            let overwrite = args.overwrite;
            let mut project = Project::new(&name, args.spec()?);
            let existing = projects
                .get_opt(&name)
                .await
                .with_context(|| format!("cannot read project {name}"))?;
            if let (true, Some(existing)) = (overwrite, existing) {
                // The whole spec is replaced, whoever wrote the fields before.
                project.metadata = existing.metadata;
                projects
                    .replace(&name, &PostParams::default(), &project)
                    .await
                    .with_context(|| format!("cannot write project {name}"))?;
                writeln!(out, "project {name} configured")?;
            } else {
                projects
                    .create(&PostParams::default(), &project)
                    .await
                    .with_context(|| {
                        format!("cannot create project {name} (--overwrite replaces one)")
                    })?;
                writeln!(out, "project {name} created")?;
            }
        }
        ProjectCommand::List { output: format } => {
            let list = projects
                .list(&ListParams::default())
                .await
                .context("cannot list projects")?;
            match format {
                Format::Table | Format::Wide => {
                    let join = |items: &[String]| {
                        if items.is_empty() {
                            "<none>".to_owned()
                        } else {
                            items.join(",")
                        }
                    };
                    let rows: Vec<Vec<String>> = list
                        .items
                        .iter()
                        .map(|p| {
                            let repos: Vec<String> =
                                p.spec.sources.iter().map(|s| s.repo.clone()).collect();
                            let mut row = vec![
                                p.name_any(),
                                join(&repos),
                                join(&p.spec.destinations),
                                format!("{:?}", p.spec.enforcement),
                            ];
                            if format == Format::Wide {
                                let kinds: Vec<String> = p
                                    .spec
                                    .cluster_kinds
                                    .allow
                                    .iter()
                                    .map(ToString::to_string)
                                    .collect();
                                row.extend([
                                    join(&p.spec.app_namespaces),
                                    join(&kinds),
                                    format!("{:?}", p.spec.connect),
                                    p.spec
                                        .sync_service_account
                                        .as_ref()
                                        .map_or("<none>".into(), ToString::to_string),
                                ]);
                            }
                            row
                        })
                        .collect();
                    let mut headers = vec!["NAME", "REPOSITORIES", "DESTINATIONS", "ENFORCEMENT"];
                    if format == Format::Wide {
                        headers.extend([
                            "APP NAMESPACES",
                            "CLUSTER KINDS",
                            "CONNECT",
                            "SYNC ACCOUNT",
                        ]);
                    }
                    output::table(out, &headers, &rows)?;
                }
                format => output::structured(out, format, &list.items)?,
            }
        }
        ProjectCommand::Get {
            name,
            output: format,
        } => {
            let project = projects
                .get(&name)
                .await
                .with_context(|| format!("cannot read project {name}"))?;
            output::structured(out, format, &project)?;
        }
        ProjectCommand::Delete { name } => {
            projects
                .delete(&name, &DeleteParams::default())
                .await
                .with_context(|| format!("cannot delete project {name}"))?;
            writeln!(
                out,
                "project {name} deleted; its apps are refused until it exists again"
            )?;
        }
    }
    Ok(Code::Success)
}
