//! `kubectl gitops app add|list|get|delete`: manage app definitions.

use std::io::Write;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt as _};
use shared::app::{App, AppSpec, HelmSource, HydrateSource};

use crate::exit::Code;
use crate::kube_context::KubeContext;
use crate::output::{self, Format};

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Define an app: a repository, branch and path synced into a namespace.
    #[command(after_help = "Examples:\n  \
        kubectl gitops app add web --repo https://git.example.com/shop.git --path apps/web --prune\n  \
        kubectl gitops app add web -n shop --repo file:///srv/git/shop.git --branch production --project shop")]
    Add(Box<AddArgs>),
    /// List apps.
    List(ListArgs),
    /// Show one app definition and its status.
    Get {
        name: String,
        #[arg(short = 'o', long, value_enum, default_value = "yaml")]
        output: Format,
    },
    /// Delete an app definition. The objects it synced stay in the cluster, guarded by the
    /// webhook; an app defined again under that name takes over only what its Git declares.
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Name of the app.
    pub name: String,
    /// Repository URL (file://, http:// or https://).
    #[arg(long)]
    pub repo: String,
    /// The protected branch.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Directory of the rendered manifests in the repository.
    #[arg(long, default_value = ".")]
    pub path: String,
    /// Namespace for namespaced objects that name none (default: the app's namespace).
    #[arg(long, value_name = "NAMESPACE")]
    pub destination_namespace: Option<String>,
    /// Delete objects that leave the branch.
    #[arg(long)]
    pub prune: bool,
    /// Seconds between reconciliations by the agent.
    #[arg(long, default_value_t = 180)]
    #[arg(value_parser = clap::value_parser!(i32).range(1..))]
    pub interval: i32,
    /// The project (cluster admins define it) that permits this app's repository, branch and
    /// destination; its credentials Secret fetches private repositories.
    #[arg(long, default_value = shared::project::DEFAULT_PROJECT)]
    pub project: String,
    /// Branch holding the source that `kubectl gitops hydrate` renders into --path (a Helm
    /// chart, a Kustomize overlay or plain manifests).
    #[arg(long, value_name = "BRANCH", requires = "source_path")]
    pub source_branch: Option<String>,
    /// Directory of that source on --source-branch.
    #[arg(long, value_name = "DIR", requires = "source_branch")]
    pub source_path: Option<String>,
    /// Helm values file of the chart, relative to it (repeatable; later ones win).
    #[arg(long = "helm-values", value_name = "FILE", requires = "source_path")]
    pub helm_values: Vec<String>,
    /// Helm release name (default: the app's name).
    #[arg(long, value_name = "NAME", requires = "source_path")]
    pub helm_release: Option<String>,
    /// The version the chart must have; another version is refused rather than rendered.
    #[arg(long, value_name = "VERSION", requires = "source_path")]
    pub chart_version: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// List apps in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Format,
}

pub async fn run(
    command: AppCommand,
    ctx: &KubeContext,
    out: &mut dyn Write,
) -> anyhow::Result<Code> {
    let apps: Api<App> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    match command {
        AppCommand::Add(args) => {
            let args = *args;
            let app = App::new(
                &args.name,
                AppSpec {
                    repo_url: args.repo,
                    branch: args.branch,
                    path: args.path,
                    destination_namespace: args.destination_namespace,
                    prune: args.prune,
                    interval_seconds: args.interval,
                    project: args.project,
                    hydrate: args.source_branch.map(|source_branch| HydrateSource {
                        source_branch,
                        source_path: args.source_path.unwrap_or_default(),
                        helm: (!args.helm_values.is_empty()
                            || args.helm_release.is_some()
                            || args.chart_version.is_some())
                        .then_some(HelmSource {
                            release_name: args.helm_release,
                            value_files: args.helm_values,
                            version: args.chart_version,
                            skip_crds: false,
                        }),
                    }),
                },
            );
            let mut app = app;
            app.metadata.namespace = Some(ctx.namespace.clone());
            crate::engine::check_app(&app)?;
            apps.create(&PostParams::default(), &app)
                .await
                .with_context(|| format!("cannot create app {}/{}", ctx.namespace, args.name))?;
            writeln!(out, "app {}/{} created", ctx.namespace, args.name)?;
        }
        AppCommand::List(args) => {
            let list = if args.all_namespaces {
                Api::<App>::all(ctx.client.clone())
                    .list(&ListParams::default())
                    .await
            } else {
                apps.list(&ListParams::default()).await
            }
            .context("cannot list apps")?;
            match args.output {
                Format::Table | Format::Wide => {
                    let rows: Vec<Vec<String>> = list
                        .items
                        .iter()
                        .map(|a| {
                            let mut row = vec![];
                            if args.all_namespaces {
                                row.push(a.namespace().unwrap_or_default());
                            }
                            row.extend([
                                a.name_any(),
                                a.spec.repo_url.clone(),
                                a.spec.branch.clone(),
                                a.spec.path.clone(),
                                a.spec.project.clone(),
                            ]);
                            row
                        })
                        .collect();
                    let mut headers = vec![];
                    if args.all_namespaces {
                        headers.push("NAMESPACE");
                    }
                    headers.extend(["NAME", "REPOSITORY", "BRANCH", "PATH", "PROJECT"]);
                    output::table(out, &headers, &rows)?;
                }
                format => output::structured(out, format, &list.items)?,
            }
        }
        AppCommand::Get {
            name,
            output: format,
        } => {
            let app = apps
                .get(&name)
                .await
                .with_context(|| format!("cannot read app {}/{name}", ctx.namespace))?;
            output::structured(out, format, &app)?;
        }
        AppCommand::Delete { name } => {
            apps.delete(&name, &DeleteParams::default())
                .await
                .with_context(|| format!("cannot delete app {}/{name}", ctx.namespace))?;
            writeln!(
                out,
                "app {}/{name} deleted; the objects it synced stay in the cluster, guarded (an app defined again under this name takes over only what its Git declares)",
                ctx.namespace
            )?;
        }
    }
    Ok(Code::Success)
}
