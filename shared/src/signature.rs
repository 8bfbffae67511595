//! Commit signatures: which commits a project requires to be signed, by which keys, and the
//! check itself, done in process (no `gpg` or `ssh-keygen` is run), so the plugin, the agent and
//! the webhook decide alike on any machine.
//!
//! A project's [`SignaturePolicy`] names the trusted keys the way their owners already publish
//! them: SSH keys as lines of OpenSSH's allowed_signers file (what `git config
//! gpg.ssh.allowedSignersFile` points at), OpenPGP keys as ASCII-armoured public key blocks (`gpg
//! --export --armor`). [`Keyring::from_policy`] parses it once; [`check`] then decides a commit:
//! in `Head` mode the commit itself must carry a good signature by a trusted key, in `Strict` mode
//! every commit after the policy's seal commit up to it as well.
//!
//! Keys named in errors are spelled as `git log --show-signature` shows them: an SSH key by its
//! `SHA256:` fingerprint (`ssh-keygen -lf`), an OpenPGP key by its full fingerprint, or by its
//! long key ID when the signature names no fingerprint.
//!
//! [`sign_commit`] signs commits this tool writes with an SSH key, as `git commit -S` does with
//! `gpg.format=ssh`.

use std::collections::HashSet;
use std::fmt;

use base64::Engine as _;
use gix::ObjectId;
use gix::bstr::ByteSlice;
use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::{RevocationCode, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, Tag};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The SSHSIG namespace Git signs and verifies commits in.
const GIT_NAMESPACE: &str = "git";

/// Which commits must be signed, and by whom.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignaturePolicy {
    /// `Head`: the commit synced or stamped on a write must be signed by a trusted key.
    /// `Strict`: that commit and every commit after `sealCommit` leading to it.
    #[serde(default)]
    pub mode: SignatureMode,
    /// Strict mode: the last commit not required to be signed (full 40-hex id). Required for
    /// Strict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_commit: Option<String>,
    /// SSH keys, in the format of OpenSSH's allowed_signers file (ssh-keygen(1) ALLOWED
    /// SIGNERS), one per line: `principals [options] keytype base64key [comment]`. Options:
    /// `namespaces="git,…"`, `valid-after="YYYYMMDD[HHMM[SS]][Z]"`, `valid-before=…`, compared
    /// with the commit's committer time (times are UTC, with or without `Z`). `cert-authority`
    /// is not supported.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ssh_allowed_signers: String,
    /// ASCII-armored OpenPGP public keys (each a PUBLIC KEY BLOCK, as `gpg --export --armor`
    /// writes it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub openpgp_keys: Vec<String>,
}

/// How much of history must be signed.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SignatureMode {
    /// The commit synced (or stamped on a write) must be signed by a trusted key.
    #[default]
    Head,
    /// That commit and every commit after the seal commit leading to it (merges included).
    Strict,
}

/// Who signed a commit, as a person recognises the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    /// None: in strict mode, the seal commit itself (the last one that need not be signed).
    Seal,
    /// An SSH key of the allowed_signers list.
    Ssh {
        /// The principals of its allowed_signers line, as written there.
        principals: String,
        /// `SHA256:…`, as `ssh-keygen -lf` prints it.
        fingerprint: String,
    },
    /// An OpenPGP key of the policy (the signature may have been made by one of its subkeys).
    OpenPgp {
        /// The primary key's fingerprint, upper-case hex.
        fingerprint: String,
        /// Its primary user ID.
        user_id: String,
    },
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Seal => f.write_str("no key: it is the project's seal commit"),
            Signer::Ssh {
                principals,
                fingerprint,
            } => write!(f, "SSH key {fingerprint} ({principals})"),
            Signer::OpenPgp {
                fingerprint,
                user_id,
            } => write!(f, "OpenPGP key {fingerprint} ({user_id})"),
        }
    }
}

/// Why a commit is not accepted. Each names the commit at fault (in strict mode, the first one
/// found, which may be an ancestor of the commit checked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("commit {commit} is not signed")]
    Unsigned { commit: ObjectId },
    #[error("commit {commit} is signed by {key}, which the project does not trust")]
    UnknownKey { commit: ObjectId, key: String },
    #[error("commit {commit} has a bad signature by {key}: {reason}")]
    Invalid {
        commit: ObjectId,
        key: String,
        reason: String,
    },
    #[error("commit {commit} is signed with {what}, which is not supported")]
    Unsupported { commit: ObjectId, what: String },
    #[error("commit {commit} does not descend from the seal commit {seal}")]
    NotAfterSeal { commit: ObjectId, seal: ObjectId },
    #[error("cannot read commit {commit}: {reason}")]
    Read { commit: ObjectId, reason: String },
}

impl SignatureError {
    /// The commit the error is about.
    pub fn commit(&self) -> ObjectId {
        match self {
            SignatureError::Unsigned { commit }
            | SignatureError::UnknownKey { commit, .. }
            | SignatureError::Invalid { commit, .. }
            | SignatureError::Unsupported { commit, .. }
            | SignatureError::NotAfterSeal { commit, .. }
            | SignatureError::Read { commit, .. } => *commit,
        }
    }
}

/// A policy parsed: its mode and the keys it trusts.
#[derive(Debug, Clone)]
pub struct Keyring {
    mode: Mode,
    ssh: Vec<AllowedSigner>,
    openpgp: Vec<OpenPgpCert>,
    digest: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Head,
    Strict { seal: ObjectId },
}

impl Keyring {
    /// Parses a policy. Errors name the allowed_signers line or the OpenPGP key at fault.
    pub fn from_policy(policy: &SignaturePolicy) -> Result<Keyring, String> {
        let seal = match &policy.seal_commit {
            Some(seal) => Some(parse_seal(seal)?),
            None => None,
        };
        let mode = match (policy.mode, seal) {
            (SignatureMode::Head, _) => Mode::Head,
            (SignatureMode::Strict, Some(seal)) => Mode::Strict { seal },
            (SignatureMode::Strict, None) => {
                return Err(
                    "sealCommit: Strict mode needs the last commit not required to be \
                     signed (a full 40-hex commit id)"
                        .into(),
                );
            }
        };
        let mut ssh = Vec::new();
        for (index, line) in policy.ssh_allowed_signers.lines().enumerate() {
            let number = index + 1;
            if let Some(signer) = parse_allowed_signer(line)
                .map_err(|e| format!("sshAllowedSigners line {number}: {e}"))?
            {
                ssh.push(signer);
            }
        }
        let mut openpgp = Vec::new();
        for (index, text) in policy.openpgp_keys.iter().enumerate() {
            let certs =
                parse_openpgp_keys(text).map_err(|e| format!("openpgpKeys[{index}]: {e}"))?;
            openpgp.extend(certs);
        }
        if ssh.is_empty() && openpgp.is_empty() {
            return Err(
                "the signature policy trusts no key: give sshAllowedSigners or \
                 openpgpKeys"
                    .into(),
            );
        }
        Ok(Keyring {
            mode,
            ssh,
            openpgp,
            digest: policy_digest(policy),
        })
    }

    /// A digest of the policy this keyring was parsed from (SHA-256, hex): equal policies have
    /// equal digests, so verdicts (and [`verify_since_seal`]'s memo) can be cached per digest.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The policy's mode.
    pub fn mode(&self) -> SignatureMode {
        match self.mode {
            Mode::Head => SignatureMode::Head,
            Mode::Strict { .. } => SignatureMode::Strict,
        }
    }

    /// The seal commit in strict mode.
    pub fn seal(&self) -> Option<ObjectId> {
        match self.mode {
            Mode::Head => None,
            Mode::Strict { seal } => Some(seal),
        }
    }
}

fn policy_digest(policy: &SignaturePolicy) -> String {
    // Field order is fixed by the struct, so equal policies serialise alike.
    let json = serde_json::to_vec(policy).unwrap_or_default();
    ssh_key::HashAlg::Sha256
        .digest(&json)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_seal(text: &str) -> Result<ObjectId, String> {
    let text = text.trim();
    if text.len() != 40 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "sealCommit: {text:?} is not a full commit id (40 hex digits)"
        ));
    }
    ObjectId::from_hex(text.to_ascii_lowercase().as_bytes())
        .map_err(|e| format!("sealCommit: {text:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// SSH: allowed_signers

/// One line of allowed_signers.
#[derive(Debug, Clone)]
struct AllowedSigner {
    principals: String,
    key: ssh_key::public::KeyData,
    /// Patterns (`*`, `?`, `!negation`); `None`: every namespace.
    namespaces: Option<Vec<String>>,
    /// Seconds since the epoch, inclusive.
    valid_after: Option<i64>,
    /// Seconds since the epoch, inclusive.
    valid_before: Option<i64>,
}

impl AllowedSigner {
    fn allows_git(&self) -> bool {
        match &self.namespaces {
            None => true,
            Some(patterns) => pattern_list_matches(patterns, GIT_NAMESPACE),
        }
    }
}

/// Key types OpenSSH signs with and this module verifies.
const SSH_KEY_TYPES: [&str; 6] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
];
const SSH_SK_ECDSA: &str = "sk-ecdsa-sha2-nistp256@openssh.com";

fn is_key_type(token: &str) -> bool {
    SSH_KEY_TYPES.contains(&token)
        || token == SSH_SK_ECDSA
        || token == "ssh-dss"
        || token.ends_with("-cert-v01@openssh.com")
}

/// Splits off the next whitespace-separated field; double quotes group (whitespace inside them
/// does not end the field).
fn next_field(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    if text.is_empty() {
        return None;
    }
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return Some((&text[..i], &text[i..])),
            _ => {}
        }
    }
    Some((text, ""))
}

fn parse_allowed_signer(line: &str) -> Result<Option<AllowedSigner>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (principals, rest) = next_field(line).ok_or("no principals")?;
    let principals = unquote(principals);
    if principals.is_empty() {
        return Err("no principals".into());
    }
    let (first, rest) = next_field(rest).ok_or("no key after the principals")?;
    // Options never start like a key type, so a misspelt key type is reported as such.
    let looks_like_key_type = |t: &str| {
        is_key_type(t)
            || ["ssh-", "ecdsa-", "sk-", "rsa-"]
                .iter()
                .any(|p| t.starts_with(p))
    };
    let (options, key_type, rest) = if looks_like_key_type(first) {
        (None, first, rest)
    } else {
        let (key_type, rest) =
            next_field(rest).ok_or_else(|| format!("no key after the options {first:?}"))?;
        (Some(first), key_type, rest)
    };
    if key_type.ends_with("-cert-v01@openssh.com") {
        return Err(format!(
            "{key_type} is a certificate: name the signing key itself"
        ));
    }
    if key_type == "ssh-dss" {
        return Err(
            "ssh-dss (DSA) keys are not supported: OpenSSH no longer signs with them".into(),
        );
    }
    if !is_key_type(key_type) {
        return Err(format!(
            "unknown key type {key_type:?} (expected one of {}, {SSH_SK_ECDSA})",
            SSH_KEY_TYPES.join(", ")
        ));
    }
    let (blob, _comment) = next_field(rest).ok_or_else(|| format!("no {key_type} key data"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|e| format!("the {key_type} key is not valid base64: {e}"))?;
    let public = ssh_key::PublicKey::from_bytes(&bytes)
        .map_err(|e| format!("cannot read the {key_type} key: {e}"))?;
    let key = public.key_data().clone();
    if key.algorithm().as_str() != key_type {
        return Err(format!(
            "the key is a {} key, not {key_type}",
            key.algorithm().as_str()
        ));
    }
    let mut signer = AllowedSigner {
        principals: principals.to_owned(),
        key,
        namespaces: None,
        valid_after: None,
        valid_before: None,
    };
    if let Some(options) = options {
        for option in split_options(options) {
            let (name, value) = match option.split_once('=') {
                Some((name, value)) => (name, Some(unquote(value))),
                None => (option, None),
            };
            match (name.to_ascii_lowercase().as_str(), value) {
                ("cert-authority", _) => {
                    return Err(
                        "the cert-authority option is not supported: list the signing \
                         keys themselves"
                            .into(),
                    );
                }
                ("namespaces", Some(value)) => {
                    signer.namespaces = Some(
                        value
                            .split(',')
                            .map(|n| n.trim().to_owned())
                            .filter(|n| !n.is_empty())
                            .collect(),
                    );
                }
                ("valid-after", Some(value)) => {
                    signer.valid_after = Some(
                        parse_ssh_time(value).map_err(|e| format!("valid-after={value:?}: {e}"))?,
                    );
                }
                ("valid-before", Some(value)) => {
                    signer.valid_before = Some(
                        parse_ssh_time(value)
                            .map_err(|e| format!("valid-before={value:?}: {e}"))?,
                    );
                }
                ("namespaces" | "valid-after" | "valid-before", None) => {
                    return Err(format!("the {name} option needs a value ({name}=\"…\")"));
                }
                _ => return Err(format!("unknown option {option:?}")),
            }
        }
    }
    Ok(Some(signer))
}

fn unquote(text: &str) -> &str {
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
}

/// Splits `a,b="x,y",c` at the commas outside quotes.
fn split_options(text: &str) -> Vec<&str> {
    let mut options = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                options.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    options.push(&text[start..]);
    options.into_iter().filter(|o| !o.is_empty()).collect()
}

/// `YYYYMMDD[HHMM[SS]][Z]`, as ssh-keygen(1) reads it. OpenSSH takes a time without `Z` in the
/// verifying machine's time zone; here every time is UTC, so a policy means the same on every
/// machine.
fn parse_ssh_time(text: &str) -> Result<i64, String> {
    let digits = text.strip_suffix(['Z', 'z']).unwrap_or(text);
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a time of the form YYYYMMDD[HHMM[SS]][Z]".into());
    }
    let field = |range: std::ops::Range<usize>| -> i64 {
        digits
            .get(range)
            .and_then(|d| d.parse().ok())
            .unwrap_or_default()
    };
    let datetime = jiff::civil::DateTime::new(
        field(0..4) as i16,
        field(4..6) as i8,
        field(6..8) as i8,
        field(8..10) as i8,
        field(10..12) as i8,
        field(12..14) as i8,
        0,
    )
    .map_err(|e| e.to_string())?;
    datetime
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp().as_second())
        .map_err(|e| e.to_string())
}

/// OpenSSH's `match_pattern_list`: a negated pattern that matches wins, otherwise any match.
fn pattern_list_matches(patterns: &[String], text: &str) -> bool {
    let mut matched = false;
    for pattern in patterns {
        if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard(negated.as_bytes(), text.as_bytes()) {
                return false;
            }
        } else if wildcard(pattern.as_bytes(), text.as_bytes()) {
            matched = true;
        }
    }
    matched
}

/// `*` any run, `?` one character.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| wildcard(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && wildcard(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && wildcard(rest, &text[1..]),
    }
}

// ---------------------------------------------------------------------------------------------
// OpenPGP keys

/// A certificate (primary key with its user IDs and subkeys) as far as signing goes.
#[derive(Debug, Clone)]
struct OpenPgpCert {
    fingerprint: String,
    user_id: String,
    components: Vec<Component>,
    /// The primary key's expiry (seconds since the epoch), which bounds every subkey too.
    expires: Option<i64>,
    revoked: Option<Revocation>,
}

/// The primary key or a subkey whose binding signature verified.
#[derive(Debug, Clone)]
struct Component {
    key: ComponentKey,
    fingerprint: pgp::types::Fingerprint,
    key_id: pgp::types::KeyId,
    can_sign: bool,
    expires: Option<i64>,
    revoked: Option<Revocation>,
}

#[derive(Debug, Clone)]
enum ComponentKey {
    Primary(pgp::packet::PublicKey),
    Subkey(pgp::packet::PublicSubkey),
}

#[derive(Debug, Clone)]
struct Revocation {
    /// Compromised or no reason given: no signature by the key is good, whenever made. Otherwise
    /// (superseded, retired) only signatures from `at` on are refused.
    hard: bool,
    at: i64,
    reason: String,
}

impl Revocation {
    fn from_signature(sig: &pgp::packet::Signature) -> Revocation {
        let code = sig.revocation_reason_code().copied();
        let hard = !matches!(
            code,
            Some(RevocationCode::KeySuperseded | RevocationCode::KeyRetired)
        );
        let text = sig
            .revocation_reason_string()
            .map(|s| String::from_utf8_lossy(s).trim().to_owned())
            .filter(|s| !s.is_empty());
        let reason = match (code, text) {
            (Some(code), Some(text)) => format!("{code:?}: {text}"),
            (Some(code), None) => format!("{code:?}"),
            (None, Some(text)) => text,
            (None, None) => "no reason given".into(),
        };
        Revocation {
            hard,
            at: sig.created().map(|t| i64::from(t.as_secs())).unwrap_or(0),
            reason,
        }
    }

    fn applies_at(&self, time: i64) -> bool {
        self.hard || time >= self.at
    }
}

fn upper_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn parse_openpgp_keys(text: &str) -> Result<Vec<OpenPgpCert>, String> {
    if text.contains("PRIVATE KEY BLOCK") {
        return Err("this is a private key: give the public key (gpg --export --armor KEY)".into());
    }
    if !text.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
        return Err(
            "not an ASCII-armored public key (-----BEGIN PGP PUBLIC KEY BLOCK-----)".into(),
        );
    }
    let (keys, _headers) = SignedPublicKey::from_string_many(text)
        .map_err(|e| format!("cannot read the armored key: {e}"))?;
    let mut certs = Vec::new();
    for key in keys {
        let key = key.map_err(|e| format!("cannot read the key: {e}"))?;
        certs.push(openpgp_cert(&key)?);
    }
    if certs.is_empty() {
        return Err("the armor holds no key".into());
    }
    Ok(certs)
}

fn created(sig: &pgp::packet::Signature) -> i64 {
    sig.created().map(|t| i64::from(t.as_secs())).unwrap_or(0)
}

fn has_key_flags(sig: &pgp::packet::Signature) -> bool {
    sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

/// `created + duration`, or `None` when the signature sets no (or a zero) expiration.
fn expiry(key_created: i64, sig: &pgp::packet::Signature) -> Option<i64> {
    sig.key_expiration_time()
        .map(|d| i64::from(d.as_secs()))
        .filter(|&d| d > 0)
        .map(|d| key_created + d)
}

/// Evaluates a certificate: which of its self-signatures verify, what the newest says about
/// expiry and signing, which user ID it goes by, and whether it or its subkeys are revoked.
fn openpgp_cert(key: &SignedPublicKey) -> Result<OpenPgpCert, String> {
    let primary = &key.primary_key;
    let fingerprint = upper_hex(primary.fingerprint().as_bytes());
    let primary_created = i64::from(primary.created_at().as_secs());

    // Self-signatures that verify: certifications of user IDs and direct-key signatures.
    let mut self_sigs: Vec<&pgp::packet::Signature> = Vec::new();
    let mut user_id = None;
    let mut first_user_id = None;
    for user in &key.details.users {
        let mut good = user
            .signatures
            .iter()
            .filter(|sig| sig.typ() != Some(SignatureType::CertRevocation))
            .filter(|sig| {
                sig.verify_certification(primary, Tag::UserId, &user.id)
                    .is_ok()
            })
            .peekable();
        if good.peek().is_none() {
            continue;
        }
        let name = String::from_utf8_lossy(user.id.id()).into_owned();
        let mut primary_flag = false;
        for sig in good {
            primary_flag |= sig.is_primary();
            self_sigs.push(sig);
        }
        if primary_flag && user_id.is_none() {
            user_id = Some(name.clone());
        }
        first_user_id.get_or_insert(name);
    }
    for sig in &key.details.direct_signatures {
        if sig.verify_key(primary).is_ok() {
            self_sigs.push(sig);
        }
    }
    let Some(newest) = self_sigs.iter().max_by_key(|sig| created(sig)) else {
        return Err(format!("key {fingerprint} has no valid self-signature"));
    };
    let revoked = key
        .details
        .revocation_signatures
        .iter()
        .filter(|sig| sig.verify_key(primary).is_ok())
        .map(Revocation::from_signature)
        .min_by_key(|r| (!r.hard, r.at));
    let expires = expiry(primary_created, newest);
    let mut components = vec![Component {
        key: ComponentKey::Primary(primary.clone()),
        fingerprint: primary.fingerprint(),
        key_id: primary.legacy_key_id(),
        can_sign: !has_key_flags(newest) || newest.key_flags().sign(),
        expires,
        revoked: None,
    }];

    for subkey in &key.public_subkeys {
        let binds = |sig: &&pgp::packet::Signature| {
            sig.typ() == Some(SignatureType::SubkeyBinding)
                && sig.verify_subkey_binding(primary, &subkey.key).is_ok()
        };
        let Some(binding) = subkey
            .signatures
            .iter()
            .filter(binds)
            .max_by_key(|s| created(s))
        else {
            continue;
        };
        // A signing subkey must also sign the primary back (the embedded primary key binding),
        // so nobody can claim another's signing key as their own subkey.
        let can_sign = binding.key_flags().sign()
            && binding.embedded_signature().is_some_and(|back| {
                back.verify_primary_key_binding(&subkey.key, primary)
                    .is_ok()
            });
        let revoked = subkey
            .signatures
            .iter()
            .filter(|sig| sig.typ() == Some(SignatureType::SubkeyRevocation))
            .filter(|sig| sig.verify_subkey_binding(primary, &subkey.key).is_ok())
            .map(Revocation::from_signature)
            .min_by_key(|r| (!r.hard, r.at));
        components.push(Component {
            key: ComponentKey::Subkey(subkey.key.clone()),
            fingerprint: subkey.key.fingerprint(),
            key_id: subkey.key.legacy_key_id(),
            can_sign,
            expires: expiry(i64::from(subkey.key.created_at().as_secs()), binding),
            revoked,
        });
    }
    Ok(OpenPgpCert {
        fingerprint,
        user_id: user_id.or(first_user_id).unwrap_or_default(),
        components,
        expires,
        revoked,
    })
}

// ---------------------------------------------------------------------------------------------
// Verification

/// Verifies the signature of one commit against the keyring (whatever its mode), at the
/// commit's committer time.
///
/// OpenPGP: the key (or signing subkey) the signature names must be in the keyring; a key that
/// its newest self-signature (or a subkey its newest binding signature) says had expired by the
/// commit's committer time, or that carries a revocation signature that verifies, is refused.
/// A revocation for compromise or without a reason refuses every signature; one saying the key
/// was superseded or retired refuses signatures on commits from its time on. rpgp 0.21 verifies
/// self-signatures but does not say whether a key is valid at a given time, so that evaluation
/// is done here, simply: the newest self-signature that verifies decides (RFC 9580 would prefer
/// the primary user ID's), and revocations by a designated third-party revoker are not
/// considered. Signatures over SHA-1, MD5 or RIPEMD-160
/// digests are refused.
///
/// The committer time is what the signer wrote; like Git (`ssh-keygen -Y verify
/// -Overify-time`), expiry is judged by it.
pub fn verify_commit(
    repo: &gix::Repository,
    commit: ObjectId,
    keyring: &Keyring,
) -> Result<Signer, SignatureError> {
    let read_err = |e: &dyn fmt::Display| SignatureError::Read {
        commit,
        reason: e.to_string(),
    };
    let object = repo.find_commit(commit).map_err(|e| read_err(&e))?;
    let time = object
        .committer()
        .map_err(|e| read_err(&e))?
        .time()
        .map_err(|e| read_err(&e))?
        .seconds;
    let Some((signature, signed)) = object.signature().map_err(|e| read_err(&e))? else {
        return Err(SignatureError::Unsigned { commit });
    };
    let data = signed.to_bstring();
    let signature: &[u8] = signature.as_ref();
    let signature = signature.trim_start();
    use gix::objs::signature::Format;
    match Format::from_signature(signature) {
        Some(Format::Ssh) => verify_ssh(commit, time, signature, &data, keyring),
        Some(Format::OpenPgp) => verify_openpgp(commit, time, signature, &data, keyring),
        Some(Format::X509) => Err(SignatureError::Unsupported {
            commit,
            what: "an X.509 (gpgsm) signature".into(),
        }),
        None => Err(SignatureError::Unsupported {
            commit,
            what: "a signature of unknown format".into(),
        }),
    }
}

fn verify_ssh(
    commit: ObjectId,
    time: i64,
    armored: &[u8],
    data: &[u8],
    keyring: &Keyring,
) -> Result<Signer, SignatureError> {
    let invalid = |key: String, reason: String| SignatureError::Invalid {
        commit,
        key,
        reason,
    };
    let sig = ssh_key::SshSig::from_pem(armored).map_err(|e| {
        invalid(
            "an unidentified SSH key".into(),
            format!("the SSH signature cannot be read: {e}"),
        )
    })?;
    let fingerprint = sig
        .public_key()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    let key_name = format!("SSH key {fingerprint}");
    let lines: Vec<&AllowedSigner> = keyring
        .ssh
        .iter()
        .filter(|s| &s.key == sig.public_key())
        .collect();
    if lines.is_empty() {
        return Err(SignatureError::UnknownKey {
            commit,
            key: key_name,
        });
    }
    if sig.namespace() != GIT_NAMESPACE {
        return Err(invalid(
            key_name,
            format!(
                "the signature is for namespace {:?}, not {GIT_NAMESPACE:?}",
                sig.namespace()
            ),
        ));
    }
    let public = ssh_key::PublicKey::from(sig.public_key().clone());
    public.verify(GIT_NAMESPACE, data, &sig).map_err(|e| {
        invalid(
            key_name.clone(),
            format!("the signature does not match the commit ({e})"),
        )
    })?;
    let git_lines: Vec<&&AllowedSigner> = lines.iter().filter(|s| s.allows_git()).collect();
    let Some(first) = git_lines.first() else {
        let namespaces = lines
            .iter()
            .filter_map(|s| s.namespaces.as_ref())
            .flatten()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(",");
        return Err(invalid(
            key_name,
            format!("the project trusts the key only for namespaces \"{namespaces}\", not git"),
        ));
    };
    if let Some(signer) = git_lines.iter().find(|s| {
        s.valid_after.is_none_or(|after| time >= after)
            && s.valid_before.is_none_or(|before| time <= before)
    }) {
        return Ok(Signer::Ssh {
            principals: signer.principals.clone(),
            fingerprint,
        });
    }
    let when = format_time(time);
    let reason = match (first.valid_after, first.valid_before) {
        (Some(after), _) if time < after => format!(
            "the key is trusted only from {} (valid-after), the commit is of {when}",
            format_time(after)
        ),
        (_, Some(before)) => format!(
            "the key is trusted only until {} (valid-before), the commit is of {when}",
            format_time(before)
        ),
        _ => format!("the key is not trusted at the commit's time {when}"),
    };
    Err(invalid(key_name, reason))
}

fn format_time(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| seconds.to_string())
}

fn verify_openpgp(
    commit: ObjectId,
    time: i64,
    armored: &[u8],
    data: &[u8],
    keyring: &Keyring,
) -> Result<Signer, SignatureError> {
    let unidentified = "an unidentified OpenPGP key";
    let invalid = |key: String, reason: String| SignatureError::Invalid {
        commit,
        key,
        reason,
    };
    let text = std::str::from_utf8(armored).map_err(|_| {
        invalid(
            unidentified.into(),
            "the OpenPGP signature is not ASCII armor".into(),
        )
    })?;
    let read = |e: &dyn fmt::Display| {
        invalid(
            unidentified.into(),
            format!("the OpenPGP signature cannot be read: {e}"),
        )
    };
    let (sigs, _headers) = DetachedSignature::from_string_many(text).map_err(|e| read(&e))?;
    let mut sigs = sigs.collect::<Result<Vec<_>, _>>().map_err(|e| read(&e))?;
    if sigs.len() != 1 {
        return Err(SignatureError::Unsupported {
            commit,
            what: format!("{} OpenPGP signatures in one block", sigs.len()),
        });
    }
    let sig = sigs.remove(0).signature;

    let fingerprints = sig.issuer_fingerprint();
    let key_ids = sig.issuer_key_id();
    let key_name = match (fingerprints.first(), key_ids.first()) {
        (Some(fp), _) => format!("OpenPGP key {}", upper_hex(fp.as_bytes())),
        (None, Some(id)) => format!("OpenPGP key ID {}", upper_hex(id.as_ref())),
        (None, None) => unidentified.to_owned(),
    };
    let named = |c: &Component| {
        fingerprints.iter().any(|fp| **fp == c.fingerprint)
            || key_ids.iter().any(|id| **id == c.key_id)
    };
    let anonymous = fingerprints.is_empty() && key_ids.is_empty();
    let candidates: Vec<(&OpenPgpCert, &Component)> = keyring
        .openpgp
        .iter()
        .flat_map(|cert| cert.components.iter().map(move |c| (cert, c)))
        .filter(|(_, c)| if anonymous { c.can_sign } else { named(c) })
        .collect();
    if candidates.is_empty() {
        return Err(SignatureError::UnknownKey {
            commit,
            key: key_name,
        });
    }

    match sig.typ() {
        Some(SignatureType::Binary | SignatureType::Text) => {}
        other => {
            return Err(invalid(
                key_name,
                format!("a {other:?} signature is not a signature over data"),
            ));
        }
    }
    if let Some(
        hash @ (pgp::crypto::hash::HashAlgorithm::Md5
        | pgp::crypto::hash::HashAlgorithm::Sha1
        | pgp::crypto::hash::HashAlgorithm::Ripemd160),
    ) = sig.hash_alg()
    {
        return Err(invalid(
            key_name,
            format!("the signature uses the weak digest {hash}"),
        ));
    }

    let mut failure = None;
    for (cert, component) in candidates {
        let checked = match &component.key {
            ComponentKey::Primary(key) => sig.verify(key, data),
            ComponentKey::Subkey(key) => sig.verify(key, data),
        };
        let name = if matches!(component.key, ComponentKey::Primary(_)) {
            format!("OpenPGP key {}", cert.fingerprint)
        } else {
            format!(
                "OpenPGP key {} (subkey {})",
                cert.fingerprint,
                upper_hex(component.fingerprint.as_bytes())
            )
        };
        if let Err(e) = checked {
            failure.get_or_insert_with(|| {
                invalid(
                    name,
                    format!("the signature does not match the commit ({e})"),
                )
            });
            continue;
        }
        // Cryptographically good: now whether the key could sign at the commit's time.
        let refuse = |reason: String| Err(invalid(name.clone(), reason));
        if !component.can_sign {
            return refuse("the key is not marked for signing".into());
        }
        for revocation in [&cert.revoked, &component.revoked].into_iter().flatten() {
            if revocation.applies_at(time) {
                return refuse(format!(
                    "the key was revoked on {} ({})",
                    format_time(revocation.at),
                    revocation.reason
                ));
            }
        }
        for expires in [cert.expires, component.expires].into_iter().flatten() {
            if time >= expires {
                return refuse(format!(
                    "the key expired on {}, the commit is of {}",
                    format_time(expires),
                    format_time(time)
                ));
            }
        }
        return Ok(Signer::OpenPgp {
            fingerprint: cert.fingerprint.clone(),
            user_id: cert.user_id.clone(),
        });
    }
    // A signature that names no key and matches none of them was made by some other key.
    Err(match failure {
        Some(failure) if !anonymous => failure,
        _ => SignatureError::UnknownKey {
            commit,
            key: key_name,
        },
    })
}

/// Strict mode: `commit` must be signed by a trusted key (even when it is the seal itself), the
/// seal must be `commit` or one of its ancestors, and every commit reachable from `commit` but
/// not from the seal (merged branches included) must be signed by a trusted key too.
///
/// `verified` holds commits known good under this keyring (and so under its seal): a commit
/// there has had itself and all its ancestors after the seal verified, so the walk stops at it.
/// A successful call adds every commit it verified; a failing one adds nothing. Keep one memo per
/// [`Keyring::digest`]. The error names the first bad commit the walk (newest first) meets.
pub fn verify_since_seal(
    repo: &gix::Repository,
    seal: ObjectId,
    commit: ObjectId,
    keyring: &Keyring,
    verified: &mut HashSet<ObjectId>,
) -> Result<Signer, SignatureError> {
    // The seal is the last commit that need not be signed.
    if commit == seal {
        return Ok(Signer::Seal);
    }
    let signer = verify_commit(repo, commit, keyring)?;
    if verified.contains(&commit) {
        return Ok(signer);
    }
    match repo.merge_base(seal, commit) {
        Ok(Some(base)) if base.detach() == seal => {}
        Ok(_) => return Err(SignatureError::NotAfterSeal { commit, seal }),
        Err(e) => {
            return Err(SignatureError::Read {
                commit: seal,
                reason: e.to_string(),
            });
        }
    }
    let walk_err = |e: &dyn fmt::Display| SignatureError::Read {
        commit,
        reason: format!("cannot walk the history since the seal commit {seal}: {e}"),
    };
    let walk = repo
        .rev_walk([commit])
        .with_hidden(std::iter::once(seal).chain(verified.iter().copied()))
        .all()
        .map_err(|e| walk_err(&e))?;
    let mut good = vec![commit];
    for info in walk {
        let id = info.map_err(|e| walk_err(&e))?.id;
        if id == commit {
            continue;
        }
        verify_commit(repo, id, keyring)?;
        good.push(id);
    }
    verified.extend(good);
    Ok(signer)
}

/// Checks `commit` as the keyring's mode requires: [`verify_commit`] in `Head` mode,
/// [`verify_since_seal`] (with `memo`) in `Strict` mode.
pub fn check(
    repo: &gix::Repository,
    commit: ObjectId,
    keyring: &Keyring,
    memo: &mut HashSet<ObjectId>,
) -> Result<Signer, SignatureError> {
    match keyring.mode {
        Mode::Head => verify_commit(repo, commit, keyring),
        Mode::Strict { seal } => verify_since_seal(repo, seal, commit, keyring, memo),
    }
}

// ---------------------------------------------------------------------------------------------
// Signing

/// An SSH private key that signs the commits this tool writes.
pub struct SigningKey {
    key: ssh_key::PrivateKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public_key", &self.public_key_line())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads an unencrypted OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`);
    /// `path` names the file in errors.
    pub fn from_openssh(text: &str, path: &str) -> Result<SigningKey, String> {
        let key = ssh_key::PrivateKey::from_openssh(text).map_err(|e| {
            format!("{path}: not an OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY-----): {e}")
        })?;
        if key.is_encrypted() {
            return Err(format!(
                "{path}: the key is protected by a passphrase; give a key without one \
                 (ssh-keygen -p -N '' -f {path} removes it from a copy)"
            ));
        }
        let data = key.public_key().key_data();
        if data.is_sk_ed25519() || data.is_sk_ecdsa_p256() {
            return Err(format!(
                "{path}: security-key (FIDO) keys need their device to sign; give a plain key"
            ));
        }
        // Whether this kind of key can sign here at all, before any commit depends on it.
        sshsig(&key, b"").map_err(|e| {
            format!(
                "{path}: cannot sign with this {} key: {e}",
                data.algorithm()
            )
        })?;
        Ok(SigningKey { key })
    }

    /// The public key as an allowed_signers or authorized_keys line takes it:
    /// `ssh-ed25519 AAAA… comment`.
    pub fn public_key_line(&self) -> String {
        self.key.public_key().to_openssh().unwrap_or_default()
    }

    /// `SHA256:…`, as `ssh-keygen -lf` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(ssh_key::HashAlg::Sha256).to_string()
    }
}

/// An SSH signature over `message` in the `git` namespace, with SHA-512 (what `ssh-keygen -Y
/// sign` makes).
fn sshsig(key: &ssh_key::PrivateKey, message: &[u8]) -> Result<ssh_key::SshSig, String> {
    let hash = ssh_key::HashAlg::Sha512;
    let ssh_key::private::KeypairData::Rsa(pair) = key.key_data() else {
        return key
            .sign(GIT_NAMESPACE, hash, message)
            .map_err(|e| e.to_string());
    };
    // ssh-key 0.6 builds the RSA private key from p twice instead of p and q, which rsa refuses:
    // sign with rsa directly (rsa-sha2-512, as ssh-keygen does).
    use rsa::signature::{SignatureEncoding as _, Signer as _};
    let uint = |m: &ssh_key::Mpint| rsa::BigUint::try_from(m).map_err(|e| e.to_string());
    let private = rsa::RsaPrivateKey::from_components(
        uint(&pair.public.n)?,
        uint(&pair.public.e)?,
        uint(&pair.private.d)?,
        vec![uint(&pair.private.p)?, uint(&pair.private.q)?],
    )
    .map_err(|e| format!("not a valid RSA key: {e}"))?;
    let data =
        ssh_key::SshSig::signed_data(GIT_NAMESPACE, hash, message).map_err(|e| e.to_string())?;
    let signature = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha512>::new(private)
        .try_sign(&data)
        .map_err(|e| e.to_string())?;
    let signature = ssh_key::Signature::new(
        ssh_key::Algorithm::Rsa { hash: Some(hash) },
        signature.to_vec(),
    )
    .map_err(|e| e.to_string())?;
    ssh_key::SshSig::new(
        key.public_key().key_data().clone(),
        GIT_NAMESPACE,
        hash,
        signature,
    )
    .map_err(|e| e.to_string())
}

/// Signs a commit as `git commit -S` does with `gpg.format=ssh`: an SSH signature (namespace
/// `git`, SHA-512) over the commit without any signature header, added as its `gpgsig` header.
/// A signature the commit already had is replaced.
pub fn sign_commit(commit: &mut gix::objs::Commit, key: &SigningKey) -> Result<(), String> {
    use gix::objs::WriteTo as _;
    commit
        .extra_headers
        .retain(|(name, _)| name.as_slice() != b"gpgsig" && name.as_slice() != b"gpgsig-sha256");
    let mut payload = Vec::new();
    commit
        .write_to(&mut payload)
        .map_err(|e| format!("cannot serialise the commit: {e}"))?;
    let sig = sshsig(&key.key, &payload).map_err(|e| format!("cannot sign the commit: {e}"))?;
    let armored = sig
        .to_pem(ssh_key::LineEnding::LF)
        .map_err(|e| format!("cannot armor the signature: {e}"))?;
    commit
        .extra_headers
        .push(("gpgsig".into(), armored.trim_end_matches('\n').into()));
    Ok(())
}

#[cfg(test)]
mod real_tools;

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";

    fn policy(allowed: &str) -> SignaturePolicy {
        SignaturePolicy {
            ssh_allowed_signers: allowed.into(),
            ..Default::default()
        }
    }

    #[test]
    fn allowed_signers_lines_parse() {
        let text = format!(
            "# team\n\nalice@example.com {ED25519} alice\n\
             \"bob@example.com,carol@*\" namespaces=\"git,file\",valid-after=\"20240101\",valid-before=\"20250101123000Z\" {ED25519}\n"
        );
        let keyring = Keyring::from_policy(&policy(&text)).expect("parses");
        assert_eq!(keyring.ssh.len(), 2);
        let alice = &keyring.ssh[0];
        assert_eq!(alice.principals, "alice@example.com");
        assert!(alice.allows_git());
        let bob = &keyring.ssh[1];
        assert_eq!(bob.principals, "bob@example.com,carol@*");
        assert_eq!(
            bob.namespaces.as_deref(),
            Some(&["git".to_owned(), "file".to_owned()][..])
        );
        assert_eq!(bob.valid_after, Some(1_704_067_200));
        assert_eq!(bob.valid_before, Some(1_735_734_600));
        assert_eq!(keyring.mode(), SignatureMode::Head);
        assert_eq!(keyring.seal(), None);
    }

    #[test]
    fn allowed_signers_errors_name_the_line() {
        let cases = [
            (
                format!("a {ED25519}\nb cert-authority {ED25519}"),
                "line 2",
                "cert-authority",
            ),
            (
                "\n\na ssh-foo AAAA".to_owned(),
                "line 3",
                "unknown key type \"ssh-foo\"",
            ),
            (
                "a namespaces=\"git\" AAAA".to_owned(),
                "line 1",
                "unknown key type \"AAAA\"",
            ),
            ("a ssh-ed25519 !!!notbase64".to_owned(), "line 1", "base64"),
            (
                format!("a valid-after=\"2024\" {ED25519}"),
                "line 1",
                "valid-after",
            ),
            (
                format!("a frobnicate {ED25519}"),
                "line 1",
                "unknown option",
            ),
            (
                "a ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti"
                    .to_owned(),
                "line 1",
                "not ssh-rsa",
            ),
        ];
        for (text, line, what) in cases {
            let err = Keyring::from_policy(&policy(&text)).expect_err(&text);
            assert!(err.contains(line) && err.contains(what), "{text:?}: {err}");
        }
    }

    #[test]
    fn shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Keyring>();
        send_sync::<SigningKey>();
        send_sync::<SignatureError>();
    }

    #[test]
    fn namespaces_patterns() {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(pattern_list_matches(&list(&["file", "g*"]), "git"));
        assert!(!pattern_list_matches(&list(&["file"]), "git"));
        assert!(!pattern_list_matches(&list(&["*", "!git"]), "git"));
        assert!(pattern_list_matches(&list(&["g?t"]), "git"));
    }

    #[test]
    fn seal_and_mode() {
        let mut p = policy(&format!("a {ED25519}"));
        p.mode = SignatureMode::Strict;
        let err = Keyring::from_policy(&p).expect_err("no seal");
        assert!(err.contains("sealCommit"), "{err}");
        p.seal_commit = Some("abc123".into());
        let err = Keyring::from_policy(&p).expect_err("short seal");
        assert!(err.contains("40 hex"), "{err}");
        let seal = "0123456789ABCDEF0123456789abcdef01234567";
        p.seal_commit = Some(seal.into());
        let keyring = Keyring::from_policy(&p).expect("strict");
        assert_eq!(keyring.mode(), SignatureMode::Strict);
        assert_eq!(
            keyring.seal().map(|s| s.to_string()),
            Some(seal.to_ascii_lowercase())
        );
        assert!(Keyring::from_policy(&SignaturePolicy::default()).is_err());
    }

    #[test]
    fn openpgp_key_errors_name_the_index() {
        let p = SignaturePolicy {
            openpgp_keys: vec!["-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnope\n-----END PGP PUBLIC KEY BLOCK-----\n".into()],
            ..policy(&format!("a {ED25519}"))
        };
        let err = Keyring::from_policy(&p).expect_err("bad armor");
        assert!(err.starts_with("openpgpKeys[0]"), "{err}");
        let p = SignaturePolicy {
            openpgp_keys: vec!["-----BEGIN PGP PRIVATE KEY BLOCK-----".into()],
            ..Default::default()
        };
        let err = Keyring::from_policy(&p).expect_err("private");
        assert!(err.contains("private key"), "{err}");
    }

    #[test]
    fn digest_is_stable_and_tells_policies_apart() {
        let a = policy(&format!("a {ED25519}"));
        let b = policy(&format!("b {ED25519}"));
        let da = Keyring::from_policy(&a).expect("a").digest().to_owned();
        assert_eq!(da, Keyring::from_policy(&a.clone()).expect("a").digest());
        assert_ne!(da, Keyring::from_policy(&b).expect("b").digest());
        assert_eq!(da.len(), 64);
    }

    #[test]
    fn policy_serialises_in_camel_case() {
        let p = SignaturePolicy {
            mode: SignatureMode::Strict,
            seal_commit: Some("0".repeat(40)),
            ssh_allowed_signers: "x".into(),
            openpgp_keys: vec!["k".into()],
        };
        let json = serde_json::to_value(&p).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "mode": "Strict",
                "sealCommit": "0".repeat(40),
                "sshAllowedSigners": "x",
                "openpgpKeys": ["k"],
            })
        );
        let back: SignaturePolicy = serde_json::from_value(serde_json::json!({})).expect("empty");
        assert_eq!(back, SignaturePolicy::default());
        let schema = serde_json::to_value(schemars::schema_for!(SignaturePolicy)).expect("schema");
        assert!(
            schema["properties"]["sshAllowedSigners"].is_object(),
            "{schema}"
        );
    }
}
