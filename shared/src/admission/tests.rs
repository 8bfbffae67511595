//! The decision alone, over an in-memory history; the suites in `admission/tests` prove it
//! through the real apiserver and real repositories.

use std::sync::Arc;

use serde_json::{Value, json};

use super::fixture::{C1, C2, History, history, manifests};
use super::*;
use crate::canary;
use crate::project::{ConnectPolicy, Enforcement};
use crate::provenance::APP_ANNOTATION;

/// The `fieldsV1` set of everything in `value`: what a server-side apply of it owns. Lists of
/// maps with a `name` are keyed by it, other lists are owned whole.
fn fields_of(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut set = serde_json::Map::new();
            for (key, child) in map {
                set.insert(format!("f:{key}"), fields_of(child));
            }
            Value::Object(set)
        }
        Value::Array(items) if items.iter().all(|i| i.get("name").is_some()) => {
            let mut set = serde_json::Map::new();
            for item in items {
                let mut element = fields_of(item);
                element["."] = json!({});
                set.insert(format!("k:{}", json!({"name": item["name"]})), element);
            }
            Value::Object(set)
        }
        _ => json!({}),
    }
}

/// Sets the object's managed fields: `manager` owns everything in `owned`.
fn owned_by(object: &mut Value, manager: &str, owned: &Value) {
    let mut fields = fields_of(owned);
    if let Some(map) = fields.as_object_mut() {
        map.remove("f:apiVersion");
        map.remove("f:kind");
    }
    object["metadata"]["managedFields"] = json!([
        {"manager": manager, "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1",
         "fieldsV1": fields}
    ]);
}

fn declared(kind: &str, commit: &str) -> Value {
    let source = if commit == "c1" { C1 } else { C2 };
    manifests(source)
        .iter()
        .find(|m| m.kind() == kind)
        .map(|m| m.object.clone())
        .expect("declared")
}

/// The live object as a sync of `commit` leaves it: Git's fields owned by the sync, with what
/// the server adds owned by no one.
fn live(kind: &str, commit: &str) -> Value {
    let mut object = declared(kind, commit);
    Provenance {
        commit: commit.into(),
        app: "shop/web".into(),
        source_path: "web.yaml".into(),
        app_uid: None,
    }
    .stamp(&mut object);
    let applied = object.clone();
    object["metadata"]["namespace"] = "shop".into();
    object["metadata"]["uid"] = "u-1".into();
    if kind == "Deployment" {
        object["spec"]["revisionHistoryLimit"] = 10.into();
        object["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] =
            "IfNotPresent".into();
    }
    owned_by(&mut object, "kubectl-gitops", &applied);
    object
}

fn review(
    operation: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    user: &str,
    groups: &[&str],
) -> AdmissionRequest {
    let some = old.or(new).expect("an object");
    let kind = some["kind"].as_str().unwrap_or_default();
    let group = if kind == "Deployment" { "apps" } else { "" };
    serde_json::from_value(json!({
        "uid": "1", "operation": operation, "name": some["metadata"]["name"], "namespace": "shop",
        "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": format!("{}s", kind.to_lowercase())},
        "userInfo": {"username": user, "groups": groups},
        "object": new, "oldObject": old
    }))
    .expect("a request")
}

/// The fields that differ between `old` and `new`, as a `fieldsV1` set (a changed list is
/// owned whole).
fn changed_fields(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut set = serde_json::Map::new();
            for key in a.keys().chain(b.keys()) {
                let (x, y) = (a.get(key), b.get(key));
                if x != y && key != "managedFields" {
                    let child = match (x, y) {
                        (Some(x), Some(y)) => changed_fields(x, y),
                        _ => json!({}),
                    };
                    set.insert(format!("f:{key}"), child);
                }
            }
            Value::Object(set)
        }
        _ => json!({}),
    }
}

/// An update by `user`. Unless the test set the managed fields itself (a sync's apply), the
/// writer owns what it changed, as the apiserver records it.
fn update(old: &Value, new: &Value, user: &str, groups: &[&str]) -> AdmissionRequest {
    let mut new = new.clone();
    if old["metadata"]["managedFields"] == new["metadata"]["managedFields"] {
        let changed = changed_fields(old, &new);
        let mut managers = old["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        managers.push(json!({"manager": "kubectl-edit", "operation": "Update",
            "fieldsType": "FieldsV1", "fieldsV1": changed}));
        new["metadata"]["managedFields"] = Value::Array(managers);
    }
    review("UPDATE", Some(old), Some(&new), user, groups)
}

fn create(new: &Value, user: &str) -> AdmissionRequest {
    review("CREATE", None, Some(new), user, &[])
}

fn decide_now(history: &History, request: &AdmissionRequest) -> Verdict {
    decide_in(history, request, Scope::Enforce)
}

fn decide_in(history: &History, request: &AdmissionRequest, scope: Scope) -> Verdict {
    let now = jiff::Timestamp::now();
    decide(request, scope, &Policy::default(), history, None, now)
}

/// The stable copy of Deployment `web` at c1, as the agent creates it during a rollout.
fn stable_copy_at_c1() -> Value {
    let mut stamped = declared("Deployment", "c1");
    Provenance {
        commit: "c1".into(),
        app: "shop/web".into(),
        source_path: "web.yaml".into(),
        app_uid: None,
    }
    .stamp(&mut stamped);
    let applied = canary::stable_copy(&stamped, 1);
    let mut copy = applied.clone();
    copy["metadata"]["namespace"] = "shop".into();
    copy["spec"]["revisionHistoryLimit"] = 10.into();
    owned_by(&mut copy, "kubectl-gitops", &applied);
    copy
}

/// A rollout of `web` from c1 (stable) to c2 (canary) at `weight` percent.
fn rolling_out(weight: i32) -> Arc<canary::Canary> {
    let mut strategy = canary::Canary::new(
        "web",
        serde_json::from_value(json!({"target": "web", "steps": [{"setWeight": 50}]}))
            .expect("a strategy"),
    );
    strategy.metadata.annotations =
        Some([(APP_ANNOTATION.to_owned(), "shop/web".to_owned())].into());
    strategy.status = Some(canary::CanaryStatus {
        phase: Some(canary::Phase::Progressing),
        weight: Some(weight),
        replicas: Some(2),
        stable_commit: Some("c1".into()),
        canary_commit: Some("c2".into()),
        ..Default::default()
    });
    Arc::new(strategy)
}

#[test]
fn a_rollout_explains_exactly_the_replicas_of_its_current_weight() {
    let mut h = history(Enforcement::Enforce);
    let old = live("Deployment", "c2");
    let mut half = old.clone();
    half["spec"]["replicas"] = 1.into();
    // Without a rollout, the replicas are Git's.
    assert_eq!(
        decide_now(&h, &update(&old, &half, "agent", &[])).reason,
        Reason::FieldChanged
    );
    h.rollout = Some(rolling_out(50));
    let verdict = decide_now(&h, &update(&old, &half, "agent", &[]));
    assert!(verdict.allowed, "{}", verdict.message);
    // Any other count is still a person's change, and the verdict says a fresher view of the
    // rollout may change it.
    let mut other = old.clone();
    other["spec"]["replicas"] = 2.into();
    let refused = decide_now(&h, &update(&half, &other, "alice", &[]));
    assert_eq!(refused.reason, Reason::FieldChanged);
    assert!(refused.rollout_may_be_stale);

    // The stable copy at the stable commit, with the other half.
    let copy = stable_copy_at_c1();
    let request = create(&copy, "agent");
    let verdict = decide_now(&h, &request);
    assert!(verdict.allowed, "{}", verdict.message);
    // Not with the canary's share, and not once the rollout is over.
    let mut greedy = request.clone();
    greedy.object.as_mut().expect("object")["spec"]["replicas"] = 2.into();
    assert!(!decide_now(&h, &greedy).allowed);
    // The status's own replica count is not what the copy is held to: Git's is.
    let mut inflated = (*rolling_out(50)).clone();
    if let Some(s) = inflated.status.as_mut() {
        s.replicas = Some(40);
    }
    h.rollout = Some(Arc::new(inflated));
    let mut big = copy.clone();
    big["spec"]["replicas"] = 20.into();
    assert!(!decide_now(&h, &create(&big, "agent")).allowed);
    h.rollout = None;
    let unknown = decide_now(&h, &request);
    assert_eq!(unknown.reason, Reason::NotDeclared);
    // The watch may not have delivered the rollout that explains it yet.
    assert!(unknown.rollout_may_be_stale);
}

#[test]
fn fields_git_leaves_unset_belong_to_controllers_not_people() {
    let h = history(Enforcement::Enforce);
    let old = live("Deployment", "c2");
    let mut new = old.clone();
    new["spec"]["revisionHistoryLimit"] = 3.into();
    let person = decide_now(&h, &update(&old, &new, "alice", &[]));
    assert!(!person.allowed);
    assert_eq!(person.reason, Reason::FieldChanged);
    // No rollout sets that field: the webhook need not read the Canaries again.
    assert!(!person.rollout_may_be_stale);
    assert!(
        person
            .message
            .contains("spec.revisionHistoryLimit is not set in Git"),
        "{}",
        person.message
    );
    let controller = update(
        &old,
        &new,
        "system:serviceaccount:kube-system:deployment-controller",
        &[],
    );
    assert!(decide_now(&h, &controller).allowed);
    // Git's own fields are Git's, whoever writes.
    let mut scaled = old.clone();
    scaled["spec"]["replicas"] = 5.into();
    let verdict = decide_now(
        &h,
        &update(&old, &scaled, "system:kube-controller-manager", &[]),
    );
    assert_eq!(verdict.reason, Reason::FieldChanged);
}

#[test]
fn a_changed_list_element_is_named_by_its_path() {
    let h = history(Enforcement::Enforce);
    let old = live("Deployment", "c2");
    let mut new = old.clone();
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "web:evil".into();
    let verdict = decide_now(&h, &update(&old, &new, "alice", &[]));
    assert!(
        verdict.message.contains(
            r#"spec.template.spec.containers[0].image is "web:2" in Git, the write makes it "web:evil""#
        ),
        "{}",
        verdict.message
    );
    assert!(
        verdict.message.contains("project shop"),
        "{}",
        verdict.message
    );
}

#[test]
fn a_sync_may_drop_what_git_let_go_but_a_person_may_not_drop_what_git_sets() {
    let h = history(Enforcement::Enforce);
    // The sync from c1 to c2: label tier and the old value go, as Git says.
    let old = live("ConfigMap", "c1");
    let new = live("ConfigMap", "c2");
    let sync = decide_now(&h, &update(&old, &new, "alice", &[]));
    assert!(sync.allowed, "{}", sync.message);
    assert_eq!(sync.reason, Reason::Traceable);
    // Removing a label Git sets is refused.
    let mut unlabelled = new.clone();
    unlabelled["metadata"]["labels"]
        .as_object_mut()
        .expect("labels")
        .remove("app");
    let verdict = decide_now(&h, &update(&new, &unlabelled, "alice", &[]));
    assert_eq!(verdict.reason, Reason::LabelChanged);
    // Going back to c1 by hand is a downgrade.
    let back = decide_now(&h, &update(&new, &old, "alice", &[]));
    assert_eq!(back.reason, Reason::Downgrade);
}

#[test]
fn break_glass_takes_its_group_a_reason_and_a_bounded_expiry() {
    let h = history(Enforcement::Enforce);
    let old = live("ConfigMap", "c2");
    let now = jiff::Timestamp::now();
    let with = |expires: jiff::Timestamp| {
        let mut new = old.clone();
        new["data"]["value"] = "incident".into();
        new["metadata"]["annotations"][BREAK_GLASS_REASON] = "INC-1".into();
        new["metadata"]["annotations"][BREAK_GLASS_EXPIRES] = expires.to_string().into();
        new
    };
    let policy = Policy::default();
    let glass = ["gitops:break-glass"];
    let run = |new: &Value, groups: &[&str]| {
        decide(
            &update(&old, new, "alice", groups),
            Scope::Enforce,
            &policy,
            &h,
            None,
            now,
        )
    };
    let ok = run(&with(now + jiff::SignedDuration::from_hours(2)), &glass);
    assert!(ok.allowed);
    assert_eq!(ok.outcome, Some(Outcome::BreakGlass));
    assert_eq!(
        ok.break_glass.as_ref().map(|b| b.reason.as_str()),
        Some("INC-1")
    );
    let far = run(&with(now + jiff::SignedDuration::from_hours(48)), &glass);
    assert_eq!(far.reason, Reason::BreakGlassInvalid);
    assert!(
        far.message.contains("configured maximum"),
        "{}",
        far.message
    );
    let outsider = run(&with(now + jiff::SignedDuration::from_hours(2)), &[]);
    assert_eq!(
        (outsider.allowed, outsider.reason),
        (false, Reason::FieldChanged)
    );
}

#[test]
fn the_namespace_label_decides_warn_mode_and_a_project_only_for_its_cluster_scoped_objects() {
    let old = live("ConfigMap", "c2");
    let mut new = old.clone();
    new["data"]["value"] = "3".into();
    // A namespace labelled enforce refuses whatever the project says: the label is the promise,
    // and a write could otherwise pick a warn-mode project by claiming one of its apps.
    let warn_project = history(Enforcement::Warn);
    let refused = decide_now(&warn_project, &update(&old, &new, "alice", &[]));
    assert_eq!(
        (refused.allowed, refused.reason),
        (false, Reason::FieldChanged)
    );
    // A namespace labelled warn warns whatever the project says, and keeps a record.
    let h = history(Enforcement::Enforce);
    let in_warn = decide_in(&h, &update(&old, &new, "alice", &[]), Scope::Warn);
    assert!(in_warn.allowed);
    assert_eq!(in_warn.outcome, Some(Outcome::Warned));
    assert!(
        in_warn.warnings[0].contains("warn mode"),
        "{:?}",
        in_warn.warnings
    );
    // An object without a namespace (cluster-scoped) of an app of a warn-mode project: warned.
    let allow_cluster_kinds = |mut h: History| {
        let mut project = (*h.project.clone().expect("project")).clone();
        project.spec.cluster_kinds.allow =
            vec![crate::project::KindPattern::parse("*").expect("a kind")];
        h.project = Some(Arc::new(project));
        h
    };
    let (warn_project, h) = (allow_cluster_kinds(warn_project), allow_cluster_kinds(h));
    let cluster = |old: &Value, new: &Value| {
        let mut request = update(old, new, "alice", &[]);
        request.namespace = None;
        request
    };
    let verdict = decide_in(&warn_project, &cluster(&old, &new), Scope::Cluster);
    assert_eq!(
        verdict.outcome,
        Some(Outcome::Warned),
        "{}",
        verdict.message
    );
    assert_eq!(
        decide_in(&h, &cluster(&old, &new), Scope::Cluster).outcome,
        Some(Outcome::Denied)
    );
    // Claimed for another app on the way, it is not: the object's own app decides the mode.
    let mut claimed = new.clone();
    claimed["metadata"]["annotations"][APP_ANNOTATION] = "shop/other".into();
    assert!(!decide_in(&warn_project, &cluster(&old, &claimed), Scope::Cluster).allowed);
}

#[test]
fn every_app_needs_a_project_that_permits_it() {
    let old = live("ConfigMap", "c2");
    let mut new = old.clone();
    new["data"]["value"] = "2".into();
    let mut h = history(Enforcement::Enforce);
    h.project = None;
    // A sync of the app is refused while its project does not exist.
    let verdict = decide_now(&h, &update(&old, &new, "agent", &[]));
    assert_eq!(verdict.reason, Reason::UnknownProject);
    assert!(
        verdict.message.contains("kubectl gitops project add shop"),
        "{}",
        verdict.message
    );
    // A project that does not list the app's repository refuses its writes too.
    let mut h = history(Enforcement::Enforce);
    let mut project = (*h.project.clone().expect("project")).clone();
    project.spec.sources[0].repo = "https://git.example/payments/*".into();
    h.project = Some(Arc::new(project.clone()));
    assert_eq!(
        decide_now(&h, &update(&old, &new, "agent", &[])).reason,
        Reason::ProjectForbids
    );
    // Nor kinds it denies.
    project.spec.sources[0].repo = "https://git.example/*".into();
    project.spec.namespaced_kinds.deny =
        vec![crate::project::KindPattern::parse("ConfigMap").expect("a kind")];
    h.project = Some(Arc::new(project));
    let verdict = decide_now(&h, &update(&old, &new, "agent", &[]));
    assert_eq!(verdict.reason, Reason::ProjectForbids);
    assert!(
        verdict.message.contains("denies namespaced kind ConfigMap"),
        "{}",
        verdict.message
    );
}

#[test]
fn objects_a_controller_derives_pass_but_the_same_write_by_a_person_does_not() {
    let h = history(Enforcement::Enforce);
    let mut replica_set = live("Deployment", "c2");
    replica_set["kind"] = "ReplicaSet".into();
    replica_set["metadata"]["name"] = "web-5d4f".into();
    replica_set["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u-1", "controller": true}]);
    let request = create(
        &replica_set,
        "system:serviceaccount:kube-system:deployment-controller",
    );
    assert_eq!(decide_now(&h, &request).reason, Reason::Controller);
    let request = create(&replica_set, "alice");
    assert_eq!(decide_now(&h, &request).reason, Reason::NotDeclared);
}

#[test]
fn server_defaults_pass_but_what_a_writer_adds_beside_git_does_not() {
    let h = history(Enforcement::Enforce);
    let old = live("Deployment", "c2");
    // The sync of c2 again after Git gained a sidecar: the server's defaults inside it are no
    // one's.
    let mut h2 = h.clone();
    let c2_sidecar = C2.replace(
        "containers: [{name: main, image: 'web:2'}]",
        "containers: [{name: main, image: 'web:2'}, {name: proxy, image: 'proxy:1', args: []}]",
    );
    h2.files.insert(("c2", "web.yaml"), manifests(&c2_sidecar));
    let mut with_sidecar = old.clone();
    with_sidecar["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(
            json!({"name": "proxy", "image": "proxy:1", "imagePullPolicy": "IfNotPresent",
            "terminationMessagePath": "/dev/termination-log"}),
        );
    let mut applied = manifests(&c2_sidecar)
        .iter()
        .find(|m| m.kind() == "Deployment")
        .map(|m| m.object.clone())
        .expect("declared");
    Provenance::read(&old)
        .expect("provenance")
        .stamp(&mut applied);
    owned_by(&mut with_sidecar, "kubectl-gitops", &applied);
    let sync = decide_now(&h2, &update(&old, &with_sidecar, "alice", &[]));
    assert!(sync.allowed, "{}", sync.message);
    // The same sidecar with a field a person sent along is theirs, not the server's.
    let mut extra = with_sidecar.clone();
    extra["spec"]["template"]["spec"]["containers"][1]["securityContext"] =
        json!({"privileged": true});
    let mut sent = applied.clone();
    sent["spec"]["template"]["spec"]["containers"][1]["securityContext"] =
        json!({"privileged": true});
    owned_by(&mut extra, "kubectl-edit", &sent);
    let verdict = decide_now(&h2, &update(&old, &extra, "alice", &[]));
    assert_eq!(verdict.reason, Reason::FieldChanged, "{}", verdict.message);
    assert!(
        verdict.message.contains("securityContext"),
        "{}",
        verdict.message
    );
}

#[test]
fn a_create_may_carry_server_defaults_but_no_field_its_writer_set_beside_git() {
    let h = history(Enforcement::Enforce);
    // A sync creates the ConfigMap; the server derives labels nobody sent (as for a Job).
    let mut object = live("ConfigMap", "c2");
    object["metadata"]["labels"]["derived-by-server"] = "yes".into();
    assert!(decide_now(&h, &create(&object, "agent")).allowed);
    // A person creating the just-merged object first, with an extra key: refused, so nothing
    // survives the sync that follows.
    let mut extra = object.clone();
    extra["data"]["debug"] = "true".into();
    let sent = extra.clone();
    owned_by(&mut extra, "kubectl-create", &sent);
    let verdict = decide_now(&h, &create(&extra, "alice"));
    assert_eq!(
        verdict.reason,
        Reason::ContentDiffers,
        "{}",
        verdict.message
    );
    assert!(
        verdict.message.contains("data.debug"),
        "{}",
        verdict.message
    );
    // Labels a person sends are theirs too.
    let mut labelled = object.clone();
    let sent = labelled.clone();
    owned_by(&mut labelled, "kubectl-create", &sent);
    assert_eq!(
        decide_now(&h, &create(&labelled, "alice")).reason,
        Reason::LabelChanged
    );
}

#[test]
fn removing_a_value_git_sets_is_refused_even_when_it_is_empty_or_false() {
    let mut h = history(Enforcement::Enforce);
    let yaml = C2.replace(
        "containers: [{name: main, image: 'web:2'}]",
        "automountServiceAccountToken: false\n      containers: [{name: main, image: 'web:2'}]",
    );
    h.files.insert(("c2", "web.yaml"), manifests(&yaml));
    let mut old = live("Deployment", "c2");
    old["spec"]["template"]["spec"]["automountServiceAccountToken"] = false.into();
    let mut removed = old.clone();
    removed["spec"]["template"]["spec"]
        .as_object_mut()
        .expect("pod spec")
        .remove("automountServiceAccountToken");
    let verdict = decide_now(&h, &update(&old, &removed, "alice", &[]));
    assert_eq!(verdict.reason, Reason::FieldChanged, "{}", verdict.message);
    assert!(
        verdict
            .message
            .contains("automountServiceAccountToken is false in Git, the write makes it unset"),
        "{}",
        verdict.message
    );
    // A value the server never stored (an empty one it leaves out) is not missing.
    let mut stored_without = old.clone();
    stored_without["spec"]["template"]["spec"]
        .as_object_mut()
        .expect("pod spec")
        .remove("automountServiceAccountToken");
    assert!(decide_now(&h, &create(&stored_without, "agent")).allowed);
}

#[test]
fn strings_are_compared_as_written_outside_quantity_fields() {
    let h = history(Enforcement::Enforce);
    let old = live("ConfigMap", "c2");
    let mut new = old.clone();
    new["data"]["value"] = "2000m".into();
    let verdict = decide_now(&h, &update(&old, &new, "alice", &[]));
    assert_eq!(verdict.reason, Reason::FieldChanged, "{}", verdict.message);
}

#[test]
fn a_deletecollection_is_decided_object_by_object() {
    let h = history(Enforcement::Enforce);
    let old = live("ConfigMap", "c2");
    let mut request = review("DELETE", Some(&old), None, "alice", &[]);
    // The per-object review of a DELETECOLLECTION names no object.
    request.name = String::new();
    let verdict = decide_now(&h, &request);
    assert_eq!(
        verdict.reason,
        Reason::DeleteOnBranch,
        "{}",
        verdict.message
    );
    assert!(
        verdict.message.contains("ConfigMap shop/settings"),
        "{}",
        verdict.message
    );
}

#[test]
fn the_objects_of_a_deleted_app_stay_guarded() {
    let mut h = history(Enforcement::Enforce);
    let old = live("ConfigMap", "c2");
    let mut orphan = old.clone();
    orphan["metadata"]["annotations"][APP_ANNOTATION] = "shop/deleted".into();
    let mut touched = orphan.clone();
    touched["metadata"]["finalizers"] = json!(["example.com/cleanup"]);
    let gc = update(
        &orphan,
        &touched,
        "system:serviceaccount:kube-system:generic-garbage-collector",
        &[],
    );
    assert_eq!(decide_now(&h, &gc).reason, Reason::Controller);
    assert_eq!(
        decide_now(&h, &update(&orphan, &touched, "alice", &[])).reason,
        Reason::UnknownApp
    );
    let delete = review("DELETE", Some(&orphan), None, "alice", &[]);
    assert_eq!(decide_now(&h, &delete).reason, Reason::UnknownApp);
    let namespace_controller = review(
        "DELETE",
        Some(&orphan),
        None,
        "system:serviceaccount:kube-system:namespace-controller",
        &[],
    );
    assert!(decide_now(&h, &namespace_controller).allowed);
    // Defined again with no sync recorded: creating one of its objects from an older commit
    // than the head declares is a downgrade.
    let mut fresh = (*h.app).clone();
    fresh.status = None;
    h.app = Arc::new(fresh);
    let older = live("ConfigMap", "c1");
    let verdict = decide_now(&h, &create(&older, "alice"));
    assert_eq!(verdict.reason, Reason::Downgrade, "{}", verdict.message);
    assert!(decide_now(&h, &create(&live("ConfigMap", "c2"), "agent")).allowed);
}

#[test]
fn a_terminating_object_may_only_let_its_finalizers_go() {
    let h = history(Enforcement::Enforce);
    let mut terminating = live("ConfigMap", "c2");
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
    terminating["metadata"]["finalizers"] = json!(["example.com/cleanup"]);
    let mut released = terminating.clone();
    released["metadata"]["finalizers"] = json!([]);
    let verdict = decide_now(&h, &update(&terminating, &released, "alice", &[]));
    assert_eq!(verdict.reason, Reason::Terminating);
    let mut changed = terminating.clone();
    changed["data"]["value"] = "evil".into();
    assert_eq!(
        decide_now(&h, &update(&terminating, &changed, "alice", &[])).reason,
        Reason::FieldChanged
    );
}

#[test]
fn an_object_changes_app_only_once_the_app_that_declares_it_lets_go() {
    let h = history(Enforcement::Enforce);
    let old = live("ConfigMap", "c2");
    let mut claimed = old.clone();
    claimed["metadata"]["annotations"][APP_ANNOTATION] = "shop/other".into();
    let verdict = decide_now(&h, &update(&old, &claimed, "alice", &[]));
    assert!(!verdict.allowed);
    // The other app does not exist: no claim passes for it.
    assert_eq!(verdict.reason, Reason::UnknownApp);
    // From an app that no longer exists, the object may be taken back by a traceable write.
    let mut orphan = old.clone();
    orphan["metadata"]["annotations"][APP_ANNOTATION] = "shop/gone".into();
    let verdict = decide_now(&h, &update(&orphan, &old, "agent", &[]));
    assert!(verdict.allowed, "{}", verdict.message);
}

#[test]
fn subresources_without_git_meaning_are_for_controllers_and_connections_for_projects() {
    let mut h = history(Enforcement::Enforce);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "shop"}});
    let sub = |operation: &str, resource: &str, subresource: &str, user: &str, groups: &[&str]| {
        let request: AdmissionRequest = serde_json::from_value(json!({
            "uid": "1", "operation": operation, "name": "web-1", "namespace": "shop",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "subResource": subresource,
            "userInfo": {"username": user, "groups": groups},
            "object": pod, "oldObject": pod
        }))
        .expect("a request");
        request
    };
    let debug = sub("UPDATE", "pods", "ephemeralcontainers", "alice", &[]);
    let verdict = decide_now(&h, &debug);
    assert_eq!(verdict.reason, Reason::SubresourceDenied);
    assert_eq!(verdict.outcome, Some(Outcome::Denied));
    let member = sub(
        "UPDATE",
        "pods",
        "ephemeralcontainers",
        "alice",
        &["gitops:break-glass"],
    );
    assert_eq!(decide_now(&h, &member).outcome, Some(Outcome::BreakGlass));
    let kubelet = sub(
        "CREATE",
        "serviceaccounts",
        "token",
        "system:node:n1",
        &["system:nodes"],
    );
    assert!(decide_now(&h, &kubelet).allowed);
    assert!(!decide_now(&h, &sub("CREATE", "serviceaccounts", "token", "alice", &[])).allowed);
    // An eviction is decided as a delete of the live pod: a pod no sync wrote goes (a drain),
    // one Git declares stays while the branch declares it.
    let evict = |h: &History, pod: &Value, user: &str| {
        let mut request = sub("CREATE", "pods", "eviction", user, &[]);
        request.object = Some(json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "web-1", "namespace": "shop"}}));
        request.old_object = None;
        let now = jiff::Timestamp::now();
        decide(
            &request,
            Scope::Enforce,
            &Policy::default(),
            h,
            Some((pod, &[])),
            now,
        )
    };
    let mut owned = pod.clone();
    owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1",
        "kind": "ReplicaSet", "name": "web-5d9", "uid": "r-1", "controller": true}]);
    assert!(evict(&h, &owned, "alice").allowed);
    assert!(evict(&h, &pod, "alice").allowed);
    let mut declaring = history(Enforcement::Enforce);
    let with_pod = format!("{C2}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n");
    declaring
        .files
        .insert(("c2", "web.yaml"), manifests(&with_pod));
    let mut declared_pod = pod.clone();
    Provenance {
        commit: "c2".into(),
        app: "shop/web".into(),
        source_path: "web.yaml".into(),
        app_uid: None,
    }
    .stamp(&mut declared_pod);
    let kept = evict(&declaring, &declared_pod, "alice");
    assert_eq!(kept.reason, Reason::DeleteOnBranch, "{}", kept.message);
    assert_eq!(kept.outcome, Some(Outcome::Denied));
    let drained = evict(
        &declaring,
        &declared_pod,
        "system:serviceaccount:kube-system:disruption-controller",
    );
    assert!(drained.allowed);
    let mut unread = sub("CREATE", "pods", "eviction", "alice", &[]);
    unread.old_object = None;
    assert!(
        !decide_now(&h, &unread).allowed,
        "an eviction of a pod not read"
    );

    let exec = sub("CONNECT", "pods", "exec", "alice", &[]);
    let refused = decide_now(&h, &exec);
    assert_eq!(refused.reason, Reason::ConnectDenied);
    assert_eq!(refused.outcome, Some(Outcome::Denied));
    assert!(
        refused.message.contains("project shop does not allow"),
        "{}",
        refused.message
    );
    let mut project = (*h.project.clone().expect("project")).clone();
    project.spec.connect = ConnectPolicy::Allow;
    h.project = Some(Arc::new(project));
    let allowed = decide_now(&h, &exec);
    assert!(allowed.allowed);
    assert_eq!(allowed.outcome, Some(Outcome::Admitted), "kept for audit");
    // In a namespace labelled warn: admitted with a warning, and kept.
    h.project = None;
    assert_eq!(
        decide_in(&h, &exec, Scope::Warn).outcome,
        Some(Outcome::Warned)
    );
}

#[test]
fn audit_records_are_kept_as_written() {
    let h = history(Enforcement::Enforce);
    let record = json!({"apiVersion": "gitops.kubectl-gitops.dev/v1alpha1", "kind": "AuditRecord",
        "metadata": {"name": "r1", "namespace": "shop"}, "spec": {"reason": "field-changed"}});
    let mut request = review(
        "DELETE",
        Some(&record),
        None,
        "alice",
        &["gitops:break-glass"],
    );
    request.resource.group = crate::provenance::API_GROUP.into();
    request.resource.resource = "auditrecords".into();
    let verdict = decide_now(&h, &request);
    assert_eq!(
        (verdict.allowed, verdict.reason),
        (false, Reason::RecordKept)
    );
    request.user_info.username = "system:serviceaccount:kube-system:namespace-controller".into();
    assert!(decide_now(&h, &request).allowed);
}

fn app_status(last: Option<&str>, rollback: Option<&str>) -> Value {
    let mut app = serde_json::to_value(super::fixture::app()).expect("an app serialises");
    app["status"] = json!({"lastSyncedCommit": last, "rollback": rollback});
    app
}

fn status_write(old: &Value, new: &Value, groups: &[&str]) -> AdmissionRequest {
    let mut request = update(old, new, "alice", groups);
    request.kind.kind = "App".into();
    request.kind.group = crate::provenance::API_GROUP.into();
    request.resource.resource = "apps".into();
    request.sub_resource = Some("status".into());
    request
}

#[test]
fn an_apps_status_says_only_what_a_sync_made_true() {
    let h = history(Enforcement::Enforce);
    // A sync moves the synced commit forward.
    let forward = status_write(
        &app_status(Some("c1"), None),
        &app_status(Some("c2"), None),
        &[],
    );
    assert!(decide_in(&h, &forward, Scope::Apps).allowed);
    // Moving it back, or recording a rollback, makes an older commit admissible: refused.
    let back = status_write(
        &app_status(Some("c2"), None),
        &app_status(Some("c1"), None),
        &[],
    );
    assert_eq!(
        decide_in(&h, &back, Scope::Apps).reason,
        Reason::StatusNotExplained
    );
    let rollback = status_write(
        &app_status(Some("c2"), None),
        &app_status(Some("c2"), Some("c1")),
        &[],
    );
    let refused = decide_in(&h, &rollback, Scope::Apps);
    assert_eq!(refused.reason, Reason::StatusNotExplained);
    assert!(
        refused.message.contains("break-glass"),
        "{}",
        refused.message
    );
    // By a member of the break-glass group it is admitted, and kept.
    let glass = status_write(
        &app_status(Some("c2"), None),
        &app_status(Some("c2"), Some("c1")),
        &["gitops:break-glass"],
    );
    let verdict = decide_in(&h, &glass, Scope::Apps);
    assert!(verdict.allowed);
    assert_eq!(verdict.outcome, Some(Outcome::BreakGlass));
    // A commit that is not on the branch is never synced.
    let unknown = status_write(
        &app_status(Some("c2"), None),
        &app_status(Some("cX"), None),
        &[],
    );
    assert!(!decide_in(&h, &unknown, Scope::Apps).allowed);
    // A write that leaves both alone passes (a failed sync recorded).
    let same = status_write(
        &app_status(Some("c2"), None),
        &app_status(Some("c2"), None),
        &[],
    );
    assert!(decide_in(&h, &same, Scope::Apps).allowed);
}

#[test]
fn a_canarys_status_says_only_what_a_rollout_of_git_can_make_true() {
    let h = history(Enforcement::Enforce);
    let canary = |status: Value| stamped_canary("c2", status);
    let write = |old: &Value, new: &Value| {
        let mut request = update(old, new, "alice", &[]);
        request.resource.group = crate::provenance::API_GROUP.into();
        request.resource.resource = "canaries".into();
        request.sub_resource = Some("status".into());
        request
    };
    let rolling =
        json!({"phase": "Progressing", "weight": 50, "stableCommit": "c1", "canaryCommit": "c2"});
    let done =
        json!({"phase": "Healthy", "weight": 100, "stableCommit": "c2", "canaryCommit": "c2"});
    // A rollout from c1 to c2 starts (c2 changes the template), progresses and completes.
    assert!(decide_now(&h, &write(&canary(json!({})), &canary(rolling.clone()))).allowed);
    let mut promoted = rolling.clone();
    promoted["weight"] = 100.into();
    assert!(decide_now(&h, &write(&canary(rolling.clone()), &canary(promoted))).allowed);
    assert!(decide_now(&h, &write(&canary(rolling.clone()), &canary(done.clone()))).allowed);
    // The stable commit never moves back.
    let back = decide_now(
        &h,
        &write(
            &canary(done.clone()),
            &canary(json!({"phase": "Healthy", "stableCommit": "c1", "canaryCommit": "c1"})),
        ),
    );
    assert_eq!(back.reason, Reason::StatusNotExplained, "{}", back.message);
    // A rollout of nothing newer, or one that starts aborted (all replicas to a stable copy
    // that was never made), is not one a rollout of Git can be in.
    let backwards =
        json!({"phase": "Progressing", "weight": 50, "stableCommit": "c2", "canaryCommit": "c1"});
    assert!(!decide_now(&h, &write(&canary(done.clone()), &canary(backwards))).allowed);
    let aborted =
        json!({"phase": "Aborted", "weight": 0, "stableCommit": "c1", "canaryCommit": "c2"});
    let refused = decide_now(&h, &write(&canary(json!({})), &canary(aborted)));
    assert!(!refused.allowed);
    assert!(
        refused.message.contains("starts progressing"),
        "{}",
        refused.message
    );
    let heavy =
        json!({"phase": "Progressing", "weight": 400, "stableCommit": "c1", "canaryCommit": "c2"});
    assert!(!decide_now(&h, &write(&canary(rolling), &canary(heavy))).allowed);
}

#[test]
fn an_app_keeps_its_source_and_its_project_unless_git_changes_them() {
    let h = history(Enforcement::Enforce);
    let old = serde_json::to_value(&*h.app).expect("an app serialises");
    let mut moved = old.clone();
    moved["spec"]["project"] = "other".into();
    let mut request = update(&old, &moved, "alice", &[]);
    request.kind.kind = "App".into();
    let verdict = decide_in(&h, &request, Scope::Apps);
    assert!(!verdict.allowed);
    let mut repointed = old.clone();
    repointed["spec"]["path"] = "other".into();
    request.object = Some(repointed);
    let verdict = decide_in(&h, &request, Scope::Apps);
    assert_eq!(verdict.reason, Reason::AppRepointed);
    assert!(
        verdict
            .message
            .contains("spec.path from \".\" to \"other\""),
        "{}",
        verdict.message
    );
    let mut slower = old.clone();
    slower["spec"]["intervalSeconds"] = 600.into();
    request.object = Some(slower);
    assert!(decide_in(&h, &request, Scope::Apps).allowed);
    // A new App whose project does not permit it is refused, wherever it is defined.
    let mut elsewhere = old.clone();
    elsewhere["metadata"]["namespace"] = "payments".into();
    let mut create = review(
        "CREATE",
        None,
        Some(&elsewhere),
        "alice",
        &["gitops:break-glass"],
    );
    create.kind.kind = "App".into();
    create.namespace = Some("payments".into());
    let verdict = decide_in(&h, &create, Scope::Apps);
    assert_eq!(verdict.reason, Reason::ProjectForbids);
    assert!(!verdict.allowed, "break-glass does not open the trust root");
}

#[test]
fn the_enforcement_label_is_weakened_only_by_git_or_break_glass() {
    let h = history(Enforcement::Enforce);
    let ns = |mode: Option<&str>| {
        let mut labels = json!({"kubernetes.io/metadata.name": "shop"});
        if let Some(mode) = mode {
            labels[ENFORCEMENT_LABEL] = mode.into();
        }
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": labels}})
    };
    let write = |old: &Value, new: &Value, groups: &[&str]| {
        let mut request = update(old, new, "alice", groups);
        request.namespace = None;
        request
    };
    let removed = decide_in(
        &h,
        &write(&ns(Some("enforce")), &ns(None), &[]),
        Scope::Namespaces,
    );
    assert_eq!(removed.reason, Reason::EnforcementChanged);
    assert_eq!(removed.outcome, Some(Outcome::Denied));
    let weakened = decide_in(
        &h,
        &write(&ns(Some("enforce")), &ns(Some("warn")), &[]),
        Scope::Namespaces,
    );
    assert!(!weakened.allowed);
    let strengthened = decide_in(
        &h,
        &write(&ns(Some("warn")), &ns(Some("enforce")), &[]),
        Scope::Namespaces,
    );
    assert!(strengthened.allowed);
    // Provenance annotations without the managed label do not hand the switch to the
    // cluster-scoped webhook, which never sees such a Namespace.
    let mut posing = ns(Some("enforce"));
    posing["metadata"]["annotations"] = json!({
        "gitops.kubectl-gitops.dev/commit": "c2", APP_ANNOTATION: "shop/web",
        "gitops.kubectl-gitops.dev/source-path": "web.yaml"});
    let mut lowered = posing.clone();
    lowered["metadata"]["labels"][ENFORCEMENT_LABEL] = "warn".into();
    assert!(!decide_in(&h, &write(&posing, &lowered, &[]), Scope::Namespaces).allowed);
    let mut glass = ns(None);
    glass["metadata"]["annotations"] = json!({
        BREAK_GLASS_REASON: "INC-7",
        BREAK_GLASS_EXPIRES: (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string()
    });
    let verdict = decide_in(
        &h,
        &write(&ns(Some("enforce")), &glass, &["gitops:break-glass"]),
        Scope::Namespaces,
    );
    assert_eq!(verdict.outcome, Some(Outcome::BreakGlass));
}

#[test]
fn git_lowers_the_label_of_a_namespace_it_declares_and_only_as_far_as_its_head_says() {
    // The project in warn mode: the switch is never only warned about.
    let mut h = history(Enforcement::Warn);
    let namespace = |mode: Option<&str>| {
        let labels = match mode {
            Some(mode) => format!("{{{ENFORCEMENT_LABEL}: {mode}}}"),
            None => "{team: shop}".into(),
        };
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {labels}\n")
    };
    h.files = std::collections::HashMap::from([
        (("c1", "web.yaml"), manifests(&namespace(Some("enforce")))),
        (("c2", "web.yaml"), manifests(&namespace(Some("warn")))),
    ]);
    let live = |commit: &str, mode: Option<&str>| {
        let mut labels = json!({crate::provenance::MANAGED_LABEL: "true"});
        if let Some(mode) = mode {
            labels[ENFORCEMENT_LABEL] = mode.into();
        }
        let mut object = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "shop", "labels": labels}});
        Provenance {
            commit: commit.into(),
            app: "shop/web".into(),
            source_path: "web.yaml".into(),
            app_uid: None,
        }
        .stamp(&mut object);
        object
    };
    let write = |old: &Value, new: &Value| {
        let mut request = update(old, new, "alice", &[]);
        request.namespace = None;
        request
    };
    let synced_at = |h: &mut History, commit: &str| {
        let mut app = (*h.app).clone();
        app.status = Some(crate::app::AppStatus {
            last_synced_commit: Some(commit.into()),
            ..Default::default()
        });
        h.app = Arc::new(app);
    };
    synced_at(&mut h, "c1");
    // The sync of c2, which moved the label from enforce to warn.
    let synced = decide_in(
        &h,
        &write(&live("c1", Some("enforce")), &live("c2", Some("warn"))),
        Scope::Namespaces,
    );
    assert!(synced.allowed, "{}", synced.message);
    // Further than the head says: refused, whatever the project's mode.
    let removed = decide_in(
        &h,
        &write(&live("c1", Some("enforce")), &live("c2", None)),
        Scope::Namespaces,
    );
    assert_eq!(removed.reason, Reason::EnforcementChanged);
    assert_eq!(removed.outcome, Some(Outcome::Denied));
    // A label Git never set (added by hand to a Namespace Git declares) is not Git's to lower,
    // even by a write that claims a commit that once set it: the App's synced commit decides.
    h.files = std::collections::HashMap::from([
        (("c1", "web.yaml"), manifests(&namespace(Some("enforce")))),
        (("c2", "web.yaml"), manifests(&namespace(None))),
    ]);
    synced_at(&mut h, "c2");
    for claimed in ["c2", "c1"] {
        let hand = decide_in(
            &h,
            &write(&live(claimed, Some("enforce")), &live("c2", None)),
            Scope::Namespaces,
        );
        assert_eq!(hand.reason, Reason::EnforcementChanged, "{}", hand.message);
        assert!(!hand.allowed);
    }
}

#[test]
fn deletes_of_what_no_sync_wrote_are_for_controllers_except_runs() {
    let h = history(Enforcement::Enforce);
    let owned_by = |kind: &str, owner: &str| {
        json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "data-db-0",
            "namespace": "shop", "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner,
            "name": "db", "uid": "s-1", "controller": true}]}})
    };
    let claim = owned_by("PersistentVolumeClaim", "StatefulSet");
    let by_hand = decide_now(&h, &review("DELETE", Some(&claim), None, "alice", &[]));
    assert_eq!(by_hand.reason, Reason::NoProvenance, "{}", by_hand.message);
    assert!(!by_hand.allowed);
    let gc = "system:serviceaccount:kube-system:generic-garbage-collector";
    assert!(decide_now(&h, &review("DELETE", Some(&claim), None, gc, &[])).allowed);
    let pod = owned_by("Pod", "StatefulSet");
    assert!(decide_now(&h, &review("DELETE", Some(&pod), None, "alice", &[])).allowed);
    let mut naked = pod.clone();
    naked["metadata"]["ownerReferences"].take();
    assert!(decide_now(&h, &review("DELETE", Some(&naked), None, "alice", &[])).allowed);
    // A Job a CronJob started is a run; one an operator's resource owns is not ours to judge.
    let job = |owner: &str| {
        let mut request = review("DELETE", Some(&owned_by("Job", owner)), None, "alice", &[]);
        request.kind.group = "batch".into();
        request
    };
    assert!(decide_now(&h, &job("CronJob")).allowed);
    let verdict = decide_now(&h, &job("Migration"));
    assert_eq!(verdict.reason, Reason::NoProvenance);
    assert!(
        verdict.message.contains("deleted by its controller"),
        "{}",
        verdict.message
    );
}

#[test]
fn a_scale_whose_parent_is_not_an_object_is_malformed_not_a_panic() {
    // The input the fuzzer (fuzz/, target `review`) crashed on: the review, and under `fuzz` the
    // parent the webhook would have read.
    let input = r#"{"request":{"uid":"","kind":{},"resource":{},"operation":"UPDATE","subResource":"scale","object":{"spec":{"replicas":0}}},"fuzz":{"parent":false}}"#;
    let review: AdmissionReview = serde_json::from_str(input).expect("a review");
    let request = review.request.expect("a request");
    let crashed: Value = serde_json::from_str(input).expect("JSON");
    let h = history(Enforcement::Enforce);
    let now = jiff::Timestamp::now();
    let path = ["spec".to_owned(), "replicas".to_owned()];
    let run = |parent: &Value| {
        decide(
            &request,
            Scope::Enforce,
            &Policy::default(),
            &h,
            Some((parent, &path[..])),
            now,
        )
    };
    for parent in [&crashed["fuzz"]["parent"], &json!(5), &json!({"spec": "x"})] {
        let verdict = run(parent);
        assert_eq!(verdict.reason, Reason::Malformed, "{}", verdict.message);
        assert!(verdict.message.contains("not an object with a spec"));
    }
    // A parent without a spec still takes the replicas.
    let verdict = run(&json!({"metadata": {"name": "x"}}));
    assert_eq!(verdict.reason, Reason::NoProvenance, "{}", verdict.message);
}

#[test]
fn a_rollout_of_a_deployment_whose_spec_in_git_is_not_a_map_is_refused_not_a_panic() {
    let mut h = history(Enforcement::Enforce);
    let odd = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec: []\n";
    h.files.insert(("c2", "web.yaml"), manifests(odd));
    h.rollout = Some(rolling_out(50));
    let old = live("Deployment", "c2");
    let mut new = old.clone();
    new["spec"]["replicas"] = 1.into();
    let verdict = decide_now(&h, &update(&old, &new, "alice", &[]));
    assert_eq!(verdict.reason, Reason::FieldChanged, "{}", verdict.message);
    assert!(
        verdict.message.contains("spec is [] in Git"),
        "{}",
        verdict.message
    );
}

#[test]
fn decision_annotations_are_valid_keys_of_the_project() {
    for key in DECISION_ANNOTATIONS.iter().chain([&ENFORCEMENT_LABEL]) {
        assert_eq!(crate::provenance::validate_qualified_name(key), Ok(()));
        assert!(key.starts_with(crate::provenance::API_GROUP));
    }
}

#[test]
fn commit_ids_that_are_not_ascii_do_not_break_messages() {
    assert_eq!(verdict::short("ééééééééééééééé").len(), 12);
}

#[test]
fn a_field_git_just_let_go_of_may_go_but_takes_no_value_of_a_writers() {
    let h = history(Enforcement::Enforce);
    // c1 labels the ConfigMap tier=web, c2 does not: the sync to c2 drops it.
    let old = live("ConfigMap", "c1");
    let mut hijacked = live("ConfigMap", "c2");
    hijacked["metadata"]["labels"]["tier"] = "attacker".into();
    let mut sent = hijacked.clone();
    sent["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("managedFields");
    owned_by(&mut hijacked, "kubectl-client-side-apply", &sent);
    let verdict = decide_now(&h, &update(&old, &hijacked, "alice", &[]));
    assert_eq!(verdict.reason, Reason::LabelChanged, "{}", verdict.message);
    assert!(decide_now(&h, &update(&old, &live("ConfigMap", "c2"), "agent", &[])).allowed);
}

#[test]
fn an_apps_first_recorded_sync_is_of_the_head_and_every_rollback_needs_glass() {
    let h = history(Enforcement::Enforce);
    let first = |commit: &str| {
        status_write(
            &app_status(None, None),
            &app_status(Some(commit), None),
            &[],
        )
    };
    let verdict = decide_in(&h, &first("c1"), Scope::Apps);
    assert_eq!(
        verdict.reason,
        Reason::StatusNotExplained,
        "{}",
        verdict.message
    );
    assert!(
        verdict.message.contains("first sync"),
        "{}",
        verdict.message
    );
    assert!(decide_in(&h, &first("c2"), Scope::Apps).allowed);
    // A rollback on an App that never recorded a sync is still one.
    let fresh = status_write(&app_status(None, None), &app_status(None, Some("c1")), &[]);
    assert_eq!(
        decide_in(&h, &fresh, Scope::Apps).reason,
        Reason::StatusNotExplained
    );
    // Even one to the head: it would hold once the head moves on.
    let to_head = |groups: &[&str]| {
        status_write(
            &app_status(Some("c2"), None),
            &app_status(Some("c2"), Some("c2")),
            groups,
        )
    };
    let verdict = decide_in(&h, &to_head(&[]), Scope::Apps);
    assert_eq!(verdict.reason, Reason::StatusNotExplained, "{verdict:?}");
    assert!(!verdict.allowed);
    let verdict = decide_in(&h, &to_head(&["gitops:break-glass"]), Scope::Apps);
    assert_eq!(verdict.outcome, Some(Outcome::BreakGlass), "{verdict:?}");
}

#[test]
fn the_objects_of_an_app_deleted_and_defined_again_are_not_the_new_apps() {
    let mut h = history(Enforcement::Enforce);
    let mut app = (*h.app).clone();
    app.metadata.uid = Some("second".into());
    h.app = Arc::new(app);
    let mut old = live("ConfigMap", "c2");
    old["metadata"]["annotations"][crate::provenance::APP_UID_ANNOTATION] = "first".into();
    // The new app's head no longer declares it, say: deleting it is still not a prune.
    let delete = review("DELETE", Some(&old), None, "alice", &[]);
    let verdict = decide_now(&h, &delete);
    assert_eq!(verdict.reason, Reason::UnknownApp, "{}", verdict.message);
    assert!(
        verdict.message.contains("defined again"),
        "{}",
        verdict.message
    );
    // The new app's sync takes it over with what its Git declares.
    let mut synced = live("ConfigMap", "c2");
    synced["metadata"]["annotations"][crate::provenance::APP_UID_ANNOTATION] = "second".into();
    let mut applied = declared("ConfigMap", "c2");
    Provenance {
        commit: "c2".into(),
        app: "shop/web".into(),
        source_path: "web.yaml".into(),
        app_uid: Some("second".into()),
    }
    .stamp(&mut applied);
    owned_by(&mut synced, "kubectl-gitops", &applied);
    let verdict = decide_now(&h, &update(&old, &synced, "agent", &[]));
    assert!(verdict.allowed, "{}", verdict.message);
}

#[test]
fn stripping_managed_fields_or_changing_metadata_through_status_is_refused() {
    let h = history(Enforcement::Enforce);
    let old = live("Deployment", "c2");
    let mut stripped = old.clone();
    stripped["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("managedFields");
    let verdict = decide_now(&h, &update(&old, &stripped, "alice", &[]));
    assert!(!verdict.allowed);
    assert!(
        verdict.message.contains("managed fields"),
        "{}",
        verdict.message
    );
    // Through deployments/status, which keeps owner references: decided as the object.
    let mut owned = old.clone();
    owned["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "x"}]);
    let mut status = update(&old, &owned, "alice", &[]);
    status.sub_resource = Some("status".into());
    status.resource.resource = "deployments".into();
    let verdict = decide_now(&h, &status);
    assert_eq!(verdict.reason, Reason::FieldChanged, "{}", verdict.message);
    assert!(
        verdict.message.contains("ownerReferences"),
        "{}",
        verdict.message
    );
    let mut by_controller = status.clone();
    by_controller.user_info.username =
        "system:serviceaccount:kube-system:deployment-controller".into();
    assert!(decide_now(&h, &by_controller).allowed);
}

#[test]
fn only_the_break_glass_group_marks_an_object() {
    let h = history(Enforcement::Enforce);
    let old = live("ConfigMap", "c2");
    let mut marked = old.clone();
    marked["metadata"]["annotations"][BREAK_GLASS_REASON] = "fake".into();
    let verdict = decide_now(&h, &update(&old, &marked, "alice", &[]));
    assert_eq!(
        verdict.reason,
        Reason::AnnotationChanged,
        "{}",
        verdict.message
    );
    // Taking marks away is what the sync does.
    assert!(decide_now(&h, &update(&marked, &old, "agent", &[])).allowed);
}

#[test]
fn the_synced_commit_is_never_cleared_nor_moved_back_by_a_free_rollback() {
    let h = history(Enforcement::Enforce);
    let cleared = status_write(&app_status(Some("c2"), None), &app_status(None, None), &[]);
    let verdict = decide_in(&h, &cleared, Scope::Apps);
    assert_eq!(
        verdict.reason,
        Reason::StatusNotExplained,
        "{}",
        verdict.message
    );
    // c1 declares something else than the head: recording it as both the rollback and the
    // synced commit at once is a rollback, break-glass.
    let both = status_write(
        &app_status(Some("c2"), None),
        &app_status(Some("c1"), Some("c1")),
        &[],
    );
    assert!(!decide_in(&h, &both, Scope::Apps).allowed);
    let glass = status_write(
        &app_status(Some("c2"), None),
        &app_status(Some("c1"), Some("c1")),
        &["gitops:break-glass"],
    );
    assert_eq!(
        decide_in(&h, &glass, Scope::Apps).outcome,
        Some(Outcome::BreakGlass)
    );
    // Once the rollback is recorded, the sync records its commit.
    let after = status_write(
        &app_status(Some("c2"), Some("c1")),
        &app_status(Some("c1"), Some("c1")),
        &[],
    );
    assert!(decide_in(&h, &after, Scope::Apps).allowed);
}

/// The rollout of `rolling_out(50)` with `status`, as the sync of app shop/web wrote it at `commit`.
fn stamped_canary(commit: &str, status: Value) -> Value {
    let mut c = serde_json::to_value(&*rolling_out(50)).expect("a canary serialises");
    c["status"] = status;
    Provenance {
        commit: commit.into(),
        app: "shop/web".into(),
        source_path: "web.yaml".into(),
        app_uid: None,
    }
    .stamp(&mut c);
    c
}

#[test]
fn a_rollback_rolls_out_as_a_canary_from_the_newer_stable_commit() {
    let mut h = history(Enforcement::Enforce);
    let mut app = (*h.app).clone();
    app.status = Some(crate::app::AppStatus {
        last_synced_commit: Some("c2".into()),
        rollback: Some("c1".into()),
        ..Default::default()
    });
    h.app = Arc::new(app);
    let canary = |status: Value| stamped_canary("c1", status);
    let mut request = update(
        &canary(json!({"phase": "Healthy", "stableCommit": "c2", "canaryCommit": "c2"})),
        &canary(
            json!({"phase": "Progressing", "weight": 0, "stableCommit": "c2", "canaryCommit": "c1"}),
        ),
        "alice",
        &[],
    );
    request.resource.group = crate::provenance::API_GROUP.into();
    request.resource.resource = "canaries".into();
    request.sub_resource = Some("status".into());
    let verdict = decide_now(&h, &request);
    assert!(verdict.allowed, "{}", verdict.message);
}

#[test]
fn a_secrets_keys_are_git_s_alone_however_they_are_sent() {
    let mut h = history(Enforcement::Enforce);
    let yaml = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web\nstringData: {token: 'v1'}\n";
    h.files.insert(("c2", "web.yaml"), manifests(yaml));
    let mut applied = manifests(yaml)[0].object.clone();
    Provenance {
        commit: "c2".into(),
        app: "shop/web".into(),
        source_path: "web.yaml".into(),
        app_uid: None,
    }
    .stamp(&mut applied);
    let mut old = applied.clone();
    crate::normalise::as_stored(&mut old);
    old["metadata"]["namespace"] = "shop".into();
    owned_by(&mut old, "kubectl-gitops", &applied);
    // A server-side apply of stringData {NODE_OPTIONS}: owned under stringData, stored in data.
    let mut new = old.clone();
    new["data"]["NODE_OPTIONS"] = "LS1yZXF1aXJlIC90bXAveA==".into();
    let mut managers = old["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .expect("managers");
    managers.push(
        json!({"manager": "attacker", "operation": "Apply", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:stringData": {"f:NODE_OPTIONS": {}}}}),
    );
    new["metadata"]["managedFields"] = Value::Array(managers);
    let verdict = decide_now(&h, &review("UPDATE", Some(&old), Some(&new), "alice", &[]));
    assert!(!verdict.allowed, "{}", verdict.message);
    assert!(
        verdict.message.contains("data.NODE_OPTIONS"),
        "{}",
        verdict.message
    );
    // Refusals become Events and records that people who may not read Secrets read: the
    // values, Git's and the writer's, are never in them.
    assert!(
        !verdict.message.contains("LS1yZXF1aXJlIC90bXAveA"),
        "{}",
        verdict.message
    );
    let mut edited = old.clone();
    edited["data"]["token"] = "aHVudGVyMg==".into();
    let verdict = decide_now(&h, &update(&old, &edited, "alice", &[]));
    assert!(!verdict.allowed, "{}", verdict.message);
    assert!(
        verdict.message.contains("data.token"),
        "{}",
        verdict.message
    );
    for value in ["aHVudGVyMg", "djE"] {
        assert!(!verdict.message.contains(value), "{}", verdict.message);
    }
    assert!(verdict.message.contains("***"), "{}", verdict.message);
}

#[test]
fn what_no_sync_wrote_is_deleted_only_by_controllers_unless_a_controller_owns_it() {
    let h = history(Enforcement::Enforce);
    let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data-db-0", "namespace": "shop"}});
    let delete = |object: &Value, user: &str| review("DELETE", Some(object), None, user, &[]);
    assert_eq!(
        decide_now(&h, &delete(&claim, "alice")).reason,
        Reason::NoProvenance
    );
    assert!(
        decide_now(
            &h,
            &delete(
                &claim,
                "system:serviceaccount:kube-system:namespace-controller"
            )
        )
        .allowed
    );
    let mut pod = claim.clone();
    pod["kind"] = "Pod".into();
    pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u", "controller": true}]);
    assert!(decide_now(&h, &delete(&pod, "alice")).allowed);
}

#[test]
fn provenance_is_the_syncs_to_write_even_for_controllers() {
    let h = history(Enforcement::Enforce);
    let mut old = live("ConfigMap", "c2");
    old["metadata"]["annotations"][crate::provenance::APP_UID_ANNOTATION] = "u1".into();
    let mut repointed = old.clone();
    repointed["metadata"]["annotations"][APP_ANNOTATION] = "shop/nowhere".into();
    repointed["data"]["value"] = "anything".into();
    let gc = "system:serviceaccount:kube-system:generic-garbage-collector";
    assert_eq!(
        decide_now(&h, &update(&old, &repointed, gc, &[])).reason,
        Reason::ProvenanceRemoved
    );
    let mut unbound = old.clone();
    unbound["metadata"]["annotations"]
        .as_object_mut()
        .expect("annotations")
        .remove(crate::provenance::APP_UID_ANNOTATION);
    assert_eq!(
        decide_now(&h, &update(&old, &unbound, "alice", &[])).reason,
        Reason::ProvenanceRemoved
    );
    // A controller owner a controller adds does not make the object derived.
    let mut owned = old.clone();
    owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "x", "controller": true}]);
    owned["data"]["value"] = "anything".into();
    assert!(!decide_now(&h, &update(&old, &owned, gc, &[])).allowed);
}

#[test]
fn a_rollout_counts_only_for_its_own_app_and_keeps_its_stable_copy_while_it_has_replicas() {
    let mut h = history(Enforcement::Enforce);
    let old = live("Deployment", "c2");
    let mut half = old.clone();
    half["spec"]["replicas"] = 1.into();
    let mut foreign = (*rolling_out(50)).clone();
    foreign.metadata.annotations =
        Some([(APP_ANNOTATION.to_owned(), "shop/other".to_owned())].into());
    h.rollout = Some(Arc::new(foreign));
    assert!(!decide_now(&h, &update(&old, &half, "alice", &[])).allowed);
    // The stable copy of a rollout under way is not deleted by hand; once the canary has every
    // replica the rollout deletes it.
    let mut stamped = declared("Deployment", "c1");
    Provenance {
        commit: "c1".into(),
        app: "shop/web".into(),
        source_path: "web.yaml".into(),
        app_uid: None,
    }
    .stamp(&mut stamped);
    let copy = canary::stable_copy(&stamped, 1);
    h.rollout = Some(rolling_out(50));
    let delete = review("DELETE", Some(&copy), None, "alice", &[]);
    assert_eq!(decide_now(&h, &delete).reason, Reason::DeleteOnBranch);
    h.rollout = Some(rolling_out(100));
    assert!(decide_now(&h, &delete).allowed);
}

#[test]
fn a_recorded_rollback_prunes_what_its_commit_does_not_declare() {
    let mut h = history(Enforcement::Enforce);
    // c1 declares only the ConfigMap; head c2 declares both.
    let only_settings = C1.split("---").next().expect("the ConfigMap").to_owned();
    h.files
        .insert(("c1", "web.yaml"), manifests(&only_settings));
    let delete = review(
        "DELETE",
        Some(&live("Deployment", "c2")),
        None,
        "alice",
        &[],
    );
    assert_eq!(decide_now(&h, &delete).reason, Reason::DeleteOnBranch);
    let mut app = (*h.app).clone();
    app.status = Some(crate::app::AppStatus {
        rollback: Some("c1".into()),
        ..Default::default()
    });
    h.app = Arc::new(app);
    assert_eq!(decide_now(&h, &delete).reason, Reason::Pruned);
}

#[test]
fn a_project_that_requires_signatures_refuses_writes_of_a_commit_that_fails_them() {
    let mut h = history(Enforcement::Enforce);
    h.unsigned = vec!["c2"];
    let old = live("ConfigMap", "c1");
    let new = live("ConfigMap", "c2");
    // Without a policy, signatures are not asked about.
    assert!(decide_now(&h, &update(&old, &new, "alice", &[])).allowed);

    requiring_signatures(&mut h);
    let verdict = decide_now(&h, &update(&old, &new, "alice", &[]));
    assert!(!verdict.allowed);
    assert_eq!(verdict.reason, Reason::Unsigned, "{}", verdict.message);
    assert!(
        verdict.message.contains("commit c2 is not signed")
            && verdict
                .message
                .contains("project shop requires the commit to be signed"),
        "{}",
        verdict.message
    );
    // A write of the signed commit before it (the sync healing drift) still passes, though the
    // head fails the policy.
    let mut drifted = old.clone();
    drifted["data"]["value"] = "by hand".into();
    let heal = decide_now(&h, &update(&drifted, &old, "alice", &[]));
    assert!(heal.allowed, "{}", heal.message);
    // What rests on the head does not: a delete of an object the head may have dropped.
    let delete = decide_now(&h, &review("DELETE", Some(&old), None, "alice", &[]));
    assert!(!delete.allowed);
    assert!(
        delete
            .message
            .contains("the head of branch main fails the signature policy of project shop"),
        "{}",
        delete.message
    );
}

/// A project that requires signatures over `h`, whose fixture history says which commits pass.
fn requiring_signatures(h: &mut History) {
    let mut project = (*h.project.clone().expect("a project")).clone();
    project.spec.signatures = Some(crate::signature::SignaturePolicy {
        ssh_allowed_signers: "alice@example.com ssh-ed25519 AAAA".into(),
        ..Default::default()
    });
    h.project = Some(Arc::new(project));
}

#[test]
fn a_rollout_from_a_commit_older_than_the_signature_policy_keeps_its_stable_copy() {
    let mut h = history(Enforcement::Enforce);
    h.rollout = Some(rolling_out(50));
    // c1, rolled out before the project asked for signatures, is unsigned; c2 is signed.
    h.unsigned = vec!["c1"];
    requiring_signatures(&mut h);
    let copy = stable_copy_at_c1();
    let verdict = decide_now(&h, &create(&copy, "agent"));
    assert!(verdict.allowed, "{}", verdict.message);
    // Unless what the rollout rolls out fails the policy.
    h.unsigned = vec!["c1", "c2"];
    let verdict = decide_now(&h, &create(&copy, "agent"));
    assert_eq!(verdict.reason, Reason::Unsigned, "{}", verdict.message);
    assert!(
        verdict.message.contains("commit c2 is not signed"),
        "{}",
        verdict.message
    );
}

#[test]
fn an_apps_hydration_source_changes_only_from_git() {
    let h = history(Enforcement::Enforce);
    let mut old = serde_json::to_value(&*h.app).expect("an app serialises");
    old["spec"]["hydrate"] = json!({"sourceBranch": "source", "sourcePath": "charts/web"});
    let mut other = old.clone();
    other["spec"]["hydrate"]["sourceBranch"] = "attacker-wip".into();
    let mut request = update(&old, &other, "mallory", &[]);
    request.kind.kind = "App".into();
    let verdict = decide_in(&h, &request, Scope::Apps);
    assert_eq!(verdict.reason, Reason::AppRepointed, "{}", verdict.message);
    assert!(
        verdict.message.contains("spec.hydrate"),
        "{}",
        verdict.message
    );
    // Labels and the interval stay the app creator's.
    let mut relabelled = old.clone();
    relabelled["spec"]["intervalSeconds"] = 60.into();
    let mut request = update(&old, &relabelled, "mallory", &[]);
    request.kind.kind = "App".into();
    assert!(decide_in(&h, &request, Scope::Apps).allowed);
}

#[test]
fn a_rollouts_stable_commit_satisfies_the_signature_policy_unless_it_already_ran() {
    let mut h = history(Enforcement::Enforce);
    h.unsigned = vec!["c1"];
    requiring_signatures(&mut h);
    let canary = |status: Value| stamped_canary("c2", status);
    let mut write = update(
        &canary(json!({})),
        &canary(
            json!({"phase": "Progressing", "weight": 50, "stableCommit": "c1", "canaryCommit": "c2"}),
        ),
        "alice",
        &[],
    );
    write.resource.group = crate::provenance::API_GROUP.into();
    write.resource.resource = "canaries".into();
    write.sub_resource = Some("status".into());
    // Unsigned c1 never ran (the app synced nothing): a status naming it as stable is forged.
    let forged = decide_now(&h, &write);
    assert_eq!(forged.reason, Reason::Unsigned, "{}", forged.message);
    assert!(
        forged.message.contains("commit c1 is not signed"),
        "{}",
        forged.message
    );
    // The app ran c1 before the policy: the rollout from it is the agent's.
    let mut app = (*h.app).clone();
    app.status = Some(crate::app::AppStatus {
        last_synced_commit: Some("c1".into()),
        ..Default::default()
    });
    h.app = Arc::new(app);
    let verdict = decide_now(&h, &write);
    assert!(verdict.allowed, "{}", verdict.message);
}
