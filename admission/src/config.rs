//! Registering the webhook with the apiserver: the ValidatingWebhookConfiguration (the same one
//! for an in-cluster Service and for a webhook on the host, by URL) and the certificates.

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use shared::admission::ENFORCEMENT_LABEL;

/// Name of the ValidatingWebhookConfiguration the manifests install.
pub const DEFAULT_NAME: &str = "kubectl-gitops-admission";
/// Namespace the manifests install the webhook into.
pub const DEFAULT_NAMESPACE: &str = "kubectl-gitops";
/// Field manager of what this binary writes.
const MANAGER: &str = "kubectl-gitops-admission";

/// Namespaces the webhook never sees, whatever their labels.
pub const NEVER_ENFORCED: [&str; 3] = ["kube-system", "kube-node-lease", "kube-public"];

/// Where the apiserver reaches the webhook.
#[derive(Debug, Clone)]
pub enum Target {
    /// `https://host:port` of a webhook outside the cluster.
    Url(String),
    /// The webhook's Service in the cluster (port 443).
    Service { namespace: String, name: String },
}

/// Writes the apiserver never sends: its own records, Events, Leases, access reviews. Apps are
/// left to the webhook that guards them, so no write is reviewed twice.
const SKIP_EXPRESSION: &str = "!(request.resource.group == 'gitops.kubectl-gitops.dev' && request.resource.resource in ['auditrecords', 'apps']) && !(request.resource.resource == 'events') && !(request.resource.group in ['coordination.k8s.io', 'authorization.k8s.io', 'authentication.k8s.io'])";

/// The ValidatingWebhookConfiguration: one webhook for enforced namespaces (fails closed), one
/// for warn namespaces (fails open), and one for the app definitions in either (fails closed:
/// re-pointing an app must not slip through while the webhook is away). `own_namespace` is never enforced; `extra_label` adds a namespace label every
/// webhook requires (to run several webhooks side by side).
pub fn webhook_configuration(
    name: &str,
    target: &Target,
    ca_bundle: Option<&str>,
    own_namespace: &str,
    extra_label: Option<(&str, &str)>,
) -> Value {
    let client_config = |path: &str| {
        let mut config = match target {
            Target::Url(base) => json!({"url": format!("{}{path}", base.trim_end_matches('/'))}),
            Target::Service { namespace, name } => json!({
                "service": {"namespace": namespace, "name": name, "path": path, "port": 443}
            }),
        };
        if let Some(ca) = ca_bundle {
            config["caBundle"] = base64::engine::general_purpose::STANDARD.encode(ca).into();
        }
        config
    };
    let mut excluded: Vec<&str> = NEVER_ENFORCED.to_vec();
    excluded.push(own_namespace);
    let selector = |mode: Option<&str>| {
        let mut expressions = vec![json!({
            "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded
        })];
        match mode {
            Some(mode) => expressions
                .push(json!({"key": ENFORCEMENT_LABEL, "operator": "In", "values": [mode]})),
            None => expressions.push(json!({"key": ENFORCEMENT_LABEL, "operator": "Exists"})),
        }
        if let Some((key, value)) = extra_label {
            expressions.push(json!({"key": key, "operator": "In", "values": [value]}));
        }
        json!({"matchExpressions": expressions})
    };
    let workloads = |mode: &str, failure: &str| {
        json!({
            "name": format!("{mode}.{}", shared::provenance::API_GROUP),
            "admissionReviewVersions": ["v1"],
            "clientConfig": client_config(&format!("/validate/{mode}")),
            "rules": [{
                "apiGroups": ["*"], "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE", "DELETE"],
                "resources": ["*", "*/scale"],
                "scope": "Namespaced"
            }],
            "namespaceSelector": selector(Some(mode)),
            "matchConditions": [{"name": "reviewed-resources", "expression": SKIP_EXPRESSION}],
            "failurePolicy": failure,
            "sideEffects": "NoneOnDryRun",
            "timeoutSeconds": 5,
            "matchPolicy": "Equivalent"
        })
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "kubectl-gitops-admission"}},
        "webhooks": [
            workloads("enforce", "Fail"),
            workloads("warn", "Ignore"),
            {
                "name": format!("apps.{}", shared::provenance::API_GROUP),
                "admissionReviewVersions": ["v1"],
                "clientConfig": client_config("/validate/apps"),
                "rules": [{
                    "apiGroups": [shared::provenance::API_GROUP], "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE", "DELETE"],
                    "resources": ["apps"],
                    "scope": "Namespaced"
                }],
                "namespaceSelector": selector(None),
                "failurePolicy": "Fail",
                "sideEffects": "NoneOnDryRun",
                "timeoutSeconds": 5,
                "matchPolicy": "Equivalent"
            }
        ]
    })
}

/// Creates or updates the configuration with server-side apply.
pub async fn register(client: &Client, configuration: &Value) -> anyhow::Result<()> {
    let name = configuration["metadata"]["name"]
        .as_str()
        .unwrap_or(DEFAULT_NAME);
    let typed: ValidatingWebhookConfiguration = serde_json::from_value(configuration.clone())
        .context("the webhook configuration is not a valid object")?;
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&typed),
        )
        .await
        .with_context(|| format!("cannot register ValidatingWebhookConfiguration {name}"))?;
    Ok(())
}

/// Removes the configuration (for a webhook that stops for good).
pub async fn unregister(client: &Client, name: &str) -> anyhow::Result<()> {
    match Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .delete(name, &Default::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => {
            Err(e).with_context(|| format!("cannot remove ValidatingWebhookConfiguration {name}"))
        }
    }
}

/// A CA and a serving certificate it signed, in PEM.
#[derive(Debug)]
pub struct Certificates {
    pub ca: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
}

/// The CA's parameters; the same every time, so a kept CA key signs again after a restart.
fn ca_params() -> anyhow::Result<rcgen::CertificateParams> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kubectl-gitops admission CA");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    Ok(params)
}

/// Generates a CA and a serving certificate for `names` (DNS names or IP addresses).
pub fn generate(names: &[String]) -> anyhow::Result<Certificates> {
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = ca_params()?.self_signed(&ca_key)?;
    let (cert, key) = issue(&ca_key.serialize_pem(), names)?;
    Ok(Certificates {
        ca: ca.pem(),
        ca_key: ca_key.serialize_pem(),
        cert,
        key,
    })
}

/// A new serving certificate and key for `names`, signed by the CA whose key is `ca_key`.
pub fn issue(ca_key: &str, names: &[String]) -> anyhow::Result<(String, String)> {
    let ca_key = rcgen::KeyPair::from_pem(ca_key).context("the CA key is not a PEM private key")?;
    let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().map(String::as_str).unwrap_or("admission"),
    );
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl Certificates {
    /// Writes `ca.crt`, `ca.key`, `tls.crt` and `tls.key` into `dir` (keys readable by the owner
    /// only). Each file is written aside and renamed into place, so a reader never sees half.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (file, contents) in [
            ("ca.crt", &self.ca),
            ("ca.key", &self.ca_key),
            ("tls.crt", &self.cert),
            ("tls.key", &self.key),
        ] {
            write_atomically(&dir.join(file), contents)?;
        }
        Ok(())
    }

    /// Reads what [`Certificates::write`] wrote, if it is all there.
    pub fn read(dir: &Path) -> Option<Self> {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
        Some(Certificates {
            ca: read("ca.crt")?,
            ca_key: read("ca.key")?,
            cert: read("tls.crt")?,
            key: read("tls.key")?,
        })
    }
}

/// Writes `contents` to a temporary file beside `path` (mode 0600) and renames it over `path`.
pub fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, contents)
        .with_context(|| format!("cannot write {}", aside.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&aside, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// Stores the certificates as a `kubernetes.io/tls` Secret (with `ca.crt`), the way
/// cert-manager does, so the Deployment mounts the same keys either way.
pub async fn store_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    certs: &Certificates,
) -> anyhow::Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"ca.crt": certs.ca, "tls.crt": certs.cert, "tls.key": certs.key}
    }))?;
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .with_context(|| format!("cannot write Secret {namespace}/{name}"))?;
    Ok(())
}

/// Sets the caBundle of every webhook of configuration `name`.
pub async fn patch_ca_bundle(client: &Client, name: &str, ca: &str) -> anyhow::Result<()> {
    let api = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    let current = api.get(name).await.with_context(|| {
        format!("cannot read ValidatingWebhookConfiguration {name}: apply manifests/ first")
    })?;
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca);
    let webhooks: Vec<Value> = current
        .webhooks
        .unwrap_or_default()
        .iter()
        .map(|w| json!({"name": w.name, "clientConfig": {"caBundle": bundle}}))
        .collect();
    let patch = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": webhooks
    });
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .with_context(|| format!("cannot set the caBundle of {name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_webhook_configuration_matches() {
        let generated = serde_saphyr::to_string(&webhook_configuration(
            DEFAULT_NAME,
            &Target::Service {
                namespace: DEFAULT_NAMESPACE.into(),
                name: DEFAULT_NAME.into(),
            },
            None,
            DEFAULT_NAMESPACE,
            None,
        ))
        .expect("serialises");
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../manifests/admission/webhook.yaml"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "manifests/admission/webhook.yaml is out of date: run `cargo run -q -p admission -- webhook-config > manifests/admission/webhook.yaml`"
        );
    }

    #[test]
    fn system_namespaces_and_its_own_are_never_selected() {
        let config = webhook_configuration(
            "x",
            &Target::Url("https://127.0.0.1:9443".into()),
            Some("CA"),
            "gitops-system",
            Some(("team", "a")),
        );
        for webhook in config["webhooks"].as_array().expect("webhooks") {
            let expressions = webhook["namespaceSelector"]["matchExpressions"]
                .as_array()
                .expect("expressions");
            let excluded = &expressions[0]["values"];
            for ns in [
                "kube-system",
                "kube-node-lease",
                "kube-public",
                "gitops-system",
            ] {
                assert!(
                    excluded.as_array().expect("values").contains(&ns.into()),
                    "{ns}"
                );
            }
            assert_eq!(expressions[0]["operator"], "NotIn");
            assert!(expressions.iter().any(|e| e["key"] == "team"));
            assert!(
                webhook["clientConfig"]["url"]
                    .as_str()
                    .expect("url")
                    .starts_with("https://127.0.0.1:9443/validate/")
            );
            assert_eq!(webhook["sideEffects"], "NoneOnDryRun");
        }
    }
}
