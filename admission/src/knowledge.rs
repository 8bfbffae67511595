//! What the webhook knows: the app definitions (a watch) and a Git mirror per repository, with
//! the answers it has already computed cached so the allow path costs no Git work.
//!
//! Facts about commits never change once known (a commit's files, its ancestry), so those caches
//! are only bounded, never invalidated; branch heads are read again after every fetch.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use kube::ResourceExt as _;
use kube::runtime::reflector::{ObjectRef, Store};
use shared::admission::{Knowledge, Lookup};
use shared::app::App;
use shared::canary::Canary;
use shared::git::{Credentials, Mirror, ObjectId};
use shared::manifest::{self, Manifest};
use shared::project::Project;
use shared::provenance::APP_ANNOTATION;

use crate::metrics::Metrics;

/// Entries a cache keeps before it starts over.
const CACHE_LIMIT: usize = 50_000;

/// The mirrors of every repository an app names.
#[derive(Debug)]
pub struct Repos {
    cache_dir: PathBuf,
    /// How long a remote may stay silent during a fetch.
    timeout: Duration,
    repos: RwLock<HashMap<String, Arc<Repo>>>,
    metrics: Arc<Metrics>,
}

/// One repository: its mirror, what was learned from it, and how its fetches went.
#[derive(Debug)]
pub struct Repo {
    url: String,
    mirror: Mirror,
    facts: Mutex<Facts>,
    /// Serialises fetches; holds how the last one went.
    fetching: tokio::sync::Mutex<Option<Attempt>>,
    state: Mutex<FetchState>,
}

#[derive(Debug, Default)]
struct Facts {
    commits: HashSet<ObjectId>,
    ancestry: HashMap<(ObjectId, ObjectId), bool>,
    heads: HashMap<String, ObjectId>,
    /// Bumped by every fetch; a head read before a fetch is not cached after it.
    generation: u64,
    files: HashMap<(ObjectId, String), Arc<Vec<Manifest>>>,
    trees: HashMap<(ObjectId, String), Arc<Vec<Manifest>>>,
    /// Signature verdicts by (policy, commit): a commit's signature never changes.
    signatures: HashMap<(u64, ObjectId), Result<String, String>>,
}

/// One fetch: when it started and ended, and whether it succeeded.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    started: Instant,
    ended: Instant,
    ok: bool,
}

/// How the fetches of a repository went, for readiness and logs.
#[derive(Debug, Default, Clone)]
pub struct FetchState {
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
    /// Whether the mirror holds any branch (fetched now or by an earlier run).
    pub loaded: bool,
    /// Whether this process has tried to fetch it at least once.
    pub attempted: bool,
}

impl Repos {
    pub fn new(cache_dir: PathBuf, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Repos {
            cache_dir,
            timeout,
            repos: RwLock::new(HashMap::new()),
            metrics,
        }
    }

    /// The repository at `url`, its mirror opened (not fetched) on first use.
    pub fn get(&self, url: &str) -> Result<Arc<Repo>, String> {
        if let Some(repo) = self.repos.read().ok().and_then(|r| r.get(url).cloned()) {
            return Ok(repo);
        }
        let mirror = Mirror::open(url, &self.cache_dir)
            .map_err(|e| error_chain(&e))?
            .with_timeout(self.timeout);
        let loaded = mirror.branches().is_ok_and(|b| !b.is_empty());
        let repo = Arc::new(Repo {
            url: url.to_owned(),
            mirror,
            facts: Mutex::new(Facts::default()),
            fetching: tokio::sync::Mutex::new(None),
            state: Mutex::new(FetchState {
                loaded,
                ..FetchState::default()
            }),
        });
        let mut repos = self
            .repos
            .write()
            .map_err(|_| "mirror table poisoned".to_owned())?;
        Ok(repos.entry(url.to_owned()).or_insert(repo).clone())
    }

    pub fn all(&self) -> Vec<Arc<Repo>> {
        self.repos
            .read()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Fetches `repo` unless a fetch started at or after `since` (it saw everything pushed
    /// before `since`); waits for a fetch already running instead of starting another. Returns
    /// whether the mirror is now at least as new as the remote was at `since`.
    ///
    /// A fetch that failed after `since` while this one waited is not repeated: against a
    /// remote that hangs, waiting callers fail with it instead of queueing one timeout each.
    pub async fn fetch(
        &self,
        repo: &Arc<Repo>,
        credentials: Option<Credentials>,
        since: Instant,
    ) -> bool {
        let mut last = repo.fetching.lock().await;
        if let Some(attempt) = *last {
            if attempt.started >= since {
                return attempt.ok;
            }
            if !attempt.ok && attempt.ended >= since {
                return false;
            }
        }
        let started = Instant::now();
        let worker = repo.clone();
        let outcome =
            tokio::task::spawn_blocking(move || worker.mirror.fetch(credentials.as_ref())).await;
        let outcome = match outcome {
            Ok(result) => result.map_err(|e| error_chain(&e)),
            Err(e) => Err(format!("the fetch task failed: {e}")),
        };
        *last = Some(Attempt {
            started,
            ended: Instant::now(),
            ok: outcome.is_ok(),
        });
        self.metrics.fetched(&repo.url, outcome.is_ok());
        if let Ok(mut state) = repo.state.lock() {
            state.attempted = true;
            match &outcome {
                Ok(_) => {
                    state.last_success = Some(SystemTime::now());
                    state.last_error = None;
                    state.loaded = true;
                }
                Err(e) => state.last_error = Some(e.clone()),
            }
        }
        if let Ok(mut facts) = repo.facts.lock() {
            facts.heads.clear();
            facts.generation += 1;
        }
        if let Err(e) = &outcome {
            tracing::warn!(repo = %repo.url, error = %e, "fetch-failed");
        }
        outcome.is_ok()
    }
}

impl Repo {
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether a fetch of this repository is under way.
    pub fn fetch_running(&self) -> bool {
        self.fetching.try_lock().is_err()
    }

    pub fn state(&self) -> FetchState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn commit_id(&self, commit: &str) -> Lookup<Option<ObjectId>> {
        let Ok(id) = ObjectId::from_hex(commit.as_bytes()) else {
            return Ok(None);
        };
        if self.facts.lock().is_ok_and(|f| f.commits.contains(&id)) {
            return Ok(Some(id));
        }
        match self.mirror.resolve(commit) {
            Ok(found) if found == id => {
                if let Ok(mut facts) = self.facts.lock() {
                    if facts.commits.len() >= CACHE_LIMIT {
                        facts.commits.clear();
                    }
                    facts.commits.insert(id);
                }
                Ok(Some(id))
            }
            _ => Ok(None),
        }
    }

    fn known(&self, commit: &str) -> Lookup<ObjectId> {
        self.commit_id(commit)?
            .ok_or_else(|| format!("commit {commit} is not in the mirror of {}", self.url))
    }

    fn head(&self, branch: &str) -> Lookup<ObjectId> {
        let generation = match self.facts.lock() {
            Ok(facts) => match facts.heads.get(branch) {
                Some(id) => return Ok(*id),
                None => facts.generation,
            },
            Err(_) => 0,
        };
        let id = self
            .mirror
            .branch_head(branch)
            .map_err(|e| error_chain(&e))?;
        if let Ok(mut facts) = self.facts.lock()
            && facts.generation == generation
        {
            facts.heads.insert(branch.to_owned(), id);
        }
        Ok(id)
    }

    fn ancestry(&self, ancestor: ObjectId, descendant: ObjectId) -> Lookup<bool> {
        self.cached(
            |f| &mut f.ancestry,
            CACHE_LIMIT,
            (ancestor, descendant),
            || {
                self.mirror
                    .is_ancestor(ancestor, descendant)
                    .map_err(|e| error_chain(&e))
            },
        )
    }

    fn file(&self, commit: ObjectId, path: &str) -> Lookup<Arc<Vec<Manifest>>> {
        self.cached(
            |f| &mut f.files,
            CACHE_LIMIT,
            (commit, path.to_owned()),
            || {
                let bytes = self
                    .mirror
                    .file(commit, path)
                    .map_err(|e| error_chain(&e))?;
                let manifests = match bytes {
                    None => Vec::new(),
                    Some(bytes) => manifest::load([(path, bytes.as_slice())])
                        .map_err(|e| format!("{path} at commit {commit} does not load: {e}"))?,
                };
                Ok(Arc::new(manifests))
            },
        )
    }

    /// Whether `commit` satisfies `policy`; kept per policy and commit.
    fn signed(
        &self,
        policy: &shared::signature::SignaturePolicy,
        commit: ObjectId,
    ) -> Lookup<Result<String, String>> {
        let key = {
            use std::hash::{Hash as _, Hasher as _};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            serde_json::to_string(policy)
                .unwrap_or_default()
                .hash(&mut hasher);
            hasher.finish()
        };
        self.cached(
            |f| &mut f.signatures,
            CACHE_LIMIT,
            (key, commit),
            // A commit that could not be read (the mirror lacks part of its history) is not a
            // verdict: asked again, not kept.
            || match self.mirror.check_signatures(commit, policy) {
                Err(why) if self.mirror.signature_unreadable(&why) => Err(why),
                verdict => Ok(verdict),
            },
        )
    }

    /// Every manifest below `path`: a whole tree, so only a few are kept.
    fn tree(&self, commit: ObjectId, path: &str) -> Lookup<Arc<Vec<Manifest>>> {
        self.cached(
            |f| &mut f.trees,
            64,
            (commit, path.to_owned()),
            || {
                let files = self
                    .mirror
                    .files(commit, path)
                    .map_err(|e| error_chain(&e))?;
                let manifests = manifest::load(
                    files
                        .iter()
                        .map(|f| (f.path.as_str(), f.contents.as_slice())),
                )
                .map_err(|e| format!("{path} at commit {commit} does not load: {e}"))?;
                Ok(Arc::new(manifests))
            },
        )
    }

    /// The answer kept in `table` for `key`, else `compute`d (outside the lock) and kept; a
    /// table that reaches `limit` entries starts over.
    fn cached<K: std::hash::Hash + Eq, V: Clone>(
        &self,
        table: impl Fn(&mut Facts) -> &mut HashMap<K, V>,
        limit: usize,
        key: K,
        compute: impl FnOnce() -> Lookup<V>,
    ) -> Lookup<V> {
        if let Some(found) = self
            .facts
            .lock()
            .ok()
            .and_then(|mut f| table(&mut f).get(&key).cloned())
        {
            return Ok(found);
        }
        let value = compute()?;
        if let Ok(mut facts) = self.facts.lock() {
            let table = table(&mut facts);
            if table.len() >= limit {
                table.clear();
            }
            table.insert(key, value.clone());
        }
        Ok(value)
    }
}

/// The decision's view of apps, projects and Git.
#[derive(Clone)]
pub struct View {
    pub apps: Store<App>,
    /// Projects (a watch): the trust root.
    pub projects: Store<Project>,
    pub repos: Arc<Repos>,
    /// Apps read from the apiserver because the watch had not delivered them (or their newest
    /// status) yet; newer than the store while present.
    pub fresh: Arc<RwLock<HashMap<String, Arc<App>>>>,
    /// Canary strategies (a watch): their status says which replicas a rollout holds in force.
    pub canaries: Store<Canary>,
    /// Canaries read from the apiserver after a refusal a newer rollout step may explain; the
    /// newer of these and the watch's copy counts.
    pub fresh_canaries: Arc<RwLock<FreshCanaries>>,
}

/// Canaries by (namespace, name).
pub type FreshCanaries = HashMap<(String, String), Arc<Canary>>;

/// The resourceVersion as a number, to tell which of two copies is newer.
fn version(c: &Canary) -> u64 {
    c.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("apps", &self.apps.len())
            .finish()
    }
}

impl View {
    /// Remembers an app read from the apiserver, newer than what the watch delivered.
    pub fn remember(&self, key: &str, app: App) {
        if let Ok(mut fresh) = self.fresh.write() {
            if fresh.len() > 1_000 {
                fresh.clear();
            }
            fresh.insert(key.to_owned(), Arc::new(app));
        }
    }

    /// Drops what [`View::remember`] kept once the watch has caught up.
    pub fn forget(&self, key: &str) {
        if let Ok(mut fresh) = self.fresh.write() {
            fresh.remove(key);
        }
    }

    /// Drops the copy of `canary` read from the apiserver: the watch has delivered it (or its
    /// deletion).
    pub fn forget_canary(&self, canary: &Canary) {
        if let Ok(mut fresh) = self.fresh_canaries.write() {
            fresh.remove(&(canary.namespace().unwrap_or_default(), canary.name_any()));
        }
    }

    /// Remembers Canaries read from the apiserver.
    pub fn remember_canaries(&self, canaries: Vec<Canary>) {
        if let Ok(mut fresh) = self.fresh_canaries.write() {
            if fresh.len() > 1_000 {
                fresh.clear();
            }
            for c in canaries {
                let key = (c.namespace().unwrap_or_default(), c.name_any());
                fresh.insert(key, Arc::new(c));
            }
        }
    }

    fn repo(&self, app: &App) -> Lookup<Arc<Repo>> {
        self.repos.get(&app.spec.repo_url)
    }
}

impl Knowledge for View {
    fn app(&self, key: &str) -> Option<Arc<App>> {
        if let Some(app) = self.fresh.read().ok().and_then(|f| f.get(key).cloned()) {
            return Some(app);
        }
        let (namespace, name) = key.split_once('/')?;
        self.apps.get(&ObjectRef::new(name).within(namespace))
    }

    fn project(&self, name: &str) -> Option<Arc<Project>> {
        self.projects.get(&ObjectRef::new(name))
    }

    fn projects(&self) -> Vec<Arc<Project>> {
        self.projects.state()
    }

    fn has_commit(&self, app: &App, commit: &str) -> Lookup<bool> {
        Ok(self.repo(app)?.commit_id(commit)?.is_some())
    }

    fn is_ancestor(&self, app: &App, ancestor: &str, descendant: &str) -> Lookup<bool> {
        let repo = self.repo(app)?;
        repo.ancestry(repo.known(ancestor)?, repo.known(descendant)?)
    }

    fn branch_head(&self, app: &App) -> Lookup<String> {
        Ok(self.repo(app)?.head(&app.spec.branch)?.to_string())
    }

    fn signed(
        &self,
        app: &App,
        policy: &shared::signature::SignaturePolicy,
        commit: &str,
    ) -> Lookup<Result<String, String>> {
        let repo = self.repo(app)?;
        repo.signed(policy, repo.known(commit)?)
    }

    fn branches_with(&self, app: &App, commit: &str) -> Vec<String> {
        let Ok(repo) = self.repo(app) else {
            return Vec::new();
        };
        let Ok(id) = repo.known(commit) else {
            return Vec::new();
        };
        let branches = repo.mirror.branches().unwrap_or_default();
        branches
            .into_iter()
            .filter(|(_, head)| repo.ancestry(id, *head).unwrap_or(false))
            .map(|(name, _)| name)
            .collect()
    }

    fn manifests(&self, app: &App, commit: &str, path: &str) -> Lookup<Arc<Vec<Manifest>>> {
        let repo = self.repo(app)?;
        repo.file(repo.known(commit)?, path)
    }

    fn head_manifests(&self, app: &App) -> Lookup<Arc<Vec<Manifest>>> {
        let repo = self.repo(app)?;
        let head = repo.head(&app.spec.branch)?;
        repo.tree(head, &app.spec.path)
    }

    fn app_manifests(&self, app: &App, commit: &str) -> Lookup<Arc<Vec<Manifest>>> {
        let repo = self.repo(app)?;
        repo.tree(repo.known(commit)?, &app.spec.path)
    }

    fn rollout(&self, app: &str, namespace: &str, target: &str) -> Option<Arc<Canary>> {
        let matches = |c: &Canary| {
            c.spec.target == target
                && c.metadata.namespace.as_deref() == Some(namespace)
                && c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(APP_ANNOTATION))
                    .is_some_and(|owner| owner == app)
        };
        let watched = self.canaries.state().into_iter().filter(|c| matches(c));
        let fresh: Vec<Arc<Canary>> = self
            .fresh_canaries
            .read()
            .map(|f| f.values().filter(|c| matches(c)).cloned().collect())
            .unwrap_or_default();
        watched.chain(fresh).max_by_key(|c| version(c))
    }
}

pub use shared::error_chain;
