//! `kubectl gitops verify`: before pushing, check that manifests load and validate with the same
//! code a sync uses: a working tree, or a commit of a repository. A Helm chart or a Kustomize
//! overlay (a source `kubectl gitops hydrate` renders) is rendered as hydration would, and its
//! output checked.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use shared::manifest::{self, Manifest};

use crate::exit::Code;
use crate::render;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    kubectl gitops verify apps/web\n  \
    kubectl gitops verify --commit HEAD --repo . apps/web
  \
    kubectl gitops verify charts/web --helm-values values-prod.yaml
  \
    kubectl gitops verify kustomize/overlays/prod")]
pub struct VerifyArgs {
    /// Directory of manifests (in the working tree, or in the repository with --commit).
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Check this commit of the repository instead of the working tree.
    #[arg(long, value_name = "REV")]
    pub commit: Option<String>,
    /// The repository for --commit: a local directory or URL.
    #[arg(long, default_value = ".", value_name = "REPO")]
    pub repo: String,
    /// A chart's values file, relative to the chart (repeatable; later ones win).
    #[arg(long = "helm-values", value_name = "FILE")]
    pub helm_values: Vec<String>,
    #[command(flatten)]
    pub tools: render::Tools,
}

pub fn run(args: VerifyArgs, out: &mut dyn Write) -> anyhow::Result<Code> {
    if let Some(code) = verify_source(&args, out)? {
        return Ok(code);
    }
    let files = match &args.commit {
        None => read_tree(&args.path)?,
        Some(rev) => read_commit(&args.repo, rev, &args.path)?,
    };
    let manifests: Vec<Manifest> =
        manifest::load_app(files.iter().map(|(p, c)| (p.as_str(), c.as_slice())))?;
    for m in &manifests {
        writeln!(out, "{}\t{} {}", m.location(), m.api_version(), m.key())?;
    }
    eprintln!(
        "{} object(s) in {} file(s): valid",
        manifests.len(),
        files.len()
    );
    Ok(Code::Success)
}

/// A chart or an overlay: rendered (from the working tree, or a checkout of --commit) and its
/// output checked. `None` for plain manifests.
fn verify_source(args: &VerifyArgs, out: &mut dyn Write) -> anyhow::Result<Option<Code>> {
    let source = args.path.to_string_lossy().into_owned();
    let checkout;
    let root: &Path = match &args.commit {
        None => Path::new("."),
        Some(rev) => {
            let repository = gix_open(&args.repo)?;
            let id = repository
                .rev_parse_single(rev.as_str())
                .with_context(|| format!("{rev} is not a revision of {}", args.repo))?
                .detach();
            checkout = crate::cmd::hydrate::checkout(&repository, &args.repo, id)?;
            checkout.path()
        }
    };
    if render::Kind::of(&root.join(&args.path)) == render::Kind::Plain {
        return Ok(None);
    }
    let helm = (!args.helm_values.is_empty()).then(|| shared::app::HelmSource {
        value_files: args.helm_values.clone(),
        ..Default::default()
    });
    let location = format!("{source} (rendered).yaml");
    let rendered = render::render(
        &args.tools,
        root,
        &source,
        "verify",
        "default",
        helm.as_ref(),
        &location,
    )?;
    let manifests = manifest::load_app([(location.as_str(), rendered.manifest.as_bytes())])?;
    for m in &manifests {
        writeln!(out, "{}\t{} {}", m.location(), m.api_version(), m.key())?;
    }
    eprintln!(
        "{} object(s) rendered from {source} by {}: valid",
        manifests.len(),
        rendered.renderer
    );
    Ok(Some(Code::Success))
}

fn read_tree(root: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_owned()];
    if root.is_file() {
        let contents =
            std::fs::read(root).with_context(|| format!("cannot read {}", root.display()))?;
        return Ok(vec![(root.display().to_string(), contents)]);
    }
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read directory {}", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("cannot read directory {}", dir.display()))?
                .path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if manifest::is_manifest_file(&path.to_string_lossy()) {
                let contents = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let shown = path
                    .strip_prefix(root)
                    .map(|p| root.join(p))
                    .unwrap_or(path.clone());
                files.push((shown.display().to_string(), contents));
            }
        }
    }
    Ok(files)
}

fn read_commit(repo: &str, rev: &str, path: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let repository = gix_open(repo)?;
    let id = repository
        .rev_parse_single(rev)
        .with_context(|| format!("{rev} is not a revision of {repo}"))?
        .detach();
    let dir = shared::git::normalise_path(&path.to_string_lossy());
    let files = shared::git::files_at(&repository, repo, id, &dir)
        .with_context(|| format!("cannot read {} at {rev}", path.display()))?;
    Ok(files.into_iter().map(|f| (f.path, f.contents)).collect())
}

fn gix_open(repo: &str) -> anyhow::Result<shared::git::Repository> {
    shared::git::open_local(repo).with_context(|| format!("{repo} is not a Git repository"))
}
