//! Commit signatures against the real tools: commits signed by `git commit -S` with keys made by
//! `ssh-keygen` and `gpg`, checked by this module; commits signed by [`super::sign_commit`],
//! checked by `git verify-commit`. Every repository, key and GnuPG home lives in a temporary
//! directory; no user configuration is read.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{
    Keyring, SignatureError, SignatureMode, SignaturePolicy, Signer, SigningKey, check,
    sign_commit, verify_commit, verify_since_seal,
};
use gix::ObjectId;

/// Fails (never skips) when a tool the tests need is not installed.
fn require(tool: &str, package: &str) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| dir.join(tool).is_file());
    assert!(
        found,
        "the signature tests need `{tool}` on PATH (Debian package {package}); \
         bash scripts/install-signing-tools.sh installs it"
    );
}

/// A repository, its keys and a GnuPG home, all in one temporary directory.
struct Lab {
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The gpg-agent that signing started for this GnuPG home.
        let _ = Command::new("gpgconf")
            .args(["--kill", "all"])
            .env("GNUPGHOME", self.gnupg())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A commit time: 2024-06-01T00:00:00Z.
const JUNE_2024: i64 = 1_717_200_000;

impl Lab {
    fn new() -> Lab {
        require("git", "git");
        require("ssh-keygen", "openssh-client");
        require("gpg", "gpg");
        require("gpg-agent", "gpg-agent");
        require("gpgconf", "gpgconf");
        let dir = tempfile::Builder::new()
            .prefix("sig-")
            .tempdir()
            .expect("a temporary directory");
        let lab = Lab { dir };
        std::fs::create_dir_all(lab.repo()).expect("repo dir");
        std::fs::create_dir_all(lab.gnupg()).expect("gnupg dir");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(lab.gnupg(), std::fs::Permissions::from_mode(0o700))
                .expect("chmod gnupg");
        }
        lab.git(&["init", "-q", "--initial-branch=main"]);
        lab
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn repo(&self) -> PathBuf {
        self.path().join("repo")
    }

    fn gnupg(&self) -> PathBuf {
        self.path().join("gnupg")
    }

    /// Runs a program with the lab's isolated environment; its trimmed stdout.
    fn run(&self, program: &str, args: &[&str], env: &[(&str, String)], stdin: &[u8]) -> String {
        let (ok, stdout, stderr) = self.try_run(program, args, env, stdin);
        assert!(ok, "{program} {args:?} failed: {stderr}");
        stdout
    }

    fn try_run(
        &self,
        program: &str,
        args: &[&str],
        env: &[(&str, String)],
        stdin: &[u8],
    ) -> (bool, String, String) {
        use std::io::Write;
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(self.repo())
            .env("HOME", self.path())
            .env("GNUPGHOME", self.gnupg())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Alice")
            .env("GIT_AUTHOR_EMAIL", "alice@example.com")
            .env("GIT_COMMITTER_NAME", "Alice")
            .env("GIT_COMMITTER_EMAIL", "alice@example.com")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("write stdin");
        let out = child.wait_with_output().expect("wait");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn git(&self, args: &[&str]) -> String {
        self.run("git", args, &[], b"")
    }

    /// `git commit --allow-empty`, signed as `sign` says, at `time` (now when `None`).
    fn commit(&self, message: &str, sign: &Sign, time: Option<i64>) -> ObjectId {
        let mut args = sign.config();
        args.extend(["commit", "-q", "--allow-empty", "-m", message].map(String::from));
        if !matches!(sign, Sign::No) {
            args.push("-S".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run("git", &args, &dates(time), b"");
        self.head()
    }

    /// `git commit-tree` of the empty tree with the given parents (none: a root commit).
    fn commit_tree(&self, message: &str, parents: &[ObjectId], sign: &Sign) -> ObjectId {
        let tree = self.run(
            "git",
            &["hash-object", "-t", "tree", "-w", "--stdin"],
            &[],
            b"",
        );
        let mut args = sign.config();
        args.extend(["commit-tree".into(), tree, "-m".into(), message.into()]);
        for parent in parents {
            args.extend(["-p".into(), parent.to_string()]);
        }
        if !matches!(sign, Sign::No) {
            args.push("-S".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        id(&self.run("git", &args, &dates(Some(JUNE_2024)), b""))
    }

    fn head(&self) -> ObjectId {
        id(&self.git(&["rev-parse", "HEAD"]))
    }

    fn open(&self) -> gix::Repository {
        gix::open_opts(self.repo(), gix::open::Options::isolated()).expect("gix opens the repo")
    }

    /// A commit like `commit` with one byte of its message changed (its signature kept).
    fn tampered(&self, commit: ObjectId) -> ObjectId {
        let raw = self.git(&["cat-file", "commit", &commit.to_string()]);
        let changed = raw.replacen("\n\nsigned", "\n\nSigned", 1);
        assert_ne!(raw, changed, "the message starts with \"signed\"");
        id(&self.run(
            "git",
            &["hash-object", "-t", "commit", "-w", "--stdin"],
            &[],
            format!("{changed}\n").as_bytes(),
        ))
    }

    /// `ssh-keygen -t TYPE` without a passphrase.
    fn ssh_key(&self, name: &str, type_args: &[&str]) -> SshKey {
        let private = self.path().join(name);
        let private_str = private.to_str().expect("utf-8 path");
        let mut args = vec!["-q", "-N", "", "-C", "alice@example.com", "-f", private_str];
        args.extend(type_args);
        self.run("ssh-keygen", &args, &[], b"");
        let public = std::fs::read_to_string(private.with_extension("pub"))
            .expect("public key file")
            .trim()
            .to_owned();
        // `ssh-keygen -lf` prints `BITS SHA256:… COMMENT (TYPE)`.
        let listing = self.run(
            "ssh-keygen",
            &["-lf", &format!("{private_str}.pub")],
            &[],
            b"",
        );
        let fingerprint = listing
            .split_whitespace()
            .nth(1)
            .expect("a fingerprint")
            .to_owned();
        SshKey {
            private,
            public,
            fingerprint,
        }
    }

    /// `gpg --quick-gen-key` without a passphrase; the new key's fingerprint.
    fn gpg_key(&self, user_id: &str, algo: &str, expire: &str) -> String {
        self.run(
            "gpg",
            &[
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                user_id,
                algo,
                "sign",
                expire,
            ],
            &[],
            b"",
        );
        let listing = self.run(
            "gpg",
            &["--batch", "--with-colons", "--list-keys", user_id],
            &[],
            b"",
        );
        listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.split(':').find(|f| f.len() == 40))
            .expect("a fingerprint")
            .to_owned()
    }

    fn gpg_export(&self, fingerprint: &str) -> String {
        self.run(
            "gpg",
            &["--batch", "--armor", "--export", fingerprint],
            &[],
            b"",
        )
    }
}

/// `GIT_*_DATE` for a time in seconds.
fn dates(time: Option<i64>) -> Vec<(&'static str, String)> {
    match time {
        Some(time) => vec![
            ("GIT_AUTHOR_DATE", format!("{time} +0000")),
            ("GIT_COMMITTER_DATE", format!("{time} +0000")),
        ],
        None => Vec::new(),
    }
}

fn id(hex: &str) -> ObjectId {
    ObjectId::from_hex(hex.trim().as_bytes()).expect("a commit id")
}

enum Sign {
    No,
    Ssh(PathBuf),
    Gpg(String),
}

impl Sign {
    fn config(&self) -> Vec<String> {
        let pairs = match self {
            Sign::No => vec!["commit.gpgSign=false".to_owned()],
            Sign::Ssh(key) => vec![
                "gpg.format=ssh".to_owned(),
                format!("user.signingkey={}", key.display()),
            ],
            Sign::Gpg(key) => vec![
                "gpg.format=openpgp".to_owned(),
                "gpg.program=gpg".to_owned(),
                format!("user.signingkey={key}"),
            ],
        };
        pairs
            .into_iter()
            .flat_map(|p| ["-c".to_owned(), p])
            .collect()
    }
}

struct SshKey {
    private: PathBuf,
    public: String,
    fingerprint: String,
}

impl SshKey {
    fn sign(&self) -> Sign {
        Sign::Ssh(self.private.clone())
    }

    fn line(&self, principals: &str, options: &str) -> String {
        format!("{principals} {options} {}\n", self.public)
    }
}

fn ssh_keyring(allowed: &str) -> Keyring {
    Keyring::from_policy(&SignaturePolicy {
        ssh_allowed_signers: allowed.to_owned(),
        ..Default::default()
    })
    .expect("the policy parses")
}

fn pgp_keyring(keys: &[String]) -> Keyring {
    Keyring::from_policy(&SignaturePolicy {
        openpgp_keys: keys.to_vec(),
        ..Default::default()
    })
    .expect("the policy parses")
}

fn strict_keyring(allowed: &str, seal: ObjectId) -> Keyring {
    Keyring::from_policy(&SignaturePolicy {
        mode: SignatureMode::Strict,
        seal_commit: Some(seal.to_string()),
        ssh_allowed_signers: allowed.to_owned(),
        ..Default::default()
    })
    .expect("the policy parses")
}

#[test]
fn ssh_signed_commits_verify_with_each_key_type() {
    let lab = Lab::new();
    let keys = [
        lab.ssh_key("ed25519", &["-t", "ed25519"]),
        lab.ssh_key("rsa", &["-t", "rsa", "-b", "3072"]),
        lab.ssh_key("ecdsa", &["-t", "ecdsa", "-b", "384"]),
    ];
    let allowed: String = keys
        .iter()
        .map(|k| k.line("alice@example.com", ""))
        .collect();
    let keyring = ssh_keyring(&allowed);
    let repo_for = |lab: &Lab| lab.open();
    for key in &keys {
        let commit = lab.commit("signed", &key.sign(), None);
        let signer = verify_commit(&repo_for(&lab), commit, &keyring).expect("verifies");
        assert_eq!(
            signer,
            Signer::Ssh {
                principals: "alice@example.com".into(),
                fingerprint: key.fingerprint.clone(),
            }
        );
        assert_eq!(
            signer.to_string(),
            format!("SSH key {} (alice@example.com)", key.fingerprint)
        );
    }
}

#[test]
fn ssh_key_not_in_the_keyring_is_named_by_its_fingerprint() {
    let lab = Lab::new();
    let signing = lab.ssh_key("signing", &["-t", "ed25519"]);
    let other = lab.ssh_key("other", &["-t", "ed25519"]);
    let commit = lab.commit("signed", &signing.sign(), None);
    let keyring = ssh_keyring(&other.line("bob@example.com", ""));
    let err = verify_commit(&lab.open(), commit, &keyring).expect_err("untrusted");
    assert_eq!(
        err,
        SignatureError::UnknownKey {
            commit,
            key: format!("SSH key {}", signing.fingerprint),
        }
    );
    assert!(err.to_string().contains(&signing.fingerprint), "{err}");
}

#[test]
fn unsigned_commit_is_refused() {
    let lab = Lab::new();
    let key = lab.ssh_key("k", &["-t", "ed25519"]);
    let commit = lab.commit("plain", &Sign::No, None);
    let err =
        verify_commit(&lab.open(), commit, &ssh_keyring(&key.line("a", ""))).expect_err("unsigned");
    assert_eq!(err, SignatureError::Unsigned { commit });
    assert_eq!(err.to_string(), format!("commit {commit} is not signed"));
}

#[test]
fn ssh_namespaces_option_must_allow_git() {
    let lab = Lab::new();
    let key = lab.ssh_key("k", &["-t", "ed25519"]);
    let commit = lab.commit("signed", &key.sign(), None);
    let repo = lab.open();
    let keyring = ssh_keyring(&key.line("a", "namespaces=\"file\""));
    match verify_commit(&repo, commit, &keyring) {
        Err(SignatureError::Invalid {
            key: name, reason, ..
        }) => {
            assert!(name.contains(&key.fingerprint), "{name}");
            assert!(reason.contains("file"), "{reason}");
        }
        other => panic!("a key only for namespace file must not verify commits: {other:?}"),
    }
    let keyring = ssh_keyring(&key.line("a", "namespaces=\"file,git\""));
    verify_commit(&repo, commit, &keyring).expect("git is among the namespaces");
}

#[test]
fn ssh_validity_window_is_judged_at_the_commit_time() {
    let lab = Lab::new();
    let key = lab.ssh_key("k", &["-t", "ed25519"]);
    let commit = lab.commit("signed", &key.sign(), Some(JUNE_2024));
    let repo = lab.open();
    for options in ["valid-before=\"20240101\"", "valid-after=\"20240701Z\""] {
        let keyring = ssh_keyring(&key.line("a", options));
        match verify_commit(&repo, commit, &keyring) {
            Err(SignatureError::Invalid { reason, .. }) => {
                assert!(reason.contains("2024-06-01"), "{options}: {reason}");
            }
            other => panic!("{options}: {other:?}"),
        }
    }
    let keyring = ssh_keyring(&key.line(
        "a",
        "valid-after=\"20240101\",valid-before=\"202412312359\"",
    ));
    verify_commit(&repo, commit, &keyring).expect("inside the window");
    // The key listed twice: the line whose window holds the commit counts.
    let keyring = ssh_keyring(&format!(
        "{}{}",
        key.line("old", "valid-before=\"20200101\""),
        key.line("new", "valid-after=\"20240101\"")
    ));
    let signer = verify_commit(&repo, commit, &keyring).expect("the second line");
    assert!(matches!(signer, Signer::Ssh { principals, .. } if principals == "new"));
}

#[test]
fn ssh_tampered_commit_is_invalid() {
    let lab = Lab::new();
    let key = lab.ssh_key("k", &["-t", "ed25519"]);
    let commit = lab.commit("signed", &key.sign(), None);
    let tampered = lab.tampered(commit);
    let keyring = ssh_keyring(&key.line("a", ""));
    let repo = lab.open();
    verify_commit(&repo, commit, &keyring).expect("the original verifies");
    match verify_commit(&repo, tampered, &keyring) {
        Err(SignatureError::Invalid {
            commit, key: name, ..
        }) => {
            assert_eq!(commit, tampered);
            assert!(name.contains(&key.fingerprint));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn x509_signature_is_unsupported() {
    let lab = Lab::new();
    let commit = lab.commit("plain", &Sign::No, None);
    let raw = lab.git(&["cat-file", "commit", &commit.to_string()]);
    let (headers, message) = raw.split_once("\n\n").expect("headers and message");
    let forged = format!(
        "{headers}\ngpgsig -----BEGIN SIGNED MESSAGE-----\n MIAGCSqGSIb3DQEHAqCAMIACAQEx\n -----END SIGNED MESSAGE-----\n\n{message}\n"
    );
    let forged = id(&lab.run(
        "git",
        &["hash-object", "-t", "commit", "-w", "--stdin"],
        &[],
        forged.as_bytes(),
    ));
    let key = lab.ssh_key("k", &["-t", "ed25519"]);
    let err =
        verify_commit(&lab.open(), forged, &ssh_keyring(&key.line("a", ""))).expect_err("x509");
    assert!(
        matches!(&err, SignatureError::Unsupported { what, .. } if what.contains("X.509")),
        "{err:?}"
    );
}

#[test]
fn openpgp_signed_commits_verify() {
    let lab = Lab::new();
    let alice = lab.gpg_key("Alice <alice@example.com>", "ed25519", "never");
    let bob = lab.gpg_key("Bob <bob@example.com>", "rsa3072", "never");
    let keyring = pgp_keyring(&[lab.gpg_export(&alice), lab.gpg_export(&bob)]);
    let repo = lab.open();
    for (fingerprint, user_id) in [
        (&alice, "Alice <alice@example.com>"),
        (&bob, "Bob <bob@example.com>"),
    ] {
        let commit = lab.commit("signed", &Sign::Gpg(fingerprint.clone()), None);
        let signer = verify_commit(&repo, commit, &keyring).expect("verifies");
        assert_eq!(
            signer,
            Signer::OpenPgp {
                fingerprint: fingerprint.clone(),
                user_id: user_id.into(),
            }
        );
        assert_eq!(
            signer.to_string(),
            format!("OpenPGP key {fingerprint} ({user_id})")
        );
    }
}

#[test]
fn openpgp_unknown_key_and_tampered_commit() {
    let lab = Lab::new();
    let alice = lab.gpg_key("Alice <alice@example.com>", "ed25519", "never");
    let carol = lab.gpg_key("Carol <carol@example.com>", "ed25519", "never");
    let commit = lab.commit("signed", &Sign::Gpg(alice.clone()), None);
    let repo = lab.open();

    let err = verify_commit(&repo, commit, &pgp_keyring(&[lab.gpg_export(&carol)]))
        .expect_err("not trusted");
    assert_eq!(
        err,
        SignatureError::UnknownKey {
            commit,
            key: format!("OpenPGP key {alice}"),
        }
    );

    let keyring = pgp_keyring(&[lab.gpg_export(&alice)]);
    let tampered = lab.tampered(commit);
    match verify_commit(&repo, tampered, &keyring) {
        Err(SignatureError::Invalid { commit, key, .. }) => {
            assert_eq!(commit, tampered);
            assert!(key.contains(&alice), "{key}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn openpgp_signing_subkey_verifies_as_its_primary() {
    let lab = Lab::new();
    let alice = lab.gpg_key("Alice <alice@example.com>", "ed25519", "never");
    lab.run(
        "gpg",
        &[
            "--batch",
            "--passphrase",
            "",
            "--quick-add-key",
            &alice,
            "ed25519",
            "sign",
            "never",
        ],
        &[],
        b"",
    );
    let listing = lab.run(
        "gpg",
        &["--batch", "--with-colons", "--list-keys", &alice],
        &[],
        b"",
    );
    let subkey = listing
        .lines()
        .filter_map(|l| l.strip_prefix("fpr:"))
        .filter_map(|l| l.split(':').find(|f| f.len() == 40))
        .find(|f| *f != alice)
        .expect("the subkey's fingerprint")
        .to_owned();
    // `!`: sign with exactly this subkey.
    let commit = lab.commit("signed", &Sign::Gpg(format!("{subkey}!")), None);
    let keyring = pgp_keyring(&[lab.gpg_export(&alice)]);
    let signer = verify_commit(&lab.open(), commit, &keyring).expect("verifies");
    assert_eq!(
        signer,
        Signer::OpenPgp {
            fingerprint: alice,
            user_id: "Alice <alice@example.com>".into(),
        }
    );
}

#[test]
fn openpgp_expired_and_revoked_keys_are_refused() {
    let lab = Lab::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let alice = lab.gpg_key("Alice <alice@example.com>", "ed25519", "1d");
    let keyring = pgp_keyring(&[lab.gpg_export(&alice)]);
    let repo = lab.open();
    let today = lab.commit("signed today", &Sign::Gpg(alice.clone()), None);
    verify_commit(&repo, today, &keyring).expect("within the key's lifetime");
    let later = lab.commit(
        "signed later",
        &Sign::Gpg(alice.clone()),
        Some(now + 3 * 86_400),
    );
    match verify_commit(&lab.open(), later, &keyring) {
        Err(SignatureError::Invalid { reason, .. }) => {
            assert!(reason.contains("expired"), "{reason}")
        }
        other => panic!("{other:?}"),
    }

    // gpg keeps a revocation certificate for every key it makes; import it.
    let certificate = std::fs::read_to_string(
        lab.gnupg()
            .join("openpgp-revocs.d")
            .join(format!("{alice}.rev")),
    )
    .expect("the revocation certificate");
    let certificate = certificate.replace(
        ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----",
    );
    lab.run("gpg", &["--batch", "--import"], &[], certificate.as_bytes());
    let keyring = pgp_keyring(&[lab.gpg_export(&alice)]);
    match verify_commit(&lab.open(), today, &keyring) {
        Err(SignatureError::Invalid { reason, .. }) => {
            assert!(reason.contains("revoked"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// seal ← s1 ← s2 ← unsigned ← s3, all in June 2024.
struct History {
    lab: Lab,
    key: SshKey,
    seal: ObjectId,
    s1: ObjectId,
    s2: ObjectId,
    unsigned: ObjectId,
    s3: ObjectId,
}

fn history() -> History {
    let lab = Lab::new();
    let key = lab.ssh_key("k", &["-t", "ed25519"]);
    let root = lab.commit_tree("root", &[], &Sign::No);
    let seal = lab.commit_tree("seal", &[root], &Sign::No);
    let s1 = lab.commit_tree("s1", &[seal], &key.sign());
    let s2 = lab.commit_tree("s2", &[s1], &key.sign());
    let unsigned = lab.commit_tree("unsigned", &[s2], &Sign::No);
    let s3 = lab.commit_tree("s3", &[unsigned], &key.sign());
    History {
        lab,
        key,
        seal,
        s1,
        s2,
        unsigned,
        s3,
    }
}

#[test]
fn strict_mode_names_the_first_unsigned_commit_since_the_seal() {
    let h = history();
    let repo = h.lab.open();
    let allowed = h.key.line("a", "");
    let keyring = strict_keyring(&allowed, h.seal);
    let mut memo = HashSet::new();

    let err = verify_since_seal(&repo, h.seal, h.s3, &keyring, &mut memo).expect_err("unsigned");
    assert_eq!(err, SignatureError::Unsigned { commit: h.unsigned });
    assert!(
        memo.is_empty(),
        "a failing walk remembers nothing: {memo:?}"
    );

    verify_since_seal(&repo, h.seal, h.s2, &keyring, &mut memo).expect("signed since the seal");
    assert_eq!(memo, HashSet::from([h.s1, h.s2]));

    // `check` dispatches on the mode.
    let err = check(&repo, h.s3, &keyring, &mut memo).expect_err("strict");
    assert_eq!(err.commit(), h.unsigned);
    let head_only = ssh_keyring(&allowed);
    check(&repo, h.s3, &head_only, &mut HashSet::new()).expect("head mode checks the head only");
}

#[test]
fn strict_mode_refuses_commits_not_after_the_seal() {
    let h = history();
    let repo = h.lab.open();
    let keyring = strict_keyring(&h.key.line("a", ""), h.s1);
    // The seal's parent, and a branch off it, do not descend from the seal.
    let side = h.lab.commit_tree("side", &[h.seal], &h.key.sign());
    let err = verify_since_seal(&repo, h.s1, side, &keyring, &mut HashSet::new())
        .expect_err("not after the seal");
    assert_eq!(
        err,
        SignatureError::NotAfterSeal {
            commit: side,
            seal: h.s1
        }
    );
    // The seal itself need not be signed: it is the last commit that need not be.
    assert_eq!(
        verify_since_seal(&repo, h.seal, h.seal, &keyring, &mut HashSet::new()),
        Ok(Signer::Seal)
    );
}

#[test]
fn strict_mode_checks_merged_branches() {
    let h = history();
    let repo = h.lab.open();
    let keyring = strict_keyring(&h.key.line("a", ""), h.seal);
    let side = h.lab.commit_tree("side", &[h.seal], &Sign::No);
    let merge = h.lab.commit_tree("merge", &[h.s2, side], &h.key.sign());
    let err = verify_since_seal(&repo, h.seal, merge, &keyring, &mut HashSet::new())
        .expect_err("the merged side commit is unsigned");
    assert_eq!(err, SignatureError::Unsigned { commit: side });

    let signed_side = h.lab.commit_tree("signed side", &[h.seal], &h.key.sign());
    let merge = h
        .lab
        .commit_tree("merge", &[h.s2, signed_side], &h.key.sign());
    let mut memo = HashSet::new();
    verify_since_seal(&repo, h.seal, merge, &keyring, &mut memo).expect("all signed");
    assert_eq!(memo, HashSet::from([h.s1, h.s2, signed_side, merge]));
}

#[test]
fn strict_mode_memo_skips_known_commits() {
    let h = history();
    let repo = h.lab.open();
    let keyring = strict_keyring(&h.key.line("a", ""), h.seal);
    let mut memo = HashSet::new();
    verify_since_seal(&repo, h.seal, h.s2, &keyring, &mut memo).expect("good");
    let s2b = h.lab.commit_tree("s2b", &[h.s2], &h.key.sign());
    verify_since_seal(&repo, h.seal, s2b, &keyring, &mut memo).expect("good");
    assert_eq!(memo, HashSet::from([h.s1, h.s2, s2b]));

    // A commit in the memo is not looked at again, nor what lies below it: claim the unsigned
    // commit as known good, and the walk from s3 stops there.
    memo.insert(h.unsigned);
    verify_since_seal(&repo, h.seal, h.s3, &keyring, &mut memo).expect("stops at the memo");
    assert!(memo.contains(&h.s3));
}

#[test]
fn sign_commit_is_accepted_by_git_and_by_verify_commit() {
    let lab = Lab::new();
    let head = lab.commit("initial", &Sign::No, None);
    for (name, type_args) in [
        ("ed25519", &["-t", "ed25519"][..]),
        ("rsa", &["-t", "rsa", "-b", "3072"][..]),
        ("ecdsa", &["-t", "ecdsa", "-b", "256"][..]),
    ] {
        let key = lab.ssh_key(name, type_args);
        let text = std::fs::read_to_string(&key.private).expect("private key");
        let signing =
            SigningKey::from_openssh(&text, &key.private.display().to_string()).expect("loads");
        assert_eq!(signing.fingerprint(), key.fingerprint);
        assert_eq!(signing.public_key_line(), key.public);

        let repo = lab.open();
        let tree = repo
            .find_commit(head)
            .expect("head")
            .tree_id()
            .expect("tree")
            .detach();
        let actor = gix::actor::Signature {
            name: "Hydrate".into(),
            email: "hydrate@example.com".into(),
            time: gix::date::Time {
                seconds: JUNE_2024,
                offset: 0,
            },
        };
        let mut commit = gix::objs::Commit {
            tree,
            parents: [head].into_iter().collect(),
            author: actor.clone(),
            committer: actor,
            encoding: None,
            message: format!("hydrated with {name}\n").into(),
            extra_headers: Vec::new(),
        };
        sign_commit(&mut commit, &signing).expect("signs");
        let written = repo.write_object(&commit).expect("written").detach();
        lab.git(&["update-ref", "refs/heads/hydrated", &written.to_string()]);

        let allowed = lab.path().join("allowed_signers");
        std::fs::write(&allowed, key.line("hydrate@example.com", "")).expect("allowed_signers");
        let (ok, _, stderr) = lab.try_run(
            "git",
            &[
                "-c",
                &format!("gpg.ssh.allowedSignersFile={}", allowed.display()),
                "verify-commit",
                &written.to_string(),
            ],
            &[],
            b"",
        );
        assert!(
            ok,
            "git verify-commit refused the {name} signature: {stderr}"
        );
        assert!(stderr.contains("Good \"git\" signature"), "{stderr}");

        let signer =
            verify_commit(&repo, written, &ssh_keyring(&key.line("h", ""))).expect("verifies");
        assert!(
            matches!(signer, Signer::Ssh { fingerprint, .. } if fingerprint == key.fingerprint)
        );

        // Signing again replaces the signature rather than adding a second one.
        sign_commit(&mut commit, &signing).expect("signs again");
        assert_eq!(
            commit
                .extra_headers
                .iter()
                .filter(|(n, _)| n == "gpgsig")
                .count(),
            1
        );
    }
}

#[test]
fn signing_key_errors_name_the_file() {
    let lab = Lab::new();
    let path = lab.path().join("locked");
    let path_str = path.to_str().expect("utf-8");
    lab.run(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "secret", "-f", path_str],
        &[],
        b"",
    );
    let text = std::fs::read_to_string(&path).expect("key");
    let err = SigningKey::from_openssh(&text, path_str).expect_err("encrypted");
    assert!(
        err.starts_with(path_str) && err.contains("passphrase"),
        "{err}"
    );
    let err = SigningKey::from_openssh("not a key", "/keys/x").expect_err("garbage");
    assert!(err.starts_with("/keys/x"), "{err}");
}
