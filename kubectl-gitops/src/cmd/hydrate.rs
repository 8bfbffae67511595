//! `kubectl gitops hydrate`: render an app's source (a Helm chart, a Kustomize overlay or plain
//! manifests on its source branch) at one source commit and commit the result to the app's path
//! on the protected branch, or on a branch for a pull request. The protected branch then holds
//! exactly what the cluster runs, which is what the webhook compares writes with.
//!
//! One hydrated commit per source commit: its trailers name the source commit, path and renderer,
//! and a README beside the manifests says how to reproduce them. Output is deterministic (the
//! renderer's order, normalised separators), so hydrating the same source commit again changes
//! nothing. With a signing key the commit is signed (SSH), so a project that requires signed
//! commits admits what the hydrator wrote.
//!
//! It works on a local repository (a clone in CI, or by hand) and moves a local branch; pushing is
//! `git push`, under the pusher's own credentials and the forge's branch protection.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use gix::ObjectId;
use kube::{Api, ResourceExt as _};
use shared::app::App;
use shared::project::Project;
use similar::TextDiff;

use crate::exit::Code;
use crate::kube_context::KubeArgs;
use crate::render::{self, Tools};

/// Trailer naming the source commit a hydrated commit was rendered from.
pub const TRAILER_FROM: &str = "Hydrated-From";
/// Trailer naming the source branch and path.
pub const TRAILER_SOURCE: &str = "Hydrated-Source";
/// Trailer naming the renderer and its version.
pub const TRAILER_RENDERER: &str = "Hydrated-Renderer";

/// The file the rendered objects are written to, in the app's path.
pub const MANIFEST_FILE: &str = "manifest.yaml";
/// The generated README in the app's path.
pub const README_FILE: &str = "README.md";

const DEFAULT_COMMITTER: &str = "kubectl-gitops hydrate <hydrate@kubectl-gitops.dev>";

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    kubectl gitops hydrate web --dry-run\n  \
    kubectl gitops hydrate web --signing-key ~/.ssh/hydrator && git push origin main\n  \
    kubectl gitops hydrate -f apps/web.yaml --to-branch hydrate/web --source 3f2a9c1\n\n\
    The app's spec.hydrate names the source branch and path (kubectl gitops app add \
    --source-branch --source-path). Renderers: helm (Chart.yaml), kubectl's built-in kustomize \
    (kustomization.yaml), or plain manifests.")]
pub struct HydrateArgs {
    /// Name of the app, read from the cluster (or use -f).
    #[arg(required_unless_present = "filename", conflicts_with = "filename")]
    pub name: Option<String>,
    /// Read the App from this manifest file instead of the cluster (CI without cluster access).
    #[arg(short = 'f', long, value_name = "FILE")]
    pub filename: Option<PathBuf>,
    /// The local Git repository (a clone holding the source branch).
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub repo: PathBuf,
    /// Source commit to render (default: the tip of the source branch, local or origin's).
    #[arg(long, value_name = "REV")]
    pub source: Option<String>,
    /// Commit to this branch instead of the app's protected branch, e.g. for a pull request.
    /// A new branch starts at the protected branch.
    #[arg(long, value_name = "BRANCH")]
    pub to_branch: Option<String>,
    /// Print what would change as a diff, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Push the branch to the app's repository (`git push`, with your Git credentials); it is
    /// refused when the branch moved there meanwhile: fetch and hydrate again.
    #[arg(long, conflicts_with = "dry_run")]
    pub push: bool,
    /// Sign the commit with this OpenSSH private key (as `git commit -S` with gpg.format=ssh).
    #[arg(long, env = "KUBECTL_GITOPS_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// Sign on top of a commit the app's project would not sync (e.g. the first hydration onto
    /// a branch that started unsigned). Without it, a signed hydration needs a trusted parent:
    /// a signature vouches for the whole tree.
    #[arg(long, requires = "signing_key")]
    pub allow_unsigned_parent: bool,
    /// The committer and author of hydrated commits.
    #[arg(long, env = "KUBECTL_GITOPS_COMMITTER", default_value = DEFAULT_COMMITTER,
          value_name = "NAME <EMAIL>")]
    pub committer: String,
    #[command(flatten)]
    pub tools: Tools,
}

pub async fn run(args: HydrateArgs, kube: &KubeArgs, out: &mut dyn Write) -> anyhow::Result<Code> {
    let (app, project) = match (&args.filename, &args.name) {
        (Some(file), _) => (read_app(file)?, None),
        (None, Some(name)) => {
            let ctx = kube.connect().await?;
            let apps: Api<App> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
            let mut app = apps
                .get(name)
                .await
                .with_context(|| format!("cannot read app {}/{name}", ctx.namespace))?;
            app.metadata.namespace.get_or_insert(ctx.namespace.clone());
            let project = crate::engine::project(&ctx.client, &app).await?;
            (app, Some(project))
        }
        (None, None) => bail!("name an app, or give its manifest with -f"),
    };
    tokio::task::block_in_place(|| hydrate(&args, &app, project.as_ref(), &args.tools, out))
}

fn read_app(file: &std::path::Path) -> anyhow::Result<App> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let app: App = serde_saphyr::from_str(&text)
        .with_context(|| format!("{} is not an App manifest", file.display()))?;
    Ok(app)
}

fn hydrate(
    args: &HydrateArgs,
    app: &App,
    project: Option<&Project>,
    tools: &Tools,
    out: &mut dyn Write,
) -> anyhow::Result<Code> {
    let key = app.key();
    let source = app.spec.hydrate.as_ref().with_context(|| {
        format!(
            "app {key} has no spec.hydrate: say where its source is (kubectl gitops app add --source-branch BRANCH --source-path DIR)"
        )
    })?;
    // The source branch is one the app's project lets it use, as its protected branch is.
    if let Some(project) = project {
        let mut probe = app.clone();
        probe.spec.branch = source.source_branch.clone();
        project.permits_app(&probe).with_context(|| {
            format!(
                "app {key}: its project does not permit its source branch {}",
                source.source_branch
            )
        })?;
    }
    let mut repo = gix::discover(&args.repo)
        .with_context(|| format!("{} is not a Git repository", args.repo.display()))?;
    // The branch's reflog names a committer: the hydrator's, where Git's configuration has none.
    let person = signature(&args.committer)?;
    repo.committer_or_set_fallback(person.name.clone(), person.email.clone())
        .context("cannot set the committer of the reflog")?;
    let source_commit = match &args.source {
        Some(rev) => resolve(&repo, rev)
            .with_context(|| format!("--source {rev}: no such commit in {}", args.repo.display()))?,
        None => branch_tip(&repo, &source.source_branch)?.with_context(|| {
            format!(
                "source branch {} of app {key} is not in {} (fetch it, or name a commit with --source)",
                source.source_branch,
                args.repo.display()
            )
        })?,
    };
    let branch = args
        .to_branch
        .clone()
        .unwrap_or_else(|| app.spec.branch.clone());
    // A local branch moves from where it is; a new one starts at origin's or, for a pull
    // request branch, at the protected branch.
    let local = tip(&repo, &format!("refs/heads/{branch}"))?;
    let origin = tip(&repo, &format!("refs/remotes/origin/{branch}"))?;
    if let (Some(local), Some(origin)) = (local, origin) {
        let behind = local != origin
            && repo
                .merge_base(local, origin)
                .is_ok_and(|base| base.is_some_and(|b| b.detach() == local));
        if behind {
            bail!(
                "local branch {branch} is behind origin/{branch}: fast-forward it first (git fetch && git branch -f {branch} origin/{branch})"
            );
        }
    }
    let parent = match local.or(origin) {
        Some(id) => Some(id),
        None => branch_tip(&repo, &app.spec.branch)?,
    };

    // The source tree, written out for the renderer.
    let checkout = checkout(&repo, &args.repo.display().to_string(), source_commit)?;
    let name = app.metadata.name.clone().unwrap_or_default();
    let path = shared::git::normalise_path(&app.spec.path);
    let manifest_file = join(&path, MANIFEST_FILE);
    let rendered = render::render(
        tools,
        checkout.path(),
        &source.source_path,
        &name,
        &app.destination(),
        source.helm.as_ref(),
        &manifest_file,
    )
    .with_context(|| {
        format!(
            "cannot render {} at {} for app {key}",
            source.source_path,
            short(source_commit)
        )
    })?;

    let readme = readme(app, source, source_commit, &rendered);
    let new_files = [
        (manifest_file, rendered.manifest.clone()),
        (join(&path, README_FILE), readme),
    ];
    let old_files = match parent {
        Some(parent) => shared::git::files_at(&repo, "", parent, &app.spec.path)
            .map(|files| {
                files
                    .into_iter()
                    .map(|f| (f.path, String::from_utf8_lossy(&f.contents).into_owned()))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
        None => Vec::new(),
    };

    if args.dry_run {
        let changed = print_diff(&old_files, &new_files, out)?;
        if changed {
            eprintln!(
                "would commit {} object(s) rendered by {} from {} at {} to {path} on {branch}",
                rendered.objects,
                rendered.renderer,
                source.source_path,
                short(source_commit)
            );
        } else {
            eprintln!(
                "{path} on {branch} already holds {} at {}: nothing to hydrate",
                source.source_path,
                short(source_commit)
            );
        }
        return Ok(Code::Success);
    }

    let base_tree = match parent {
        Some(parent) => repo.find_commit(parent)?.tree_id()?.detach(),
        None => ObjectId::empty_tree(repo.object_hash()),
    };
    let mut editor = if path.is_empty() {
        repo.edit_tree(ObjectId::empty_tree(repo.object_hash()))?
    } else {
        let mut editor = repo.edit_tree(base_tree)?;
        editor.remove(path.as_str())?;
        editor
    };
    for (file, contents) in &new_files {
        let blob = repo.write_blob(contents.as_bytes())?;
        editor.upsert(file.as_str(), gix::object::tree::EntryKind::Blob, blob)?;
    }
    let tree = editor.write()?.detach();
    if tree == base_tree {
        eprintln!(
            "{path} on {branch} already holds {} at {}: nothing to hydrate",
            source.source_path,
            short(source_commit)
        );
        return Ok(Code::Success);
    }

    let source_summary = repo
        .find_commit(source_commit)?
        .message()
        .map(|m| m.summary().to_string())
        .unwrap_or_default();
    let message = format!(
        "hydrate {shown_path} from {short} ({renderer})\n\n\
         {source_summary}\n\n\
         Rendered {objects} object(s) from {source_path} on {source_branch} for app {key}.\n\n\
         {TRAILER_FROM}: {source_commit}\n\
         {TRAILER_SOURCE}: {source_branch}:{source_path}\n\
         {TRAILER_RENDERER}: {renderer}\n",
        shown_path = if path.is_empty() { "." } else { path.as_str() },
        short = short(source_commit),
        renderer = rendered.renderer,
        objects = rendered.objects,
        source_path = source.source_path,
        source_branch = source.source_branch,
    );
    let mut commit = gix::objs::Commit {
        tree,
        parents: parent.into_iter().collect(),
        author: person.clone(),
        committer: person,
        encoding: None,
        message: message.into(),
        extra_headers: Vec::new(),
    };
    let mut signed_by = String::new();
    if let (Some(_), Some(parent), Some(project)) = (&args.signing_key, parent, project)
        && let Some(policy) = &project.spec.signatures
        && !args.allow_unsigned_parent
    {
        // A signature vouches for the whole tree, not only the app's path: never on top of a
        // commit the project would not sync.
        let keyring = shared::signature::Keyring::from_policy(policy).map_err(|e| {
            anyhow::anyhow!(
                "project {}: its signature policy is not valid: {e}",
                project.name_any()
            )
        })?;
        shared::signature::check(&repo, parent, &keyring, &mut Default::default()).map_err(|e| {
            anyhow::anyhow!(
                "{branch} is at a commit project {} would not sync: {e}; a signed commit vouches for its whole tree, so the hydrator signs only on top of a trusted one (--allow-unsigned-parent overrides, e.g. for the first hydration)",
                project.name_any()
            )
        })?;
    }
    if let Some(key_file) = &args.signing_key {
        let text = std::fs::read_to_string(key_file)
            .with_context(|| format!("cannot read --signing-key {}", key_file.display()))?;
        let key =
            shared::signature::SigningKey::from_openssh(&text, &key_file.display().to_string())
                .map_err(anyhow::Error::msg)?;
        shared::signature::sign_commit(&mut commit, &key).map_err(anyhow::Error::msg)?;
        signed_by = format!(", signed by {}", key.fingerprint());
    }
    let id = repo.write_object(&commit)?.detach();
    let previous = match local {
        Some(old) => gix::refs::transaction::PreviousValue::MustExistAndMatch(old.into()),
        None => gix::refs::transaction::PreviousValue::MustNotExist,
    };
    repo.reference(
        format!("refs/heads/{branch}").as_str(),
        id,
        previous,
        format!("hydrate: {} from {}", app.spec.path, source_commit),
    )
    .with_context(|| format!("cannot move branch {branch} (did it move meanwhile?)"))?;
    if args.push {
        let dir = repo.workdir().unwrap_or_else(|| repo.git_dir());
        crate::cmd::rollout::git(
            dir,
            &[
                "push",
                "--quiet",
                &app.spec.repo_url,
                &format!("refs/heads/{branch}:refs/heads/{branch}"),
            ],
            &[],
        )
        .with_context(|| format!("cannot push branch {branch} to {}", app.spec.repo_url))?;
    }
    writeln!(out, "{id}")?;
    eprintln!(
        "hydrated app {key}: {} object(s) from {} at {} by {} → {} on {branch}{signed_by}{pushed}",
        rendered.objects,
        source.source_path,
        short(source_commit),
        rendered.renderer,
        short(id),
        pushed = if args.push {
            format!(", pushed to {}", app.spec.repo_url)
        } else {
            String::new()
        },
    );
    if checked_out(&repo, &branch) {
        eprintln!(
            "note: {branch} is checked out in {}; its working tree is behind the branch now (git reset --hard {branch} catches up)",
            args.repo.display()
        );
    }
    Ok(Code::Success)
}

/// Every file of `commit` written below a temporary directory (symbolic links and submodules
/// are left out: a renderer must not reach outside the tree).
pub fn checkout(
    repo: &gix::Repository,
    label: &str,
    commit: ObjectId,
) -> anyhow::Result<tempfile::TempDir> {
    let checkout = tempfile::tempdir().context("cannot create a temporary directory")?;
    for file in shared::git::files_at(repo, label, commit, ".")? {
        let relative = std::path::Path::new(&file.path);
        if !relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            bail!(
                "commit {commit} holds a path that leaves the tree: {:?}",
                file.path
            );
        }
        let path = checkout.path().join(relative);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, &file.contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(checkout)
}

fn readme(
    app: &App,
    source: &shared::app::HydrateSource,
    commit: ObjectId,
    rendered: &render::Rendered,
) -> String {
    format!(
        "# Rendered manifests of app {key}: do not edit\n\n\
         `{MANIFEST_FILE}` is written by `kubectl gitops hydrate` from `{path}` at commit {commit}\n\
         of branch `{branch}`, by {renderer}. Change the source instead: the next hydration\n\
         replaces anything edited here.\n\n\
         To reproduce it, from a checkout of that commit:\n\n\
         ```sh\n\
         git checkout {commit}\n\
         {reproduce}\n\
         ```\n",
        key = app.key(),
        path = source.source_path,
        branch = source.source_branch,
        renderer = rendered.renderer,
        reproduce = rendered.reproduce,
    )
}

fn print_diff(
    old: &[(String, String)],
    new: &[(String, String)],
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let mut paths: Vec<&String> = old.iter().chain(new).map(|(p, _)| p).collect();
    paths.sort();
    paths.dedup();
    let mut changed = false;
    for path in paths {
        let before = old.iter().find(|(p, _)| p == path).map(|(_, c)| c.as_str());
        let after = new.iter().find(|(p, _)| p == path).map(|(_, c)| c.as_str());
        if before == after {
            continue;
        }
        changed = true;
        let diff = TextDiff::from_lines(before.unwrap_or(""), after.unwrap_or(""));
        let a = if before.is_some() {
            format!("a/{path}")
        } else {
            "/dev/null".to_owned()
        };
        let b = if after.is_some() {
            format!("b/{path}")
        } else {
            "/dev/null".to_owned()
        };
        write!(out, "{}", diff.unified_diff().header(&a, &b))?;
    }
    Ok(changed)
}

fn join(dir: &str, file: &str) -> String {
    if dir.is_empty() {
        file.to_owned()
    } else {
        format!("{dir}/{file}")
    }
}

fn short(id: ObjectId) -> String {
    id.to_hex_with_len(7).to_string()
}

fn resolve(repo: &gix::Repository, rev: &str) -> anyhow::Result<ObjectId> {
    let id = repo.rev_parse_single(rev)?;
    Ok(id.object()?.peel_to_commit()?.id)
}

/// The commit a reference points at, if it exists.
fn tip(repo: &gix::Repository, name: &str) -> anyhow::Result<Option<ObjectId>> {
    match repo.try_find_reference(name)? {
        Some(mut reference) => Ok(Some(reference.peel_to_id()?.detach())),
        None => Ok(None),
    }
}

/// The tip of a local branch, else of origin's.
fn branch_tip(repo: &gix::Repository, branch: &str) -> anyhow::Result<Option<ObjectId>> {
    match tip(repo, &format!("refs/heads/{branch}"))? {
        Some(id) => Ok(Some(id)),
        None => tip(repo, &format!("refs/remotes/origin/{branch}")),
    }
}

fn checked_out(repo: &gix::Repository, branch: &str) -> bool {
    repo.workdir().is_some()
        && repo
            .head_name()
            .ok()
            .flatten()
            .is_some_and(|name| name.as_bstr() == format!("refs/heads/{branch}").as_bytes())
}

/// `Name <email>` as a commit signature, dated now.
fn signature(text: &str) -> anyhow::Result<gix::actor::Signature> {
    let (name, email) = text
        .trim()
        .strip_suffix('>')
        .and_then(|t| t.split_once('<'))
        .with_context(|| format!("--committer {text:?}: write it as 'Name <email>'"))?;
    Ok(gix::actor::Signature {
        name: name.trim().into(),
        email: email.trim().into(),
        time: gix::date::Time::now_utc(),
    })
}
