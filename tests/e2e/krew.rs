//! The krew package: `scripts/krew-manifest.sh` builds the archive and `target/krew/gitops.yaml`,
//! and the real krew (built from its Go module by `scripts/install-krew.sh`) installs it, after
//! which kubectl runs the installed plugin and completes it through the shipped
//! `kubectl_complete-gitops`.

use std::path::Path;
use std::process::{Command, Output};

use e2e::{cluster, tool, workspace_root};
use serde_json::Value;

const ARCHIVE: &str = "kubectl-gitops_linux_amd64.tar.gz";
const URL_PREFIX: &str = "https://downloads.example.com/kubectl-gitops";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(what: &str, output: std::io::Result<Output>) -> String {
    let output = output.unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// `dirs` first, then the test's own PATH without the directory of the workspace's build, so the
/// plugin kubectl finds is the one krew installed.
fn path_with(dirs: &[&Path]) -> std::ffi::OsString {
    let build = workspace_root().join("target");
    let inherited = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .filter(|p| !p.starts_with(&build))
        .collect::<Vec<_>>();
    std::env::join_paths(dirs.iter().map(|d| d.to_path_buf()).chain(inherited))
        .expect("PATH entries join")
}

fn sha256(path: &Path) -> String {
    let out = ok("sha256sum", Command::new("sha256sum").arg(path).output());
    out.split_whitespace()
        .next()
        .expect("sha256sum prints a digest")
        .to_owned()
}

/// The rules krew (`internal/index/validation`) and krew-index's CI hold a manifest to, written out
/// so the test says what it checks even where krew itself is the judge below.
fn assert_krew_rules(manifest: &Value, archive_sha: &str, version: &str) {
    assert_eq!(
        manifest["apiVersion"], "krew.googlecontainertools.github.com/v1alpha2",
        "{manifest}"
    );
    assert_eq!(manifest["kind"], "Plugin");
    assert_eq!(manifest["metadata"]["name"], "gitops");
    let spec = &manifest["spec"];
    assert_eq!(spec["version"], format!("v{version}"), "semver with a v");
    let short = spec["shortDescription"]
        .as_str()
        .expect("a short description");
    assert!(!short.is_empty() && !short.contains('\n'), "{short:?}");
    let platforms = spec["platforms"].as_array().expect("platforms");
    assert_eq!(platforms.len(), 1, "linux/amd64 only: {platforms:?}");
    let platform = &platforms[0];
    assert_eq!(
        platform["selector"]["matchLabels"],
        serde_json::json!({"os": "linux", "arch": "amd64"})
    );
    assert_eq!(
        platform["uri"],
        format!("{URL_PREFIX}/v{version}/{ARCHIVE}"),
        "https, naming the archive"
    );
    let sha = platform["sha256"].as_str().expect("a sha256");
    assert!(
        sha.len() == 64
            && sha
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "64 lower-case hex digits: {sha}"
    );
    assert_eq!(sha, archive_sha, "the manifest's sha256 is the archive's");
    assert_eq!(platform["bin"], "kubectl-gitops");
}

#[test]
fn the_krew_manifest_installs_with_krew_and_kubectl_runs_and_completes_the_plugin() {
    let root = workspace_root();
    let kubectl = tool("KUBECTL", "kubectl", "scripts/install-kubectl.sh");
    let krew = tool("KREW", "kubectl-krew", "scripts/install-krew.sh");
    let version = env!("CARGO_PKG_VERSION");

    // Packaged as a release packages it; of the dev build this test run has already, unless
    // KUBECTL_GITOPS_PROFILE=release asks for the optimised build a release ships.
    let profile = std::env::var("KUBECTL_GITOPS_PROFILE").unwrap_or_else(|_| "dev".into());
    let started = std::time::Instant::now();
    ok(
        "scripts/krew-manifest.sh",
        e2e::outside_cargo_test(&mut Command::new("bash"))
            .arg(root.join("scripts/krew-manifest.sh"))
            .arg(format!("{URL_PREFIX}/v{version}"))
            .env("KUBECTL_GITOPS_PROFILE", &profile)
            .current_dir(&root)
            .output(),
    );
    eprintln!(
        "scripts/krew-manifest.sh ({profile}) took {:?}",
        started.elapsed()
    );
    let out = root.join("target/krew");
    let archive = out.join(ARCHIVE);
    let manifest_path = out.join("gitops.yaml");

    // The archive: the plugin, its kubectl completion, the license and the README, nothing else.
    let listing = ok(
        "tar -tvzf",
        Command::new("tar").arg("-tvzf").arg(&archive).output(),
    );
    let mut entries: Vec<(&str, &str)> = listing
        .lines()
        .map(|l| {
            let mode = l.split_whitespace().next().unwrap_or_default();
            let name = l.split_whitespace().last().unwrap_or_default();
            (name, mode)
        })
        .collect();
    entries.sort();
    assert_eq!(
        entries.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [
            "LICENSE",
            "README.md",
            "kubectl-gitops",
            "kubectl_complete-gitops"
        ],
        "{listing}"
    );
    for (name, mode) in &entries {
        let executable = name.starts_with("kubectl");
        assert_eq!(
            mode.starts_with("-rwx"),
            executable,
            "{name} has mode {mode}"
        );
    }
    let unpacked = tempfile::tempdir().expect("a directory to unpack into");
    ok(
        "tar -xzf",
        Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(unpacked.path())
            .output(),
    );
    for file in ["LICENSE", "README.md"] {
        assert_eq!(
            std::fs::read(unpacked.path().join(file)).expect("unpacked"),
            std::fs::read(root.join(file)).expect("in the repository"),
            "{file} is the repository's"
        );
    }
    let license = std::fs::read_to_string(root.join("LICENSE")).expect("LICENSE");
    assert!(
        license.contains("Apache License") && license.contains("Version 2.0, January 2004"),
        "the Apache License 2.0"
    );
    assert!(license.contains("END OF TERMS AND CONDITIONS"), "in full");

    // The manifest.
    let manifest: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(&manifest_path).expect("the manifest is written"),
    )
    .expect("the manifest is YAML");
    assert_krew_rules(&manifest, &sha256(&archive), version);

    // krew-index's own validator, as its CI runs it on a pull request.
    let validator = tool(
        "KREW_VALIDATE",
        "validate-krew-manifest",
        "scripts/install-krew.sh",
    );
    ok(
        "validate-krew-manifest",
        Command::new(validator)
            .arg("-manifest")
            .arg(&manifest_path)
            .arg("-skip-install")
            .output(),
    );

    // Installed by krew as a user installs it, into a krew root of its own.
    let krew_root = tempfile::tempdir().expect("a krew root");
    let krew_dir = krew.parent().expect("krew lives in a directory");
    let kubectl_dir = kubectl.parent().expect("kubectl lives in a directory");
    let krew_bin = krew_root.path().join("bin");
    let run_kubectl = |args: &[&str], extra_path: &[&Path]| {
        let mut dirs: Vec<&Path> = vec![&krew_bin, krew_dir, kubectl_dir];
        dirs.extend_from_slice(extra_path);
        Command::new(&kubectl)
            .args(args)
            .env("KREW_ROOT", krew_root.path())
            .env("KREW_NO_UPGRADE_CHECK", "1")
            .env("PATH", path_with(&dirs))
            .env("KUBECONFIG", cluster().kubeconfig())
            .env("NO_COLOR", "1")
            .output()
    };
    let manifest_arg = format!("--manifest={}", manifest_path.display());
    let archive_arg = format!("--archive={}", archive.display());
    ok(
        "kubectl krew install",
        run_kubectl(&["krew", "install", &manifest_arg, &archive_arg], &[]),
    );
    let store = krew_root
        .path()
        .join("store/gitops")
        .join(format!("v{version}"));
    assert!(
        store.join("LICENSE").is_file(),
        "krew-index requires the license among the installed files"
    );
    let receipt = std::fs::read_to_string(krew_root.path().join("receipts/gitops.yaml"))
        .expect("krew keeps a receipt of the installation");
    assert!(
        receipt.contains(&format!("version: v{version}")),
        "{receipt}"
    );

    // kubectl finds the plugin krew linked and runs it.
    let plugins = ok(
        "kubectl plugin list",
        run_kubectl(&["plugin", "list", "--name-only"], &[]),
    );
    assert!(
        plugins.lines().any(|l| l.trim() == "kubectl-gitops"),
        "{plugins}"
    );
    let which = std::fs::canonicalize(krew_bin.join("kubectl-gitops")).expect("krew's link");
    assert_eq!(which, store.join("kubectl-gitops"));
    let shown = ok(
        "kubectl gitops version",
        run_kubectl(&["gitops", "version"], &[]),
    );
    assert!(
        shown.starts_with(&format!("kubectl-gitops {version}\n")),
        "{shown}"
    );
    let namespaces = ok(
        "kubectl gitops status -A",
        run_kubectl(&["gitops", "status", "-A", "-o", "json"], &[]),
    );
    assert!(
        serde_json::from_str::<Value>(&namespaces).is_ok_and(|v| v.is_array()),
        "the installed plugin reads the cluster: {namespaces}"
    );

    // The shipped kubectl_complete-gitops, put on PATH, completes `kubectl gitops`.
    let completion_dir = tempfile::tempdir().expect("a directory for the completion");
    let link = completion_dir.path().join("kubectl_complete-gitops");
    std::os::unix::fs::symlink(store.join("kubectl_complete-gitops"), &link)
        .expect("link the completion");
    let offered = ok(
        "kubectl __complete gitops sy",
        run_kubectl(&["__complete", "gitops", "sy"], &[completion_dir.path()]),
    );
    assert!(
        offered
            .lines()
            .any(|l| l.split('\t').next() == Some("sync")),
        "{offered}"
    );
}
