//! Audit records: every write the webhook refused, admitted in warn mode or admitted by
//! break-glass, kept as an object in the written object's namespace (cluster-scoped objects'
//! records go to the webhook's own namespace). `kubectl gitops audit` reads them.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::admission::{BreakGlass, Outcome};

/// One write that Git did not explain. Named after the review's uid, so a record is written
/// once whichever replica answered, and a retry cannot duplicate it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gitops.kubectl-gitops.dev",
    version = "v1alpha1",
    kind = "AuditRecord",
    plural = "auditrecords",
    namespaced,
    shortname = "gaudit",
    printcolumn = r#"{"name":"Time","type":"string","jsonPath":".spec.time"}"#,
    printcolumn = r#"{"name":"Outcome","type":"string","jsonPath":".spec.outcome"}"#,
    printcolumn = r#"{"name":"User","type":"string","jsonPath":".spec.user"}"#,
    printcolumn = r#"{"name":"Verb","type":"string","jsonPath":".spec.verb"}"#,
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.object.kind"}"#,
    printcolumn = r#"{"name":"Object","type":"string","jsonPath":".spec.object.name"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".spec.reason"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecordSpec {
    /// RFC 3339 time the webhook answered.
    pub time: String,
    pub outcome: Outcome,
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Who wrote through `user` by impersonation: the agent, when it syncs as the service
    /// account its app's project names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonated_by: Option<String>,
    /// CREATE, UPDATE or DELETE.
    pub verb: String,
    pub object: AuditedObject,
    /// The app (`namespace/name`) that manages the object, when it is managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The commit the write's provenance claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_commit: Option<String>,
    /// The failed condition, as a short code (`field-changed`, `not-on-branch`, …).
    pub reason: String,
    /// The message the writer was given.
    pub message: String,
    /// The attempted change as a unified diff of YAML, Secret values redacted.
    #[serde(default)]
    pub diff: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlass>,
    /// uid of the AdmissionReview.
    pub request_uid: String,
}

/// The object a write was aimed at.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditedObject {
    #[serde(default)]
    pub group: String,
    pub version: String,
    pub kind: String,
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl AuditedObject {
    /// `Kind namespace/name`.
    pub fn display_name(&self) -> String {
        crate::manifest::object_name(&self.kind, self.namespace.as_deref(), &self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn the_committed_crd_matches_the_type() {
        let generated = serde_saphyr::to_string(&AuditRecord::crd()).expect("the CRD serialises");
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../manifests/crds/auditrecord.yaml"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "manifests/crds/auditrecord.yaml is out of date: run `cargo run -q -p kubectl-gitops -- crd auditrecords > manifests/crds/auditrecord.yaml`"
        );
    }
}
