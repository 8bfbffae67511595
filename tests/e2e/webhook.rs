//! The apiserver really calls a validating webhook registered by URL on loopback with a caBundle,
//! and its denial reaches kubectl. The server here is test code; the product webhook is `admission`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use e2e::{Kubectl, TestNamespace, cluster, wait};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// What the test webhook saw: (namespace, name, operation) of each review.
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

struct TestWebhook {
    addr: SocketAddr,
    ca_pem: String,
    seen: Seen,
    _shutdown: oneshot::Sender<()>,
    _runtime: std::thread::JoinHandle<()>,
}

/// The test's policy: refuse objects named `forbidden-*`.
fn review(request: &Value) -> Value {
    let name = request["name"].as_str().unwrap_or_default();
    let allowed = !name.starts_with("forbidden-");
    let mut response = json!({"uid": request["uid"], "allowed": allowed});
    if !allowed {
        response["status"] = json!({"code": 403, "message": format!("e2e policy refuses {name}")});
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

async fn handle(req: Request<Incoming>, seen: Seen) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return Ok(Response::builder()
                .status(400)
                .body(Full::default())
                .expect("static response"));
        }
    };
    let Ok(review_in) = serde_json::from_slice::<Value>(&body) else {
        return Ok(Response::builder()
            .status(400)
            .body(Full::default())
            .expect("static response"));
    };
    let request = &review_in["request"];
    seen.lock()
        .expect("no panics while holding the lock")
        .push((
            request["namespace"].as_str().unwrap_or_default().to_owned(),
            request["name"].as_str().unwrap_or_default().to_owned(),
            request["operation"].as_str().unwrap_or_default().to_owned(),
        ));
    let answer = serde_json::to_vec(&review(request)).expect("a Value serialises");
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer)))
        .expect("static response"))
}

impl TestWebhook {
    fn start() -> Self {
        let (mut tls, ca_pem) = e2e::tls::loopback_server("e2e webhook CA");
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("bound address");
        let seen: Seen = Arc::default();
        let (shutdown, mut stopped) = oneshot::channel::<()>();
        let seen_by_server = seen.clone();
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                loop {
                    let (tcp, _) = tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => match accepted {
                            Ok(conn) => conn,
                            Err(_) => continue,
                        },
                    };
                    let acceptor = acceptor.clone();
                    let seen = seen_by_server.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service =
                            hyper::service::service_fn(move |req| handle(req, seen.clone()));
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
        });
        TestWebhook {
            addr,
            ca_pem,
            seen,
            _shutdown: shutdown,
            _runtime: runtime,
        }
    }
}

/// A ValidatingWebhookConfiguration scoped to one namespace, deleted when dropped.
struct Registration {
    name: String,
    kubectl: Kubectl,
}

impl Registration {
    fn new(kubectl: &Kubectl, namespace: &str, webhook: &TestWebhook) -> Self {
        let name = format!("{namespace}-smoke");
        let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&webhook.ca_pem);
        kubectl.apply(&format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: {name}
webhooks:
- name: smoke.e2e.kubectl-gitops.dev
  clientConfig:
    url: https://{addr}/validate
    caBundle: {ca_bundle}
  rules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    operations: ["CREATE"]
    resources: ["configmaps"]
    scope: Namespaced
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {namespace}
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 5
"#,
            addr = webhook.addr
        ));
        Registration {
            name,
            kubectl: kubectl.clone(),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.kubectl.run(&[
            "delete",
            "validatingwebhookconfiguration",
            &self.name,
            "--ignore-not-found",
        ]);
    }
}

#[test]
fn the_apiserver_calls_a_webhook_by_url_and_kubectl_shows_its_denial() {
    let ns = TestNamespace::new("webhook");
    let kubectl = cluster().kubectl();
    let webhook = TestWebhook::start();
    let _registration = Registration::new(&kubectl, &ns.name, &webhook);

    // The apiserver picks a new configuration up within about a second; a server dry-run tells
    // when it is in force without creating anything.
    wait::until(
        "the webhook to be in force",
        Duration::from_secs(30),
        || {
            let o = kubectl.run(&[
                "create",
                "configmap",
                "forbidden-probe",
                "-n",
                &ns.name,
                "--dry-run=server",
            ]);
            (!o.success && o.stderr.contains("e2e policy refuses forbidden-probe"))
                .then_some(())
                .ok_or(o.stderr)
        },
    );

    let denied = kubectl.run(&[
        "create",
        "configmap",
        "forbidden-config",
        "-n",
        &ns.name,
        "--from-literal=a=b",
    ]);
    assert!(!denied.success, "the denied create must fail");
    assert!(
        denied
            .stderr
            .contains("admission webhook \"smoke.e2e.kubectl-gitops.dev\" denied the request")
            && denied
                .stderr
                .contains("e2e policy refuses forbidden-config"),
        "kubectl shows the webhook's reason: {}",
        denied.stderr
    );
    let absent = kubectl.run(&["get", "configmap", "forbidden-config", "-n", &ns.name]);
    assert!(!absent.success, "nothing was stored");

    kubectl.ok(&[
        "create",
        "configmap",
        "allowed-config",
        "-n",
        &ns.name,
        "--from-literal=a=b",
    ]);

    let seen = webhook
        .seen
        .lock()
        .expect("no panics while holding the lock")
        .clone();
    for name in ["forbidden-config", "allowed-config"] {
        assert!(
            seen.contains(&(ns.name.clone(), name.to_owned(), "CREATE".to_owned())),
            "the apiserver sent a review for {name}: {seen:?}"
        );
    }
    assert!(
        seen.iter().all(|(namespace, _, _)| *namespace == ns.name),
        "the namespaceSelector keeps other namespaces out: {seen:?}"
    );
}
