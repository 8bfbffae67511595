//! Projects: the trust root. A cluster-scoped `Project`, owned by cluster admins, says which
//! repositories and branches may write into which namespaces, which kinds they may create, where
//! Apps naming the project may be defined, which Secret holds their Git credentials, and whether
//! writes Git does not explain are refused or only warned about.
//!
//! An App is only as trusted as its project allows: the webhook refuses App definitions, and
//! writes of their objects, that the project does not permit; `sync` and the agent refuse to
//! apply them. The checks here are pure, so all three decide alike. The project also names the
//! service account the agent writes its apps' objects as, so what an app can write is bounded by
//! that account's RBAC as well as by the project.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::app::App;

/// The project an App belongs to when it names none.
pub const DEFAULT_PROJECT: &str = "default";
/// Namespaces the webhook's configuration never selects: no App may live there.
pub const UNREVIEWED_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// The branch a source rule allows when it names none.
pub const DEFAULT_BRANCH: &str = "main";

/// Which repositories and branches may write into which namespaces, and how writes Git does not
/// explain are treated there.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "gitops.kubectl-gitops.dev",
    version = "v1alpha1",
    kind = "Project",
    plural = "projects",
    shortname = "gproject",
    printcolumn = r#"{"name":"Enforcement","type":"string","jsonPath":".spec.enforcement"}"#,
    printcolumn = r#"{"name":"Destinations","type":"string","jsonPath":".spec.destinations"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSpec {
    /// What the project is for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Repositories and branches its apps may sync from. An entry whose `repo` starts with `!`
    /// denies (its branches, or every branch when it names none); `*` matches any run of
    /// characters within a path segment, `**` across segments, `?` one character.
    #[serde(default)]
    pub sources: Vec<SourceRule>,
    /// Namespaces its apps may write into (patterns; `!pattern` denies).
    #[serde(default)]
    pub destinations: Vec<String>,
    /// Namespaces where Apps naming this project may be defined (patterns; `!pattern` denies).
    /// Empty: the destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_namespaces: Vec<String>,
    /// Namespaced kinds its apps may create. An empty allow list allows every namespaced kind.
    #[serde(default)]
    pub namespaced_kinds: KindRules,
    /// Cluster-scoped kinds (ClusterRoles, CRDs, Namespaces, …) its apps may create. An empty
    /// allow list allows none.
    #[serde(default)]
    pub cluster_kinds: KindRules,
    /// What the webhook does with a write Git does not explain to a cluster-scoped object one of
    /// its apps manages: `Enforce` refuses it, `Warn` admits it with a warning (both record it).
    /// A namespaced object follows its namespace's label (`enforce` or `warn`) instead: the label
    /// is what the namespace promises.
    #[serde(default)]
    pub enforcement: Enforcement,
    /// Whether exec, attach, port-forward and proxy into pods of the namespaces it deploys to are
    /// allowed in enforced namespaces (every such connection is recorded either way).
    #[serde(default)]
    pub connect: ConnectPolicy,
    /// Secret with `username` and `password` that its apps' HTTPS repositories are fetched
    /// with. Apps cannot name a Secret themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<SecretRef>,
    /// The service account the in-cluster agent applies, prunes, scales (canary rollouts) and
    /// reads its apps' objects as (by impersonation): an app writes only what this account's
    /// RBAC allows, so bind it to the roles the apps need (e.g. `edit` in each destination
    /// namespace). Without
    /// `namespace`, the account of that name in the app's destination namespace. Unset: the
    /// agent does not sync the project's apps (`kubectl gitops sync` run by a person writes as
    /// that person either way). Accounts in kube-system, kube-public and kube-node-lease are
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_service_account: Option<ServiceAccountRef>,
    /// Commits its apps sync must be signed by one of these keys: `sync`, the agent and the
    /// webhook refuse a commit that fails, naming the commit and the key. `Head` checks the
    /// commit synced (and stamped on every write); `Strict` every commit after `sealCommit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signatures: Option<crate::signature::SignaturePolicy>,
}

/// Repositories (and their branches) allowed or, with `!`, denied.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceRule {
    /// Repository URL pattern; `!` in front denies.
    pub repo: String,
    /// Branch patterns (`!pattern` denies). Empty: `main` for an allowing entry, every branch
    /// for a denying one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<String>,
}

/// Kinds allowed and denied; a deny entry wins.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KindRules {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<KindPattern>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<KindPattern>,
}

/// An API group and kind; either may be `*` or a pattern. The core group is `""`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KindPattern {
    #[serde(default)]
    pub group: String,
    pub kind: String,
}

impl KindPattern {
    /// Parses `Kind`, `Kind.group` or `*` (any kind of any group), as flags spell them.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(KindPattern {
                group: "*".into(),
                kind: "*".into(),
            });
        }
        let (kind, group) = text.split_once('.').unwrap_or((text, ""));
        if kind.is_empty() {
            return Err(format!(
                "{text:?} is not a kind: write Kind, Kind.group or * (e.g. ClusterRole.rbac.authorization.k8s.io)"
            ));
        }
        Ok(KindPattern {
            group: group.into(),
            kind: kind.into(),
        })
    }

    fn matches(&self, group: &str, kind: &str) -> bool {
        glob(&self.group, group) && glob(&self.kind, kind)
    }
}

impl std::fmt::Display for KindPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.group.as_str(), self.kind.as_str()) {
            ("*", "*") => f.write_str("*"),
            ("", kind) => f.write_str(kind),
            (group, kind) => write!(f, "{kind}.{group}"),
        }
    }
}

/// Refuse or only warn.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Enforcement {
    /// Refuse writes that are not traceable to the branch.
    #[default]
    Enforce,
    /// Admit them with a warning, and record them.
    Warn,
}

/// Whether connections into pods (exec, attach, port-forward, proxy) are allowed.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConnectPolicy {
    #[default]
    Deny,
    Allow,
}

/// A Secret by namespace and name.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

/// A service account by name, in `namespace` or, without one, in the app's destination namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ServiceAccountRef {
    /// Namespace of the account; omitted: the destination namespace of the app being synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl ServiceAccountRef {
    /// Parses `NAME` or `NAMESPACE/NAME`, as flags spell it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (namespace, name) = match text.split_once('/') {
            Some((namespace, name)) => (Some(namespace), name),
            None => (None, text),
        };
        let reference = ServiceAccountRef {
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        };
        for part in namespace.into_iter().chain([name]) {
            if !is_dns_label(part) {
                return Err(format!(
                    "{text:?} is not NAME or NAMESPACE/NAME of a service account ({part:?} is not \
                     a lower-case DNS name)"
                ));
            }
        }
        Ok(reference)
    }
}

impl std::fmt::Display for ServiceAccountRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{namespace}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Whether `text` is a name Kubernetes gives namespaces and service accounts (lower-case
/// letters, digits, `-` and `.`, starting and ending with a letter or digit, at most 253).
fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Glob matching as Git refs and paths read it: `*` matches any run of characters within one
/// path segment (never `/`), `**` any run at all, `?` one character other than `/`. So
/// `release-*` does not admit `release-1/evil`, and `https://git.example.com/shop/*` only the
/// repositories directly under `shop/`.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // matched[j]: the pattern so far matches the first j characters of the text.
    let mut matched = vec![false; t.len() + 1];
    matched[0] = true;
    let mut i = 0;
    while i < p.len() {
        let mut next = vec![false; t.len() + 1];
        match p[i] {
            '*' if p.get(i + 1) == Some(&'*') => {
                let mut any = false;
                for j in 0..=t.len() {
                    any |= matched[j];
                    next[j] = any;
                }
                i += 1;
            }
            '*' => {
                let mut run = false;
                for j in 0..=t.len() {
                    run = matched[j] || (run && j > 0 && t[j - 1] != '/');
                    next[j] = run;
                }
            }
            '?' => {
                for j in 1..=t.len() {
                    next[j] = matched[j - 1] && t[j - 1] != '/';
                }
            }
            c => {
                for j in 1..=t.len() {
                    next[j] = matched[j - 1] && t[j - 1] == c;
                }
            }
        }
        matched = next;
        i += 1;
    }
    matched[t.len()]
}

/// Whether `value` is allowed by `patterns`: some entry matches it, and no `!` entry does.
pub fn allowed_by(patterns: &[String], value: &str) -> bool {
    let mut allowed = false;
    for pattern in patterns {
        match pattern.strip_prefix('!') {
            Some(denied) if glob(denied, value) => return false,
            Some(_) => {}
            None => allowed |= glob(pattern, value),
        }
    }
    allowed
}

/// Why a project does not permit something; the text is a sentence a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

impl Project {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// Whether the project lets its apps sync from `branch` of `repo`.
    pub fn permits_source(&self, repo: &str, branch: &str) -> Result<(), Refusal> {
        let canonical = canonical_repo_url(repo).map_err(Refusal)?;
        // Without branches, an allowing entry allows `main` and a denying one every branch. A
        // denying entry over-matches: it ignores case (hosts that serve `Shop` as `shop` must
        // not slip past it) and its `*` crosses `/` as well.
        let matches = |rule: &SourceRule, pattern: &str, denying: bool| {
            let repo_matches = if denying {
                glob(
                    &widened(&matching_form(&pattern.to_lowercase())),
                    &matching_form(&canonical.to_lowercase()),
                )
            } else {
                glob(&matching_form(pattern), &matching_form(&canonical))
            };
            repo_matches
                && if rule.branches.is_empty() {
                    denying || branch == DEFAULT_BRANCH
                } else if denying {
                    rule.branches.iter().any(|b| glob(&widened(b), branch))
                } else {
                    allowed_by(&rule.branches, branch)
                }
        };
        if let Some(rule) = self.spec.sources.iter().find(|r| {
            r.repo
                .strip_prefix('!')
                .is_some_and(|denied| matches(r, denied, true))
        }) {
            return Err(Refusal(format!(
                "project {} denies branch {branch} of {repo} (entry {:?})",
                self.name(),
                rule.repo
            )));
        }
        if self
            .spec
            .sources
            .iter()
            .any(|r| !r.repo.starts_with('!') && matches(r, &r.repo, false))
        {
            return Ok(());
        }
        Err(Refusal(format!(
            "project {} does not allow branch {branch} of {repo} (its sources: {})",
            self.name(),
            self.describe_sources()
        )))
    }

    fn describe_sources(&self) -> String {
        if self.spec.sources.is_empty() {
            return "none".into();
        }
        self.spec
            .sources
            .iter()
            .map(|r| {
                let branches = if r.branches.is_empty() {
                    if r.repo.starts_with('!') {
                        "*".to_owned()
                    } else {
                        DEFAULT_BRANCH.to_owned()
                    }
                } else {
                    r.branches.join(",")
                };
                format!("{} [{branches}]", r.repo)
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Whether its apps may write into `namespace`.
    pub fn permits_destination(&self, namespace: &str) -> Result<(), Refusal> {
        if allowed_by(&self.spec.destinations, namespace) {
            return Ok(());
        }
        Err(Refusal(format!(
            "project {} does not allow writes into namespace {namespace} (its destinations: {})",
            self.name(),
            list_or_none(&self.spec.destinations)
        )))
    }

    /// Whether an App naming this project may be defined in `namespace`. Never in the system
    /// namespaces, which the webhook does not review.
    pub fn permits_app_namespace(&self, namespace: &str) -> Result<(), Refusal> {
        if UNREVIEWED_NAMESPACES.contains(&namespace) {
            return Err(Refusal(format!(
                "Apps are never permitted in namespace {namespace}: the webhook does not review it"
            )));
        }
        let patterns = if self.spec.app_namespaces.is_empty() {
            &self.spec.destinations
        } else {
            &self.spec.app_namespaces
        };
        if allowed_by(patterns, namespace) {
            return Ok(());
        }
        Err(Refusal(format!(
            "project {} does not allow Apps in namespace {namespace} (its app namespaces: {})",
            self.name(),
            list_or_none(patterns)
        )))
    }

    /// Whether its apps may create objects of `kind` in `group`, namespaced or cluster-scoped.
    pub fn permits_kind(&self, group: &str, kind: &str, namespaced: bool) -> Result<(), Refusal> {
        let (rules, scope) = if namespaced {
            (&self.spec.namespaced_kinds, "namespaced")
        } else {
            (&self.spec.cluster_kinds, "cluster-scoped")
        };
        let named = KindPattern {
            group: group.into(),
            kind: kind.into(),
        };
        if let Some(deny) = rules.deny.iter().find(|p| p.matches(group, kind)) {
            return Err(Refusal(format!(
                "project {} denies {scope} kind {named} (entry {deny})",
                self.name()
            )));
        }
        let allowed = if rules.allow.is_empty() {
            namespaced
        } else {
            rules.allow.iter().any(|p| p.matches(group, kind))
        };
        if allowed {
            return Ok(());
        }
        let list: Vec<String> = rules.allow.iter().map(ToString::to_string).collect();
        Err(Refusal(format!(
            "project {} does not allow {scope} kind {named} (allowed: {})",
            self.name(),
            list_or_none(&list)
        )))
    }

    /// Whether its apps may write an object of `group`/`kind` into `namespace` (`None`:
    /// cluster-scoped): the namespace is a destination and the kind is allowed there.
    pub fn permits_object(
        &self,
        group: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<(), Refusal> {
        match namespace {
            Some(ns) => self
                .permits_destination(ns)
                .and_then(|()| self.permits_kind(group, kind, true)),
            None => self.permits_kind(group, kind, false),
        }
    }

    /// Whether `app` may be defined as it is: where it lives, where it syncs from and to.
    pub fn permits_app(&self, app: &App) -> Result<(), Refusal> {
        self.permits_app_namespace(app.metadata.namespace.as_deref().unwrap_or_default())?;
        self.permits_source(&app.spec.repo_url, &app.spec.branch)?;
        self.permits_destination(&app.destination())
    }

    /// The user the agent writes `app`'s objects as: `system:serviceaccount:NAMESPACE:NAME` of
    /// [`ProjectSpec::sync_service_account`]. Refused when the project names none (the agent
    /// then has no identity to write with: it never falls back to its own or to a guessed
    /// account), and for accounts in the system namespaces, whose writes the webhook counts as
    /// controllers'.
    pub fn sync_user(&self, app: &App) -> Result<String, Refusal> {
        let Some(account) = &self.spec.sync_service_account else {
            return Err(Refusal(format!(
                "project {} names no service account to sync its apps as (spec.syncServiceAccount), \
                 so the agent does not sync app {}; a cluster admin sets one (kubectl gitops project \
                 add {} … --sync-service-account NAME --overwrite) and binds it to the roles the \
                 apps need",
                self.name(),
                app.key(),
                self.name()
            )));
        };
        let namespace = account
            .namespace
            .clone()
            .unwrap_or_else(|| app.destination());
        if let Err(why) = ServiceAccountRef::parse(&format!("{namespace}/{}", account.name)) {
            return Err(Refusal(format!(
                "project {}: spec.syncServiceAccount {why}",
                self.name()
            )));
        }
        if UNREVIEWED_NAMESPACES.contains(&namespace.as_str()) {
            return Err(Refusal(format!(
                "project {} names service account {namespace}/{} to sync its apps as: accounts in \
                 {} are refused (the webhook counts kube-system's accounts as controllers)",
                self.name(),
                account.name,
                UNREVIEWED_NAMESPACES.join(", ")
            )));
        }
        Ok(format!(
            "system:serviceaccount:{namespace}:{}",
            account.name
        ))
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// A deny pattern whose `*` crosses `/` too: a denying entry errs on the side of denying.
fn widened(pattern: &str) -> String {
    pattern.replace("**", "*").replace('*', "**")
}

/// A repository URL or pattern as sources compare them: the scheme and host in lower case, no
/// trailing `/` and no `.git` (both name the same repository to every Git host).
fn matching_form(url: &str) -> String {
    let (scheme_host, path) = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            (
                format!("{}://{}", scheme.to_lowercase(), host.to_lowercase()),
                path,
            )
        }
        None => (String::new(), url),
    };
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    format!("{scheme_host}{path}")
}

/// The repository URL as projects match it: lower-case scheme and host, and refused when it
/// could spell the same repository in another way (user info, a query, a fragment, empty, `.`
/// or `..` path segments), so that no deny entry can be stepped around.
pub fn canonical_repo_url(url: &str) -> Result<String, String> {
    let refuse = |why: &str| Err(format!("repository URL {url:?} {why}"));
    let Some((scheme, rest)) = url.split_once("://") else {
        return refuse("must be a file://, http:// or https:// URL");
    };
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "file" | "http" | "https") {
        return refuse("must be a file://, http:// or https:// URL");
    }
    if url.contains(['?', '#']) {
        return refuse("must not carry a query or a fragment");
    }
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return refuse("must not contain spaces, control characters or backslashes");
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.contains('@') {
        return refuse("must not carry user information: credentials come from the project");
    }
    if scheme != "file" && host.is_empty() {
        return refuse("names no host");
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        if *segment == "." || *segment == ".." || segment.contains('%') {
            return refuse("must not contain '.', '..' or percent-encoded path segments");
        }
        if segment.is_empty() && i != last {
            return refuse("must not contain empty path segments ('//')");
        }
    }
    Ok(format!("{scheme}://{}{path}", host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppSpec;

    fn project(yaml: &str) -> Project {
        let spec: ProjectSpec = serde_saphyr::from_str(yaml).expect("a project spec");
        let mut p = Project::new("shop", spec);
        p.metadata.name = Some("shop".into());
        p
    }

    fn app(namespace: &str, repo: &str, branch: &str, destination: Option<&str>) -> App {
        let mut app = App::new(
            "web",
            AppSpec {
                repo_url: repo.into(),
                branch: branch.into(),
                path: ".".into(),
                destination_namespace: destination.map(Into::into),
                project: "shop".into(),
                prune: false,
                interval_seconds: 180,
                hydrate: None,
            },
        );
        app.metadata.namespace = Some(namespace.into());
        app
    }

    #[test]
    fn the_committed_crd_matches_the_type() {
        use kube::CustomResourceExt as _;
        let generated = serde_saphyr::to_string(&Project::crd()).expect("the CRD serialises");
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../manifests/crds/project.yaml"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "manifests/crds/project.yaml is out of date: run `cargo run -q -p kubectl-gitops -- crd projects > manifests/crds/project.yaml`"
        );
    }

    #[test]
    fn glob_matches_within_a_segment_and_across_with_two_stars() {
        assert!(glob(
            "https://git.example.com/*",
            "https://git.example.com/a.git"
        ));
        assert!(!glob(
            "https://git.example.com/*",
            "https://git.example.com/a/b.git"
        ));
        assert!(glob(
            "https://git.example.com/**",
            "https://git.example.com/a/b.git"
        ));
        assert!(glob("release-*", "release-2"));
        assert!(!glob("release-*", "release-1/evil"));
        assert!(glob("shop-?", "shop-a"));
        assert!(!glob("shop-?", "shop-ab"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "aXbY"));
        assert!(!glob("main", "mainline"));
        assert!(glob("**", "a/b/c"));
        assert!(glob("a/**/z", "a/b/c/z"));
    }

    #[test]
    fn sources_allow_named_branches_and_deny_entries_win() {
        let p = project(
            "sources:\n- repo: https://git.example.com/shop/*\n  branches: [main, 'release-*']\n- repo: '!https://git.example.com/shop/sandbox*'\n- repo: file:///srv/git/plain.git\n",
        );
        assert_eq!(
            p.permits_source("https://git.example.com/shop/web.git", "main"),
            Ok(())
        );
        assert_eq!(
            p.permits_source("https://git.example.com/shop/web.git", "release-2"),
            Ok(())
        );
        let feature = p
            .permits_source("https://git.example.com/shop/web.git", "feature-x")
            .expect_err("feature branches are not protected branches");
        assert!(
            feature.0.contains("does not allow branch feature-x"),
            "{feature}"
        );
        let denied = p
            .permits_source("https://git.example.com/shop/sandbox.git", "main")
            .expect_err("denied");
        assert!(denied.0.contains("denies"), "{denied}");
        // A source without branches allows main only.
        assert_eq!(
            p.permits_source("file:///srv/git/plain.git", "main"),
            Ok(())
        );
        assert!(
            p.permits_source("file:///srv/git/plain.git", "dev")
                .is_err()
        );
        // Another spelling of a denied repository is refused, not matched around.
        for sneaky in [
            "https://git.example.com/shop//sandbox.git",
            "https://git.example.com/shop/./sandbox.git",
            "https://git.example.com/shop/x/../sandbox.git",
            "https://user@git.example.com/shop/web.git",
            "https://git.example.com/shop/%73andbox.git",
            "https://git.example.com/shop/SandBox.git",
        ] {
            assert!(p.permits_source(sneaky, "main").is_err(), "{sneaky}");
        }
        // A deny entry without `.git` or with a trailing slash denies every spelling of it.
        let q = project(
            "sources:\n- repo: https://git.example.com/shop/*\n- repo: '!https://git.example.com/shop/sandbox'\n",
        );
        for sneaky in [
            "https://git.example.com/shop/sandbox.git",
            "https://git.example.com/shop/sandbox/",
            "https://git.example.com/shop/sandbox",
        ] {
            assert!(q.permits_source(sneaky, "main").is_err(), "{sneaky}");
        }
        assert!(
            p.permits_source("https://git.example.com/shop/web.git", "release-1/evil")
                .is_err()
        );
        assert_eq!(
            p.permits_source("HTTPS://GIT.example.com/shop/web.git", "main"),
            Ok(())
        );
        // Nothing is allowed by a project that names no source.
        assert!(project("{}").permits_source("file:///x", "main").is_err());
    }

    #[test]
    fn destinations_and_app_namespaces_take_deny_entries() {
        let p = project("destinations: ['shop-*', '!shop-admin']\n");
        assert_eq!(p.permits_destination("shop-web"), Ok(()));
        assert!(p.permits_destination("shop-admin").is_err());
        assert!(p.permits_destination("payments").is_err());
        // Apps live where the project deploys, unless it says otherwise.
        assert_eq!(p.permits_app_namespace("shop-web"), Ok(()));
        assert!(
            project("destinations: ['*']\n")
                .permits_app_namespace("kube-system")
                .is_err()
        );
        let q = project("destinations: ['shop-*']\nappNamespaces: [gitops-apps]\n");
        assert!(q.permits_app_namespace("shop-web").is_err());
        assert_eq!(q.permits_app_namespace("gitops-apps"), Ok(()));
    }

    #[test]
    fn kinds_namespaced_allow_all_by_default_cluster_scoped_none() {
        let p = project("{}");
        assert_eq!(p.permits_kind("apps", "Deployment", true), Ok(()));
        let refused = p
            .permits_kind("rbac.authorization.k8s.io", "ClusterRole", false)
            .expect_err("cluster-scoped kinds need an allow entry");
        assert!(refused.0.contains("allowed: none"), "{refused}");
        let q = project(
            "clusterKinds:\n  allow: [{group: rbac.authorization.k8s.io, kind: '*'}]\n  deny: [{group: rbac.authorization.k8s.io, kind: ClusterRoleBinding}]\nnamespacedKinds:\n  deny: [{group: '', kind: ResourceQuota}]\n",
        );
        assert_eq!(
            q.permits_kind("rbac.authorization.k8s.io", "ClusterRole", false),
            Ok(())
        );
        assert!(
            q.permits_kind("rbac.authorization.k8s.io", "ClusterRoleBinding", false)
                .is_err()
        );
        assert!(q.permits_kind("", "ResourceQuota", true).is_err());
        assert_eq!(q.permits_kind("", "ConfigMap", true), Ok(()));
        assert_eq!(
            KindPattern::parse("ClusterRole.rbac.authorization.k8s.io"),
            Ok(KindPattern {
                group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into()
            })
        );
        assert_eq!(
            KindPattern::parse("*").map(|k| k.to_string()),
            Ok("*".into())
        );
    }

    #[test]
    fn the_sync_account_is_the_projects_in_the_apps_destination_unless_it_names_a_namespace() {
        let a = app("shop", "file:///srv/a.git", "main", Some("shop-web"));
        let none = project("{}").sync_user(&a).expect_err("no account named");
        assert!(
            none.0.contains("spec.syncServiceAccount") && none.0.contains("shop/web"),
            "{none}"
        );
        assert_eq!(
            project("syncServiceAccount: {name: gitops-sync}\n").sync_user(&a),
            Ok("system:serviceaccount:shop-web:gitops-sync".into())
        );
        assert_eq!(
            project("syncServiceAccount: {namespace: platform, name: shop-sync}\n").sync_user(&a),
            Ok("system:serviceaccount:platform:shop-sync".into())
        );
        for refused in [
            "syncServiceAccount: {namespace: kube-system, name: deployment-controller}\n",
            "syncServiceAccount: {name: 'a:b'}\n",
            "syncServiceAccount: {name: ''}\n",
        ] {
            assert!(project(refused).sync_user(&a).is_err(), "{refused}");
        }
        assert_eq!(
            ServiceAccountRef::parse("platform/shop-sync").map(|r| r.to_string()),
            Ok("platform/shop-sync".into())
        );
        assert!(ServiceAccountRef::parse("Shop").is_err());
        assert!(ServiceAccountRef::parse("a/b/c").is_err());
    }

    #[test]
    fn an_app_is_permitted_where_it_lives_what_it_syncs_and_where_it_writes() {
        let p = project("sources: [{repo: 'file:///srv/*'}]\ndestinations: [shop]\n");
        assert_eq!(
            p.permits_app(&app("shop", "file:///srv/a.git", "main", None)),
            Ok(())
        );
        assert!(
            p.permits_app(&app("other", "file:///srv/a.git", "main", Some("shop")))
                .is_err()
        );
        assert!(
            p.permits_app(&app(
                "shop",
                "file:///srv/a.git",
                "main",
                Some("kube-system")
            ))
            .is_err()
        );
        assert!(
            p.permits_app(&app("shop", "https://evil.example/a.git", "main", None))
                .is_err()
        );
    }
}
