//! Projects: the trust root. A cluster-scoped `Project`, owned by cluster admins, says which
//! repositories and branches may write into which namespaces, which kinds they may create, where
//! Apps naming the project may be defined, which Secret holds their Git credentials, and whether
//! writes Git does not explain are refused or only warned about.
//!
//! An App is only as trusted as its project allows: the webhook refuses App definitions, and
//! writes of their objects, that the project does not permit; `sync` and the agent refuse to
//! apply them. The checks here are pure, so all three decide alike.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::app::App;

/// The project an App belongs to when it names none.
pub const DEFAULT_PROJECT: &str = "default";
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
    /// characters, `?` one character.
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
    /// What the webhook does with a write to one of its apps' objects that Git does not explain:
    /// `Enforce` refuses it, `Warn` admits it with a warning (both record it). A namespace
    /// labelled `warn` warns whatever the project says.
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

/// `*` matches any run of characters (also none, also `/`), `?` exactly one.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative matching with one backtrack point: linear in practice, no recursion to blow up.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
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
        // Without branches, an allowing entry allows `main` and a denying one every branch.
        let matches = |rule: &SourceRule, pattern: &str, denying: bool| {
            glob(pattern, &canonical)
                && if rule.branches.is_empty() {
                    denying || branch == DEFAULT_BRANCH
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

    /// Whether an App naming this project may be defined in `namespace`.
    pub fn permits_app_namespace(&self, namespace: &str) -> Result<(), Refusal> {
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

    /// Whether `app` may be defined as it is: where it lives, where it syncs from and to.
    pub fn permits_app(&self, app: &App) -> Result<(), Refusal> {
        self.permits_app_namespace(app.metadata.namespace.as_deref().unwrap_or_default())?;
        self.permits_source(&app.spec.repo_url, &app.spec.branch)?;
        self.permits_destination(&app.destination())
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
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
    fn glob_matches_runs_and_single_characters() {
        assert!(glob(
            "https://git.example.com/*",
            "https://git.example.com/a/b.git"
        ));
        assert!(glob("shop-?", "shop-a"));
        assert!(!glob("shop-?", "shop-ab"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "aXbY"));
        assert!(!glob("main", "mainline"));
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
        ] {
            assert!(p.permits_source(sneaky, "main").is_err(), "{sneaky}");
        }
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
