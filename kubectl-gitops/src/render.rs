//! Renderers for hydration: a Helm chart through `helm template`, a Kustomize overlay through
//! kubectl's built-in Kustomize, plain manifests as they are. Each runs on a source tree written
//! to a temporary directory, with a clean environment (no user configuration, no repositories,
//! no kubeconfig, no cluster), and its output is checked with the loader a sync uses, so what is
//! committed is what a sync would accept. What a renderer would fetch by itself (Kustomize's
//! remote bases, its Helm inflation) is refused before it runs: the output follows from the
//! source commit alone.
//!
//! Renderers are executables installed beside kubectl (`scripts/install-helm.sh` pins Helm);
//! none is downloaded at run time. No Rust crate renders charts exactly as `helm template` does
//! (Go templates with Sprig, subcharts, hooks, CRDs), hence the pinned executables.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use shared::app::HelmSource;
use shared::manifest;

/// What a source directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Helm,
    Kustomize,
    Plain,
}

impl Kind {
    /// A chart has `Chart.yaml`, an overlay `kustomization.yaml` (or `.yml`, `Kustomization`);
    /// anything else is plain manifests.
    pub fn of(dir: &Path) -> Kind {
        if dir.join("Chart.yaml").is_file() {
            Kind::Helm
        } else if ["kustomization.yaml", "kustomization.yml", "Kustomization"]
            .iter()
            .any(|f| dir.join(f).is_file())
        {
            Kind::Kustomize
        } else {
            Kind::Plain
        }
    }
}

/// The executables that render.
#[derive(Debug, Clone, clap::Args)]
pub struct Tools {
    /// The helm executable, for a chart.
    #[arg(
        long,
        env = "KUBECTL_GITOPS_HELM",
        default_value = "helm",
        value_name = "PATH"
    )]
    pub helm: PathBuf,
    /// The kubectl executable whose built-in kustomize renders an overlay.
    #[arg(
        long,
        env = "KUBECTL_GITOPS_KUBECTL",
        default_value = "kubectl",
        value_name = "PATH"
    )]
    pub kubectl: PathBuf,
}

/// What a renderer made of a source.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Renderer and version, e.g. `helm v4.3.2`, `kustomize v5.8.1`, `plain`.
    pub renderer: String,
    /// The objects, as one YAML stream: documents in the renderer's order, separated by `---`.
    pub manifest: String,
    /// How many objects.
    pub objects: usize,
    /// The command that renders the same output from a checkout of the source commit.
    pub reproduce: String,
}

/// Renders `source_path` of the tree checked out at `root`. `release` and `namespace` name the
/// Helm release; `helm` holds the app's Helm options; `location` is the file the output is
/// written to, as errors in it are named.
pub fn render(
    tools: &Tools,
    root: &Path,
    source_path: &str,
    release: &str,
    namespace: &str,
    helm: Option<&HelmSource>,
    location: &str,
) -> anyhow::Result<Rendered> {
    let relative = inside(source_path).with_context(|| format!("source path {source_path:?}"))?;
    let dir = root.join(&relative);
    if !dir.is_dir() {
        bail!("source path {source_path} is not a directory at the source commit");
    }
    let shown = if relative.as_os_str().is_empty() {
        ".".to_owned()
    } else {
        relative.display().to_string()
    };
    let kind = Kind::of(&dir);
    if helm.is_some() && kind != Kind::Helm {
        bail!("the app sets Helm options but {shown} has no Chart.yaml");
    }
    let home = tempfile::tempdir().context("cannot create a temporary directory")?;
    let (renderer, output, reproduce) = match kind {
        Kind::Helm => {
            let options = helm.cloned().unwrap_or_default();
            check_chart_version(&dir, &shown, options.version.as_deref())?;
            let release = options.release_name.as_deref().unwrap_or(release);
            check_release_name(release)?;
            let mut args: Vec<String> =
                vec!["template".into(), "--namespace".into(), namespace.into()];
            if !options.skip_crds {
                args.push("--include-crds".into());
            }
            for file in &options.value_files {
                let path = inside(&format!("{shown}/{file}"))
                    .with_context(|| format!("values file {file:?}"))?;
                if !root.join(&path).is_file() {
                    bail!("values file {file} does not exist in chart {shown}");
                }
                args.extend(["--values".into(), format!("{shown}/{file}")]);
            }
            // Positional arguments last, after `--`: nothing in them is read as a flag.
            args.extend(["--".into(), release.into(), shown.clone()]);
            let (version, output) = side_by_side(
                &tools.helm,
                &["version", "--template", "{{.Version}}"],
                &args,
                root,
                home.path(),
            )?;
            (
                format!("helm {}", version.trim()),
                output,
                command_line("helm", &args),
            )
        }
        Kind::Kustomize => {
            refuse_remote_resources(root)?;
            let args = vec!["kustomize".to_owned(), "--".to_owned(), shown.clone()];
            let (version, output) = side_by_side(
                &tools.kubectl,
                &["version", "--client", "-o", "json"],
                &args,
                root,
                home.path(),
            )?;
            let version: serde_json::Value = serde_json::from_str(&version)
                .with_context(|| format!("{} version: not JSON", tools.kubectl.display()))?;
            let version = version["kustomizeVersion"]
                .as_str()
                .unwrap_or("(unknown version)")
                .to_owned();
            (
                format!("kustomize {version}"),
                output,
                command_line("kubectl", &args),
            )
        }
        Kind::Plain => {
            let mut files = Vec::new();
            collect(&dir, &mut files)?;
            files.sort();
            let mut output = String::new();
            for file in files {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                output.push_str("---\n");
                output.push_str(&text);
                if !text.ends_with('\n') {
                    output.push('\n');
                }
            }
            (
                "plain".to_owned(),
                output,
                format!("cat {shown}/*.yaml (every .yaml, .yml and .json file below it)"),
            )
        }
    };
    let manifest = documents(&output);
    let objects = manifest::load_app([(location, manifest.as_bytes())])
        .with_context(|| format!("the output of {renderer} for {shown} is not valid"))?
        .len();
    if objects == 0 {
        bail!("{renderer} rendered no objects from {shown}");
    }
    Ok(Rendered {
        renderer,
        manifest,
        objects,
        reproduce,
    })
}

/// The output as documents separated by `---` lines, empty documents dropped, so that the same
/// objects always read the same whatever separators the renderer wrote.
fn documents(output: &str) -> String {
    let mut docs: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in output.lines() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            docs.push(std::mem::take(&mut current));
            continue;
        }
        current.push_str(line.trim_end());
        current.push('\n');
    }
    docs.push(current);
    let mut manifest = String::new();
    for doc in docs {
        let meaningful = doc.lines().any(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        });
        if meaningful {
            manifest.push_str("---\n");
            manifest.push_str(&doc);
        }
    }
    manifest
}

/// A Helm release name: DNS-1123, at most 53 characters (as Helm requires), so it can never be
/// read as a flag or a path.
fn check_release_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 53
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        bail!(
            "Helm release name {name:?} is not a DNS-1123 name of at most 53 characters (spec.hydrate.helm.releaseName, or the app's name)"
        )
    }
}

/// Kustomize fetches remote bases (`https://…`, `github.com/…?ref=…`) by itself: hydrated
/// output must follow from the source commit alone, so every kustomization in the tree names
/// local files only.
fn refuse_remote_resources(root: &Path) -> anyhow::Result<()> {
    let mut files = Vec::new();
    collect_all(root, &mut files)?;
    for file in files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        if !matches!(
            name.as_deref(),
            Some("kustomization.yaml" | "kustomization.yml" | "Kustomization")
        ) {
            continue;
        }
        let shown = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        let text =
            std::fs::read_to_string(&file).with_context(|| format!("cannot read {shown}"))?;
        let doc: serde_json::Value =
            serde_saphyr::from_str(&text).with_context(|| format!("{shown} is not valid YAML"))?;
        if doc.get("helmCharts").is_some() || doc.get("helmChartInflationGenerator").is_some() {
            bail!(
                "{shown} inflates Helm charts: render the chart as an app of its own (a source path with Chart.yaml)"
            );
        }
        for key in ["resources", "bases", "components", "crds"] {
            for entry in doc[key].as_array().into_iter().flatten() {
                let entry = entry.as_str().unwrap_or_default();
                let remote = entry.contains("://")
                    || entry.contains("?ref=")
                    || entry.starts_with("git@")
                    || entry.starts_with("github.com/")
                    || entry.starts_with("gitlab.com/");
                if remote {
                    bail!(
                        "{shown} names the remote {key} entry {entry:?}: hydration renders only what the source commit holds (vendor it into the repository)"
                    );
                }
            }
        }
    }
    Ok(())
}

/// The chart's `version` must be the pinned one.
fn check_chart_version(dir: &Path, shown: &str, pinned: Option<&str>) -> anyhow::Result<()> {
    let Some(pinned) = pinned else {
        return Ok(());
    };
    let file = dir.join("Chart.yaml");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {shown}/Chart.yaml"))?;
    let chart: serde_json::Value = serde_saphyr::from_str(&text)
        .with_context(|| format!("{shown}/Chart.yaml is not valid YAML"))?;
    let version = match &chart["version"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    if version != pinned {
        bail!(
            "chart {shown} has version {:?} but the app pins {pinned:?}: change the app's chart version with the chart",
            version
        );
    }
    Ok(())
}

/// A relative path that stays inside the tree.
fn inside(path: &str) -> anyhow::Result<PathBuf> {
    let mut out = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    bail!("leaves the repository");
                }
            }
            Component::RootDir | Component::Prefix(_) => bail!("must be relative"),
        }
    }
    Ok(out)
}

fn collect_all(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory {}", dir.display()))?
    {
        let path = entry?.path();
        if path.is_dir() {
            collect_all(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory {}", dir.display()))?
    {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if manifest::is_manifest_file(&path.to_string_lossy()) {
            files.push(path);
        }
    }
    Ok(())
}

/// Runs a renderer in `root` with nothing of the user's environment but PATH: its own empty
/// home and caches, no kubeconfig.
fn tool_output<S: AsRef<std::ffi::OsStr>>(
    tool: &Path,
    args: &[S],
    root: &Path,
    home: &Path,
) -> anyhow::Result<String> {
    let mut command = Command::new(tool);
    command
        .args(args)
        .current_dir(root)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("HELM_CACHE_HOME", home.join("helm-cache"))
        .env("HELM_CONFIG_HOME", home.join("helm-config"))
        .env("HELM_DATA_HOME", home.join("helm-data"))
        .env("KUBECONFIG", home.join("no-kubeconfig"));
    let shown = format!(
        "{} {}",
        tool.display(),
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = command.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "{} is not installed: install it (scripts/install-helm.sh, scripts/install-kubectl.sh) or point --helm / --kubectl at it",
                tool.display()
            )
        } else {
            anyhow::anyhow!("cannot run {shown}: {e}")
        }
    })?;
    if !output.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).with_context(|| format!("{shown}: output is not UTF-8"))
}

/// The renderer's version and its output, asked side by side: each run costs mostly the
/// executable's start-up.
fn side_by_side(
    tool: &Path,
    version: &[&str],
    args: &[String],
    root: &Path,
    home: &Path,
) -> anyhow::Result<(String, String)> {
    std::thread::scope(|scope| {
        let asked = scope.spawn(|| tool_output(tool, version, root, home));
        let output = tool_output(tool, args, root, home);
        let version = asked
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("{} version panicked", tool.display())));
        Ok((version?, output?))
    })
}

fn command_line(program: &str, args: &[String]) -> String {
    let mut line = program.to_owned();
    for arg in args {
        line.push(' ');
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
            line.push_str(&format!("'{}'", arg.replace('\'', r"'\''")));
        } else {
            line.push_str(arg);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_separated_alike_whatever_the_renderer_wrote() {
        let helm = "---\n# Source: web/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n# Source: empty.yaml\n\n---\napiVersion: v1   \nkind: ConfigMap\nmetadata:\n  name: b\n";
        assert_eq!(
            documents(helm),
            "---\n# Source: web/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n"
        );
        let kustomize = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n";
        assert_eq!(documents(kustomize), format!("---\n{kustomize}"));
    }

    #[test]
    fn paths_stay_inside_the_tree() {
        assert_eq!(
            inside("charts/web/../api").expect("inside"),
            PathBuf::from("charts/api")
        );
        assert_eq!(inside(".").expect("inside"), PathBuf::new());
        assert!(inside("../secrets").is_err());
        assert!(inside("charts/../../x").is_err());
        assert!(inside("/etc").is_err());
    }

    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        assert_eq!(
            command_line("helm", &["template".into(), "my app".into(), "x'y".into()]),
            r"helm template 'my app' 'x'\''y'"
        );
    }
}
