//! Git access: a bare mirror of an app's repository, fetched over file:// or smart HTTP.
//!
//! Everything here blocks; async callers run it on a blocking thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use gix::ObjectId;
use thiserror::Error;

type Source = Box<dyn std::error::Error + Send + Sync>;

/// Where remote branches land in the mirror.
const REFSPEC: &str = "+refs/heads/*:refs/remotes/origin/*";

/// How long an HTTP(S) remote may take to accept a connection, answer a request or send the next
/// bytes of a pack before a fetch fails, unless [`Mirror::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum GitError {
    #[error("cannot open the mirror of {url} at {}", .dir.display())]
    Open {
        url: String,
        dir: PathBuf,
        #[source]
        source: Source,
    },
    #[error("cannot fetch {url}")]
    Fetch {
        url: String,
        #[source]
        source: Source,
    },
    #[error("cannot write the commit-graph of the mirror of {url} at {}", .dir.display())]
    CommitGraph {
        url: String,
        dir: PathBuf,
        #[source]
        source: Source,
    },
    #[error("branch {branch} does not exist in {url}")]
    NoBranch { url: String, branch: String },
    #[error("{rev} is not a commit of {url}")]
    UnknownCommit { url: String, rev: String },
    #[error(
        "commit {commit} is not on branch {branch} of {url}: only merged commits can be synced"
    )]
    NotOnBranch {
        url: String,
        branch: String,
        commit: String,
    },
    #[error("path {path} does not exist at commit {commit} of {url}")]
    NoPath {
        url: String,
        path: String,
        commit: String,
    },
    #[error("{reason} (project {project} requires signed commits); nothing was changed")]
    Signature { project: String, reason: String },
    #[error("cannot read commit {commit} of {url}")]
    Read {
        url: String,
        commit: String,
        #[source]
        source: Source,
    },
}

/// An account for an HTTP(S) remote.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A file at a commit: its path from the repository root and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub contents: Vec<u8>,
}

/// The trailer of a hydrated commit that names the source commit it was rendered from.
pub const HYDRATED_FROM_TRAILER: &str = "Hydrated-From";

/// A commit as history shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub id: String,
    pub summary: String,
    pub author: String,
    /// Seconds since the epoch.
    pub time: i64,
    /// The source commit a hydrated commit was rendered from (its `Hydrated-From` trailer).
    pub source: Option<String>,
}

/// The value of trailer `key` in the last paragraph of a commit message.
pub fn trailer(message: &str, key: &str) -> Option<String> {
    let last = message.trim_end().rsplit("\n\n").next()?;
    last.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim().to_owned())
    })
}

/// A bare mirror of one repository.
#[derive(Debug)]
pub struct Mirror {
    url: String,
    dir: PathBuf,
    /// Opened again after every fetch (see [`Mirror::fetch`]).
    repo: std::sync::RwLock<gix::ThreadSafeRepository>,
    timeout: Duration,
    /// Per signature policy (its digest): commits known to satisfy it in strict mode.
    signed: Mutex<std::collections::HashMap<String, std::collections::HashSet<ObjectId>>>,
}

impl Mirror {
    /// Opens the mirror of `url` below `cache_dir`, creating it on first use. Nothing is fetched.
    pub fn open(url: &str, cache_dir: &Path) -> Result<Self, GitError> {
        let dir = cache_dir.join(mirror_dir_name(url));
        let open_err = |source: Source| GitError::Open {
            url: url.to_owned(),
            dir: dir.clone(),
            source,
        };
        let repo = if dir.join("HEAD").is_file() {
            gix::open_opts(&dir, gix::open::Options::isolated()).map_err(|e| open_err(e.into()))?
        } else {
            std::fs::create_dir_all(&dir).map_err(|e| open_err(e.into()))?;
            gix::init_bare(&dir).map_err(|e| open_err(e.into()))?
        };
        Ok(Mirror {
            url: url.to_owned(),
            dir: repo.git_dir().to_owned(),
            repo: std::sync::RwLock::new(repo.into_sync()),
            timeout: DEFAULT_TIMEOUT,
            signed: Mutex::default(),
        })
    }

    /// Bounds how long an HTTP(S) remote may stay silent during a fetch: connecting, waiting for
    /// an answer, and between two reads of a pack. A remote that hangs fails the fetch after
    /// this long instead of holding it (and whoever waits for it) forever; a large pack that
    /// keeps arriving is not cut off.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A handle on the repository for this thread.
    fn local(&self) -> gix::Repository {
        match self.repo.read() {
            Ok(repo) => repo.to_thread_local(),
            Err(poisoned) => poisoned.into_inner().to_thread_local(),
        }
    }

    /// Runs `f` with a handle on the repository for this thread, e.g. to check commit signatures
    /// with [`crate::signature::check`].
    pub fn with_repo<T>(&self, f: impl FnOnce(&gix::Repository) -> T) -> T {
        f(&self.local())
    }

    /// Checks `commit` against a project's signature `policy`: the key that signed it, or why
    /// it fails (naming the commit and the key). Strict mode remembers the commits it has
    /// checked, so a later commit costs only the ones after it.
    pub fn check_signatures(
        &self,
        commit: ObjectId,
        policy: &crate::signature::SignaturePolicy,
    ) -> Result<String, String> {
        let keyring = crate::signature::Keyring::from_policy(policy)
            .map_err(|e| format!("its signature policy is not valid: {e}"))?;
        let mut memo = self
            .signed
            .lock()
            .map(|mut m| m.remove(keyring.digest()).unwrap_or_default())
            .unwrap_or_default();
        let checked =
            self.with_repo(|repo| crate::signature::check(repo, commit, &keyring, &mut memo));
        if let Ok(mut memos) = self.signed.lock()
            && memo.len() < 100_000
        {
            memos.insert(keyring.digest().to_owned(), memo);
        }
        checked
            .map(|signer| signer.to_string())
            .map_err(|e| e.to_string())
    }

    /// Whether a refusal of [`Mirror::check_signatures`] only says that history could not be
    /// read, so that asking again after a fetch may answer.
    pub fn signature_unreadable(&self, why: &str) -> bool {
        why.starts_with("cannot read commit ")
    }

    /// The mirror's directory (a bare repository).
    pub fn git_dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// Fetches every branch. Returns whether anything changed.
    pub fn fetch(&self, credentials: Option<&Credentials>) -> Result<bool, GitError> {
        let fetch_err = |source: Source| GitError::Fetch {
            url: self.url.clone(),
            source,
        };
        let repo = self.local();
        let remote = repo
            .remote_at(self.url.as_str())
            .map_err(|e| fetch_err(e.into()))?
            .with_refspecs([REFSPEC], gix::remote::Direction::Fetch)
            .map_err(|e| fetch_err(e.into()))?;
        let mut connection = remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(|e| fetch_err(e.into()))?;
        if let Some(options) = self.transport_options(&repo) {
            connection = connection.with_transport_options(options);
        }
        let outcome = connection
            // Only the given account is offered: no credential helper of the host is asked.
            .with_credentials(|action| match (action, credentials) {
                (gix::credentials::helper::Action::Get(context), Some(account)) => {
                    Ok(Some(gix::credentials::protocol::Outcome {
                        identity: gix::sec::identity::Account {
                            username: account.username.clone(),
                            password: account.password.clone(),
                            oauth_refresh_token: None,
                        },
                        next: context.into(),
                    }))
                }
                _ => Ok(None),
            })
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| fetch_err(e.into()))?
            .receive(gix::progress::Discard, &AtomicBool::new(false))
            .map_err(|e| fetch_err(e.into()))?;
        let changed = !matches!(
            outcome.status,
            gix::remote::fetch::Status::NoPackReceived { .. }
        );
        if changed || !crate::commit_graph::path(repo.git_dir()).is_file() {
            self.update_commit_graph()?;
        }
        // A fresh handle after every fetch: a new pack is seen at once, and the pack pages that
        // queries mapped in so far are unmapped once the handles in use are dropped, so resident
        // memory does not keep every page of history that was ever read.
        let fresh = gix::open_opts(&self.dir, gix::open::Options::isolated())
            .map_err(|e| fetch_err(e.into()))?;
        if let Ok(mut repo) = self.repo.write() {
            *repo = fresh.into_sync();
        }
        Ok(changed)
    }

    /// Adds the commits the mirror's commit-graph file lacks (see [`crate::commit_graph`]).
    /// Done with a repository handle of its own, so the pack pages it reads are unmapped again
    /// instead of staying in this mirror's resident memory.
    pub fn update_commit_graph(&self) -> Result<usize, GitError> {
        let dir = self.git_dir();
        let graph_err = |source: Source| GitError::CommitGraph {
            url: self.url.clone(),
            dir: dir.clone(),
            source,
        };
        let repo = gix::open_opts(&dir, gix::open::Options::isolated())
            .map_err(|e| graph_err(e.into()))?;
        crate::commit_graph::update(&repo).map_err(graph_err)
    }

    /// The HTTP options the repository's configuration gives for this remote, with the timeout
    /// applied to every request; `None` for a remote that is not HTTP(S).
    fn transport_options(&self, repo: &gix::Repository) -> Option<Box<dyn std::any::Any>> {
        use gix::protocol::transport::client::blocking_io::http;
        let mut options = repo
            .transport_options(self.url.as_str(), None)
            .ok()
            .flatten()?
            .downcast::<http::Options>()
            .ok()?;
        let timeout = self.timeout;
        options.connect_timeout = Some(timeout);
        let backend = http::reqwest::Options {
            configure_client: Some(Box::new(move |client| {
                // For the blocking client this bounds sending a request and each read of the
                // answer, not the whole transfer.
                Ok(client.connect_timeout(timeout).timeout(timeout))
            })),
            configure_request: None,
        };
        options.backend = Some(Arc::new(Mutex::new(backend)));
        Some(options)
    }

    /// The commit the branch points at, as last fetched.
    pub fn branch_head(&self, branch: &str) -> Result<ObjectId, GitError> {
        let repo = self.local();
        let name = format!("refs/remotes/origin/{branch}");
        let mut reference = repo
            .find_reference(name.as_str())
            .map_err(|_| GitError::NoBranch {
                url: self.url.clone(),
                branch: branch.to_owned(),
            })?;
        reference
            .peel_to_id()
            .map(|id| id.detach())
            .map_err(|e| self.read_err(branch, e.into()))
    }

    /// Resolves a full or abbreviated commit id.
    pub fn resolve(&self, rev: &str) -> Result<ObjectId, GitError> {
        let unknown = || GitError::UnknownCommit {
            url: self.url.clone(),
            rev: rev.to_owned(),
        };
        if rev.len() < 4 || !rev.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(unknown());
        }
        let repo = self.local();
        let id = repo.rev_parse_single(rev).map_err(|_| unknown())?;
        let object = id.object().map_err(|_| unknown())?;
        if object.kind != gix::object::Kind::Commit {
            return Err(unknown());
        }
        Ok(id.detach())
    }

    /// Whether `commit` is `head` or one of its ancestors.
    pub fn is_ancestor(&self, commit: ObjectId, head: ObjectId) -> Result<bool, GitError> {
        if commit == head {
            return Ok(true);
        }
        let repo = self.local();
        match repo.merge_base(commit, head) {
            Ok(Some(base)) => Ok(base.detach() == commit),
            Ok(None) => Ok(false),
            Err(e) => Err(self.read_err(&commit.to_string(), e.into())),
        }
    }

    /// Checks that `commit` is on `branch` (at or behind its head).
    pub fn ensure_on_branch(&self, commit: ObjectId, branch: &str) -> Result<(), GitError> {
        let head = self.branch_head(branch)?;
        if self.is_ancestor(commit, head)? {
            Ok(())
        } else {
            Err(GitError::NotOnBranch {
                url: self.url.clone(),
                branch: branch.to_owned(),
                commit: commit.to_string(),
            })
        }
    }

    /// Every file below `path` ("." for the whole tree) at `commit`, in path order.
    pub fn files(&self, commit: ObjectId, path: &str) -> Result<Vec<File>, GitError> {
        files_at(&self.local(), &self.url, commit, path)
    }

    /// The contents of the file at `path` at `commit`, or `None` when there is no such file.
    pub fn file(&self, commit: ObjectId, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        let repo = self.local();
        let read_err = |e: Source| self.read_err(&commit.to_string(), e);
        let tree = repo
            .find_commit(commit)
            .map_err(|e| read_err(e.into()))?
            .tree()
            .map_err(|e| read_err(e.into()))?;
        let Some(entry) = tree
            .lookup_entry_by_path(normalise_path(path))
            .map_err(|e| read_err(e.into()))?
            .filter(|e| e.mode().is_blob())
        else {
            return Ok(None);
        };
        let blob = entry.object().map_err(|e| read_err(e.into()))?;
        Ok(Some(blob.data.clone()))
    }

    /// Every fetched branch and its head.
    pub fn branches(&self) -> Result<Vec<(String, ObjectId)>, GitError> {
        let repo = self.local();
        let read_err = |e: Source| self.read_err("refs", e);
        let refs = repo.references().map_err(|e| read_err(e.into()))?;
        let mut branches = Vec::new();
        for reference in refs
            .prefixed("refs/remotes/origin/")
            .map_err(|e| read_err(e.into()))?
            .flatten()
        {
            let name = reference.name().shorten().to_string();
            let name = name.strip_prefix("origin/").unwrap_or(&name).to_owned();
            if let Some(id) = reference.target().try_id() {
                branches.push((name, id.to_owned()));
            }
        }
        Ok(branches)
    }

    /// Summary, author and time of a commit.
    pub fn commit_info(&self, commit: ObjectId) -> Result<CommitInfo, GitError> {
        let repo = self.local();
        let read_err = |e: Source| self.read_err(&commit.to_string(), e);
        let c = repo.find_commit(commit).map_err(|e| read_err(e.into()))?;
        let author = c.author().map_err(|e| read_err(e.into()))?;
        let message = c.message_raw_sloppy().to_string();
        Ok(CommitInfo {
            id: commit.to_string(),
            summary: c
                .message()
                .map(|m| m.summary().to_string())
                .unwrap_or_default(),
            author: author.name.to_string(),
            time: author.time().map(|t| t.seconds).unwrap_or_default(),
            source: trailer(&message, HYDRATED_FROM_TRAILER),
        })
    }

    fn read_err(&self, commit: &str, source: Source) -> GitError {
        GitError::Read {
            url: self.url.clone(),
            commit: commit.to_owned(),
            source,
        }
    }
}

pub use gix::Repository;

/// Opens a local repository (a working tree or a bare one), for checks before pushing.
pub fn open_local(path: &str) -> Result<Repository, GitError> {
    gix::discover(path).map_err(|e| GitError::Open {
        url: path.to_owned(),
        dir: PathBuf::from(path),
        source: e.into(),
    })
}

/// Every file below `path` ("." for the whole tree) at `commit` of `repo`, in path order.
/// `label` names the repository in errors.
pub fn files_at(
    repo: &Repository,
    label: &str,
    commit: ObjectId,
    path: &str,
) -> Result<Vec<File>, GitError> {
    let read_err = |source: Source| GitError::Read {
        url: label.to_owned(),
        commit: commit.to_string(),
        source,
    };
    let tree = repo
        .find_commit(commit)
        .map_err(|e| read_err(e.into()))?
        .tree()
        .map_err(|e| read_err(e.into()))?;
    let prefix = normalise_path(path);
    let subtree = if prefix.is_empty() {
        tree
    } else {
        let entry = tree
            .lookup_entry_by_path(&prefix)
            .map_err(|e| read_err(e.into()))?
            .filter(|e| e.mode().is_tree())
            .ok_or_else(|| GitError::NoPath {
                url: label.to_owned(),
                path: path.to_owned(),
                commit: commit.to_string(),
            })?;
        entry.object().map_err(|e| read_err(e.into()))?.into_tree()
    };
    let mut recorder = gix::traverse::tree::Recorder::default();
    subtree
        .traverse()
        .breadthfirst(&mut recorder)
        .map_err(|e| read_err(e.into()))?;
    let mut files = Vec::new();
    for entry in recorder.records {
        if !entry.mode.is_blob() {
            continue;
        }
        let relative = entry.filepath.to_string();
        let full = if prefix.is_empty() {
            relative
        } else {
            format!("{prefix}/{relative}")
        };
        let blob = repo
            .find_object(entry.oid)
            .map_err(|e| read_err(e.into()))?;
        files.push(File {
            path: full,
            contents: blob.data.clone(),
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// "./a//b/" → "a/b"; "." → "".
pub fn normalise_path(path: &str) -> String {
    path.split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// A directory name that is unique per URL and stable across releases (FNV-1a, not std's hasher).
fn mirror_dir_name(url: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in url.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let readable: String = url
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("repo")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    format!("{readable}-{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalise_path("."), "");
        assert_eq!(normalise_path("./apps//web/"), "apps/web");
        assert_eq!(normalise_path("apps/web"), "apps/web");
    }

    #[test]
    fn mirror_directories_differ_per_url() {
        let a = mirror_dir_name("file:///srv/a/app.git");
        let b = mirror_dir_name("file:///srv/b/app.git");
        assert_ne!(a, b);
        assert!(a.starts_with("app-git-"), "{a}");
        assert_eq!(a, mirror_dir_name("file:///srv/a/app.git"));
    }
}
