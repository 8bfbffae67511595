//! Normalising objects for comparison: what the server and controllers own is dropped, so that
//! what remains is what Git decides.

use serde_json::Value;

use crate::provenance::COMMIT_ANNOTATION;

/// Metadata fields the apiserver writes on every object.
const SERVER_METADATA: [&str; 6] = [
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
];

/// Annotations that record how or from which commit an object was written, not what it is.
const BOOKKEEPING_ANNOTATIONS: [&str; 2] = [
    COMMIT_ANNOTATION,
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// Whether the field at `path` is one [`for_comparison`] drops: status, server-written
/// metadata, bookkeeping annotations. For walks that compare objects in place.
pub fn is_dropped_for_comparison(path: &[&str]) -> bool {
    match path {
        ["status"] => true,
        ["metadata", field] => SERVER_METADATA.contains(field),
        ["metadata", "annotations", key] => BOOKKEEPING_ANNOTATIONS.contains(key),
        _ => false,
    }
}

/// Returns `object` without status, server-written metadata and bookkeeping annotations.
/// An empty `annotations` map left behind is removed too.
pub fn for_comparison(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SERVER_METADATA {
            metadata.remove(field);
        }
        if let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            for key in BOOKKEEPING_ANNOTATIONS {
                annotations.remove(key);
            }
            if annotations.is_empty() {
                metadata.remove("annotations");
            }
        }
    }
    object
}

/// Both sides of a change as YAML for a diff: normalised for comparison, Secret values hidden.
/// `None` when they are the same once normalised. (A side that does not exist is empty.)
pub fn yaml_sides(before: Option<&Value>, after: Option<&Value>) -> Option<(String, String)> {
    let present = |v: Option<&Value>| v.filter(|v| !v.is_null()).map(for_comparison);
    let (mut before, mut after) = (present(before), present(after));
    if before == after {
        return None;
    }
    redact_secrets(before.as_mut(), after.as_mut());
    let yaml = |v: &Option<Value>| {
        v.as_ref()
            .map(|v| serde_saphyr::to_string(v).unwrap_or_default())
            .unwrap_or_default()
    };
    Some((yaml(&before), yaml(&after)))
}

/// Hides the values of a Secret pair before they are shown, keeping whether each key changed:
/// `***` where both sides agree, `*** (before)` and `*** (after)` where they differ.
pub fn redact_secrets(before: Option<&mut Value>, after: Option<&mut Value>) {
    let is_secret = |v: &Option<&mut Value>| v.as_ref().is_some_and(|v| v["kind"] == "Secret");
    if !is_secret(&before) && !is_secret(&after) {
        return;
    }
    let (mut before, mut after) = (before, after);
    for field in ["data", "stringData"] {
        let old = before.as_ref().and_then(|v| v.get(field)).cloned();
        let new = after.as_ref().and_then(|v| v.get(field)).cloned();
        let mask = |map: &mut Value, other: &Option<Value>, label: &str| {
            if let Some(entries) = map.as_object_mut() {
                for (key, value) in entries.iter_mut() {
                    let same = other.as_ref().and_then(|o| o.get(key)) == Some(&*value);
                    *value = Value::from(if same {
                        "***".to_owned()
                    } else {
                        format!("*** ({label})")
                    });
                }
            }
        };
        if let Some(map) = before.as_deref_mut().and_then(|v| v.get_mut(field)) {
            mask(map, &new, "before");
        }
        if let Some(map) = after.as_deref_mut().and_then(|v| v.get_mut(field)) {
            mask(map, &old, "after");
        }
    }
}

/// Whether `live` already holds everything `wanted` sets: every field of `wanted` is in `live`
/// with the same value (maps may have more fields, lists must match element by element). Fields
/// the server defaults or controllers write do not count against it. Quantities (resource
/// requests and limits, quota, capacity; see [`is_quantity_field`]) compare by value, as the
/// server re-spells them (`0.5` is kept as `500m`); every other string compares as written.
pub fn contains(live: &Value, wanted: &Value) -> bool {
    contains_at(&[], live, wanted)
}

/// [`contains`] for the values at `path` (object keys; list elements as `[…]` labels) of an
/// object.
pub fn contains_at(path: &[&str], live: &Value, wanted: &Value) -> bool {
    let mut path = path.to_vec();
    contains_in(&mut path, live, wanted)
}

fn contains_in<'v>(path: &mut Vec<&'v str>, live: &'v Value, wanted: &'v Value) -> bool {
    match (live, wanted) {
        (Value::Object(live), Value::Object(wanted)) => {
            wanted.iter().all(|(key, want)| match live.get(key) {
                Some(have) => {
                    path.push(key);
                    let same = contains_in(path, have, want);
                    path.pop();
                    same
                }
                None => want.is_null(),
            })
        }
        (Value::Array(live), Value::Array(wanted)) => {
            live.len() == wanted.len()
                && live.iter().zip(wanted).all(|(have, want)| {
                    path.push("[]");
                    let same = contains_in(path, have, want);
                    path.pop();
                    same
                })
        }
        (Value::Number(have), Value::Number(want)) => have.as_f64() == want.as_f64(),
        (Value::String(have), Value::String(want)) => {
            have == want || (is_quantity_field(path) && same_quantity(have, want))
        }
        // A quantity written as a YAML number is kept as a string (`cpu: 1` → "1").
        (Value::String(have), Value::Number(want)) => {
            is_quantity_field(path) && same_quantity(have, &want.to_string())
        }
        (have, want) => have == want,
    }
}

/// Whether the field at `path` holds a Kubernetes quantity: a container's or a claim's
/// `resources.requests`/`limits`, a pod's `overhead`, a ResourceQuota's `hard`, a
/// PersistentVolume's `capacity`, a LimitRange's limits, an `emptyDir.sizeLimit`, an
/// autoscaler's target values. Elsewhere (a ConfigMap's data, say) `"2"` is not `"2000m"`.
pub fn is_quantity_field(path: &[&str]) -> bool {
    let element = |s: &str| s.starts_with('[');
    match path {
        [.., "resources", "requests" | "limits", _]
        | [.., "hard", _]
        | [.., "capacity", _]
        | [.., "overhead", _]
        | [.., "podFixed", _]
        | [.., "emptyDir", "sizeLimit"]
        | [.., "target", "value" | "averageValue"] => true,
        [
            ..,
            "limits",
            index,
            "max" | "min" | "default" | "defaultRequest" | "maxLimitRequestRatio",
            _,
        ] => element(index),
        _ => false,
    }
}

/// A manifest as the apiserver stores it, where it stores it in another shape: a Secret's
/// write-only `stringData` is merged into `data` (base64), which is what the live object and
/// every review carry.
pub fn as_stored(object: &mut Value) {
    use base64::Engine as _;
    if object["kind"] != "Secret" || object["apiVersion"] != "v1" {
        return;
    }
    let Some(Value::Object(strings)) = object.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    if !object["data"].is_object() {
        object["data"] = Value::Object(Default::default());
    }
    for (key, value) in strings {
        let text = match value {
            Value::String(text) => text,
            other => other.to_string(),
        };
        object["data"][key] = base64::engine::general_purpose::STANDARD
            .encode(text)
            .into();
    }
}

/// Whether a value is one the apiserver leaves out when it stores an object (`omitempty`).
pub fn is_empty_value(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Whether two strings are the same Kubernetes quantity spelled differently (`0.5` and `500m`,
/// `1Gi` and `1024Mi`), as the apiserver re-spells them. Two plain integers are the same only
/// when spelled the same (`010` is not `10`: such strings are more often values than quantities).
pub fn same_quantity(a: &str, b: &str) -> bool {
    let integer = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if integer(a) && integer(b) {
        return a == b;
    }
    match (quantity(a), quantity(b)) {
        (Some(x), Some(y)) => {
            x == y || ((x - y).abs() <= f64::EPSILON * 8.0 * x.abs().max(y.abs()))
        }
        _ => false,
    }
}

/// The value of a Kubernetes quantity: a decimal number with an optional SI (`m`, `k`, `M`, …),
/// binary (`Ki`, `Mi`, …) suffix. (Exponent forms are not taken: the server never writes them.)
fn quantity(text: &str) -> Option<f64> {
    const BINARY: [(&str, f64); 6] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
    ];
    const DECIMAL: [(char, f64); 9] = [
        ('n', 1e-9),
        ('u', 1e-6),
        ('m', 1e-3),
        ('k', 1e3),
        ('M', 1e6),
        ('G', 1e9),
        ('T', 1e12),
        ('P', 1e15),
        ('E', 1e18),
    ];
    let number = |s: &str| {
        let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
        let plain = !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
            && digits.chars().any(|c| c.is_ascii_digit());
        if plain { s.parse::<f64>().ok() } else { None }
    };
    for (suffix, factor) in BINARY {
        if let Some(n) = text.strip_suffix(suffix) {
            return number(n).map(|n| n * factor);
        }
    }
    if let Some(last) = text.chars().last()
        && let Some((_, factor)) = DECIMAL.iter().find(|(c, _)| *c == last)
        && let Some(n) = number(&text[..text.len() - 1])
    {
        return Some(n * factor);
    }
    number(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_fields_status_and_commit_are_dropped_but_content_stays() {
        let live = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "n", "uid": "u", "resourceVersion": "7",
                "generation": 2, "creationTimestamp": "t", "managedFields": [],
                "labels": {"team": "x"},
                "annotations": {COMMIT_ANNOTATION: "abc"}},
            "data": {"k": "v"}, "status": {"x": 1}
        });
        assert_eq!(
            for_comparison(&live),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a", "namespace": "n", "labels": {"team": "x"}},
                "data": {"k": "v"}})
        );
    }

    #[test]
    fn live_objects_contain_what_git_sets_despite_server_defaults() {
        let wanted = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "a:1"}]}}}});
        let live = json!({"spec": {"replicas": 2, "revisionHistoryLimit": 10,
            "template": {"spec": {"containers": [{"name": "web", "image": "a:1", "terminationMessagePath": "/dev/termination-log"}]}}},
            "status": {"replicas": 2}});
        assert!(contains(&live, &wanted));
        let mut drifted = live.clone();
        drifted["spec"]["replicas"] = json!(5);
        assert!(!contains(&drifted, &wanted), "a changed field");
        let mut extra = live.clone();
        extra["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .push(json!({"name": "sidecar"}));
        assert!(!contains(&extra, &wanted), "a list with an added element");
        assert!(
            !contains(&json!({"data": {}}), &json!({"data": {"k": "v"}})),
            "a missing field"
        );
        assert!(contains(&json!({"n": 1.0}), &json!({"n": 1})));
    }

    #[test]
    fn quantities_compare_by_value_not_spelling() {
        assert!(same_quantity("0.5", "500m"));
        assert!(same_quantity("1Gi", "1024Mi"));
        assert!(
            !same_quantity("010", "10"),
            "plain integers compare as written"
        );
        assert!(!same_quantity("1e1", "10"), "no exponent forms");
        let resources = |cpu: Value| json!({"resources": {"requests": {"cpu": cpu}}});
        assert!(contains(&resources(json!("1")), &resources(json!(1))));
        assert!(same_quantity("128974848", "123Mi"));
        assert!(!same_quantity("1", "2"));
        assert!(!same_quantity("web", "web2"));
        assert!(!same_quantity("1E", "1"), "1E is an exa");
        assert!(contains(
            &json!({"resources": {"requests": {"cpu": "500m", "memory": "64Mi"}}}),
            &json!({"resources": {"requests": {"cpu": "0.5", "memory": "65536Ki"}}})
        ));
    }

    #[test]
    fn strings_outside_quantity_fields_compare_as_written() {
        // A ConfigMap's "2" is not "2000m", nor is a number its string.
        assert!(!contains(
            &json!({"data": {"n": "2000m"}}),
            &json!({"data": {"n": "2"}})
        ));
        assert!(!contains(
            &json!({"data": {"n": "1"}}),
            &json!({"data": {"n": 1}})
        ));
        assert!(!contains(
            &json!({"spec": {"limits": {"cpu": "1"}}, "x": {"requests": {"a": "0.5"}}}),
            &json!({"spec": {"limits": {"cpu": "1"}}, "x": {"requests": {"a": "500m"}}})
        ));
        for path in [
            &["spec", "hard", "requests.cpu"][..],
            &["spec", "limits", "[]", "max", "cpu"],
            &[
                "spec",
                "template",
                "spec",
                "containers",
                "[0]",
                "resources",
                "limits",
                "memory",
            ],
            &["spec", "capacity", "storage"],
            &["spec", "volumes", "[1]", "emptyDir", "sizeLimit"],
        ] {
            assert!(is_quantity_field(path), "{path:?}");
        }
        for path in [
            &["data", "limits"][..],
            &["spec", "limits", "cpu"],
            &["data", "hard"],
        ] {
            assert!(!is_quantity_field(path), "{path:?}");
        }
    }

    #[test]
    fn a_secrets_string_data_is_compared_as_the_data_it_becomes() {
        let mut git = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "stringData": {"token": "v1"}, "data": {"other": "eA=="}});
        as_stored(&mut git);
        assert_eq!(git["data"], json!({"token": "djE=", "other": "eA=="}));
        assert!(git.get("stringData").is_none());
        let mut config = json!({"apiVersion": "v1", "kind": "ConfigMap", "stringData": {"a": "b"}});
        as_stored(&mut config);
        assert_eq!(config["stringData"]["a"], "b");
    }

    #[test]
    fn secret_values_are_hidden_but_changes_remain_visible() {
        let mut before = json!({"kind": "Secret", "data": {"same": "YQ==", "changed": "Yg=="}});
        let mut after =
            json!({"kind": "Secret", "data": {"same": "YQ==", "changed": "Yw==", "new": "ZA=="}});
        redact_secrets(Some(&mut before), Some(&mut after));
        assert_eq!(
            before["data"],
            json!({"same": "***", "changed": "*** (before)"})
        );
        assert_eq!(
            after["data"],
            json!({"same": "***", "changed": "*** (after)", "new": "*** (after)"})
        );
        let mut only = json!({"kind": "Secret", "stringData": {"password": "hunter2"}});
        redact_secrets(None, Some(&mut only));
        assert_eq!(only["stringData"]["password"], "*** (after)");
        let mut plain = json!({"kind": "ConfigMap", "data": {"k": "v"}});
        redact_secrets(Some(&mut plain), None);
        assert_eq!(plain["data"]["k"], "v");
    }
}
