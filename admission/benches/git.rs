//! Git benchmark on a generated repository of 100,000 commits and 10,000 manifest files: the
//! webhook's cached view (`admission::knowledge`, as the decision asks it) and the bare
//! `shared::git::Mirror` under it, beside the `git` CLI measured in the same run on its own
//! `git clone --mirror` of the same repository. Prints each figure, the CLI's, their ratio
//! (git / ours) and the design targets; writes `target/bench-git.json`.
//!
//! The repository is made by `git fast-import` from a stream generated here and kept under
//! `target/bench-git-repo/<parameters>/`, so later runs skip generating it. Cold figures: a new
//! `Repos`/`Mirror` over the cloned mirror, first query (the OS page cache is warm). Memory: the
//! bench runs itself again in "hold" mode (a webhook's view of the mirror, fetched and with warm
//! caches) and in "clone" mode (the initial clone), and reads their VmHWM.
//!
//! Ancestry is asked two ways: random pairs across the history (some on a side branch, some not
//! ancestors), and each of main's 1,000 newest commits against its head (what the decision
//! usually asks). Every answer is checked against how the history was generated.
//!
//! `cargo bench -p admission --bench git` (or `bash scripts/bench.sh`).

use std::io::{BufRead as _, BufWriter, Read as _, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use admission::knowledge::{Repos, View};
use admission::metrics::Metrics;
use kube::runtime::reflector;
use serde_json::{Value, json};
use shared::admission::Knowledge as _;
use shared::app::{App, AppSpec};
use shared::git::Mirror;
use shared::manifest;

/// Commits on `main`, the first of which adds every file.
const MAIN_COMMITS: usize = 100_000;
const APPS: usize = 200;
const FILES_PER_APP: usize = 50;
/// `side` branches off `main` at this commit (index) and adds its own commits.
const FORK_AT: usize = 60_000;
const SIDE_COMMITS: usize = 1_000;
/// Bump when the generated content changes: part of the cache key.
const GENERATOR: u32 = 1;
const SEED: u64 = 0x5eed_0000_0000_0001;

/// Query counts: warm (cached) figures, uncached lookups, git processes.
const WARM: usize = 1_000;
const UNCACHED: usize = 200;
const CLI: usize = 100;
/// Ancestry pairs across the whole history: a walk of ~33,000 commits each (~0.3 s), so few.
const HISTORY: usize = 40;
const HISTORY_CLI: usize = 20;
/// Ancestry of each of main's newest commits vs its head: the decision's usual question.
const RECENT: usize = 1_000;
const COLD: usize = 5;
const FETCHES: usize = 20;
/// Apps whose trees stay in the webhook's tree cache (it keeps fewer than 64).
const CACHED_TREES: usize = 50;

const TARGET_ANCESTRY_MS: f64 = 1.0;
const TARGET_FETCH_MS: f64 = 50.0;
const TARGET_RSS_MIB: f64 = 64.0;

const CHILD: &str = "BENCH_GIT_CHILD";
const CHILD_URL: &str = "BENCH_GIT_URL";
const CHILD_CACHE: &str = "BENCH_GIT_CACHE";
const CHILD_REPO: &str = "BENCH_GIT_REPO";
const CHILD_OUT: &str = "BENCH_GIT_OUT";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // gix speaks HTTP through reqwest, whose rustls uses the workspace's provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Ok(mode) = std::env::var(CHILD) {
        child(&mode);
        return;
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let run_started = Instant::now();
    let generated = generate(&target);
    let ids = Ids::load(&generated.dir);
    let url = format!("file://{}", generated.dir.join("repo.git").display());
    let work = tempfile::Builder::new()
        .prefix("bench-git-")
        .tempdir_in(&target)
        .expect("a work directory");
    let mirrors = work.path().join("mirrors");
    let cli = work.path().join("cli.git");
    let mut report = Report::default();

    // Initial clone: the git CLI, then the mirror in a fresh process (its peak RSS too).
    eprintln!("clone of the {MAIN_COMMITS}-commit repository over file:// ...");
    let time_bin = Path::new("/usr/bin/time");
    let started = Instant::now();
    let mut clone = if time_bin.is_file() {
        let mut c = Command::new(time_bin);
        c.args(["-f", "%M", "git"]);
        c
    } else {
        Command::new("git")
    };
    let output = isolated(&mut clone)
        .args(["clone", "--mirror", "--quiet", &url])
        .arg(&cli)
        .output()
        .expect("git clone runs");
    let cli_clone = started.elapsed();
    assert!(
        output.status.success(),
        "git clone --mirror failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cli_clone_peak_kib: Option<u64> = time_bin
        .is_file()
        .then(|| {
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .and_then(|l| l.trim().parse().ok())
        })
        .flatten();
    let cloned = run_child("clone", &url, &mirrors, &generated.dir, work.path());
    let mirror_clone = Duration::from_secs_f64(cloned["seconds"].as_f64().unwrap_or_default());
    report.row(
        "clone",
        "Mirror::open + fetch into an empty directory (own process)",
        Stats::one(mirror_clone),
        Some(("git clone --mirror", Stats::one(cli_clone))),
        None,
    );

    ancestry(&mut report, &ids, &url, &mirrors, &cli);
    files(&mut report, &ids, &url, &mirrors, &cli);
    trees(&mut report, &ids, &url, &mirrors, &cli);
    fetches(&mut report, &ids, &url, &mirrors, &cli, work.path());

    eprintln!("memory: a webhook process holding the mirror with warm caches ...");
    let held = run_child("hold", &url, &mirrors, &generated.dir, work.path());
    let mib = |kib: &Value| kib.as_f64().unwrap_or_default() / 1024.0;
    let hold_hwm = mib(&held["vm_hwm_kib"]);
    let clone_hwm = mib(&cloned["vm_hwm_kib"]);

    let total = run_started.elapsed();
    report.print(&generated);
    eprintln!();
    eprintln!(
        "memory (target: webhook RSS ≤ {TARGET_RSS_MIB} MiB with a {MAIN_COMMITS}-commit mirror)"
    );
    let hold_steady = mib(&held["vm_rss_kib"]);
    eprintln!(
        "  webhook view holding the mirror, fetched, warm caches ({} ancestry answers, {} files, {} trees): \
         {hold_steady:.1} MiB after the next fetch — {}; peak {hold_hwm:.1} MiB while reading across \
         the history — {} ({:.1} MiB after open + fetch)",
        held["ancestry_cached"],
        held["files_cached"],
        held["trees_cached"],
        verdict(hold_steady, TARGET_RSS_MIB, "MiB"),
        verdict(hold_hwm, TARGET_RSS_MIB, "MiB"),
        mib(&held["rss_after_fetch_kib"]),
    );
    for stage in held["stages"].as_array().into_iter().flatten() {
        let m = &stage["memory"];
        eprintln!(
            "    after {:<22} RSS {:>6.1} MiB = heap/anon {:>6.1} MiB + mapped files (packs) {:>6.1} MiB; peak {:>6.1} MiB",
            stage["after"].as_str().unwrap_or_default(),
            mib(&m["vm_rss_kib"]),
            mib(&m["rss_anon_kib"]),
            mib(&m["rss_file_kib"]),
            mib(&m["vm_hwm_kib"]),
        );
    }
    eprintln!(
        "  initial clone in a fresh process (Mirror::open + fetch): peak {clone_hwm:.1} MiB \
         (at its end: heap/anon {:.1} MiB, mapped files {:.1} MiB){}",
        mib(&cloned["rss_anon_kib"]),
        mib(&cloned["rss_file_kib"]),
        match cli_clone_peak_kib {
            Some(kib) => format!(
                "; git clone --mirror, largest process: {:.1} MiB",
                kib as f64 / 1024.0
            ),
            None => String::new(),
        }
    );
    eprintln!(
        "  (the admission binary itself needs an apiserver to watch apps; its RSS is not measured here)"
    );
    eprintln!("whole run: {:.1} s", total.as_secs_f64());

    let out = target.join("bench-git.json");
    let _ = std::fs::write(
        &out,
        serde_json::to_string_pretty(&json!({
            "machine": e2e::machine(),
            "repository": {
                "main_commits": MAIN_COMMITS, "side_commits": SIDE_COMMITS, "fork_at": FORK_AT,
                "files": APPS * FILES_PER_APP, "apps": APPS, "files_per_app": FILES_PER_APP,
                "generation_seconds": generated.seconds, "reused": generated.reused,
                "path": generated.dir.display().to_string(),
            },
            "targets": {
                "ancestry_warm_ms": TARGET_ANCESTRY_MS, "unchanged_fetch_ms": TARGET_FETCH_MS,
                "webhook_rss_mib": TARGET_RSS_MIB,
            },
            "results": report.json,
            "memory": {
                "hold": held,
                "hold_steady_mib": hold_steady,
                "hold_steady_meets_target": hold_steady <= TARGET_RSS_MIB,
                "hold_peak_mib": hold_hwm,
                "hold_peak_meets_target": hold_hwm <= TARGET_RSS_MIB,
                "clone": cloned,
                "clone_peak_mib": clone_hwm,
                "git_clone_largest_process_peak_mib": cli_clone_peak_kib.map(|k| k as f64 / 1024.0),
            },
            "run_seconds": total.as_secs_f64(),
        }))
        .unwrap_or_default(),
    );
    eprintln!("wrote {}", out.display());
}

// ---------------------------------------------------------------------------------------------
// Measurements

fn ancestry(report: &mut Report, ids: &Ids, url: &str, mirrors: &Path, cli: &Path) {
    eprintln!("ancestry checks ...");
    let mut rng = Rng(SEED ^ 1);
    let history: Vec<(At, At)> = (0..HISTORY).map(|_| random_pair(&mut rng)).collect();
    let recent = recent_pairs(&mut rng);
    let mean_walk = |pairs: &[(At, At)]| {
        pairs
            .iter()
            .map(|(a, b)| distance(*a, *b) as f64)
            .sum::<f64>()
            / pairs.len() as f64
    };
    eprintln!(
        "  across the history: {HISTORY} random pairs, {} of them ancestors, mean walk {:.0} \
         commits; recent: each of the {RECENT} newest commits of main vs its head (mean walk {:.0})",
        history.iter().filter(|(a, b)| truth(*a, *b)).count(),
        mean_walk(&history),
        mean_walk(&recent),
    );
    let app = app(url, 0);
    let check = |answer: Result<bool, String>, (a, b): (At, At)| {
        assert_eq!(
            answer.expect("an answer"),
            truth(a, b),
            "is {a:?} an ancestor of {b:?}"
        );
    };
    let git_cli = |pairs: &[(At, At)], n: usize| {
        stats(&sample(n, |i| {
            let (a, b) = pairs[i];
            let status = isolated(&mut git(cli))
                .args(["merge-base", "--is-ancestor", ids.id(a), ids.id(b)])
                .status()
                .expect("git runs");
            assert!(
                matches!(status.code(), Some(0 | 1)),
                "git merge-base failed"
            );
            assert_eq!(status.success(), truth(a, b));
        }))
    };
    let by_repo = |view: &View, pairs: &[(At, At)], n: usize| {
        stats(&sample(n, |i| {
            let (a, b) = pairs[i % pairs.len()];
            check(view.is_ancestor(&app, ids.id(a), ids.id(b)), (a, b));
        }))
    };
    let by_mirror = |mirror: &Mirror, pairs: &[(At, At)]| {
        stats(&sample(pairs.len(), |i| {
            let (a, b) = pairs[i];
            check(
                mirror
                    .is_ancestor(ids.oid(a), ids.oid(b))
                    .map_err(|e| e.to_string()),
                (a, b),
            );
        }))
    };
    let cold_repo = |pairs: &[(At, At)]| {
        stats(&sample(COLD, |i| {
            let view = view(mirrors);
            let (a, b) = pairs[i];
            check(view.is_ancestor(&app, ids.id(a), ids.id(b)), (a, b));
        }))
    };
    let cold_mirror = |pairs: &[(At, At)]| {
        stats(&sample(COLD, |i| {
            let mirror = Mirror::open(url, mirrors).expect("the mirror opens");
            let (a, b) = pairs[i];
            check(
                mirror
                    .is_ancestor(ids.oid(a), ids.oid(b))
                    .map_err(|e| e.to_string()),
                (a, b),
            );
        }))
    };

    let git_history = git_cli(&history, HISTORY_CLI);
    let git_recent = git_cli(&recent, CLI);
    let history_ref = Some(("git merge-base --is-ancestor", git_history));
    let recent_ref = Some(("git merge-base --is-ancestor", git_recent));
    let target = Some(TARGET_ANCESTRY_MS);

    // The webhook's path, as the decision asks it: ids resolved, answers cached.
    report.row(
        "ancestry",
        "history: Repo (webhook) cold: new Repos, first query",
        cold_repo(&history),
        history_ref,
        None,
    );
    report.row(
        "ancestry",
        "recent: Repo (webhook) cold: new Repos, first query",
        cold_repo(&recent),
        recent_ref,
        None,
    );
    let view = view(mirrors);
    report.row(
        "ancestry",
        "history: Repo (webhook) uncached: first query of a pair",
        by_repo(&view, &history, HISTORY),
        history_ref,
        None,
    );
    report.row(
        "ancestry",
        "recent: Repo (webhook) uncached: first query of a pair",
        by_repo(&view, &recent, RECENT),
        recent_ref,
        target,
    );
    report.row(
        "ancestry",
        "history: Repo (webhook) warm: cached answer",
        by_repo(&view, &history, WARM),
        history_ref,
        target,
    );
    report.row(
        "ancestry",
        "recent: Repo (webhook) warm: cached answer",
        by_repo(&view, &recent, WARM),
        recent_ref,
        target,
    );

    // The mirror alone: a merge-base walk per query, no cache.
    report.row(
        "ancestry",
        "history: Mirror::is_ancestor cold: new Mirror, first query",
        cold_mirror(&history),
        history_ref,
        None,
    );
    let mirror = Mirror::open(url, mirrors).expect("the mirror opens");
    report.row(
        "ancestry",
        "history: Mirror::is_ancestor (no cache)",
        by_mirror(&mirror, &history),
        history_ref,
        target,
    );
    report.row(
        "ancestry",
        "recent: Mirror::is_ancestor (no cache)",
        by_mirror(&mirror, &recent),
        recent_ref,
        target,
    );
    report.git_row(
        "ancestry",
        "history: git merge-base --is-ancestor (a process each)",
        git_history,
    );
    report.git_row(
        "ancestry",
        "recent: git merge-base --is-ancestor (a process each)",
        git_recent,
    );

    // Mirror::fetch keeps a commit-graph file; git fetch does not write one by default. Git with
    // a commit-graph file of its own, and the mirror without its file, for comparison.
    let cli_dir = cli.to_path_buf();
    run(isolated(&mut git(&cli_dir)).args(["commit-graph", "write", "--reachable"]));
    let graph_history = git_cli(&history, HISTORY_CLI);
    let graph_recent = git_cli(&recent, CLI);
    report.git_row(
        "ancestry",
        "history: git merge-base, commit-graph written by git",
        graph_history,
    );
    report.git_row(
        "ancestry",
        "recent: git merge-base, commit-graph written by git",
        graph_recent,
    );
    let _ = std::fs::remove_file(cli_dir.join("objects/info/commit-graph"));
    let _ = std::fs::remove_dir_all(cli_dir.join("objects/info/commit-graphs"));
    let graph = shared::commit_graph::path(&mirror_dir(mirrors));
    let aside = graph.with_extension("aside");
    std::fs::rename(&graph, &aside).expect("Mirror::fetch wrote a commit-graph file");
    let without = Mirror::open(url, mirrors).expect("the mirror opens");
    report.row(
        "ancestry",
        "recent: Mirror::is_ancestor without its commit-graph file",
        by_mirror(&without, &recent),
        recent_ref,
        target,
    );
    drop(without);
    std::fs::rename(&aside, &graph).expect("the commit-graph file goes back");
}

fn files(report: &mut Report, ids: &Ids, url: &str, mirrors: &Path, cli: &Path) {
    eprintln!("manifest lookups of one file ...");
    let mut rng = Rng(SEED ^ 2);
    let lookups: Vec<(At, String)> = (0..WARM)
        .map(|_| {
            (
                random_commit(&mut rng),
                file_path(rng.below(APPS), rng.below(FILES_PER_APP)),
            )
        })
        .collect();
    let app = app(url, 0);
    let git_stats = stats(&sample(CLI, |i| {
        let (at, path) = &lookups[i];
        let out = run(isolated(&mut git(cli)).args(["show", &format!("{}:{path}", ids.id(*at))]));
        assert!(out.starts_with(b"apiVersion"));
    }));
    let git_ref = Some(("git show COMMIT:PATH", git_stats));
    let through = |view: &View, i: usize| {
        let (at, path) = &lookups[i];
        let found = view
            .manifests(&app, ids.id(*at), path)
            .expect("the file loads");
        assert!(!found.is_empty(), "{path} has manifests");
    };
    let cold = sample(COLD, |i| through(&view(mirrors), i));
    let view = view(mirrors);
    let uncached = sample(WARM, |i| through(&view, i));
    let cached = sample(WARM, |i| through(&view, i));
    let mirror = Mirror::open(url, mirrors).expect("the mirror opens");
    let read = |i: usize| {
        let (at, path) = &lookups[i];
        let bytes = mirror
            .file(ids.oid(*at), path)
            .expect("readable")
            .expect("the file exists");
        assert!(bytes.starts_with(b"apiVersion"));
        (path, bytes)
    };
    let raw = sample(WARM, |i| drop(read(i)));
    let parsed = sample(WARM, |i| {
        let (path, bytes) = read(i);
        let manifests = manifest::load([(path.as_str(), bytes.as_slice())]).expect("loads");
        assert!(!manifests.is_empty(), "{path} has manifests");
    });
    for (how, samples) in [
        ("Repo::file (webhook) cold: new Repos, first query", cold),
        ("Repo::file (webhook) uncached: read + parse", uncached),
        ("Repo::file (webhook) warm: cached manifests", cached),
        ("Mirror::file (bytes, as git show)", raw),
        ("Mirror::file + manifest::load", parsed),
    ] {
        report.row("file", how, stats(&samples), git_ref, None);
    }
    report.git_row(
        "file",
        "git show COMMIT:PATH, one process per query",
        git_stats,
    );
}

fn trees(report: &mut Report, ids: &Ids, url: &str, mirrors: &Path, cli: &Path) {
    eprintln!("manifest lookups of a whole app tree ({FILES_PER_APP} files) ...");
    let mut rng = Rng(SEED ^ 3);
    let lookups: Vec<(At, usize)> = (0..UNCACHED)
        .map(|_| (random_commit(&mut rng), rng.below(APPS)))
        .collect();
    // Every fifth file holds a Service beside its ConfigMap.
    let documents = |_app: usize| FILES_PER_APP + FILES_PER_APP.div_ceil(5);
    let git_stats = stats(&sample(CLI, |i| {
        let (at, app) = lookups[i];
        let listing = run(isolated(&mut git(cli)).args([
            "ls-tree",
            "-r",
            ids.id(at),
            "--",
            &format!("apps/svc-{app:04}"),
        ]));
        let mut request = Vec::new();
        for line in listing.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let (meta, _) = line.split_at(line.iter().position(|b| *b == b'\t').expect("a tab"));
            request.extend_from_slice(&meta[meta.len() - 40..]);
            request.push(b'\n');
        }
        assert_eq!(request.len(), FILES_PER_APP * 41);
        let mut batch = isolated(&mut git(cli))
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("git runs");
        batch
            .stdin
            .take()
            .expect("piped")
            .write_all(&request)
            .expect("the ids are written");
        let mut contents = Vec::new();
        batch
            .stdout
            .take()
            .expect("piped")
            .read_to_end(&mut contents)
            .expect("the blobs are read");
        assert!(batch.wait().expect("git ends").success());
        assert!(contents.len() > FILES_PER_APP * 300);
    }));
    let git_ref = Some(("git ls-tree -r + cat-file --batch", git_stats));
    let mirror = Mirror::open(url, mirrors).expect("the mirror opens");
    let read = |i: usize| {
        let (at, app) = lookups[i];
        let files = mirror
            .files(ids.oid(at), &format!("apps/svc-{app:04}"))
            .expect("the tree reads");
        assert_eq!(files.len(), FILES_PER_APP);
        (app, files)
    };
    let raw = sample(UNCACHED, |i| drop(read(i)));
    let parsed = sample(UNCACHED, |i| {
        let (app, files) = read(i);
        let manifests = manifest::load(
            files
                .iter()
                .map(|f| (f.path.as_str(), f.contents.as_slice())),
        )
        .expect("loads");
        assert_eq!(manifests.len(), documents(app));
    });
    let at_head = |view: &View, app: &App, k: usize| {
        let manifests = view.head_manifests(app).expect("the tree loads");
        assert_eq!(manifests.len(), documents(k));
    };
    let cold = sample(COLD, |i| at_head(&view(mirrors), &self::app(url, i), i));
    let view = view(mirrors);
    let apps: Vec<App> = (0..APPS).map(|k| app(url, k)).collect();
    let uncached = sample(APPS, |k| at_head(&view, &apps[k], k));
    let view = self::view(mirrors);
    for app in &apps[..CACHED_TREES] {
        view.head_manifests(app).expect("the tree loads");
    }
    let cached = sample(WARM, |i| {
        let k = i % CACHED_TREES;
        at_head(&view, &apps[k], k);
    });
    for (how, samples) in [
        (
            "Repo::tree (webhook) cold: new Repos, first query (head)",
            cold,
        ),
        (
            "Repo::tree (webhook) uncached: read + parse (head)",
            uncached,
        ),
        ("Repo::tree (webhook) warm: cached manifests (head)", cached),
        ("Mirror::files (bytes) at random commits", raw),
        ("Mirror::files + manifest::load at random commits", parsed),
    ] {
        report.row("tree", how, stats(&samples), git_ref, None);
    }
    report.git_row(
        "tree",
        "git ls-tree -r + git cat-file --batch (2 processes)",
        git_stats,
    );
}

fn fetches(report: &mut Report, ids: &Ids, url: &str, mirrors: &Path, cli: &Path, work: &Path) {
    eprintln!("fetches of an unchanged remote ...");
    // file://
    let git_file = stats(&sample(FETCHES, |_| {
        run(isolated(&mut git(cli)).args(["fetch", "--quiet"]));
    }));
    let cold = sample(COLD, |_| {
        let mirror = Mirror::open(url, mirrors).expect("the mirror opens");
        assert!(!mirror.fetch(None).expect("fetches"), "nothing changed");
    });
    let mirror = Mirror::open(url, mirrors).expect("the mirror opens");
    let warm = sample(FETCHES, |_| {
        assert!(!mirror.fetch(None).expect("fetches"), "nothing changed");
    });
    let git_ref = Some(("git fetch (bare mirror clone)", git_file));
    report.row(
        "fetch",
        "file://: Mirror::fetch cold: new Mirror",
        stats(&cold),
        git_ref,
        Some(TARGET_FETCH_MS),
    );
    report.row(
        "fetch",
        "file://: Mirror::fetch warm",
        stats(&warm),
        git_ref,
        Some(TARGET_FETCH_MS),
    );
    report.git_row(
        "fetch",
        "file://: git fetch in a bare mirror clone",
        git_file,
    );

    // Smart HTTP: `git http-backend` behind the suites' loopback server, serving the generated
    // repository's objects (through alternates) and its branches.
    let served = e2e::git::Repo::new();
    let generated_objects = ids.dir.join("repo.git/objects");
    std::fs::write(
        served.path().join(".git/objects/info/alternates"),
        format!("{}\n", generated_objects.display()),
    )
    .expect("alternates written");
    served.git(&[
        "update-ref",
        "refs/heads/main",
        ids.id(At::Main(MAIN_COMMITS - 1)),
    ]);
    served.git(&[
        "update-ref",
        "refs/heads/side",
        ids.id(At::Side(SIDE_COMMITS - 1)),
    ]);
    let remote = served.serve_http();
    let http_url = remote.url().to_owned();
    // A mirror of it that already holds everything: the cloned mirror's objects and refs.
    let http_mirrors = work.join("http-mirrors");
    drop(Mirror::open(&http_url, &http_mirrors).expect("the mirror opens"));
    let http_dir = mirror_dir(&http_mirrors);
    std::fs::write(
        http_dir.join("objects/info/alternates"),
        format!("{}\n", mirror_dir(mirrors).join("objects").display()),
    )
    .expect("alternates written");
    for (branch, at) in [
        ("main", At::Main(MAIN_COMMITS - 1)),
        ("side", At::Side(SIDE_COMMITS - 1)),
    ] {
        run(isolated(&mut git(&http_dir)).args([
            "update-ref",
            &format!("refs/remotes/origin/{branch}"),
            ids.id(at),
        ]));
    }
    let refspec = "+refs/heads/*:refs/remotes/http/*";
    run(isolated(&mut git(cli)).args(["fetch", "--quiet", &http_url, refspec]));
    let git_http = stats(&sample(FETCHES, |_| {
        run(isolated(&mut git(cli)).args(["fetch", "--quiet", &http_url, refspec]));
    }));
    let cold = sample(COLD, |_| {
        let mirror = Mirror::open(&http_url, &http_mirrors).expect("the mirror opens");
        assert!(!mirror.fetch(None).expect("fetches"), "nothing changed");
    });
    let mirror = Mirror::open(&http_url, &http_mirrors).expect("the mirror opens");
    let warm = sample(FETCHES, |_| {
        assert!(!mirror.fetch(None).expect("fetches"), "nothing changed");
    });
    let git_ref = Some(("git fetch over HTTP", git_http));
    report.row(
        "fetch",
        "smart HTTP: Mirror::fetch cold: new Mirror",
        stats(&cold),
        git_ref,
        Some(TARGET_FETCH_MS),
    );
    report.row(
        "fetch",
        "smart HTTP: Mirror::fetch warm",
        stats(&warm),
        git_ref,
        Some(TARGET_FETCH_MS),
    );
    report.git_row(
        "fetch",
        "smart HTTP: git fetch in a bare mirror clone",
        git_http,
    );
    drop(remote);
}

// ---------------------------------------------------------------------------------------------
// Child processes: the initial clone, and a webhook's view holding the mirror.

fn run_child(mode: &str, url: &str, cache: &Path, repo: &Path, work: &Path) -> Value {
    let out = work.join(format!("child-{mode}.json"));
    let status = Command::new(std::env::current_exe().expect("the bench binary"))
        .env(CHILD, mode)
        .env(CHILD_URL, url)
        .env(CHILD_CACHE, cache)
        .env(CHILD_REPO, repo)
        .env(CHILD_OUT, &out)
        .status()
        .expect("the bench runs itself");
    assert!(status.success(), "the {mode} child failed");
    serde_json::from_slice(&std::fs::read(&out).expect("the child's figures")).expect("JSON")
}

fn child(mode: &str) {
    let var = |name| std::env::var(name).expect("set by the parent");
    let url = var(CHILD_URL);
    let cache = PathBuf::from(var(CHILD_CACHE));
    let out = PathBuf::from(var(CHILD_OUT));
    let figures = match mode {
        "clone" => {
            let started = Instant::now();
            let mirror = Mirror::open(&url, &cache).expect("the mirror opens");
            assert!(mirror.fetch(None).expect("the clone fetches"));
            let seconds = started.elapsed().as_secs_f64();
            mirror.branch_head("main").expect("main is fetched");
            json!({
                "seconds": seconds,
                "vm_hwm_kib": status_kib("VmHWM"),
                "vm_rss_kib": status_kib("VmRSS"),
                "rss_anon_kib": status_kib("RssAnon"),
                "rss_file_kib": status_kib("RssFile"),
            })
        }
        "hold" => hold(&url, &cache, &PathBuf::from(var(CHILD_REPO))),
        other => panic!("unknown child mode {other}"),
    };
    std::fs::write(&out, figures.to_string()).expect("figures written");
}

/// As `admission serve` holds a repository: Repos on a runtime, fetched, then asked what the
/// decision asks until its caches are warm.
fn hold(url: &str, cache: &Path, repo_dir: &Path) -> Value {
    let ids = Ids::load(repo_dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let view = view(cache);
    let repo = view.repos.get(url).expect("the mirror opens");
    assert!(runtime.block_on(view.repos.fetch(&repo, None, Instant::now())));
    let after_fetch = status_kib("VmRSS");
    let mut rng = Rng(SEED ^ 4);
    let app = app(url, 0);
    let pairs: Vec<(At, At)> = (0..HISTORY / 2).map(|_| random_pair(&mut rng)).collect();
    let recent = recent_pairs(&mut rng);
    let lookups: Vec<(At, String)> = (0..WARM)
        .map(|_| {
            (
                random_commit(&mut rng),
                file_path(rng.below(APPS), rng.below(FILES_PER_APP)),
            )
        })
        .collect();
    let apps: Vec<App> = (0..CACHED_TREES).map(|k| self::app(url, k)).collect();
    // The first round fills the caches (memory after each kind of question); the second asks
    // again from them, then fetches again as the webhook does on its interval.
    let mut stages = vec![json!({"after": "open + fetch", "memory": memory()})];
    for round in 0..2 {
        for (a, b) in pairs.iter().chain(&recent) {
            assert_eq!(
                view.is_ancestor(&app, ids.id(*a), ids.id(*b))
                    .expect("an answer"),
                truth(*a, *b)
            );
        }
        if round == 0 {
            stages.push(json!({"after": "ancestry", "memory": memory()}));
        }
        for (at, path) in &lookups {
            view.manifests(&app, ids.id(*at), path)
                .expect("the file loads");
        }
        if round == 0 {
            stages.push(json!({"after": "files", "memory": memory()}));
        }
        for app in &apps {
            view.head_manifests(app).expect("the tree loads");
        }
        if round == 0 {
            stages.push(json!({"after": "trees", "memory": memory()}));
        }
        assert!(runtime.block_on(view.repos.fetch(&repo, None, Instant::now())));
    }
    stages.push(json!({"after": "cached round + fetch", "memory": memory()}));
    json!({
        "vm_hwm_kib": status_kib("VmHWM"),
        "vm_rss_kib": status_kib("VmRSS"),
        "rss_anon_kib": status_kib("RssAnon"),
        "rss_file_kib": status_kib("RssFile"),
        "rss_after_fetch_kib": after_fetch,
        "stages": stages,
        "ancestry_cached": pairs.len() + recent.len(),
        "files_cached": lookups.len(),
        "trees_cached": apps.len(),
    })
}

/// Resident memory now, in KiB: peak, total, heap and the like (anon), mapped files (the packs).
fn memory() -> Value {
    json!({
        "vm_hwm_kib": status_kib("VmHWM"),
        "vm_rss_kib": status_kib("VmRSS"),
        "rss_anon_kib": status_kib("RssAnon"),
        "rss_file_kib": status_kib("RssFile"),
    })
}

/// A field of /proc/self/status, in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The generated repository

#[derive(Debug)]
struct Generated {
    dir: PathBuf,
    seconds: f64,
    reused: bool,
}

fn generate(target: &Path) -> Generated {
    let key = format!(
        "v{GENERATOR}-main{MAIN_COMMITS}-side{SIDE_COMMITS}at{FORK_AT}-apps{APPS}x{FILES_PER_APP}-seed{SEED:x}"
    );
    let root = target.join("bench-git-repo");
    let dir = root.join(&key);
    let complete = dir.join("complete");
    if let Ok(seconds) = std::fs::read_to_string(&complete) {
        let seconds = seconds.trim().parse().unwrap_or_default();
        eprintln!(
            "repository: reusing {} (generated in {seconds:.1} s by an earlier run)",
            dir.display()
        );
        return Generated {
            dir,
            seconds,
            reused: true,
        };
    }
    // Other parameters' repositories are stale: only one is kept.
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&dir).expect("the repository directory");
    eprintln!(
        "repository: generating {MAIN_COMMITS} commits (+{SIDE_COMMITS} on a side branch), \
         {} files, with git fast-import ...",
        APPS * FILES_PER_APP
    );
    let started = Instant::now();
    let repo = dir.join("repo.git");
    run(isolated(&mut Command::new("git"))
        .args(["init", "--bare", "--quiet", "--initial-branch=main"])
        .arg(&repo));
    let mut import = isolated(&mut git(&repo))
        .args(["fast-import", "--quiet", "--done"])
        .arg(format!("--export-marks={}", dir.join("marks").display()))
        .stdin(Stdio::piped())
        .spawn()
        .expect("git fast-import runs");
    {
        let mut stream = BufWriter::with_capacity(1 << 20, import.stdin.take().expect("piped"));
        write_stream(&mut stream).expect("the stream is written");
        stream.flush().expect("the stream is flushed");
    }
    assert!(
        import.wait().expect("git fast-import ends").success(),
        "git fast-import failed"
    );
    let seconds = started.elapsed().as_secs_f64();
    std::fs::write(&complete, format!("{seconds}\n")).expect("marked complete");
    eprintln!(
        "repository: generated in {seconds:.1} s at {}",
        dir.display()
    );
    Generated {
        dir,
        seconds,
        reused: false,
    }
}

/// The fast-import stream: `main` (marks 1..=MAIN_COMMITS), whose first commit adds every file
/// and each later one changes one to three files of one app; then `side` from main's commit
/// FORK_AT (marks after main's).
fn write_stream(out: &mut impl Write) -> std::io::Result<()> {
    let mut rng = Rng(SEED);
    let start: i64 = 1_600_000_000;
    let commit = |out: &mut dyn Write,
                  branch: &str,
                  mark: usize,
                  from: Option<usize>,
                  time: i64,
                  revision: usize,
                  changes: &[(usize, usize)]|
     -> std::io::Result<()> {
        let message = match changes {
            [(app, file)] => format!("svc-{app:04}: config-{file:02} to r{revision}\n"),
            [(app, _), ..] => format!("svc-{app:04}: {} configs to r{revision}\n", changes.len()),
            [] => "empty\n".to_owned(),
        };
        writeln!(out, "commit refs/heads/{branch}")?;
        writeln!(out, "mark :{mark}")?;
        writeln!(out, "author Bench <bench@example.invalid> {time} +0000")?;
        writeln!(out, "committer Bench <bench@example.invalid> {time} +0000")?;
        writeln!(out, "data {}", message.len())?;
        out.write_all(message.as_bytes())?;
        if let Some(from) = from {
            writeln!(out, "from :{from}")?;
        }
        for &(app, file) in changes {
            let contents = contents(app, file, revision);
            writeln!(out, "M 100644 inline {}", file_path(app, file))?;
            writeln!(out, "data {}", contents.len())?;
            out.write_all(contents.as_bytes())?;
            writeln!(out)?;
        }
        writeln!(out)
    };
    let everything: Vec<(usize, usize)> = (0..APPS)
        .flat_map(|a| (0..FILES_PER_APP).map(move |f| (a, f)))
        .collect();
    let changes = |rng: &mut Rng| {
        let app = rng.below(APPS);
        let first = rng.below(FILES_PER_APP);
        (0..1 + rng.below(3))
            .map(|k| (app, (first + k) % FILES_PER_APP))
            .collect::<Vec<_>>()
    };
    for i in 0..MAIN_COMMITS {
        let files = if i == 0 {
            everything.clone()
        } else {
            changes(&mut rng)
        };
        commit(out, "main", i + 1, None, start + 60 * i as i64, i, &files)?;
    }
    for j in 0..SIDE_COMMITS {
        let files = changes(&mut rng);
        let from = (j == 0).then_some(FORK_AT + 1);
        let time = start + 60 * (FORK_AT + j) as i64 + 30;
        commit(
            out,
            "side",
            MAIN_COMMITS + j + 1,
            from,
            time,
            MAIN_COMMITS + j,
            &files,
        )?;
    }
    writeln!(out, "done")
}

fn file_path(app: usize, file: usize) -> String {
    format!("apps/svc-{app:04}/config-{file:02}.yaml")
}

/// A ConfigMap (about 400 bytes); every fifth file also holds a Service.
fn contents(app: usize, file: usize, revision: usize) -> String {
    let mut text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: svc-{app:04}-config-{file:02}\n  labels:\n    \
         app.kubernetes.io/name: svc-{app:04}\n    app.kubernetes.io/managed-by: kubectl-gitops\n\
         data:\n  revision: \"{revision}\"\n  replicas: \"{}\"\n  log-level: info\n  feature-flags: \
         \"search,checkout,recommendations\"\n  endpoint: http://svc-{app:04}.internal:8080/config-{file:02}\n  \
         timeout: 30s\n",
        1 + revision % 5
    );
    if file.is_multiple_of(5) {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{app:04}-{file:02}\nspec:\n  \
             selector:\n    app.kubernetes.io/name: svc-{app:04}\n  ports:\n  - port: 80\n    targetPort: 8080\n"
        ));
    }
    text
}

/// A commit of the generated history.
#[derive(Debug, Clone, Copy)]
enum At {
    Main(usize),
    Side(usize),
}

/// Whether `a` is `b` or an ancestor of it, from how the history was generated.
fn truth(a: At, b: At) -> bool {
    match (a, b) {
        (At::Main(i), At::Main(j)) => i <= j,
        (At::Main(i), At::Side(_)) => i <= FORK_AT,
        (At::Side(_), At::Main(_)) => false,
        (At::Side(i), At::Side(j)) => i <= j,
    }
}

/// Roughly how many commits a merge-base walk of `a` and `b` visits.
fn distance(a: At, b: At) -> usize {
    let main_index = |at: At| match at {
        At::Main(i) => i,
        At::Side(j) => FORK_AT + 1 + j,
    };
    match (a, b) {
        (At::Main(i), At::Main(j)) | (At::Side(i), At::Side(j)) => i.abs_diff(j),
        _ => main_index(a).abs_diff(FORK_AT) + main_index(b).abs_diff(FORK_AT),
    }
}

/// One commit in five from the side branch.
fn random_commit(rng: &mut Rng) -> At {
    if rng.below(5) == 0 {
        At::Side(rng.below(SIDE_COMMITS))
    } else {
        At::Main(rng.below(MAIN_COMMITS))
    }
}

/// A commit and a descendant candidate: main's head (the decision's usual question), a commit
/// of main, or one of the side branch.
fn random_pair(rng: &mut Rng) -> (At, At) {
    let a = random_commit(rng);
    let b = match rng.below(5) {
        0 | 1 => At::Main(MAIN_COMMITS - 1),
        2 | 3 => At::Main(rng.below(MAIN_COMMITS)),
        _ => At::Side(rng.below(SIDE_COMMITS)),
    };
    (a, b)
}

/// Each of main's RECENT newest commits vs main's head, in random order.
fn recent_pairs(rng: &mut Rng) -> Vec<(At, At)> {
    let mut back: Vec<usize> = (0..RECENT).collect();
    for i in (1..back.len()).rev() {
        back.swap(i, rng.below(i + 1));
    }
    let head = MAIN_COMMITS - 1;
    back.into_iter()
        .map(|k| (At::Main(head - k), At::Main(head)))
        .collect()
}

/// Commit ids by position, from fast-import's marks.
#[derive(Debug)]
struct Ids {
    dir: PathBuf,
    hex: Vec<String>,
    oids: Vec<shared::git::ObjectId>,
}

impl Ids {
    fn load(dir: &Path) -> Ids {
        let marks = std::fs::File::open(dir.join("marks")).expect("the marks file");
        let mut hex = vec![String::new(); MAIN_COMMITS + SIDE_COMMITS];
        for line in std::io::BufReader::new(marks).lines() {
            let line = line.expect("a marks line");
            let (mark, id) = line.split_once(' ').expect("mark and id");
            let mark: usize = mark.trim_start_matches(':').parse().expect("a mark");
            hex[mark - 1] = id.to_owned();
        }
        assert!(hex.iter().all(|h| h.len() == 40), "every commit is marked");
        let oids = hex
            .iter()
            .map(|h| shared::git::ObjectId::from_hex(h.as_bytes()).expect("an id"))
            .collect();
        Ids {
            dir: dir.to_owned(),
            hex,
            oids,
        }
    }

    fn index(at: At) -> usize {
        match at {
            At::Main(i) => i,
            At::Side(j) => MAIN_COMMITS + j,
        }
    }

    fn id(&self, at: At) -> &str {
        &self.hex[Self::index(at)]
    }

    fn oid(&self, at: At) -> shared::git::ObjectId {
        self.oids[Self::index(at)]
    }
}

/// splitmix64: deterministic, no dependency.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The webhook's view with nothing in it yet: its Git side is what is measured.
fn view(cache: &Path) -> View {
    View {
        apps: reflector::store::<App>().0,
        projects: reflector::store::<shared::project::Project>().0,
        repos: Arc::new(Repos::new(
            cache.to_owned(),
            shared::git::DEFAULT_TIMEOUT,
            Arc::new(Metrics::default()),
        )),
        fresh: Arc::default(),
        canaries: reflector::store::<shared::canary::Canary>().0,
        fresh_canaries: Arc::default(),
    }
}

/// An app on `main` whose path is app `k`'s directory.
fn app(url: &str, k: usize) -> App {
    let spec: AppSpec = serde_json::from_value(json!({
        "repoURL": url, "branch": "main", "path": format!("apps/svc-{k:04}"),
    }))
    .expect("an app spec");
    let mut app = App::new(&format!("svc-{k:04}"), spec);
    app.metadata.namespace = Some("bench".into());
    app
}

/// The only mirror directory below `cache`.
fn mirror_dir(cache: &Path) -> PathBuf {
    std::fs::read_dir(cache)
        .expect("the mirror cache")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("HEAD").is_file())
        .expect("a mirror")
}

/// Git without the user's or the system's configuration.
fn isolated(command: &mut Command) -> &mut Command {
    command
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
}

fn git(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command.arg("-C").arg(dir);
    command
}

/// Runs a git command; its stdout. Panics when it fails.
fn run(command: &mut Command) -> Vec<u8> {
    let output = command.output().expect("git runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// How long each of `n` calls of `f` took.
fn sample(n: usize, mut f: impl FnMut(usize)) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let started = Instant::now();
            f(i);
            started.elapsed()
        })
        .collect()
}

/// Milliseconds.
#[derive(Debug, Clone, Copy)]
struct Stats {
    n: usize,
    p50: f64,
    p99: f64,
    mean: f64,
    max: f64,
}

impl Stats {
    fn one(d: Duration) -> Stats {
        stats(&[d])
    }

    fn json(&self) -> Value {
        json!({"n": self.n, "p50_ms": self.p50, "p99_ms": self.p99, "mean_ms": self.mean, "max_ms": self.max})
    }
}

fn stats(samples: &[Duration]) -> Stats {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Stats {
        n: ms.len(),
        p50: at(0.50),
        p99: at(0.99),
        mean: ms.iter().sum::<f64>() / ms.len() as f64,
        max: at(1.0),
    }
}

fn format_ms(ms: f64) -> String {
    if ms >= 1_000.0 {
        format!("{:.2} s", ms / 1e3)
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.3} ms")
    }
}

fn verdict(value: f64, target: f64, unit: &str) -> String {
    if value <= target {
        format!("meets ≤ {target} {unit}")
    } else {
        format!(
            "MISSES ≤ {target} {unit} by {:.1} {unit} ({:.1}x)",
            value - target,
            value / target
        )
    }
}

#[derive(Debug, Default)]
struct Report {
    lines: Vec<String>,
    json: Vec<Value>,
}

impl Report {
    /// One figure of ours, beside the git CLI's (ratio: git p50 / ours p50) and a target on p50.
    fn row(
        &mut self,
        op: &str,
        how: &str,
        ours: Stats,
        git: Option<(&str, Stats)>,
        target_ms: Option<f64>,
    ) {
        let ratio = git.map(|(_, g)| g.p50 / ours.p50);
        let mut line = format!(
            "{op:<8} {how:<58} {:>5} {:>10} {:>10}",
            ours.n,
            format_ms(ours.p50),
            format_ms(ours.p99)
        );
        if let Some((_, g)) = git {
            line.push_str(&format!(
                " | git {:>10} {:>10} | {:>8}",
                format_ms(g.p50),
                format_ms(g.p99),
                format!("{:.1}x", g.p50 / ours.p50)
            ));
        }
        if let Some(target) = target_ms {
            line.push_str(&format!(" | p50 {}", verdict(ours.p50, target, "ms")));
        }
        eprintln!("  {line}");
        self.lines.push(line);
        self.json.push(json!({
            "op": op, "how": how, "ours": ours.json(),
            "git": git.map(|(what, g)| json!({"what": what, "stats": g.json()})),
            "ratio_git_over_ours": ratio,
            "target_ms": target_ms,
            "meets_target": target_ms.map(|t| ours.p50 <= t),
        }));
    }

    fn git_row(&mut self, op: &str, how: &str, git: Stats) {
        let line = format!(
            "{op:<8} {how:<58} {:>5} {:>10} {:>10}",
            git.n,
            format_ms(git.p50),
            format_ms(git.p99)
        );
        eprintln!("  {line}");
        self.lines.push(line);
        self.json
            .push(json!({"op": op, "how": how, "git_cli": git.json()}));
    }

    fn print(&self, generated: &Generated) {
        eprintln!();
        eprintln!(
            "git benchmark: {MAIN_COMMITS} commits on main (+{SIDE_COMMITS} on a side branch), {} files \
             in {APPS} apps; repository {} ({:.1} s)",
            APPS * FILES_PER_APP,
            if generated.reused {
                "reused, generated by an earlier run"
            } else {
                "generated in this run"
            },
            generated.seconds
        );
        eprintln!(
            "targets: ancestry check ≤ {TARGET_ANCESTRY_MS} ms warm; unchanged-remote fetch ≤ \
             {TARGET_FETCH_MS} ms; webhook RSS ≤ {TARGET_RSS_MIB} MiB"
        );
        eprintln!(
            "{:<8} {:<58} {:>5} {:>10} {:>10} | git {:>10} {:>10} | git/ours",
            "op", "ours", "n", "p50", "p99", "p50", "p99"
        );
        for line in &self.lines {
            eprintln!("{line}");
        }
    }
}
