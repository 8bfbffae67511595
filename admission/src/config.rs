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
use shared::admission::{ENFORCEMENT_LABEL, Scope};

/// Name of the ValidatingWebhookConfiguration the manifests install.
pub const DEFAULT_NAME: &str = "kubectl-gitops-admission";
/// Namespace the manifests install the webhook into.
pub const DEFAULT_NAMESPACE: &str = "kubectl-gitops";
/// Field manager of what this binary writes.
const MANAGER: &str = "kubectl-gitops-admission";

/// Namespaces the webhook never sees, whatever their labels.
pub const NEVER_ENFORCED: [&str; 3] = shared::project::UNREVIEWED_NAMESPACES;

/// Where the apiserver reaches the webhook.
#[derive(Debug, Clone)]
pub enum Target {
    /// `https://host:port` of a webhook outside the cluster.
    Url(String),
    /// The webhook's Service in the cluster (port 443).
    Service { namespace: String, name: String },
}

/// Namespaced writes the enforce and warn webhooks are not asked about: Apps (their own webhook
/// decides them wherever they live), the webhook's own records as it writes them, Events,
/// Leases and access reviews, and status subresources (the server's and controllers') except a
/// Canary's, which the decision trusts, and except a status write that changes the object's
/// labels, annotations, owner references or finalizers (several kinds keep those from it).
const NAMESPACED_SKIP: &str = "!(request.resource.group == 'gitops.kubectl-gitops.dev' && (request.resource.resource == 'apps' || (request.resource.resource == 'auditrecords' && request.operation == 'CREATE'))) && !(request.resource.resource == 'events' && request.resource.group in ['', 'events.k8s.io']) && !(request.resource.group in ['coordination.k8s.io', 'authorization.k8s.io', 'authentication.k8s.io']) && (!has(request.subResource) || request.subResource != 'status' || (request.resource.group == 'gitops.kubectl-gitops.dev' && request.resource.resource == 'canaries') || ";

/// A CEL expression: the write changes the object's labels, annotations, owner references or
/// finalizers (what a status or finalize subresource write keeps for some kinds).
const METADATA_CHANGED: &str = "(has(object.metadata.labels) ? object.metadata.labels : {}) != (has(oldObject.metadata.labels) ? oldObject.metadata.labels : {}) || (has(object.metadata.annotations) ? object.metadata.annotations : {}) != (has(oldObject.metadata.annotations) ? oldObject.metadata.annotations : {}) || (has(object.metadata.ownerReferences) ? object.metadata.ownerReferences : []) != (has(oldObject.metadata.ownerReferences) ? oldObject.metadata.ownerReferences : []) || (has(object.metadata.finalizers) ? object.metadata.finalizers : []) != (has(oldObject.metadata.finalizers) ? oldObject.metadata.finalizers : [])";

/// A CEL expression: the namespace label `key` differs between the old and the new object.
fn label_changed(key: &str) -> String {
    let side = |o: &str| {
        format!(
            "(has({o}.metadata.labels) && '{key}' in {o}.metadata.labels ? {o}.metadata.labels['{key}'] : '')"
        )
    };
    format!("{} != {}", side("object"), side("oldObject"))
}

/// The ValidatingWebhookConfiguration: one webhook for namespaces labelled `enforce` (fails
/// closed), one for `warn` (fails open), one for App definitions wherever they live, one for
/// the cluster-scoped objects apps manage (those carrying the managed label, before or after the
/// write), and one that guards the enforcement label itself; all but `warn` fail closed.
/// `own_namespace` is never enforced; `extra_label` adds a label every webhook's selection also
/// requires (to run several webhooks side by side).
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
    // Its own namespace is never enforced (the webhook must be able to start there), but Apps
    // defined there are reviewed like any others.
    let mut excluded: Vec<&str> = NEVER_ENFORCED.to_vec();
    excluded.push(own_namespace);
    let system: Vec<&str> = NEVER_ENFORCED.to_vec();
    let extra = |expressions: &mut Vec<Value>| {
        if let Some((key, value)) = extra_label {
            expressions.push(json!({"key": key, "operator": "In", "values": [value]}));
        }
    };
    let namespaces = |mode: Option<&str>| {
        let never = if mode.is_some() { &excluded } else { &system };
        let mut expressions = vec![json!({
            "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": never
        })];
        if let Some(mode) = mode {
            expressions.push(json!({"key": ENFORCEMENT_LABEL, "operator": "In", "values": [mode]}));
        }
        extra(&mut expressions);
        json!({"matchExpressions": expressions})
    };
    let objects = |key: &str| {
        let mut expressions = vec![json!({"key": key, "operator": "Exists"})];
        extra(&mut expressions);
        json!({"matchExpressions": expressions})
    };
    let webhook = |scope: Scope,
                   rules: Value,
                   namespace_selector: Value,
                   object_selector: Value,
                   failure: &str| {
        json!({
            "name": format!("{}.{}", scope.as_str(), shared::provenance::API_GROUP),
            "admissionReviewVersions": ["v1"],
            "clientConfig": client_config(&format!("/validate/{}", scope.as_str())),
            "rules": rules,
            "namespaceSelector": namespace_selector,
            "objectSelector": object_selector,
            "failurePolicy": failure,
            "sideEffects": "NoneOnDryRun",
            "timeoutSeconds": 5,
            "matchPolicy": "Equivalent"
        })
    };
    let namespaced_rules = json!([{
        "apiGroups": ["*"], "apiVersions": ["*"],
        "operations": ["CREATE", "UPDATE", "DELETE", "CONNECT"],
        "resources": ["*/*"],
        "scope": "Namespaced"
    }]);
    let mut enforce = webhook(
        Scope::Enforce,
        namespaced_rules.clone(),
        namespaces(Some("enforce")),
        json!({}),
        "Fail",
    );
    let mut warn = webhook(
        Scope::Warn,
        namespaced_rules,
        namespaces(Some("warn")),
        json!({}),
        "Ignore",
    );
    for w in [&mut enforce, &mut warn] {
        w["matchConditions"] = json!([{
            "name": "reviewed-resources",
            "expression": format!("{NAMESPACED_SKIP}{METADATA_CHANGED})")
        }]);
    }
    let apps = webhook(
        Scope::Apps,
        json!([{
            "apiGroups": [shared::provenance::API_GROUP], "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "resources": ["apps", "apps/status"],
            "scope": "Namespaced"
        }]),
        namespaces(None),
        json!({}),
        "Fail",
    );
    let mut cluster = webhook(
        Scope::Cluster,
        json!([{
            "apiGroups": ["*"], "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "resources": ["*", "*/status", "namespaces/finalize"],
            "scope": "Cluster"
        }]),
        json!({}),
        objects(shared::provenance::MANAGED_LABEL),
        "Fail",
    );
    cluster["matchConditions"] = json!([{
        "name": "reviewed-writes",
        "expression": format!("!has(request.subResource) || {METADATA_CHANGED}")
    }]);
    let mut switch = webhook(
        Scope::Namespaces,
        json!([{
            "apiGroups": [""], "apiVersions": ["v1"],
            "operations": ["UPDATE"],
            // A namespace's status and finalize writes keep label changes too.
            "resources": ["namespaces", "namespaces/status", "namespaces/finalize"],
            "scope": "Cluster"
        }]),
        json!({}),
        objects(ENFORCEMENT_LABEL),
        "Fail",
    );
    let mut guarded = vec![label_changed(ENFORCEMENT_LABEL)];
    if let Some((key, _)) = extra_label {
        guarded.push(label_changed(key));
    }
    switch["matchConditions"] =
        json!([{"name": "guarded-label-changed", "expression": guarded.join(" || ")}]);
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "kubectl-gitops-admission"}},
        "webhooks": [enforce, warn, apps, cluster, switch]
    })
}

/// The ValidatingAdmissionPolicy (and its binding) that keeps the webhook's configuration as it
/// is: the apiserver never sends writes of webhook configurations to webhooks, but it does apply
/// these in-process policies to them. Only `owners` (the webhook's own identity) and members of
/// `break_glass_group` may change or delete it, and anyone may rotate its caBundle (cert-manager
/// injects it). A cluster admin who deletes this policy first can still remove the webhook; the
/// webhook then restores its configuration and records it. For a webhook in the cluster, whose
/// owner's token a pod holds, the owners may point the configuration only at its Service `target`:
/// a stolen token cannot have the apiserver send writes anywhere else.
pub fn guard_policy(
    name: &str,
    owners: &[String],
    break_glass_group: Option<&str>,
    target: &Target,
) -> [Value; 2] {
    let policy = format!("{name}-guard");
    let quoted: Vec<String> = owners
        .iter()
        .map(|o| format!("'{}'", o.replace('\'', "")))
        .collect();
    let unquoted = |v: &str| v.replace(['\'', '\\'], "");
    // Every webhook of the configuration is sent to the target, and nowhere else.
    let aimed = match target {
        Target::Service { namespace, name } => format!(
            "object.webhooks.all(w, !has(w.clientConfig.url) && has(w.clientConfig.service) && w.clientConfig.service.namespace == '{}' && w.clientConfig.service.name == '{}')",
            unquoted(namespace),
            unquoted(name)
        ),
        // A webhook run outside the cluster (`admission local`) registers as the person running
        // it, whose address may change from one start to the next.
        Target::Url(_) => "true".to_owned(),
    };
    let mut allowed = vec![format!(
        "(request.userInfo.username in [{}] && (request.operation == 'DELETE' || {aimed}))",
        quoted.join(", ")
    )];
    if let Some(group) = break_glass_group {
        allowed.push(format!(
            "'{}' in request.userInfo.groups",
            group.replace('\'', "")
        ));
    }
    let same = |field: &str| {
        format!("(has(o.{field}) ? (has(w.{field}) && o.{field} == w.{field}) : !has(w.{field}))")
    };
    let fields = [
        "rules",
        "failurePolicy",
        "namespaceSelector",
        "objectSelector",
        "matchConditions",
        "timeoutSeconds",
        "sideEffects",
        "matchPolicy",
        "clientConfig.url",
        "clientConfig.service",
    ];
    let unchanged: Vec<String> = fields.iter().map(|f| same(f)).collect();
    allowed.push(format!(
        "(request.operation == 'UPDATE' && object.webhooks.size() == oldObject.webhooks.size() && object.webhooks.all(w, oldObject.webhooks.exists(o, o.name == w.name && {})))",
        unchanged.join(" && ")
    ));
    let mut rules = vec![json!({
        "apiGroups": ["admissionregistration.k8s.io"], "apiVersions": ["*"],
        "operations": ["UPDATE", "DELETE"],
        "resources": ["validatingwebhookconfigurations"],
        "resourceNames": [name]
    })];
    let mut validations = vec![json!({
        "expression": format!("request.operation == 'CREATE' || {}", allowed.join(" || ")),
        "messageExpression": format!("'ValidatingWebhookConfiguration {name} enforces that writes are traceable to Git: ' + request.userInfo.username + ' may not change or delete it (only the webhook itself, or a member of the break-glass group, may)'"),
        "reason": "Forbidden"
    })];
    // A webhook's service account may create webhook configurations (to put its own back), and
    // RBAC cannot name what is created: its token must not register another webhook that would
    // be sent every write in the cluster, Secrets included, or refuse them all.
    let accounts: Vec<&String> = owners
        .iter()
        .filter(|o| o.starts_with("system:serviceaccount:"))
        .collect();
    if !accounts.is_empty() {
        let quoted: Vec<String> = accounts
            .iter()
            .map(|o| format!("'{}'", o.replace('\'', "")))
            .collect();
        rules.push(json!({
            "apiGroups": ["admissionregistration.k8s.io"], "apiVersions": ["*"],
            "operations": ["CREATE"],
            "resources": ["validatingwebhookconfigurations"]
        }));
        validations.push(json!({
            "expression": format!(
                "request.operation != 'CREATE' || !(request.userInfo.username in [{}]) || (object.metadata.name == '{name}' && {aimed})",
                quoted.join(", ")
            ),
            "messageExpression": format!("request.userInfo.username + ' may create ValidatingWebhookConfiguration {name} only, sent to its own webhook, not ' + object.metadata.name"),
            "reason": "Forbidden"
        }));
    }
    [
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy, "labels": {"app.kubernetes.io/name": "kubectl-gitops-admission"}},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": rules},
                "validations": validations
            }
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy, "labels": {"app.kubernetes.io/name": "kubectl-gitops-admission"}},
            "spec": {"policyName": policy, "validationActions": ["Deny"]}
        }),
    ]
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

/// Creates or updates the policy that guards the configuration, and its binding.
pub async fn register_guard(client: &Client, guard: &[Value; 2]) -> anyhow::Result<()> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let params = PatchParams::apply(MANAGER).force();
    let name = |v: &Value| {
        v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(guard[0].clone())
        .context("the guard policy is not a valid object")?;
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .patch(&name(&guard[0]), &params, &Patch::Apply(&policy))
        .await
        .with_context(|| {
            format!(
                "cannot register ValidatingAdmissionPolicy {}",
                name(&guard[0])
            )
        })?;
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(guard[1].clone())
        .context("the guard policy binding is not a valid object")?;
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .patch(&name(&guard[1]), &params, &Patch::Apply(&binding))
        .await
        .with_context(|| {
            format!(
                "cannot register ValidatingAdmissionPolicyBinding {}",
                name(&guard[1])
            )
        })?;
    Ok(())
}

/// Removes the guard policy and its binding (before the configuration it guards).
pub async fn unregister_guard(client: &Client, guard: &[Value; 2]) -> anyhow::Result<()> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let name = |v: &Value| {
        v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let gone = |r: Result<_, kube::Error>| match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e),
    };
    gone(
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .delete(&name(&guard[1]), &Default::default())
            .await
            .map(|_| ()),
    )
    .with_context(|| {
        format!(
            "cannot remove ValidatingAdmissionPolicyBinding {}",
            name(&guard[1])
        )
    })?;
    gone(
        Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .delete(&name(&guard[0]), &Default::default())
            .await
            .map(|_| ()),
    )
    .with_context(|| {
        format!(
            "cannot remove ValidatingAdmissionPolicy {}",
            name(&guard[0])
        )
    })?;
    Ok(())
}

/// What `admission webhook-config` prints and `manifests/admission/webhook.yaml` holds: the
/// configuration for the in-cluster Service, and the policy that guards it (the webhook's
/// service account may change it; so may the default break-glass group).
pub fn manifest(namespace: &str, service: &str) -> anyhow::Result<String> {
    let configuration = webhook_configuration(
        DEFAULT_NAME,
        &Target::Service {
            namespace: namespace.to_owned(),
            name: service.to_owned(),
        },
        None,
        namespace,
        None,
    );
    let owner = format!("system:serviceaccount:{namespace}:{DEFAULT_NAME}");
    let [policy, binding] = guard_policy(
        DEFAULT_NAME,
        &[owner],
        shared::admission::Policy::default()
            .break_glass_group
            .as_deref(),
        &Target::Service {
            namespace: namespace.to_owned(),
            name: service.to_owned(),
        },
    );
    // The policy first: deleting this file's objects in order removes the guard before the
    // configuration it guards.
    Ok([policy, binding, configuration]
        .iter()
        .map(serde_saphyr::to_string)
        .collect::<Result<Vec<_>, _>>()?
        .join("---\n"))
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
        let generated = manifest(DEFAULT_NAMESPACE, DEFAULT_NAME).expect("serialises");
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
        let webhooks = config["webhooks"].as_array().expect("webhooks");
        let names: Vec<&str> = webhooks.iter().filter_map(|w| w["name"].as_str()).collect();
        assert_eq!(
            names,
            [
                "enforce.gitops.kubectl-gitops.dev",
                "warn.gitops.kubectl-gitops.dev",
                "apps.gitops.kubectl-gitops.dev",
                "cluster.gitops.kubectl-gitops.dev",
                "namespaces.gitops.kubectl-gitops.dev"
            ]
        );
        for webhook in webhooks {
            assert!(
                webhook["clientConfig"]["url"]
                    .as_str()
                    .expect("url")
                    .starts_with("https://127.0.0.1:9443/validate/")
            );
            assert_eq!(webhook["sideEffects"], "NoneOnDryRun");
            let cluster_scoped = webhook["rules"][0]["scope"] == "Cluster";
            if cluster_scoped {
                // Only objects that carry the label the webhook selects by (before or after
                // the write), and the extra label, are sent.
                let expressions = webhook["objectSelector"]["matchExpressions"]
                    .as_array()
                    .expect("an object selector");
                assert_eq!(expressions[0]["operator"], "Exists");
                assert!(expressions.iter().any(|e| e["key"] == "team"));
                continue;
            }
            let expressions = webhook["namespaceSelector"]["matchExpressions"]
                .as_array()
                .expect("expressions");
            let excluded = &expressions[0]["values"];
            for ns in ["kube-system", "kube-node-lease", "kube-public"] {
                assert!(
                    excluded.as_array().expect("values").contains(&ns.into()),
                    "{ns}"
                );
            }
            // Its own namespace is never enforced; Apps there are reviewed.
            let own = excluded
                .as_array()
                .expect("values")
                .contains(&"gitops-system".into());
            assert_eq!(
                own,
                webhook["name"] != "apps.gitops.kubectl-gitops.dev",
                "{webhook}"
            );
            assert_eq!(expressions[0]["operator"], "NotIn");
            assert!(expressions.iter().any(|e| e["key"] == "team"));
        }
        // Changing either label that selects a namespace is sent to the switch's webhook.
        let switch = webhooks[4]["matchConditions"][0]["expression"]
            .as_str()
            .expect("a condition");
        assert!(
            switch.contains(ENFORCEMENT_LABEL) && switch.contains("'team'"),
            "{switch}"
        );
    }
}
