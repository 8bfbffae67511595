//! Provenance annotations: where in Git a live object came from.
//!
//! Every object a sync applies carries these annotations; a write to a managed object is admitted
//! only when they point at a commit on the protected branch whose file declares the object.

use thiserror::Error;

/// The API group of the project: CRDs, annotation and label keys all live under it.
pub const API_GROUP: &str = "gitops.kubectl-gitops.dev";

/// Commit (full hex object id) the object was applied from.
pub const COMMIT_ANNOTATION: &str = "gitops.kubectl-gitops.dev/commit";
/// Name of the app (its app definition) that manages the object.
pub const APP_ANNOTATION: &str = "gitops.kubectl-gitops.dev/app";
/// Path, relative to the repository root, of the file that declares the object.
pub const SOURCE_PATH_ANNOTATION: &str = "gitops.kubectl-gitops.dev/source-path";
/// uid of the App object that synced it: an App deleted and defined again under the same name
/// is another app, whose objects these are not.
pub const APP_UID_ANNOTATION: &str = "gitops.kubectl-gitops.dev/app-uid";

/// Label on every object a sync applies: it lets the webhook's configuration select the
/// cluster-scoped objects apps manage (and only those) with an `objectSelector`, and users list
/// them (`kubectl get clusterroles -l gitops.kubectl-gitops.dev/managed`).
pub const MANAGED_LABEL: &str = "gitops.kubectl-gitops.dev/managed";
/// The value of [`MANAGED_LABEL`].
pub const MANAGED_VALUE: &str = "true";

/// Every provenance annotation key, in the order they are documented.
pub const ANNOTATIONS: [&str; 4] = [
    COMMIT_ANNOTATION,
    APP_ANNOTATION,
    SOURCE_PATH_ANNOTATION,
    APP_UID_ANNOTATION,
];

/// Why a string is not a Kubernetes qualified name (`prefix/name`, as annotation keys are).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QualifiedNameError {
    #[error("the name part of {0:?} is empty or longer than 63 characters")]
    NameLength(String),
    #[error(
        "the name part of {0:?} must start and end with an alphanumeric character and contain only alphanumerics, '-', '_' and '.'"
    )]
    NameCharacters(String),
    #[error("the prefix of {0:?} is not a DNS subdomain (lowercase, at most 253 characters)")]
    Prefix(String),
}

/// Checks `key` the way the apiserver checks annotation and label keys, so that a key the project
/// writes can never be refused by the server.
pub fn validate_qualified_name(key: &str) -> Result<(), QualifiedNameError> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if name.is_empty() || name.len() > 63 {
        return Err(QualifiedNameError::NameLength(key.to_owned()));
    }
    let inner_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ends_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !inner_ok || !ends_ok {
        return Err(QualifiedNameError::NameCharacters(key.to_owned()));
    }
    if let Some(prefix) = prefix
        && !is_dns_subdomain(prefix)
    {
        return Err(QualifiedNameError::Prefix(key.to_owned()));
    }
    Ok(())
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provenance_keys_are_accepted_by_the_apiserver_rules() {
        for key in ANNOTATIONS.iter().chain([&MANAGED_LABEL]) {
            assert_eq!(validate_qualified_name(key), Ok(()), "{key}");
            assert!(
                key.starts_with(&format!("{API_GROUP}/")),
                "{key} is outside {API_GROUP}"
            );
        }
    }

    #[test]
    fn malformed_keys_are_refused_with_the_reason() {
        assert!(matches!(
            validate_qualified_name("example.com/"),
            Err(QualifiedNameError::NameLength(_))
        ));
        assert!(matches!(
            validate_qualified_name("example.com/-commit"),
            Err(QualifiedNameError::NameCharacters(_))
        ));
        assert!(matches!(
            validate_qualified_name("Example.com/commit"),
            Err(QualifiedNameError::Prefix(_))
        ));
        assert!(matches!(
            validate_qualified_name(&"a".repeat(64)),
            Err(QualifiedNameError::NameLength(_))
        ));
        assert_eq!(validate_qualified_name("app.kubernetes.io/name"), Ok(()));
        assert_eq!(validate_qualified_name("plain"), Ok(()));
    }
}

/// Where an object came from: the commit, the app and the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub commit: String,
    pub app: String,
    pub source_path: String,
    /// The uid of the App (absent on objects synced before it was recorded).
    pub app_uid: Option<String>,
}

impl Provenance {
    /// The provenance a sync of `app` writes on an object `source_path` declares at `commit`.
    pub fn of(app: &crate::app::App, commit: &str, source_path: &str) -> Self {
        Provenance {
            commit: commit.to_owned(),
            app: app.key(),
            source_path: source_path.to_owned(),
            app_uid: app.metadata.uid.clone(),
        }
    }

    /// Whether `app` wrote it: the App of that name, and not another App of the same name
    /// (deleted and defined again since). Objects written before uids were recorded name none.
    pub fn written_by(&self, app: &crate::app::App) -> bool {
        self.app == app.key()
            && match (&self.app_uid, &app.metadata.uid) {
                (Some(wrote), Some(is)) => wrote == is,
                _ => true,
            }
    }

    /// Writes the provenance annotations and the managed label into an object (a JSON value
    /// with `metadata`).
    pub fn stamp(&self, object: &mut serde_json::Value) {
        if !object.is_object() {
            *object = serde_json::Value::Object(Default::default());
        }
        let metadata = &mut object["metadata"];
        if !metadata.is_object() {
            *metadata = serde_json::Value::Object(Default::default());
        }
        if !metadata["labels"].is_object() {
            metadata["labels"] = serde_json::Value::Object(Default::default());
        }
        metadata["labels"][MANAGED_LABEL] = MANAGED_VALUE.into();
        if !metadata["annotations"].is_object() {
            metadata["annotations"] = serde_json::Value::Object(Default::default());
        }
        let annotations = &mut metadata["annotations"];
        annotations[COMMIT_ANNOTATION] = self.commit.clone().into();
        annotations[APP_ANNOTATION] = self.app.clone().into();
        annotations[SOURCE_PATH_ANNOTATION] = self.source_path.clone().into();
        if let Some(uid) = &self.app_uid {
            annotations[APP_UID_ANNOTATION] = uid.clone().into();
        }
    }

    /// Reads the provenance annotations of an object, if it carries all of them.
    pub fn read(object: &serde_json::Value) -> Option<Self> {
        let annotations = &object["metadata"]["annotations"];
        let get = |key: &str| annotations[key].as_str().map(str::to_owned);
        Some(Provenance {
            // Commit ids are spelled in lower case; another spelling names the same commit.
            commit: get(COMMIT_ANNOTATION)?.to_ascii_lowercase(),
            app: get(APP_ANNOTATION)?,
            source_path: get(SOURCE_PATH_ANNOTATION)?,
            app_uid: get(APP_UID_ANNOTATION),
        })
    }
}

#[cfg(test)]
mod stamp_tests {
    use super::*;

    #[test]
    fn stamping_keeps_other_annotations_and_reads_back() {
        let mut object = serde_json::json!({
            "metadata": {"name": "web", "annotations": {"team": "payments"}}
        });
        let provenance = Provenance {
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            app: "shop/web".into(),
            source_path: "apps/web/deploy.yaml".into(),
            app_uid: Some("8c1d".into()),
        };
        provenance.stamp(&mut object);
        assert_eq!(object["metadata"]["annotations"]["team"], "payments");
        assert_eq!(object["metadata"]["labels"][MANAGED_LABEL], MANAGED_VALUE);
        assert_eq!(Provenance::read(&object), Some(provenance));
        assert_eq!(Provenance::read(&serde_json::json!({"metadata": {}})), None);
    }
}
