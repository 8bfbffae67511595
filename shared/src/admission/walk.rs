//! The change walk: which changes of a write the manifest at its commit does not explain.
//!
//! Fields Git sets must hold Git's values; labels and annotations are Git's alone; fields Git
//! leaves unset belong to the server and controllers. What the server adds by itself (defaults,
//! allocated addresses, labels a Job derives from its template) is told apart from what a writer
//! sends by the object's `managedFields`: the apiserver gives every field a request sets (an
//! update: every field it changes) to that request's field manager, while defaults and what
//! admission plugins add belong to no one.

use serde_json::Value;

use crate::normalise;

use super::break_glass::{BREAK_GLASS_EXPIRES, BREAK_GLASS_REASON};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    /// A field Git sets now holds another value.
    Managed,
    Label,
    Annotation,
    /// A field Git does not set was set by the writer, who is not a controller.
    Unmanaged,
}

/// One change of a write that Git does not explain.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub path: String,
    pub kind: ChangeKind,
    pub git: Option<Value>,
    pub after: Option<Value>,
}

impl Change {
    /// The same change with the values under a Secret's `data`, `stringData` and `binaryData`
    /// hidden (whether they differ is what matters).
    pub fn redacted(&self) -> Change {
        let hidden = ["data", "stringData", "binaryData"].iter().any(|f| {
            self.path == *f
                || self.path.starts_with(&format!("{f}."))
                || self.path.starts_with(&format!("{f}["))
        });
        if !hidden {
            return self.clone();
        }
        let hide = |v: &Option<Value>| v.as_ref().map(|_| Value::String("***".into()));
        Change {
            git: hide(&self.git),
            after: hide(&self.after),
            ..self.clone()
        }
    }

    pub fn describe(&self) -> String {
        let show = |v: &Option<Value>| match v {
            None => "unset".to_owned(),
            Some(v) => {
                let text = v.to_string();
                if text.len() > 80 {
                    format!("{}…", &text[..text.floor_char_boundary(80)])
                } else {
                    text
                }
            }
        };
        match self.kind {
            ChangeKind::Managed => format!(
                "{} is {} in Git, the write makes it {}",
                self.path,
                show(&self.git),
                show(&self.after)
            ),
            ChangeKind::Label | ChangeKind::Annotation => {
                let what = if self.kind == ChangeKind::Label {
                    "label"
                } else {
                    "annotation"
                };
                match (&self.git, &self.after) {
                    (None, _) => format!("{what} {} is not in Git", self.path),
                    (Some(_), None) => {
                        format!("{what} {} is set in Git, the write removes it", self.path)
                    }
                    (Some(git), Some(after)) => format!(
                        "{what} {} is {git} in Git, the write makes it {after}",
                        self.path
                    ),
                }
            }
            ChangeKind::Unmanaged => format!(
                "{} is not set in Git and belongs to the server and controllers, the write makes it {}",
                self.path,
                show(&self.after)
            ),
        }
    }
}

/// Who set which fields of the object after the write, from its `managedFields`.
#[derive(Debug)]
pub(crate) enum Ownership<'v> {
    /// Every field counts as the writer's: a scale (the writer set the replicas), or an object
    /// whose API keeps no managed fields.
    Everything,
    /// The `fieldsV1` trees of the object's field managers.
    Managers(Vec<&'v Value>),
}

/// One step of a path into an object: a key, or a list element with its value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Seg<'v> {
    Key(&'v str),
    Elem(usize, &'v Value),
}

impl<'v> Ownership<'v> {
    pub fn of(object: Option<&'v Value>, scale: bool) -> Self {
        let managers = object
            .and_then(|o| o["metadata"]["managedFields"].as_array())
            .filter(|m| !scale && !m.is_empty());
        match managers {
            Some(managers) => Ownership::Managers(
                managers
                    .iter()
                    .filter_map(|m| m.get("fieldsV1"))
                    .filter(|f| f.is_object())
                    .collect(),
            ),
            None => Ownership::Everything,
        }
    }

    /// Who set the field at `path` (or a field inside it).
    pub fn owner(&self, path: &[Seg<'_>]) -> Owned {
        match self {
            Ownership::Everything => Owned::Exactly,
            Ownership::Managers(trees) => trees
                .iter()
                .map(|tree| owned_in(tree, path))
                .max()
                .unwrap_or(Owned::No),
        }
    }
}

/// Whether a field is a writer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Owned {
    /// No manager set it: the server did (a default, an allocated value, admission).
    No,
    /// It lies inside a structure a manager set as a whole (an atomic list): the writer's,
    /// unless it is a value the server fills in there (see [`known_default`]).
    Within,
    /// A manager set exactly this field.
    Exactly,
}

fn owned_in(tree: &Value, path: &[Seg<'_>]) -> Owned {
    let mut node = tree;
    for (depth, seg) in path.iter().enumerate() {
        let Some(map) = node.as_object() else {
            return Owned::No;
        };
        let next = match seg {
            Seg::Key(key) => map.get(&format!("f:{key}")),
            Seg::Elem(index, value) => map
                .iter()
                .find_map(|(key, child)| element_matches(key, *index, value).then_some(child)),
        };
        match next {
            None => return Owned::No,
            // An empty set at a field: the manager set the field as a whole (a scalar, an
            // atomic list or map), so everything inside it.
            Some(child) if child.as_object().is_some_and(|m| m.is_empty()) => {
                return if depth + 1 == path.len() {
                    Owned::Exactly
                } else {
                    Owned::Within
                };
            }
            Some(child) => node = child,
        }
    }
    Owned::Exactly
}

/// Values the apiserver fills in while it decodes a request, inside structures a writer owns
/// as a whole (atomic lists): managed fields cannot tell them from what the writer sent, so
/// they are known by place and value. Anything else inside such a structure is the writer's.
pub(crate) fn known_default(path: &[&str], value: &Value) -> bool {
    match path {
        // RBAC subjects: the API group of a User or Group, none for a ServiceAccount.
        [.., "subjects", _, "apiGroup"] => value == "rbac.authorization.k8s.io" || value == "",
        // NetworkPolicy rules: a port's protocol.
        [.., "ingress" | "egress", _, "ports", _, "protocol"] => value == "TCP",
        // A StatefulSet's claim templates: their type, volume mode and empty status.
        [.., "volumeClaimTemplates", _, "apiVersion"] => value == "v1",
        [.., "volumeClaimTemplates", _, "kind"] => value == "PersistentVolumeClaim",
        [.., "volumeClaimTemplates", _, "spec", "volumeMode"] => value == "Filesystem",
        [.., "volumeClaimTemplates", _, "status"] => {
            *value == serde_json::json!({"phase": "Pending"})
        }
        [
            ..,
            "volumeClaimTemplates",
            _,
            "metadata",
            "creationTimestamp",
        ] => value.is_null(),
        // Projected volume sources and downward API items.
        [.., "sources", _, "serviceAccountToken", "expirationSeconds"] => value == 3600,
        [.., "items", _, "fieldRef", "apiVersion"] => value == "v1",
        [.., "items", _, "resourceFieldRef", "divisor"] => value == "0",
        // A LimitRange item's default limits and requests (filled from its max and defaults).
        [.., "limits", _, "default" | "defaultRequest"] => value.is_object(),
        // A Job's pod failure policy conditions; a webhook configuration's rule scope.
        [.., "onPodConditions", _, "status"] => value == "True",
        [.., "rules", _, "scope"] => value == "*",
        _ => false,
    }
}

/// Whether a `fieldsV1` key names the list element `value` at `index`: by its merge keys
/// (`k:{...}`), by value (`v:...`) or by position (`i:N`).
fn element_matches(key: &str, index: usize, value: &Value) -> bool {
    if let Some(keys) = key.strip_prefix("k:") {
        let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(keys) else {
            return false;
        };
        return keys.iter().all(|(k, v)| value.get(k) == Some(v));
    }
    if let Some(literal) = key.strip_prefix("v:") {
        return serde_json::from_str::<Value>(literal).is_ok_and(|v| &v == value);
    }
    if let Some(position) = key.strip_prefix("i:") {
        return position.parse::<usize>() == Ok(index);
    }
    false
}

/// Annotations that say how an object was written, or ask for a sync, not what it is; never
/// compared. (Who may add break-glass marks is decided apart.)
const IGNORED_ANNOTATIONS: [&str; 3] = [
    BREAK_GLASS_REASON,
    BREAK_GLASS_EXPIRES,
    crate::app::SYNC_REQUEST_ANNOTATION,
];

/// Metadata the server writes while an object is deleted.
const DELETION_METADATA: [&str; 2] = ["deletionTimestamp", "deletionGracePeriodSeconds"];

/// The changes from `old` to `new` (everything in `new` when there is no `old`) that the manifest
/// `wanted` does not explain. A field Git leaves unset may go (a field the previous commit set
/// and this one lets go of: the sync's apply removes it); a controller may set it; anyone else
/// only through the server (a default, a value it allocates), which `ownership` tells apart, so
/// no one can give a field Git just let go of a value of their own.
pub(crate) fn unexplained_changes(
    old: Option<&Value>,
    new: Option<&Value>,
    wanted: &Value,
    controller: bool,
    ownership: &Ownership<'_>,
) -> Vec<Change> {
    let keyed_data = new.or(old).is_some_and(|o| {
        o["apiVersion"] == "v1" && matches!(o["kind"].as_str(), Some("ConfigMap" | "Secret"))
    });
    let mut walk = Walk {
        update: old.is_some(),
        controller,
        keyed_data,
        ownership,
        changes: Vec::new(),
    };
    let mut labels = Vec::new();
    let mut segs = Vec::new();
    walk.walk(&mut labels, &mut segs, old, new, Some(wanted));
    walk.changes
}

struct Walk<'o, 'm> {
    update: bool,
    controller: bool,
    /// A ConfigMap or a Secret: every key of its data is the writer's or Git's.
    keyed_data: bool,
    ownership: &'o Ownership<'m>,
    changes: Vec<Change>,
}

impl Walk<'_, '_> {
    fn walk<'v>(
        &mut self,
        labels: &mut Vec<&'v str>,
        segs: &mut Vec<Seg<'v>>,
        old: Option<&'v Value>,
        new: Option<&'v Value>,
        git: Option<&'v Value>,
    ) {
        if self.update && old == new {
            return;
        }
        if skipped(labels) {
            return;
        }
        // A list Git sets, of the same length: compare element by element, so the message names
        // the field that differs.
        if let (Some(Value::Array(want)), Some(Value::Array(have))) = (git, new)
            && want.len() == have.len()
        {
            for (i, (want, have)) in want.iter().zip(have).enumerate() {
                labels.push(INDICES.get(i).copied().unwrap_or("[…]"));
                segs.push(Seg::Elem(i, have));
                self.walk(
                    labels,
                    segs,
                    old.and_then(|v| v.get(i)),
                    Some(have),
                    Some(want),
                );
                labels.pop();
                segs.pop();
            }
            return;
        }
        let in_metadata_maps = matches!(
            labels.as_slice(),
            ["metadata"] | ["metadata", "labels" | "annotations"]
        );
        let recurse = match git {
            Some(Value::Object(_)) => new.is_none_or(Value::is_object),
            None => in_metadata_maps && new.is_none_or(Value::is_object),
            Some(_) => false,
        };
        if recurse {
            let mut keys: std::collections::BTreeSet<&'v str> = Default::default();
            for side in [old, new, git] {
                if let Some(Value::Object(map)) = side {
                    keys.extend(map.keys().map(String::as_str));
                }
            }
            for key in keys {
                labels.push(key);
                segs.push(Seg::Key(key));
                self.walk(
                    labels,
                    segs,
                    old.and_then(|v| v.get(key)),
                    new.and_then(|v| v.get(key)),
                    git.and_then(|v| v.get(key)),
                );
                labels.pop();
                segs.pop();
            }
            return;
        }
        let kind = match labels.as_slice() {
            ["metadata", "labels", _] => ChangeKind::Label,
            ["metadata", "annotations", _] => ChangeKind::Annotation,
            _ if git.is_some() => ChangeKind::Managed,
            _ => ChangeKind::Unmanaged,
        };
        match git {
            Some(want) => {
                let explained = match new {
                    Some(have) => {
                        normalise::contains_at(labels, have, want) && same_length(have, want)
                    }
                    // The server leaves out some empty values (`false`, `0`, `""`, `[]`, `{}`)
                    // when it stores an object, but keeps others (`enableServiceLinks: false`):
                    // absent is Git's value only if the object never held it.
                    None => normalise::is_empty_value(want) && old.is_none(),
                };
                if !explained {
                    self.push(labels, kind, Some(want), new);
                }
            }
            None => {
                // A ConfigMap's or Secret's keys have no defaults: one Git does not set is the
                // writer's even when no manager owns it (a Secret's `stringData` key is owned
                // under `stringData` and stored under `data`).
                let server_set = |value: &Value| match labels.as_slice() {
                    ["data" | "binaryData" | "stringData", ..] if self.keyed_data => false,
                    _ => match self.ownership.owner(segs) {
                        Owned::No => true,
                        Owned::Within => known_default(labels, value),
                        Owned::Exactly => false,
                    },
                };
                let allowed = self.controller || new.is_none_or(server_set);
                if !allowed {
                    self.push(labels, kind, None, new);
                }
            }
        }
    }

    fn push(&mut self, path: &[&str], kind: ChangeKind, git: Option<&Value>, new: Option<&Value>) {
        let path = match (kind, path) {
            (ChangeKind::Label | ChangeKind::Annotation, [_, _, key]) => (*key).to_owned(),
            _ => path.join(".").replace(".[", "["),
        };
        self.changes.push(Change {
            path,
            kind,
            git: git.cloned(),
            after: new.cloned(),
        });
    }
}

/// Path segments for list elements (a manifest's lists are short; longer ones show `[…]`).
const INDICES: [&str; 16] = [
    "[0]", "[1]", "[2]", "[3]", "[4]", "[5]", "[6]", "[7]", "[8]", "[9]", "[10]", "[11]", "[12]",
    "[13]", "[14]", "[15]",
];

/// Maps compare by the keys Git sets; a list Git sets must not gain elements.
fn same_length(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Array(h), Value::Array(w)) => h.len() == w.len(),
        _ => true,
    }
}

/// Fields never compared: what [`normalise::for_comparison`] drops, and what says how the
/// object was written rather than what it is.
fn skipped(path: &[&str]) -> bool {
    if normalise::is_dropped_for_comparison(path) {
        return true;
    }
    match path {
        ["apiVersion" | "kind"] => true,
        ["metadata", field] => DELETION_METADATA.contains(field) || *field == "generateName",
        ["metadata", "annotations", key] => IGNORED_ANNOTATIONS.contains(key),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ownership_follows_keys_merge_keys_values_and_whole_fields() {
        let object = json!({"metadata": {"managedFields": [
            {"manager": "kubectl-gitops", "operation": "Apply", "fieldsV1": {
                "f:spec": {"f:containers": {"k:{\"name\":\"main\"}": {".": {}, "f:image": {}}},
                           "f:args": {}},
                "f:metadata": {"f:finalizers": {"v:\"a\"": {}}}}}
        ]}});
        let o = Ownership::of(Some(&object), false);
        let main = json!({"name": "main"});
        let side = json!({"name": "side"});
        let a = json!("a");
        let b = json!("b");
        let path = |segs: &[Seg<'_>]| o.owner(segs) != Owned::No;
        assert!(path(&[
            Seg::Key("spec"),
            Seg::Key("containers"),
            Seg::Elem(0, &main),
            Seg::Key("image")
        ]));
        assert!(!path(&[
            Seg::Key("spec"),
            Seg::Key("containers"),
            Seg::Elem(0, &main),
            Seg::Key("imagePullPolicy")
        ]));
        assert!(!path(&[
            Seg::Key("spec"),
            Seg::Key("containers"),
            Seg::Elem(1, &side)
        ]));
        // A field set as a whole owns what is inside it.
        assert!(path(&[
            Seg::Key("spec"),
            Seg::Key("args"),
            Seg::Elem(3, &a)
        ]));
        assert!(path(&[
            Seg::Key("metadata"),
            Seg::Key("finalizers"),
            Seg::Elem(0, &a)
        ]));
        assert!(!path(&[
            Seg::Key("metadata"),
            Seg::Key("finalizers"),
            Seg::Elem(1, &b)
        ]));
        assert!(!path(&[Seg::Key("status")]));
        assert_eq!(
            o.owner(&[Seg::Key("spec"), Seg::Key("args"), Seg::Elem(3, &a)]),
            Owned::Within
        );
        // Without managed fields, and for a scale, the writer owns everything.
        assert_eq!(
            Ownership::of(Some(&json!({})), false).owner(&[Seg::Key("x")]),
            Owned::Exactly
        );
        assert_eq!(
            Ownership::of(Some(&object), true).owner(&[Seg::Key("status")]),
            Owned::Exactly
        );
        // What the server fills in inside a list set as a whole is known by place and value.
        assert!(known_default(
            &["subjects", "[0]", "apiGroup"],
            &json!("rbac.authorization.k8s.io")
        ));
        assert!(known_default(
            &["spec", "ingress", "[0]", "ports", "[1]", "protocol"],
            &json!("TCP")
        ));
        assert!(!known_default(
            &["spec", "ingress", "[0]", "ports", "[1]", "protocol"],
            &json!("UDP")
        ));
        assert!(!known_default(
            &["spec", "ingress", "[0]", "from"],
            &json!([])
        ));
    }
}
