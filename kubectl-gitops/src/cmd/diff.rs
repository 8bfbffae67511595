//! `kubectl gitops diff`: what a sync would change, per object, as a unified diff of normalised
//! YAML. The server computes the synced state with dry-run applies, so defaults and admission
//! mutations do not show as noise. Exit codes as `diff(1)`: 0 same, 1 different, 2 trouble.

use std::io::Write;

use anyhow::Context as _;
use clap::Args;
use kube::Api;
use shared::app::App;
use shared::normalise;
use similar::{ChangeTag, TextDiff};

use crate::color::{self, paint};
use crate::engine::{self, Comparison};
use crate::exit::Code;
use crate::kube_context::KubeArgs;
use crate::output::short;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    kubectl gitops diff web\n  \
    kubectl gitops diff web --revision 3f2a9c1\n  \
    kubectl gitops diff web >/dev/null || echo \"the cluster differs from Git\"\n\n\
    Exit codes: 0 no difference, 1 differences found, 2 the diff could not be made.")]
pub struct DiffArgs {
    /// Name of the app.
    pub name: String,
    /// Compare against this commit (it must be on the branch) instead of the branch head.
    #[arg(long, value_name = "SHA")]
    pub revision: Option<String>,
}

/// Runs the diff; any failure is reported here and becomes exit code 2.
pub async fn run(args: DiffArgs, kube: &KubeArgs, out: &mut dyn Write) -> Code {
    match diff(args, kube, out).await {
        Ok(code) => code,
        Err(err) => {
            crate::exit::report(&err);
            Code::DiffTrouble
        }
    }
}

async fn diff(args: DiffArgs, kube: &KubeArgs, out: &mut dyn Write) -> anyhow::Result<Code> {
    let ctx = kube.connect().await?;
    let app = Api::<App>::namespaced(ctx.client.clone(), &ctx.namespace)
        .get(&args.name)
        .await
        .with_context(|| format!("cannot read app {}/{}", ctx.namespace, args.name))?;
    engine::check_app(&app)?;
    let project = engine::project(&ctx.client, &app).await?;
    let desired = engine::desired(&ctx.client, &app, &project, args.revision.as_deref()).await?;
    let clients = crate::identity::Clients::caller(&ctx.client);
    let plan = crate::rollout::prepare(&clients, &app, &desired, true).await?;
    let comparisons = engine::compare(&ctx.client, &app, &desired, &plan.replicas).await?;
    let colour = color::stdout_enabled();
    let mut differing = 0;
    for comparison in &comparisons {
        if let Some(text) = render(comparison, &desired.commit, colour) {
            differing += 1;
            write!(out, "{text}")?;
        }
    }
    eprintln!(
        "{differing} of {} object(s) differ from {} at {}",
        comparisons.len(),
        app.spec.branch,
        short(&desired.commit)
    );
    Ok(if differing == 0 {
        Code::Success
    } else {
        Code::Differs
    })
}

/// The unified diff of one object, or `None` when a sync would not change it.
pub fn render(comparison: &Comparison, commit: &str, colour: bool) -> Option<String> {
    let (old, new) = normalise::yaml_sides(comparison.live.as_ref(), comparison.synced.as_ref())?;
    let name = comparison.entry.display_name();
    let before = if comparison.live.is_some() {
        format!("live/{name}")
    } else {
        "/dev/null".to_owned()
    };
    let after = if comparison.synced.is_some() {
        format!("git@{}/{name}", short(commit))
    } else {
        "/dev/null".to_owned()
    };
    let diff = TextDiff::from_lines(&old, &new);
    let mut text = String::new();
    text.push_str(&paint(colour, "1", &format!("--- {before}\n+++ {after}\n")));
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        text.push_str(&paint(colour, "36", &format!("{}\n", hunk.header())));
        for change in hunk.iter_changes() {
            let line = format!("{}{}", sign(change.tag()), change.value());
            let line = if line.ends_with('\n') {
                line
            } else {
                format!("{line}\n")
            };
            text.push_str(&match change.tag() {
                ChangeTag::Delete => paint(colour, "31", &line),
                ChangeTag::Insert => paint(colour, "32", &line),
                ChangeTag::Equal => line,
            });
        }
    }
    Some(text)
}

fn sign(tag: ChangeTag) -> &'static str {
    match tag {
        ChangeTag::Delete => "-",
        ChangeTag::Insert => "+",
        ChangeTag::Equal => " ",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use serde_json::json;
    use shared::app::InventoryEntry;

    fn comparison(live: Option<Value>, synced: Option<Value>) -> Comparison {
        Comparison {
            entry: InventoryEntry {
                group: String::new(),
                version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: Some("shop".into()),
                name: "settings".into(),
                source_path: "cm.yaml".into(),
            },
            live,
            synced,
        }
    }

    #[test]
    fn only_a_changed_value_shows_and_server_fields_do_not() {
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "resourceVersion": "1", "annotations": {"gitops.kubectl-gitops.dev/commit": "a"}},
            "data": {"greeting": "hello", "same": "x"}});
        let synced = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "resourceVersion": "2", "annotations": {"gitops.kubectl-gitops.dev/commit": "b"}},
            "data": {"greeting": "hi", "same": "x"}});
        let text = render(
            &comparison(Some(live.clone()), Some(synced)),
            "0123456789",
            false,
        )
        .expect("differs");
        assert!(
            text.starts_with(
                "--- live/ConfigMap/shop/settings\n+++ git@0123456/ConfigMap/shop/settings\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("-  greeting: hello\n") && text.contains("+  greeting: hi\n"),
            "{text}"
        );
        assert!(!text.contains("resourceVersion"), "{text}");

        let mut same = live.clone();
        same["metadata"]["resourceVersion"] = json!("9");
        same["metadata"]["annotations"]["gitops.kubectl-gitops.dev/commit"] = json!("c");
        assert_eq!(
            render(&comparison(Some(live), Some(same)), "c", false),
            None,
            "a new commit alone is no change"
        );
    }

    #[test]
    fn creation_and_pruning_diff_against_dev_null() {
        let object =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}});
        let created =
            render(&comparison(None, Some(object.clone())), "abc", false).expect("differs");
        assert!(created.starts_with("--- /dev/null\n"), "{created}");
        let pruned = render(&comparison(Some(object), None), "abc", false).expect("differs");
        assert!(
            pruned.contains("+++ /dev/null\n") && pruned.contains("-kind: ConfigMap"),
            "{pruned}"
        );
    }

    #[test]
    fn colour_wraps_removed_and_added_lines() {
        let a = json!({"kind": "ConfigMap", "data": {"k": "1"}});
        let b = json!({"kind": "ConfigMap", "data": {"k": "2"}});
        let text = render(&comparison(Some(a), Some(b)), "abc", true).expect("differs");
        assert!(
            text.contains("\x1b[31m-  k: '1'\n\x1b[0m")
                || text.contains("\x1b[31m-  k: \"1\"\n\x1b[0m"),
            "{text:?}"
        );
    }
}
