//! The mirror's commit-graph file (Git's format, version 1), so that ancestry checks read a fixed
//! 56 bytes per commit from one small file instead of decoding commits out of the packs, and stop
//! early on generation numbers. gix reads the file; it cannot write one, so this does.
//!
//! Layout (Git's `gitformat-commit-graph`): a header, a chunk table, the chunks `OIDF` (fan-out
//! of the first id byte), `OIDL` (the ids, sorted), `CDAT` (per commit: root tree, two parent
//! positions, topological level and commit time) and `EDGE` (parents after the first of an octopus
//! merge), then the SHA-1 of everything before it.
//!
//! An update adds the commits reachable from the references that the file lacks and rewrites it
//! (to a temporary name, then renamed into place, so a reader sees the old file or the new one).
//! Commits never change, so what an earlier file says of a commit stays true.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use gix::ObjectId;

type Error = Box<dyn std::error::Error + Send + Sync>;

const SIGNATURE: &[u8; 4] = b"CGPH";
const NO_PARENT: u32 = 0x7000_0000;
const EXTRA_EDGES: u32 = 0x8000_0000;
const LAST_EDGE: u32 = 0x8000_0000;
const GENERATION_MAX: u32 = 0x3fff_ffff;
/// The commit time is kept in 34 bits.
const TIME_MAX: u64 = (1 << 34) - 1;

/// One commit as the graph keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    tree: ObjectId,
    parents: Vec<ObjectId>,
    time: u64,
    generation: u32,
}

/// Where the commit-graph file of the repository at `git_dir` lives.
pub fn path(git_dir: &Path) -> PathBuf {
    git_dir.join("objects/info/commit-graph")
}

/// Adds every commit reachable from a reference of `repo` that its commit-graph file lacks.
/// Returns how many were added (0: the file was already complete and is left as it is).
pub fn update(repo: &gix::Repository) -> Result<usize, Error> {
    let file = path(repo.git_dir());
    // A file that cannot be read (cut short by a full disk, say) is written anew.
    let (mut graph, known) = match read(&file) {
        Ok(graph) => {
            let known = graph.len();
            (graph, known)
        }
        Err(_) => (HashMap::new(), 0),
    };
    let rebuild = known == 0 && file.exists();
    let mut tips = Vec::new();
    for reference in repo.references()?.all()? {
        let mut reference = reference?;
        if let Ok(id) = reference.peel_to_commit().map(|c| c.id) {
            tips.push(id);
        }
    }
    add_reachable(repo, &mut graph, tips)?;
    let added = graph.len() - known;
    if added > 0 || rebuild {
        write(&file, &graph)?;
    }
    Ok(added)
}

/// The commits of the file at `file`, or none when there is no file yet.
fn read(file: &Path) -> Result<HashMap<ObjectId, Entry>, Error> {
    if !file.is_file() {
        return Ok(HashMap::new());
    }
    let dir = file
        .parent()
        .ok_or("the commit-graph file has no directory")?;
    let graph = gix::commitgraph::Graph::at(dir, gix::hash::Kind::Sha1, None)?;
    let mut entries = HashMap::with_capacity(graph.num_commits() as usize);
    for commit in graph.iter_commits() {
        let mut parents = Vec::new();
        for position in commit.iter_parents() {
            parents.push(graph.id_at(position?).to_owned());
        }
        entries.insert(
            commit.id().to_owned(),
            Entry {
                tree: commit.root_tree_id().to_owned(),
                parents,
                time: commit.committer_timestamp(),
                generation: commit.generation(),
            },
        );
    }
    Ok(entries)
}

/// Reads every commit reachable from `tips` that `graph` lacks, with its topological level.
fn add_reachable(
    repo: &gix::Repository,
    graph: &mut HashMap<ObjectId, Entry>,
    tips: Vec<ObjectId>,
) -> Result<(), Error> {
    // Depth first, a commit's level once all its parents have one.
    let mut stack: Vec<(ObjectId, bool)> = tips.into_iter().map(|id| (id, false)).collect();
    let mut read: HashMap<ObjectId, Entry> = HashMap::new();
    while let Some((id, parents_done)) = stack.pop() {
        if graph.contains_key(&id) {
            continue;
        }
        if parents_done {
            let Some(mut entry) = read.remove(&id) else {
                continue;
            };
            let highest = entry
                .parents
                .iter()
                .map(|p| graph.get(p).map_or(0, |e| e.generation))
                .max()
                .unwrap_or(0);
            entry.generation = highest.saturating_add(1).min(GENERATION_MAX);
            graph.insert(id, entry);
            continue;
        }
        if read.contains_key(&id) {
            // Reached again through another child before its level is known: it is still on the
            // stack below, and will be settled there.
            continue;
        }
        let commit = repo.find_commit(id)?;
        let decoded = commit.decode()?;
        let entry = Entry {
            tree: decoded.tree(),
            parents: decoded.parents().collect(),
            time: u64::try_from(decoded.committer()?.seconds())
                .unwrap_or(0)
                .min(TIME_MAX),
            generation: 0,
        };
        stack.push((id, true));
        for parent in entry.parents.iter().rev() {
            if !graph.contains_key(parent) && !read.contains_key(parent) {
                stack.push((*parent, false));
            }
        }
        read.insert(id, entry);
    }
    Ok(())
}

/// Writes `graph` as a commit-graph file at `file`, replacing it atomically.
fn write(file: &Path, graph: &HashMap<ObjectId, Entry>) -> Result<(), Error> {
    let bytes = encode(graph)?;
    let dir = file
        .parent()
        .ok_or("the commit-graph file has no directory")?;
    std::fs::create_dir_all(dir)?;
    // Unique per writer, so two updates at once never write into one temporary file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = dir.join(format!("commit-graph.{}.{n}.tmp", std::process::id()));
    let written = std::fs::File::create(&temporary).and_then(|mut out| {
        out.write_all(&bytes)?;
        out.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&temporary, file)) {
        let _ = std::fs::remove_file(&temporary);
        return Err(e.into());
    }
    Ok(())
}

/// The file's bytes for `graph`.
fn encode(graph: &HashMap<ObjectId, Entry>) -> Result<Vec<u8>, Error> {
    let mut ids: Vec<&ObjectId> = graph.keys().collect();
    ids.sort_unstable();
    let count = u32::try_from(ids.len()).map_err(|_| "too many commits for a commit-graph")?;
    let position: HashMap<&ObjectId, u32> = ids.iter().zip(0..).map(|(id, i)| (*id, i)).collect();
    let position_of = |id: &ObjectId| {
        position
            .get(id)
            .copied()
            .ok_or_else(|| format!("parent {id} is missing from the commit-graph"))
    };

    let mut fanout = vec![0u8; 256 * 4];
    let mut lookup = Vec::with_capacity(ids.len() * 20);
    let mut data = Vec::with_capacity(ids.len() * 36);
    let mut edges: Vec<u8> = Vec::new();
    let mut per_first_byte = [0u32; 256];
    for id in &ids {
        per_first_byte[usize::from(id.as_bytes()[0])] += 1;
        lookup.extend_from_slice(id.as_bytes());
        let entry = &graph[*id];
        data.extend_from_slice(entry.tree.as_bytes());
        let (first, second) = match entry.parents.as_slice() {
            [] => (NO_PARENT, NO_PARENT),
            [one] => (position_of(one)?, NO_PARENT),
            [one, two] => (position_of(one)?, position_of(two)?),
            [one, rest @ ..] => {
                let start = u32::try_from(edges.len() / 4).map_err(|_| "too many merge parents")?;
                for (i, parent) in rest.iter().enumerate() {
                    let mut value = position_of(parent)?;
                    if i + 1 == rest.len() {
                        value |= LAST_EDGE;
                    }
                    edges.extend_from_slice(&value.to_be_bytes());
                }
                (position_of(one)?, EXTRA_EDGES | start)
            }
        };
        data.extend_from_slice(&first.to_be_bytes());
        data.extend_from_slice(&second.to_be_bytes());
        let high = (entry.generation.min(GENERATION_MAX) << 2) | ((entry.time >> 32) as u32 & 0b11);
        data.extend_from_slice(&high.to_be_bytes());
        data.extend_from_slice(&(entry.time as u32).to_be_bytes());
    }
    let mut running = 0u32;
    for (byte, n) in per_first_byte.iter().enumerate() {
        running += n;
        fanout[byte * 4..byte * 4 + 4].copy_from_slice(&running.to_be_bytes());
    }
    debug_assert_eq!(running, count);

    let mut chunks: Vec<(&[u8; 4], &[u8])> =
        vec![(b"OIDF", &fanout), (b"OIDL", &lookup), (b"CDAT", &data)];
    if !edges.is_empty() {
        chunks.push((b"EDGE", &edges));
    }
    let header = 8;
    let table = (chunks.len() + 1) * 12;
    let mut out =
        Vec::with_capacity(header + table + chunks.iter().map(|c| c.1.len()).sum::<usize>() + 20);
    out.extend_from_slice(SIGNATURE);
    out.push(1); // version
    out.push(1); // SHA-1
    out.push(chunks.len() as u8);
    out.push(0); // no base graphs
    let mut offset = (header + table) as u64;
    for (id, bytes) in &chunks {
        out.extend_from_slice(*id);
        out.extend_from_slice(&offset.to_be_bytes());
        offset += bytes.len() as u64;
    }
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&offset.to_be_bytes());
    for (_, bytes) in &chunks {
        out.extend_from_slice(bytes);
    }
    let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
    hasher.update(&out);
    let checksum = hasher.try_finalize()?;
    out.extend_from_slice(checksum.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use crate::git::Mirror;

    /// `git` in `dir`, isolated from the user's configuration; its output.
    fn git(dir: &std::path::Path, args: &[&str]) -> String {
        git_at(dir, args, None)
    }

    /// `git`, with author and committer dates at `time` (seconds) when given.
    fn git_at(dir: &std::path::Path, args: &[&str], time: Option<i64>) -> String {
        let mut command = Command::new("git");
        command
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(["-c", "init.defaultBranch=main"])
            .args(["-c", "commit.gpgSign=false"])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null");
        if let Some(time) = time {
            let date = format!("{time} +0000");
            command
                .env("GIT_AUTHOR_DATE", &date)
                .env("GIT_COMMITTER_DATE", &date);
        }
        let out = command.output().expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn commit(dir: &std::path::Path, name: &str, time: i64) -> String {
        std::fs::write(dir.join(name), name).expect("write");
        git(dir, &["add", name]);
        git_at(dir, &["commit", "-q", "-m", name], Some(time));
        git(dir, &["rev-parse", "HEAD"])
    }

    /// A history with a side branch, a merge, an octopus merge of three branches and commit
    /// times that go backwards (a skewed clock), so levels and times cannot be confused.
    fn history(dir: &std::path::Path) {
        git(dir, &["init", "-q"]);
        commit(dir, "root", 1_700_000_000);
        commit(dir, "a", 1_700_000_100);
        git(dir, &["checkout", "-q", "-b", "side"]);
        commit(dir, "s1", 1_600_000_000);
        commit(dir, "s2", 1_600_000_100);
        git(dir, &["checkout", "-q", "main"]);
        commit(dir, "b", 1_700_000_200);
        git(dir, &["merge", "-q", "--no-edit", "--no-ff", "side"]);
        for branch in ["x", "y"] {
            git(dir, &["checkout", "-q", "-b", branch, "main~1"]);
            commit(dir, branch, 1_700_000_300);
        }
        git(dir, &["checkout", "-q", "main"]);
        git(dir, &["merge", "-q", "--no-edit", "x", "y"]);
        commit(dir, "c", 1_700_000_400);
        git(dir, &["checkout", "-q", "-b", "unmerged", "main~2"]);
        commit(dir, "u", 1_700_000_500);
        git(dir, &["checkout", "-q", "main"]);
    }

    /// A repository with [`history`], and its mirror after a first fetch (which writes the
    /// graph): the remote's directory, the cache's, and the mirror.
    fn fetched_history() -> (tempfile::TempDir, tempfile::TempDir, Mirror) {
        let remote = tempfile::tempdir().expect("a directory");
        history(remote.path());
        let cache = tempfile::tempdir().expect("a directory");
        let url = format!("file://{}", remote.path().display());
        let mirror = Mirror::open(&url, cache.path()).expect("the mirror opens");
        assert!(mirror.fetch(None).expect("the fetch succeeds"));
        (remote, cache, mirror)
    }

    #[test]
    fn git_verifies_the_graph_a_fetch_writes_and_each_update_adds_only_new_commits() {
        let (remote, _cache, mirror) = fetched_history();
        let dir = mirror.git_dir();
        assert!(super::path(&dir).is_file());
        // Git's own check: ids, fan-out, parents (octopus edges too), root trees, commit times,
        // generation numbers and the checksum.
        git(&dir, &["commit-graph", "verify"]);
        let graph = super::read(&super::path(&dir)).expect("the graph reads");
        assert_eq!(
            graph.len().to_string(),
            git(&dir, &["rev-list", "--all", "--count"])
        );
        assert_eq!(mirror.update_commit_graph().expect("an update"), 0);

        commit(remote.path(), "d", 1_700_000_600);
        commit(remote.path(), "e", 1_700_000_700);
        assert!(mirror.fetch(None).expect("the fetch succeeds"));
        git(&dir, &["commit-graph", "verify"]);
        let grown = super::read(&super::path(&dir)).expect("the graph reads");
        assert_eq!(grown.len(), graph.len() + 2);
        // What the first file said of a commit is carried over unchanged.
        for (id, entry) in &graph {
            assert_eq!(grown.get(id), Some(entry), "{id}");
        }
    }

    #[test]
    fn a_damaged_graph_file_is_written_anew() {
        let (_remote, _cache, mirror) = fetched_history();
        let file = super::path(&mirror.git_dir());
        let whole = std::fs::read(&file).expect("the graph file");
        std::fs::write(&file, &whole[..whole.len() / 2]).expect("cut the file short");
        assert!(mirror.update_commit_graph().expect("an update") > 0);
        git(&mirror.git_dir(), &["commit-graph", "verify"]);
        assert_eq!(std::fs::read(&file).expect("the graph file"), whole);
    }

    #[test]
    fn ancestry_read_through_the_graph_agrees_with_git() {
        let (remote, _cache, mirror) = fetched_history();
        let ids: Vec<String> = git(remote.path(), &["rev-list", "--all"])
            .lines()
            .map(str::to_owned)
            .collect();
        assert!(ids.len() >= 11, "{ids:?}");
        for a in &ids {
            for b in &ids {
                let git_says = Command::new("git")
                    .args(["merge-base", "--is-ancestor", a, b])
                    .current_dir(remote.path())
                    .status()
                    .expect("git runs")
                    .success();
                let oid = |s: &str| gix::ObjectId::from_hex(s.as_bytes()).expect("an id");
                let mirror_says = mirror.is_ancestor(oid(a), oid(b)).expect("an answer");
                assert_eq!(mirror_says, git_says, "is {a} an ancestor of {b}");
            }
        }
    }
}
