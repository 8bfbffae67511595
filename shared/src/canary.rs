//! Canary rollouts declared in Git: the `Canary` strategy beside a Deployment, the replica split
//! a weight gives, and the stable copy that keeps the previous version serving while the canary
//! grows.
//!
//! The plugin drives rollouts with these functions and the webhook admits their writes with the
//! same ones, so a transition the strategy explains is always one the webhook accepts.
//!
//! Without a service mesh the weight is a replica ratio: the Deployment Git declares runs the new
//! template (the canary), and `<name>-stable`, a copy of that Deployment at the commit it was
//! last fully rolled out from, runs the old one; both match the Service's selector.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::manifest::{LoadError, Manifest};

/// The API group of `Canary`.
pub const GROUP: &str = "gitops.kubectl-gitops.dev";
/// Suffix of the stable copy's name.
pub const STABLE_SUFFIX: &str = "-stable";
/// Label on the stable copy, its selector and its pods, which keeps its pods apart from the
/// canary's while the Service selects both.
pub const ROLE_LABEL: &str = "gitops.kubectl-gitops.dev/rollout-role";
/// Value of [`ROLE_LABEL`] on the stable copy.
pub const ROLE_STABLE: &str = "stable";
/// Seconds the canary's pods have to become ready after a weight change, by default.
pub const DEFAULT_READY_TIMEOUT: i64 = 300;

/// A canary strategy for one Deployment, declared in Git beside it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gitops.kubectl-gitops.dev",
    version = "v1alpha1",
    kind = "Canary",
    plural = "canaries",
    namespaced,
    status = "CanaryStatus",
    shortname = "gcanary",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Step","type":"integer","jsonPath":".status.step"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".status.weight"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    /// The Deployment, in the same namespace, that this strategy rolls out.
    pub target: String,
    /// What happens, in order, after a commit changes the target's pod template.
    pub steps: Vec<Step>,
    /// Seconds the canary's pods have to become ready after each weight change; the rollout
    /// aborts when they are not (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_timeout_seconds: Option<i64>,
}

/// One step: exactly one of its fields is set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Percentage of the replicas that run the new version (0–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_weight: Option<i32>,
    /// Wait for a duration, or (without one) until `kubectl gitops rollout promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
    /// Measure the canary; failed measurements abort the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    /// How long: `30s`, `5m`, `1h` or plain seconds. Absent: until promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// Repeated measurements of the canary: `count` of them, `interval` apart; more than
/// `failureLimit` failed ones abort the rollout, an inconclusive result pauses it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// Time between measurements (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Measurements to take (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i32>,
    /// Failed measurements tolerated (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<i32>,
    /// An HTTP GET that must answer with the expected status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// A Prometheus instant query whose value is held to thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusCheck>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    pub url: String,
    /// Expected status code (default: any 2xx).
    // Schemas say int32/int64: the apiserver warns about formats it does not know (uint16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>")]
    pub expect_status: Option<u16>,
    /// Seconds before the request counts as failed (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i64>")]
    pub timeout_seconds: Option<u64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusCheck {
    /// Base URL of the Prometheus server, e.g. `http://prometheus.monitoring:9090`.
    pub address: String,
    /// PromQL instant query; its first sample is the measurement.
    pub query: String,
    /// The measurement succeeds when this holds, e.g. `< 0.05` (operators < <= > >= == !=).
    pub success_condition: String,
    /// The measurement fails when this holds (default: when the success condition does not).
    /// A value meeting neither is inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_condition: Option<String>,
}

/// Where a rollout is, written by whoever drives it (the agent, or `kubectl gitops rollout`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// Healthy (no rollout under way), Progressing, Paused or Aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Index of the step being carried out; the number of steps once all are done.
    #[serde(default)]
    pub step: i32,
    /// Percentage of the replicas running the canary's template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// The replicas Git asks for at the canary's commit, which the weight splits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    /// Commit the stable copy runs (the last commit fully rolled out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_commit: Option<String>,
    /// Commit being rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_commit: Option<String>,
    /// The stable commit before the last completed rollout, which `rollout undo` returns to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_commit: Option<String>,
    /// When the current step started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started: Option<String>,
    /// Paused by `kubectl gitops rollout pause` (or by an inconclusive analysis).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Measurements of the current analysis step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisProgress>,
    /// What happened last, in words (why a rollout aborted, what to revert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The most recent transitions, newest first.
    #[serde(default)]
    pub transitions: Vec<Transition>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Healthy,
    Progressing,
    Paused,
    Aborted,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Healthy => "Healthy",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Aborted => "Aborted",
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisProgress {
    pub successful: i32,
    pub failed: i32,
    pub inconclusive: i32,
    /// When the last measurement was taken (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_measured: Option<String>,
    /// What the last measurement saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    pub time: String,
    pub step: i32,
    pub weight: i32,
    pub message: String,
}

/// How many transitions a status keeps.
pub const TRANSITION_LIMIT: usize = 20;

impl CanaryStatus {
    /// Whether a rollout is under way (or aborted and waiting for Git to catch up): the stable
    /// copy exists and the weight decides the replicas.
    pub fn in_rollout(&self) -> bool {
        matches!(
            self.phase,
            Some(Phase::Progressing | Phase::Paused | Phase::Aborted)
        )
    }

    /// The canary's share of the replicas in force: all of them outside a rollout, none after an
    /// abort.
    pub fn weight_in_force(&self) -> i32 {
        match self.phase {
            Some(Phase::Aborted) => 0,
            Some(Phase::Progressing | Phase::Paused) => self.weight.unwrap_or(0),
            _ => 100,
        }
    }

    /// Records a transition (newest first, bounded).
    pub fn note(&mut self, time: &str, message: impl Into<String>) {
        let message = message.into();
        self.transitions.insert(
            0,
            Transition {
                time: time.to_owned(),
                step: self.step,
                weight: self.weight_in_force(),
                message: message.clone(),
            },
        );
        self.transitions.truncate(TRANSITION_LIMIT);
        self.message = Some(message);
    }
}

/// The replicas of the stable copy and of the canary for `total` replicas at `weight` percent.
///
/// Rounded as Argo Rollouts' basic canary rounds: of the floor and the ceiling of the exact
/// share, the one closest to the weight, where a weight strictly between 0 and 100 keeps at least
/// one replica on each side when there are two or more; with a single replica, the canary gets an
/// extra one (a surge of one) rather than taking the only stable replica.
pub fn split(total: i64, weight: i32) -> (i64, i64) {
    let total = total.max(0);
    let weight = i128::from(weight.clamp(0, 100));
    if total == 0 {
        return (0, 0);
    }
    if weight == 0 {
        return (total, 0);
    }
    if weight == 100 {
        return (0, total);
    }
    // In i128: `total * weight` overflows i64 for totals beyond i64::MAX / 100.
    let exact = i128::from(total) * weight;
    let floor = exact / 100;
    let ceil = (exact + 99) / 100;
    let mut options = Vec::new();
    if ceil < i128::from(total) {
        options.push(ceil);
    }
    if floor != ceil && floor != 0 {
        options.push(floor);
    }
    // Distance from the weight, in hundredths of a replica; the ceiling wins a tie.
    let best = options
        .into_iter()
        .min_by_key(|canary| (canary * 100 - exact).abs())
        .and_then(|canary| i64::try_from(canary).ok());
    match best {
        Some(canary) => (total - canary, canary),
        None => (total, 1),
    }
}

/// The replicas Git asks for: `spec.replicas`, 1 when unset.
pub fn total_replicas(deployment: &Value) -> i64 {
    deployment["spec"]["replicas"].as_i64().unwrap_or(1)
}

/// The name of the stable copy of `target`.
pub fn stable_name(target: &str) -> String {
    format!("{target}{STABLE_SUFFIX}")
}

/// The stable copy of a Deployment as Git declares it: renamed, with [`ROLE_LABEL`] added to its
/// labels, selector and pod template (so its ReplicaSets never collide with the target's), and
/// `replicas`.
pub fn stable_copy(deployment: &Value, replicas: i64) -> Value {
    let mut copy = deployment.clone();
    let name = deployment["metadata"]["name"].as_str().unwrap_or_default();
    object_at(&mut copy, &["metadata"]).insert("name".into(), stable_name(name).into());
    for path in [
        &["metadata", "labels"][..],
        &["spec", "selector", "matchLabels"],
        &["spec", "template", "metadata", "labels"],
    ] {
        object_at(&mut copy, path).insert(ROLE_LABEL.into(), ROLE_STABLE.into());
    }
    object_at(&mut copy, &["spec"]).insert("replicas".into(), replicas.into());
    copy
}

/// The map at `path` below `value`, where every value on the way that is missing or not a map
/// (Git may declare `spec: []`) is made an empty one. Indexing a JSON value to write panics
/// when the value is not a map.
fn object_at<'v>(value: &'v mut Value, path: &[&str]) -> &'v mut serde_json::Map<String, Value> {
    fn make_object(value: &mut Value) -> &mut serde_json::Map<String, Value> {
        if !value.is_object() {
            *value = Value::Object(Default::default());
        }
        match value {
            Value::Object(map) => map,
            _ => unreachable!("made an object above"),
        }
    }
    path.iter().fold(make_object(value), |map, key| {
        make_object(map.entry(*key).or_insert(Value::Null))
    })
}

/// The Deployment a stable copy was made from, when `name` names one (`web-stable` → `web`).
pub fn target_of_stable(name: &str) -> Option<&str> {
    name.strip_suffix(STABLE_SUFFIX).filter(|t| !t.is_empty())
}

/// Whether a manifest is a `Canary`.
pub fn is_canary(m: &Manifest) -> bool {
    m.kind() == "Canary" && m.group_version().0 == GROUP
}

/// The Canary among `manifests` that rolls out Deployment `target` in `namespace` (manifests
/// without a namespace are taken to be in it).
pub fn strategy_for<'m>(
    manifests: &'m [Manifest],
    namespace: Option<&str>,
    target: &str,
) -> Option<&'m Manifest> {
    manifests.iter().find(|m| {
        is_canary(m)
            && m.object["spec"]["target"].as_str() == Some(target)
            && (m.namespace().is_none() || m.namespace() == namespace)
    })
}

/// The spec of a Canary manifest, checked.
pub fn spec_of(m: &Manifest) -> Result<CanarySpec, String> {
    let spec: CanarySpec = serde_json::from_value(m.object["spec"].clone())
        .map_err(|e| format!("spec does not match the Canary schema: {e}"))?;
    spec.validate()?;
    Ok(spec)
}

impl CanarySpec {
    /// Every problem of the strategy, joined; `Ok` when it can be run.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.target.is_empty() {
            problems.push("spec.target is empty".to_owned());
        }
        if self.steps.is_empty() {
            problems.push("spec.steps is empty".to_owned());
        }
        if self.ready_timeout_seconds.is_some_and(|s| s <= 0) {
            problems.push("spec.readyTimeoutSeconds must be positive".to_owned());
        }
        for (i, step) in self.steps.iter().enumerate() {
            let at = format!("spec.steps[{i}]");
            let set = [
                step.set_weight.is_some(),
                step.pause.is_some(),
                step.analysis.is_some(),
            ]
            .iter()
            .filter(|s| **s)
            .count();
            if set != 1 {
                problems.push(format!(
                    "{at} must set exactly one of setWeight, pause, analysis"
                ));
            }
            if let Some(w) = step.set_weight
                && !(0..=100).contains(&w)
            {
                problems.push(format!("{at}.setWeight {w} is not between 0 and 100"));
            }
            if let Some(Pause {
                duration: Some(d), ..
            }) = &step.pause
                && let Err(e) = parse_duration(d)
            {
                problems.push(format!("{at}.pause.duration: {e}"));
            }
            if let Some(a) = &step.analysis {
                if a.http.is_none() && a.prometheus.is_none() {
                    problems.push(format!("{at}.analysis needs http or prometheus"));
                }
                if let Some(i) = &a.interval
                    && let Err(e) = parse_duration(i)
                {
                    problems.push(format!("{at}.analysis.interval: {e}"));
                }
                if a.count.is_some_and(|c| c < 1) {
                    problems.push(format!("{at}.analysis.count must be at least 1"));
                }
                if a.failure_limit.is_some_and(|c| c < 0) {
                    problems.push(format!("{at}.analysis.failureLimit must not be negative"));
                }
                if let Some(h) = &a.http
                    && !(h.url.starts_with("http://") || h.url.starts_with("https://"))
                {
                    problems.push(format!(
                        "{at}.analysis.http.url {:?} is not an http(s) URL",
                        h.url
                    ));
                }
                if let Some(p) = &a.prometheus {
                    if !(p.address.starts_with("http://") || p.address.starts_with("https://")) {
                        problems.push(format!(
                            "{at}.analysis.prometheus.address {:?} is not an http(s) URL",
                            p.address
                        ));
                    }
                    if p.query.trim().is_empty() {
                        problems.push(format!("{at}.analysis.prometheus.query is empty"));
                    }
                    for (field, text) in [
                        ("successCondition", Some(&p.success_condition)),
                        ("failureCondition", p.failure_condition.as_ref()),
                    ] {
                        if let Some(text) = text
                            && let Err(e) = Threshold::parse(text)
                        {
                            problems.push(format!("{at}.analysis.prometheus.{field}: {e}"));
                        }
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    pub fn ready_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.ready_timeout_seconds
                .unwrap_or(DEFAULT_READY_TIMEOUT)
                .max(1) as u64,
        )
    }

    /// The weights the strategy can set, with 0 and 100 (before the first step, after an abort
    /// or the last step).
    pub fn weights(&self) -> Vec<i32> {
        let mut weights: Vec<i32> = self.steps.iter().filter_map(|s| s.set_weight).collect();
        weights.extend([0, 100]);
        weights
    }
}

/// `30s`, `5m`, `2h`, `500ms` or plain seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 5m or 1h"))?;
    let seconds = |factor: u64| {
        n.checked_mul(factor)
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long a duration"))
    };
    match unit {
        "" | "s" => seconds(1),
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "m" => seconds(60),
        "h" => seconds(3600),
        _ => Err(format!("{text:?} is not a duration like 30s, 5m or 1h")),
    }
}

/// A comparison of a measurement with a number: `< 0.05`, `>= 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    op: Op,
    value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Threshold {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let ops = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        let (op, rest) = ops
            .iter()
            .find_map(|(s, op)| t.strip_prefix(s).map(|rest| (*op, rest)))
            .ok_or_else(|| {
                format!("{text:?} must start with one of < <= > >= == != and then a number")
            })?;
        let value: f64 = rest
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: {:?} is not a number", rest.trim()))?;
        Ok(Threshold { op, value })
    }

    pub fn holds(&self, measured: f64) -> bool {
        let v = self.value;
        match self.op {
            Op::Lt => measured < v,
            Op::Le => measured <= v,
            Op::Gt => measured > v,
            Op::Ge => measured >= v,
            Op::Eq => measured == v,
            Op::Ne => measured != v,
        }
    }
}

/// What one measurement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measurement {
    Successful,
    Failed,
    Inconclusive,
}

/// Judges a Prometheus value against the check's thresholds.
pub fn judge(check: &PrometheusCheck, value: f64) -> Measurement {
    let success = Threshold::parse(&check.success_condition).ok();
    let failure = check
        .failure_condition
        .as_deref()
        .and_then(|f| Threshold::parse(f).ok());
    if value.is_nan() {
        return Measurement::Inconclusive;
    }
    match (success.map(|s| s.holds(value)), failure) {
        (_, Some(f)) if f.holds(value) => Measurement::Failed,
        (Some(true), _) => Measurement::Successful,
        (_, Some(_)) => Measurement::Inconclusive,
        _ => Measurement::Failed,
    }
}

/// Checks every Canary among `manifests`: its spec, and that the Deployment it targets is
/// declared beside it.
pub fn check(manifests: &[Manifest], errors: &mut Vec<LoadError>) {
    for m in manifests.iter().filter(|m| is_canary(m)) {
        let invalid = |message: String| LoadError::Invalid {
            path: m.source_path.clone(),
            line: m.line,
            object: m.key().to_string(),
            message,
        };
        match spec_of(m) {
            Err(e) => errors.push(invalid(e)),
            Ok(spec) => {
                let declared = manifests.iter().any(|d| {
                    d.kind() == "Deployment"
                        && d.group_version().0 == "apps"
                        && d.name() == spec.target
                        && d.namespace() == m.namespace()
                });
                if !declared {
                    errors.push(invalid(format!(
                        "spec.target names Deployment {:?}, which is not declared beside it",
                        spec.target
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_crd_matches_the_type() {
        use kube::CustomResourceExt as _;
        let generated = serde_saphyr::to_string(&Canary::crd()).expect("the CRD serialises");
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/crds/canary.yaml");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "manifests/crds/canary.yaml is out of date: run `cargo run -q -p kubectl-gitops -- crd canaries > manifests/crds/canary.yaml`"
        );
    }

    #[test]
    fn weights_split_replicas_to_the_nearest_count_keeping_both_sides() {
        assert_eq!(split(10, 20), (8, 2));
        assert_eq!(split(10, 0), (10, 0));
        assert_eq!(split(10, 100), (0, 10));
        // 4 × 30 % = 1.2: one canary replica is nearer than two.
        assert_eq!(split(4, 30), (3, 1));
        // 4 × 40 % = 1.6: two are nearer.
        assert_eq!(split(4, 40), (2, 2));
        // 2 × 50 % = 1 exactly.
        assert_eq!(split(2, 50), (1, 1));
        // 5 % of 5 replicas still runs one canary; 99 % still keeps one stable.
        assert_eq!(split(5, 5), (4, 1));
        assert_eq!(split(5, 99), (1, 4));
        // 3 × 50 % = 1.5: a tie between floor and ceiling goes to the ceiling.
        assert_eq!(split(3, 50), (1, 2));
        // One replica: the canary surges by one rather than take the only stable one.
        assert_eq!(split(1, 50), (1, 1));
        assert_eq!(split(0, 50), (0, 0));
    }

    #[test]
    fn the_stable_copy_is_renamed_and_kept_apart_by_its_role_label() {
        let web = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {}}}
        });
        let copy = stable_copy(&web, 3);
        assert_eq!(copy["metadata"]["name"], "web-stable");
        assert_eq!(copy["spec"]["replicas"], 3);
        for labels in [
            &copy["metadata"]["labels"],
            &copy["spec"]["selector"]["matchLabels"],
            &copy["spec"]["template"]["metadata"]["labels"],
        ] {
            assert_eq!(labels["app"], "web");
            assert_eq!(labels[ROLE_LABEL], ROLE_STABLE);
        }
        assert_eq!(target_of_stable("web-stable"), Some("web"));
        assert_eq!(target_of_stable("-stable"), None);
        assert_eq!(target_of_stable("web"), None);
    }

    #[test]
    fn a_strategy_is_checked_step_by_step() {
        let spec: CanarySpec = serde_json::from_value(serde_json::json!({
            "target": "web",
            "steps": [
                {"setWeight": 120},
                {"pause": {"duration": "soon"}},
                {"setWeight": 10, "pause": {}},
                {"analysis": {}},
                {"analysis": {"prometheus": {"address": "http://p:9090", "query": "up",
                              "successCondition": "about 1"}}}
            ]
        }))
        .expect("the schema takes it");
        let problems = spec.validate().expect_err("five problems");
        for part in [
            "spec.steps[0].setWeight 120",
            "spec.steps[1].pause.duration",
            "spec.steps[2] must set exactly one",
            "spec.steps[3].analysis needs http or prometheus",
            "spec.steps[4].analysis.prometheus.successCondition",
        ] {
            assert!(problems.contains(part), "{part} missing from {problems}");
        }
    }

    #[test]
    fn measurements_meet_thresholds_or_are_inconclusive() {
        let check = PrometheusCheck {
            address: "http://p".into(),
            query: "q".into(),
            success_condition: "< 0.05".into(),
            failure_condition: Some(">= 0.1".into()),
        };
        assert_eq!(judge(&check, 0.01), Measurement::Successful);
        assert_eq!(judge(&check, 0.5), Measurement::Failed);
        assert_eq!(judge(&check, 0.07), Measurement::Inconclusive);
        assert_eq!(judge(&check, f64::NAN), Measurement::Inconclusive);
        let strict = PrometheusCheck {
            failure_condition: None,
            ..check
        };
        assert_eq!(judge(&strict, 0.07), Measurement::Failed);
        assert_eq!(
            parse_duration("90s"),
            Ok(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("2m"),
            Ok(std::time::Duration::from_secs(120))
        );
        assert!(parse_duration("2 days").is_err());
        assert_eq!(
            parse_duration("2h"),
            Ok(std::time::Duration::from_secs(7200))
        );
        assert_eq!(parse_duration("45"), Ok(std::time::Duration::from_secs(45)));
        assert_eq!(
            parse_duration("500ms"),
            Ok(std::time::Duration::from_millis(500))
        );
    }

    #[test]
    fn a_strategy_must_sit_beside_the_deployment_it_rolls_out() {
        let canary = "apiVersion: gitops.kubectl-gitops.dev/v1alpha1\nkind: Canary\nmetadata:\n  name: web\nspec:\n  target: web\n  steps: [{setWeight: 150}]\n";
        let errors = crate::manifest::load_app([("canary.yaml", canary.as_bytes())])
            .expect_err("no Deployment web, and a weight above 100");
        let text = errors.to_string();
        assert!(text.contains("canary.yaml:1: Canary web"), "{text}");
        assert!(text.contains("setWeight 150"), "{text}");
        let fixed = canary.replace("150", "50");
        let errors = crate::manifest::load_app([("canary.yaml", fixed.as_bytes())])
            .expect_err("no Deployment web");
        assert!(
            errors
                .to_string()
                .contains("spec.target names Deployment \"web\""),
            "{errors}"
        );
        let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n";
        let both = crate::manifest::load_app([
            ("canary.yaml", fixed.as_bytes()),
            ("web.yaml", deployment.as_bytes()),
        ])
        .expect("valid");
        assert_eq!(both.len(), 2);
    }

    #[test]
    fn weight_in_force_follows_the_phase() {
        let mut status = CanaryStatus {
            weight: Some(30),
            ..CanaryStatus::default()
        };
        assert_eq!(status.weight_in_force(), 100);
        status.phase = Some(Phase::Progressing);
        assert_eq!(status.weight_in_force(), 30);
        status.phase = Some(Phase::Aborted);
        assert_eq!(status.weight_in_force(), 0);
        assert!(status.in_rollout());
    }

    // Inputs that made the fuzz target `manifests` (fuzz/) panic, kept among its seeds as
    // fuzz/corpus/manifests/crash-*.yaml: each goes through `load_app` and then what the plugin
    // and the webhook do with a Canary and its Deployment.

    #[test]
    fn a_duration_too_long_to_count_is_refused_not_an_overflow() {
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\napiVersion: gitops.kubectl-gitops.dev/v1alpha1\nkind: Canary\nmetadata: {name: web}\nspec: {target: web, steps: [{pause: {duration: 1000000000000000000h}}]}\n";
        let errors = crate::manifest::load_app([("web.yaml", yaml.as_bytes())])
            .expect_err("the duration does not fit");
        assert!(
            errors.to_string().contains("is too long a duration"),
            "{errors}"
        );
        assert!(parse_duration("18446744073709551615m").is_err());
        assert_eq!(
            parse_duration("18446744073709551615s"),
            Ok(std::time::Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn replicas_beyond_i64_max_over_100_split_without_overflow() {
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1000000000000000000}\n---\napiVersion: gitops.kubectl-gitops.dev/v1alpha1\nkind: Canary\nmetadata: {name: web}\nspec: {target: web, steps: [{setWeight: 50}]}\n";
        let manifests = crate::manifest::load_app([("web.yaml", yaml.as_bytes())]).expect("valid");
        let total = total_replicas(&manifests[0].object);
        assert_eq!(split(total, 50), (total / 2, total / 2));
        assert_eq!(
            split(i64::MAX, 1),
            (i64::MAX - i64::MAX / 100, i64::MAX / 100)
        );
        assert_eq!(split(i64::MAX, 99).0 + split(i64::MAX, 99).1, i64::MAX);
    }

    #[test]
    fn a_stable_copy_of_a_deployment_with_odd_fields_is_made_without_panicking() {
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {selector: x}\n---\napiVersion: gitops.kubectl-gitops.dev/v1alpha1\nkind: Canary\nmetadata: {name: web}\nspec: {target: web, steps: [{setWeight: 50}]}\n";
        let manifests = crate::manifest::load_app([("web.yaml", yaml.as_bytes())]).expect("valid");
        let copy = stable_copy(&manifests[0].object, 1);
        assert_eq!(copy["metadata"]["name"], "web-stable");
        assert_eq!(
            copy["spec"]["selector"]["matchLabels"][ROLE_LABEL],
            ROLE_STABLE
        );
        assert_eq!(copy["spec"]["replicas"], 1);
        let odd = serde_json::json!({"metadata": {"name": "web", "labels": "x"}, "spec": []});
        let copy = stable_copy(&odd, 2);
        assert_eq!(copy["metadata"]["labels"][ROLE_LABEL], ROLE_STABLE);
        assert_eq!(
            copy["spec"]["template"]["metadata"]["labels"][ROLE_LABEL],
            ROLE_STABLE
        );
        assert_eq!(copy["spec"]["replicas"], 2);
    }
}
