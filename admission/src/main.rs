//! `admission`: the validating admission webhook of kubectl-gitops. `main` parses, wires the
//! parts together and maps the outcome to an exit code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use futures::StreamExt as _;
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use kube::{Api, Client};
use shared::admission::Policy;
use shared::app::App;
use shared::project::Project;

use admission::config::{self, DEFAULT_NAME, DEFAULT_NAMESPACE, Target};
use admission::knowledge::{Repos, View};
use admission::metrics::Metrics;
use admission::server::{self, Webhook};
use admission::{audit, tls};

const EXIT_CODES: &str = "\
Exit codes:
  0  success (serve: stopped by SIGTERM or SIGINT)
  1  the command failed (the reason is printed on stderr)
  2  usage error: unknown command, flag or value";

/// Validating admission webhook: refuses every write to a GitOps-managed object that is not
/// traceable to a commit on the protected branch, and records every refusal.
#[derive(Debug, Parser)]
#[command(name = "admission", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve reviews over HTTPS (in the cluster, behind the Service the manifests install).
    #[command(
        after_help = "Examples:\n  admission serve --tls-cert-file /tls/tls.crt --tls-key-file /tls/tls.key"
    )]
    Serve {
        #[command(flatten)]
        tls: TlsFiles,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:8443")]
        listen: SocketAddr,
        /// The ValidatingWebhookConfiguration the webhook keeps as `webhook-config` prints it,
        /// restoring it when it is deleted or altered.
        #[arg(long, default_value = DEFAULT_NAME)]
        webhook_config: String,
        /// The webhook's Service (the configuration's clientConfig).
        #[arg(long, default_value = DEFAULT_NAME)]
        service: String,
        /// Namespace of the webhook's Service (default: $POD_NAMESPACE, else kubectl-gitops).
        #[arg(long, env = "POD_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
        service_namespace: String,
        /// CA of the serving certificate, put back as the caBundle when the configuration is
        /// restored (default: ca.crt beside --tls-cert-file, as cert-manager and `admission
        /// certs` write it).
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// Do not watch and restore the configuration.
        #[arg(long)]
        no_guard: bool,
        #[command(flatten)]
        options: ServeOptions,
    },
    /// Run the webhook on this host for a cluster that cannot reach in (a local control plane):
    /// generate a CA and certificate in the state directory, register the webhook by URL with
    /// that CA, and serve.
    #[command(
        after_help = "Examples:\n  admission local --kubeconfig .state/cluster/kubeconfig --state-dir .state/admission"
    )]
    Local {
        /// Keeps the CA, certificate and Git mirrors.
        #[arg(long, value_name = "DIR", default_value = ".state/admission")]
        state_dir: PathBuf,
        /// Address to listen on (loopback).
        #[arg(long, default_value = "127.0.0.1:9443")]
        listen: SocketAddr,
        /// Name of the ValidatingWebhookConfiguration to register.
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        /// A namespace label (KEY=VALUE) every webhook also requires, to run several side by side.
        #[arg(long, value_name = "KEY=VALUE")]
        namespace_label: Option<String>,
        /// Remove the registration when stopping (otherwise enforced namespaces fail closed
        /// until the webhook is back).
        #[arg(long)]
        unregister_on_exit: bool,
        /// Stop when standard input closes (for a parent process that owns the webhook).
        #[arg(long, hide = true)]
        exit_on_stdin_close: bool,
        #[command(flatten)]
        options: ServeOptions,
    },
    /// Without cert-manager: generate a CA and serving certificate into the webhook's TLS Secret
    /// and set the CA as the caBundle of its ValidatingWebhookConfiguration.
    #[command(after_help = "Examples:\n  admission certs --namespace kubectl-gitops")]
    Certs {
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        #[arg(long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        /// The webhook's Service.
        #[arg(long, default_value = DEFAULT_NAME)]
        service: String,
        /// The Secret the Deployment mounts.
        #[arg(long, default_value = "kubectl-gitops-admission-tls")]
        secret: String,
        /// The ValidatingWebhookConfiguration.
        #[arg(long, default_value = DEFAULT_NAME)]
        webhook_config: String,
    },
    /// Issue a new serving certificate from the CA of `admission local` (a rotation: the running
    /// webhook picks it up without a restart).
    #[command(after_help = "Examples:\n  admission renew-local --state-dir .state/admission")]
    RenewLocal {
        #[arg(long, value_name = "DIR", default_value = ".state/admission")]
        state_dir: PathBuf,
    },
    /// Print the ValidatingWebhookConfiguration for the webhook's in-cluster Service.
    WebhookConfig {
        #[arg(long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        #[arg(long, default_value = DEFAULT_NAME)]
        service: String,
    },
    /// Load a serving certificate and key as the webhook would at start, and report what is wrong.
    CheckTls {
        #[command(flatten)]
        tls: TlsFiles,
    },
}

#[derive(Debug, Args)]
struct TlsFiles {
    /// PEM certificate chain, leaf first; reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    tls_cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for the leaf certificate.
    #[arg(long, value_name = "FILE")]
    tls_key_file: PathBuf,
}

#[derive(Debug, Args)]
struct ServeOptions {
    /// Kubeconfig to reach the apiserver (default: in-cluster, else $KUBECONFIG).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Where the Git mirrors live (default: <state-dir>/repos, or /var/cache/kubectl-gitops).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Seconds between background fetches of every repository.
    #[arg(long, default_value_t = 30)]
    fetch_interval: u64,
    /// Milliseconds a review may wait for a fetch of a commit the mirror lacks. Keep it well
    /// inside the 3 s a decision may take (2.5 s at most): a longer wait is cut by that deadline,
    /// and the write is refused as undecided.
    #[arg(long, default_value_t = 2000)]
    fetch_deadline_ms: u64,
    /// Seconds an HTTP(S) Git remote may stay silent (connecting, answering, between two reads of
    /// a pack) before a fetch fails; the mirror keeps what it had.
    #[arg(long, default_value_t = 30)]
    git_timeout: u64,
    /// Answer reviews only from a client whose certificate this CA signed: the apiserver, given a
    /// client certificate for webhooks in its AdmissionConfiguration (`kubeConfigFile`). Other
    /// clients (any pod that reaches the Service) still reach the probes and metrics.
    #[arg(long, value_name = "FILE", requires = "client_names")]
    client_ca_file: Option<PathBuf>,
    /// The subject common name the client's certificate must carry (the apiserver's webhook client
    /// certificate's); repeat for several. Required with --client-ca-file: a cluster CA also signs
    /// every node's and every admin's certificate.
    #[arg(long = "client-name", value_name = "NAME", requires = "client_ca_file")]
    client_names: Vec<String>,
    /// Group whose members may write outside Git with a reason and an expiry ("" to disable).
    #[arg(long, default_value = "gitops:break-glass")]
    break_glass_group: String,
    /// Longest break-glass expiry accepted, in seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    break_glass_max_seconds: u64,
    /// Extra controller user names (an entry ending in `*` is a prefix); their writes to
    /// fields Git does not set pass.
    #[arg(long = "controller-user", value_name = "USER")]
    controller_users: Vec<String>,
    /// Namespace for records of writes to cluster-scoped objects.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    audit_namespace: String,
    /// Name of this replica on Events (default: $POD_NAME, else the host name).
    #[arg(long)]
    identity: Option<String>,
    /// Seconds between checks of the certificate files for rotation.
    #[arg(long, default_value_t = 2)]
    tls_reload_interval: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_logging();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A serving process writes only log lines; the one-shot commands talk to a person.
    let serving = matches!(cli.command, Command::Serve { .. } | Command::Local { .. });
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if serving => {
            tracing::error!(error = %format_args!("{e:#}"), "failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs as one JSON object a line on stderr: timestamp, level, target, message and the event's
/// fields at the top level, and the span it happened in (a review's uid, kind, namespace and
/// name). `RUST_LOG` filters as usual (`info,kube=debug`); without it, `info` and up, from this
/// crate and from the libraries alike (kube's events, and those of crates that log through the
/// `log` crate, such as rustls and reqwest).
fn install_logging() {
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing_subscriber::filter::LevelFilter::INFO.into())
        .from_env_lossy();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::CheckTls { tls } => {
            tls::load_server_config(&tls.tls_cert_file, &tls.tls_key_file)
                .map_err(|e| anyhow::anyhow!(tls::report(&e)))?;
            eprintln!(
                "{} and {} form a usable serving identity",
                tls.tls_cert_file.display(),
                tls.tls_key_file.display()
            );
            Ok(())
        }
        Command::WebhookConfig { namespace, service } => {
            let yaml = config::manifest(&namespace, &service)?;
            std::io::Write::write_all(&mut std::io::stdout(), yaml.as_bytes())?;
            Ok(())
        }
        Command::Certs {
            kubeconfig,
            namespace,
            service,
            secret,
            webhook_config,
        } => {
            let client = connect(kubeconfig).await?;
            let names = vec![
                format!("{service}.{namespace}.svc"),
                format!("{service}.{namespace}.svc.cluster.local"),
            ];
            let certs = config::generate(&names)?;
            config::store_secret(&client, &namespace, &secret, &certs).await?;
            config::patch_ca_bundle(&client, &webhook_config, &certs.ca).await?;
            eprintln!(
                "wrote Secret {namespace}/{secret} for {} and set the caBundle of {webhook_config}",
                names.join(", ")
            );
            Ok(())
        }
        Command::RenewLocal { state_dir } => {
            let dir = state_dir.join("tls");
            let certs = config::Certificates::read(&dir)
                .with_context(|| format!("{} holds no CA of `admission local`", dir.display()))?;
            let (cert, key) = config::issue(&certs.ca_key, &local_names())?;
            config::write_atomically(&dir.join("tls.key.next"), &key)?;
            config::write_atomically(&dir.join("tls.crt.next"), &cert)?;
            // The key first: a reload between the two renames fails (key and certificate do not
            // match) and keeps the old pair; the next one loads the new pair.
            std::fs::rename(dir.join("tls.key.next"), dir.join("tls.key"))?;
            std::fs::rename(dir.join("tls.crt.next"), dir.join("tls.crt"))?;
            eprintln!("issued a new serving certificate in {}", dir.display());
            Ok(())
        }
        Command::Serve {
            tls,
            listen,
            webhook_config,
            service,
            service_namespace,
            ca_file,
            no_guard,
            options,
        } => {
            let identity = Arc::new(
                tls::Identity::load(&tls.tls_cert_file, &tls.tls_key_file)
                    .map_err(|e| anyhow::anyhow!(tls::report(&e)))?,
            );
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let cache = options
                .cache_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/var/cache/kubectl-gitops"));
            let ca_file = ca_file.or_else(|| {
                let beside = tls.tls_cert_file.with_file_name("ca.crt");
                beside.is_file().then_some(beside)
            });
            let keep = (!no_guard).then(|| Kept {
                configuration: config::webhook_configuration(
                    &webhook_config,
                    &Target::Service {
                        namespace: service_namespace.clone(),
                        name: service,
                    },
                    None,
                    &service_namespace,
                    None,
                ),
                ca_file,
            });
            serve(listener, identity, options, cache, None, keep, Vec::new()).await
        }
        Command::Local {
            state_dir,
            listen,
            name,
            namespace_label,
            unregister_on_exit,
            exit_on_stdin_close,
            options,
        } => {
            let extra =
                match &namespace_label {
                    Some(label) => Some(label.split_once('=').with_context(|| {
                        format!("--namespace-label {label:?} is not KEY=VALUE")
                    })?),
                    None => None,
                };
            let tls_dir = state_dir.join("tls");
            let certs = match config::Certificates::read(&tls_dir) {
                Some(certs) => certs,
                None => {
                    let certs = config::generate(&local_names())?;
                    certs.write(&tls_dir)?;
                    certs
                }
            };
            let identity = Arc::new(
                tls::Identity::load(&tls_dir.join("tls.crt"), &tls_dir.join("tls.key"))
                    .map_err(|e| anyhow::anyhow!(tls::report(&e)))?,
            );
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let address = listener.local_addr()?;
            let client = connect(options.kubeconfig.clone()).await?;
            let configuration = config::webhook_configuration(
                &name,
                &Target::Url(format!("https://{address}")),
                Some(&certs.ca),
                &options.audit_namespace,
                extra,
            );
            let cache = options
                .cache_dir
                .clone()
                .unwrap_or_else(|| state_dir.join("repos"));
            // The identity the webhook registers with may change its configuration; so may the
            // break-glass group.
            let me = whoami(&client).await?;
            let group = Some(options.break_glass_group.as_str()).filter(|g| !g.is_empty());
            let guard = config::guard_policy(
                &name,
                &[me],
                group,
                &Target::Url(format!("https://{address}")),
            );
            let keep = Some(Kept {
                configuration: configuration.clone(),
                ca_file: None,
            });
            let registration = Registration {
                client: client.clone(),
                configuration,
                guard,
                unregister_on_exit,
                exit_on_stdin_close,
            };
            let labels = extra.map(|(k, _)| vec![k.to_owned()]).unwrap_or_default();
            serve(
                listener,
                identity,
                options,
                cache,
                Some(registration),
                keep,
                labels,
            )
            .await
        }
    }
}

/// What `admission local` serves its certificate for.
fn local_names() -> Vec<String> {
    vec!["127.0.0.1".to_owned(), "localhost".to_owned()]
}

/// The configuration the webhook keeps, and where the CA for a re-created one is.
struct Kept {
    configuration: serde_json::Value,
    ca_file: Option<PathBuf>,
}

/// A webhook outside the cluster registers itself by URL, with the policy that guards it.
struct Registration {
    client: Client,
    configuration: serde_json::Value,
    guard: [serde_json::Value; 2],
    unregister_on_exit: bool,
    exit_on_stdin_close: bool,
}

/// The user name the apiserver sees for this client.
async fn whoami(client: &Client) -> anyhow::Result<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&Default::default(), &SelfSubjectReview::default())
        .await
        .context("cannot learn the webhook's own user name (SelfSubjectReview)")?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .context("the apiserver did not say who the webhook is")
}

/// A client from `kubeconfig`, else `$KUBECONFIG` / `~/.kube/config`, else in-cluster.
async fn connect(kubeconfig: Option<PathBuf>) -> anyhow::Result<Client> {
    let target = shared::client::Target {
        kubeconfig,
        ..Default::default()
    };
    Ok(shared::client::connect(&target).await?.0)
}

/// Serves until stopped. `keep` is the configuration the webhook keeps (restores when deleted
/// or altered); `namespace_labels` the labels besides the enforcement label it selects
/// namespaces by.
async fn serve(
    listener: tokio::net::TcpListener,
    identity: Arc<tls::Identity>,
    options: ServeOptions,
    cache_dir: PathBuf,
    registration: Option<Registration>,
    keep: Option<Kept>,
    namespace_labels: Vec<String>,
) -> anyhow::Result<()> {
    // Read before anything starts: a bad file stops the webhook with its name.
    let clients = match &options.client_ca_file {
        Some(file) => Some(Arc::new(
            tls::ClientAuth::load(file, options.client_names.clone())
                .map_err(|e| anyhow::Error::from(e).context("--client-ca-file"))?,
        )),
        None => None,
    };
    let client = match &registration {
        Some(r) => r.client.clone(),
        None => connect(options.kubeconfig.clone()).await?,
    };
    let metrics = Arc::new(Metrics::default());
    let repos = Arc::new(Repos::new(
        cache_dir,
        Duration::from_secs(options.git_timeout.max(1)),
        metrics.clone(),
    ));
    let (apps, writer) = reflector::store::<App>();
    let (canaries, canary_writer) = reflector::store::<shared::canary::Canary>();
    let (projects, project_writer) = reflector::store::<Project>();
    let mut policy = Policy::default();
    policy
        .controller_users
        .extend(options.controller_users.iter().cloned());
    policy.break_glass_group = Some(options.break_glass_group.clone()).filter(|g| !g.is_empty());
    policy.break_glass_max = Duration::from_secs(options.break_glass_max_seconds);
    policy.namespace_selector_labels = namespace_labels;
    let instance = options
        .identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "admission".to_owned());
    let webhook = Arc::new(Webhook {
        view: View {
            apps: apps.clone(),
            projects: projects.clone(),
            repos: repos.clone(),
            fresh: Arc::default(),
            canaries,
            fresh_canaries: Arc::default(),
        },
        policy,
        metrics: metrics.clone(),
        auditor: Some(audit::Auditor::new(
            client.clone(),
            options.audit_namespace.clone(),
            instance,
        )),
        client: Some(client.clone()),
        fetch_deadline: Duration::from_millis(options.fetch_deadline_ms),
        ready: AtomicBool::new(false),
    });

    // Canary strategies: a watch, so a rollout's replicas are checked without a request. A copy
    // read after a refusal is dropped once the watch delivers that Canary again, or its deletion.
    let canary_watch = reflector(
        canary_writer,
        watcher(
            Api::<shared::canary::Canary>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    {
        let view = webhook.view.clone();
        tokio::spawn(async move {
            let mut watched = std::pin::pin!(canary_watch);
            while let Some(event) = watched.next().await {
                match event {
                    Ok(canary) => view.forget_canary(&canary),
                    Err(e) => tracing::warn!(error = %e, "canary-watch-failed"),
                }
            }
        });
    }

    // Projects: the trust root, followed by a watch.
    let project_watch = reflector(
        project_writer,
        watcher(
            Api::<Project>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .applied_objects();
    tokio::spawn(async move {
        let mut watched = std::pin::pin!(project_watch);
        while let Some(event) = watched.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "project-watch-failed");
            }
        }
    });

    // App definitions: a watch that follows every change; a repository seen for the first
    // time is fetched at once.
    let watched = reflector(
        writer,
        watcher(Api::<App>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    // Deletions too: an App read after a refusal must not outlive its deletion.
    .touched_objects();
    {
        let repos = repos.clone();
        let client = client.clone();
        let view = webhook.view.clone();
        tokio::spawn(async move {
            let mut watched = std::pin::pin!(watched);
            while let Some(event) = watched.next().await {
                match event {
                    Ok(app) => {
                        view.forget(&app.key());
                        // Only a repository the app's project permits is ever fetched: an App
                        // cannot make the webhook reach out to a URL of its choosing.
                        let project =
                            shared::admission::Knowledge::project(&view, &app.spec.project);
                        let live = shared::admission::Knowledge::app(&view, &app.key()).is_some();
                        let permitted = project
                            .as_ref()
                            .is_some_and(|p| p.permits_app(&app).is_ok());
                        if live
                            && permitted
                            && let Ok(repo) = repos.get(&app.spec.repo_url)
                            && repo.state().last_success.is_none()
                        {
                            let repos = repos.clone();
                            let client = client.clone();
                            tokio::spawn(async move {
                                let credentials =
                                    server::credentials(&client, &app, project.as_deref()).await;
                                repos
                                    .fetch(&repo, credentials, std::time::Instant::now())
                                    .await;
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "app-watch-failed"),
                }
            }
        });
    }
    {
        let webhook = webhook.clone();
        let apps = apps.clone();
        tokio::spawn(async move {
            if apps.wait_until_ready().await.is_ok() {
                webhook.ready.store(true, Ordering::Relaxed);
                tracing::info!(apps = apps.len(), "apps-loaded");
            }
        });
    }
    // Background fetches of every repository an app names.
    {
        let apps = apps.clone();
        let repos = repos.clone();
        let client = client.clone();
        let view = webhook.view.clone();
        let interval = Duration::from_secs(options.fetch_interval.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                // Each repository on its own task: a remote that hangs holds up only itself.
                for app in apps.state() {
                    let project = shared::admission::Knowledge::project(&view, &app.spec.project);
                    if project
                        .as_ref()
                        .is_none_or(|p| p.permits_app(&app).is_err())
                    {
                        continue;
                    }
                    let Ok(repo) = repos.get(&app.spec.repo_url) else {
                        continue;
                    };
                    // A fetch still running (a slow remote) is not queued behind: the next
                    // tick after it ends fetches again.
                    if repo.fetch_running() {
                        continue;
                    }
                    let (repos, client) = (repos.clone(), client.clone());
                    let project = shared::admission::Knowledge::project(&view, &app.spec.project);
                    tokio::spawn(async move {
                        let credentials =
                            server::credentials(&client, &app, project.as_deref()).await;
                        let since = std::time::Instant::now().checked_sub(interval / 2);
                        let since = since.unwrap_or_else(std::time::Instant::now);
                        repos.fetch(&repo, credentials, since).await;
                    });
                }
            }
        });
    }
    // Rotation of the CA that signs the apiserver's client certificate.
    if let Some(clients) = clients.clone() {
        let metrics = metrics.clone();
        let every = Duration::from_secs(options.tls_reload_interval.max(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match clients.reload_if_changed() {
                    Ok(false) => {}
                    Ok(true) => {
                        metrics.tls_reloaded(true);
                        tracing::info!(ca = %clients.ca_file().display(), "client-ca-reloaded");
                    }
                    Err(e) => {
                        metrics.tls_reloaded(false);
                        let e = anyhow::Error::from(e);
                        tracing::error!(error = format!("{e:#}"), "client-ca-reload-failed");
                    }
                }
            }
        });
    }
    // Certificate rotation.
    {
        let identity = identity.clone();
        let metrics = metrics.clone();
        let every = Duration::from_secs(options.tls_reload_interval.max(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match identity.reload_if_changed() {
                    Ok(false) => {}
                    Ok(true) => {
                        metrics.tls_reloaded(true);
                        tracing::info!(cert = %identity.cert_file().display(), "tls-reloaded");
                    }
                    Err(e) => {
                        metrics.tls_reloaded(false);
                        tracing::error!(error = %tls::report(&e), "tls-reload-failed");
                    }
                }
            }
        });
    }

    let address = listener.local_addr()?;
    let stdin_closes = registration.as_ref().is_some_and(|r| r.exit_on_stdin_close);
    if let Some(r) = &registration {
        config::register(&r.client, &r.configuration).await?;
        config::register_guard(&r.client, &r.guard).await?;
        tracing::info!(
            configuration = r.configuration["metadata"]["name"]
                .as_str()
                .unwrap_or_default(),
            url = %format_args!("https://{address}"),
            hint = %format_args!(
                "label a namespace {}=enforce (or warn) to guard it",
                shared::admission::ENFORCEMENT_LABEL
            ),
            "registered"
        );
    }
    // The configuration kept as it is: restored when deleted or altered, until the webhook
    // stops (it must not put back a registration its owner is removing).
    let (stop_guard, stopped) = tokio::sync::watch::channel(false);
    let guarding = keep.map(|kept| {
        tokio::spawn(admission::guard::keep(
            client.clone(),
            kept.configuration,
            kept.ca_file,
            webhook.auditor.clone(),
            metrics.clone(),
            stopped,
        ))
    });
    tracing::info!(address = %address, "serving");
    server::serve(
        listener,
        tls::server_config(identity, clients.as_deref()),
        server::router(webhook.clone()),
        clients.map(|c| (c, server::unadmitted_router(webhook))),
        shutdown(stdin_closes),
    )
    .await;
    let _ = stop_guard.send(true);
    if let Some(guarding) = guarding {
        let _ = guarding.await;
    }
    if let Some(r) = registration.filter(|r| r.unregister_on_exit) {
        let name = r.configuration["metadata"]["name"]
            .as_str()
            .unwrap_or_default();
        config::unregister_guard(&r.client, &r.guard).await?;
        config::unregister(&r.client, name).await?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT, or when standard input closes if `stdin_closes`.
async fn shutdown(stdin_closes: bool) {
    let stdin = async {
        if !stdin_closes {
            return std::future::pending().await;
        }
        let mut buf = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while tokio::io::AsyncReadExt::read(&mut stdin, &mut buf)
            .await
            .unwrap_or(0)
            > 0
        {}
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = term => {}
        _ = tokio::signal::ctrl_c() => {}
        () = stdin => {}
    }
}
