//! The webhook's fetches against a Git remote that hangs: each gives up after the timeout, and
//! callers that waited for a fetch that failed meanwhile do not queue one timeout each behind it.
//! No apiserver is involved: the mirrors alone, against a real repository over smart HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use admission::knowledge::Repos;
use admission::metrics::Metrics;
use e2e::git::Repo;
use e2e::gitops::config_map;

#[test]
fn callers_waiting_on_a_hanging_fetch_fail_with_it_instead_of_queueing() {
    // gix speaks HTTP through reqwest, whose rustls uses the process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let repo = Repo::new();
    repo.write("settings.yaml", &config_map("settings", "1"));
    repo.commit("settings");
    let remote = repo.serve_http();
    let cache = tempfile::tempdir().expect("a cache directory");
    let repos = Arc::new(Repos::new(
        cache.path().to_owned(),
        Duration::from_secs(2),
        Arc::new(Metrics::default()),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mirror = repos.get(remote.url()).expect("the mirror opens");
    assert!(runtime.block_on(repos.fetch(&mirror, None, Instant::now())));

    remote.set_stalled(true);
    let before = remote.connections();
    let asked = Instant::now();
    let outcomes: Vec<bool> = runtime.block_on(async {
        let first = {
            let (repos, mirror) = (repos.clone(), mirror.clone());
            tokio::spawn(async move { repos.fetch(&mirror, None, Instant::now()).await })
        };
        // Reviews arriving while that fetch hangs (each would otherwise start its own).
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(mirror.fetch_running());
        let waiting: Vec<_> = (0..5)
            .map(|_| {
                let (repos, mirror) = (repos.clone(), mirror.clone());
                tokio::spawn(async move { repos.fetch(&mirror, None, Instant::now()).await })
            })
            .collect();
        let mut outcomes = vec![first.await.expect("the fetch task")];
        for task in waiting {
            outcomes.push(task.await.expect("a fetch task"));
        }
        outcomes
    });
    assert_eq!(outcomes, [false; 6]);
    // One attempt reached the remote, and everybody had an answer after its timeout, not six.
    assert_eq!(remote.connections() - before, 1);
    assert!(
        asked.elapsed() < Duration::from_secs(6),
        "{:?}",
        asked.elapsed()
    );
    let state = mirror.state();
    assert!(
        state
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{state:?}"
    );

    // Once it answers again, the next fetch succeeds.
    remote.set_stalled(false);
    assert!(runtime.block_on(repos.fetch(&mirror, None, Instant::now())));
}
