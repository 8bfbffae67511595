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
