//! What the apiserver asks and what it is answered: the AdmissionReview (admission.k8s.io/v1),
//! and the object a write is about as the decision compares it.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::verdict::Verdict;

/// An AdmissionReview (admission.k8s.io/v1) as the apiserver sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub request: Option<AdmissionRequest>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// Empty in the per-object reviews of a DELETECOLLECTION, and for a name the server
    /// generates: [`AdmissionRequest::name`] reads the object's own name then.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    #[serde(default)]
    pub user_info: UserInfo,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub old_object: Option<Value>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct GroupVersionResource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub resource: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Extra attributes of the user (a service account token's pod and node; the agent's
    /// [`crate::client::IMPERSONATED_BY_EXTRA`] when it writes as a project's account).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// Who acted through this user by impersonation, as the agent declares itself.
    pub fn impersonated_by(&self) -> Option<&str> {
        self.extra
            .get(crate::client::IMPERSONATED_BY_EXTRA)
            .and_then(|values| values.first())
            .map(String::as_str)
    }
}

/// A side of the write that exists (the apiserver sends `null` for the missing one).
fn present(v: &Option<Value>) -> Option<&Value> {
    v.as_ref().filter(|v| !v.is_null())
}

impl AdmissionRequest {
    /// The name of the object written: the review's, else the object's own (a DELETECOLLECTION
    /// reviews each object it deletes with an empty name).
    pub fn name(&self) -> &str {
        if !self.name.is_empty() {
            return &self.name;
        }
        present(&self.object)
            .or(present(&self.old_object))
            .and_then(|o| o["metadata"]["name"].as_str())
            .unwrap_or_default()
    }

    /// The namespace of the object, `None` for a cluster-scoped one. (The apiserver names a
    /// Namespace's own name as the namespace of its review; a Namespace is cluster-scoped.)
    pub fn namespace(&self) -> Option<&str> {
        let a_namespace = self.resource.group.is_empty() && self.resource.resource == "namespaces";
        self.namespace
            .as_deref()
            .filter(|ns| !ns.is_empty() && !a_namespace)
    }

    /// `Kind namespace/name`, the way messages name the object.
    pub fn object_name(&self) -> String {
        crate::manifest::object_name(&self.kind.kind, self.namespace(), self.name())
    }

    pub fn is_dry_run(&self) -> bool {
        self.dry_run == Some(true)
    }

    /// The subresource, `None` for the object itself.
    pub fn subresource(&self) -> Option<&str> {
        self.sub_resource.as_deref().filter(|s| !s.is_empty())
    }

    /// The object after the write, if the review carries one.
    pub fn new_object(&self) -> Option<&Value> {
        present(&self.object)
    }

    /// The object before the write, if the review carries one.
    pub fn old_object(&self) -> Option<&Value> {
        present(&self.old_object)
    }
}

/// The AdmissionReview answer for `uid`.
pub fn response(uid: &str, verdict: &Verdict) -> Value {
    let mut response = json!({"uid": uid, "allowed": verdict.allowed});
    if !verdict.allowed {
        response["status"] = json!({
            "code": 403,
            "reason": "Forbidden",
            "message": verdict.message,
        });
    }
    if !verdict.warnings.is_empty() {
        response["warnings"] = json!(verdict.warnings);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// The object before and after the write, as the decision compares them: borrowed from the
/// review, made only for a scale (the parent with the new replicas).
#[derive(Debug)]
pub(crate) struct Write<'a> {
    pub operation: Operation,
    pub old: Option<Cow<'a, Value>>,
    pub new: Option<Cow<'a, Value>>,
    /// Made from a scale: the writer set the replicas, whoever the parent's fields name.
    pub scale: bool,
}

impl<'a> Write<'a> {
    /// The object itself (not a subresource).
    pub fn of_object(request: &'a AdmissionRequest) -> Result<Self, String> {
        let write = Write {
            operation: request.operation,
            old: request.old_object().map(Cow::Borrowed),
            new: request.new_object().map(Cow::Borrowed),
            scale: false,
        };
        match write.operation {
            Operation::Create if write.new.is_none() => Err(format!(
                "the review to create {} carries no object",
                request.object_name()
            )),
            Operation::Update if write.new.is_none() || write.old.is_none() => Err(format!(
                "the review to update {} lacks the object or the old object",
                request.object_name()
            )),
            Operation::Delete if write.old.is_none() => Err(format!(
                "the review to delete {} carries no old object",
                request.object_name()
            )),
            _ => Ok(write),
        }
    }

    /// An eviction: a delete of the live `pod` (the review carries only the Eviction).
    pub fn of_eviction(pod: &'a Value) -> Self {
        Write {
            operation: Operation::Delete,
            old: Some(Cow::Borrowed(pod)),
            new: None,
            scale: false,
        }
    }

    /// A scale: the live `parent` with the review's replicas at `replicas_path` (the parent's
    /// kind says where, `spec.replicas` for the built-in kinds).
    pub fn of_scale(
        request: &'a AdmissionRequest,
        parent: &'a Value,
        replicas_path: &[String],
    ) -> Result<Self, String> {
        let replicas = request
            .new_object()
            .and_then(|s| s.pointer("/spec/replicas"))
            .cloned()
            .ok_or_else(|| {
                format!(
                    "the scale of {} names no spec.replicas",
                    request.object_name()
                )
            })?;
        let mut new = parent.clone();
        let mut at = &mut new;
        let Some((last, parents)) = replicas_path.split_last() else {
            return Err(format!(
                "the scale of {} has no replicas path",
                request.object_name()
            ));
        };
        for key in parents {
            let Some(map) = at.as_object_mut() else {
                return Err(format!(
                    "the live {} to scale is not an object with a spec",
                    request.object_name()
                ));
            };
            let next = map.entry(key.clone()).or_insert(Value::Null);
            if next.is_null() {
                *next = json!({});
            }
            at = next;
        }
        match at.as_object_mut() {
            Some(map) => {
                map.insert(last.clone(), replicas);
            }
            None => {
                return Err(format!(
                    "the live {} to scale is not an object with a spec",
                    request.object_name()
                ));
            }
        }
        Ok(Write {
            operation: Operation::Update,
            old: Some(Cow::Borrowed(parent)),
            new: Some(Cow::Owned(new)),
            scale: true,
        })
    }
}
