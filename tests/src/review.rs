//! AdmissionReviews posted to the webhook directly, as a caller other than the apiserver would.

use serde_json::{Value, json};

/// The review of a create of ConfigMap `namespace/name` by `user`, with request `uid`.
pub fn create_config_map(uid: &str, namespace: &str, name: &str, user: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "name": name, "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": user},
            "object": {"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": name, "namespace": namespace}}
        }
    })
}
