//! Completion of `kubectl gitops …` inside kubectl's own shell completion.
//!
//! kubectl (1.26 and later) completes a plugin's arguments by running `kubectl_complete-<plugin>`
//! from `PATH` with the words after the plugin's name, the last one being the word to complete
//! (empty for a new word), and reads cobra's `__complete` answer: one candidate a line
//! (`candidate<TAB>description`), then `:<directive>`. `kubectl_complete-gitops` is a two-line
//! script (`kubectl gitops completion kubectl-plugin` prints it) that runs
//! `kubectl-gitops __complete WORDS…`, answered here from the clap definition, so subcommands and
//! flags never drift from the CLI, and from the cluster for the names of apps, Canaries,
//! projects, namespaces and kubeconfig contexts.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use clap::{Arg, ArgAction, Command, CommandFactory as _, ValueHint};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::ListParams;
use shared::request_timeout::RequestTimeout;

use shared::app::App;
use shared::canary::Canary;
use shared::project::Project;

use crate::kube_context::{KubeArgs, KubeContext};

/// The hidden first argument that asks `kubectl-gitops` for completions (cobra's name for it).
pub const COMMAND: &str = "__complete";

/// The script kubectl runs as `kubectl_complete-gitops`.
pub const KUBECTL_PLUGIN_SHIM: &str = "\
#!/bin/sh
# Completes `kubectl gitops ...` in kubectl's shell completion (kubectl 1.26 and later run
# kubectl_complete-gitops from PATH). Written by `kubectl gitops completion kubectl-plugin`.
exec kubectl-gitops __complete \"$@\"
";

/// cobra's `ShellCompDirectiveDefault`: the shell may fall back to file names.
const FILES: u32 = 0;
/// cobra's `ShellCompDirectiveNoFileComp`: only the candidates given.
const NO_FILES: u32 = 4;

/// How long listing names in the cluster may take when `--request-timeout` does not say: a shell
/// waiting on a Tab must not hang on an unreachable apiserver.
const LIST_TIMEOUT: &str = "5s";

/// The answer to one completion request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Completion {
    /// Candidates and their descriptions.
    pub candidates: Vec<(String, String)>,
    pub directive: u32,
}

/// Objects whose names complete an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Names {
    Apps,
    Canaries,
    Projects,
    Namespaces,
    Contexts,
}

/// What the word being completed is.
#[derive(Debug)]
enum Target<'a> {
    /// A subcommand, or the command's next positional argument.
    Word(&'a Command, usize),
    /// A flag of the command.
    Flag(&'a Command),
    /// The value of a flag or positional argument; `prefix` goes before each candidate
    /// (`--output=`).
    Value(&'a Arg, String),
}

/// Where the words lead: the subcommand path, what is being completed, and the flags given.
#[derive(Debug)]
struct Walk<'a> {
    path: Vec<String>,
    target: Target<'a>,
    given: Vec<(String, String)>,
    seen: BTreeSet<String>,
}

fn takes_value(arg: &Arg) -> bool {
    arg.get_action().takes_values()
}

fn repeatable(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append | ArgAction::Count)
}

fn walk<'a>(root: &'a Command, words: &[String]) -> Walk<'a> {
    let mut cmd = root;
    let mut path = Vec::new();
    let mut positional = 0usize;
    let mut given = Vec::new();
    let mut seen = BTreeSet::new();
    let mut pending: Option<&Arg> = None;
    let mut only_positionals = false;
    let (current, done) = words
        .split_last()
        .map_or(("", &[][..]), |(c, d)| (c.as_str(), d));
    for word in done {
        if let Some(arg) = pending.take() {
            given.push((arg.get_id().to_string(), word.clone()));
            continue;
        }
        if !only_positionals && word == "--" {
            only_positionals = true;
        } else if let Some(long) = word.strip_prefix("--").filter(|_| !only_positionals) {
            let (name, value) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            if let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(name)) {
                seen.insert(arg.get_id().to_string());
                match value {
                    Some(value) => given.push((arg.get_id().to_string(), value.to_owned())),
                    None if takes_value(arg) => pending = Some(arg),
                    None => {}
                }
            }
        } else if let Some(shorts) = word
            .strip_prefix('-')
            .filter(|s| !s.is_empty() && !only_positionals)
        {
            for (at, c) in shorts.char_indices() {
                let Some(arg) = cmd.get_arguments().find(|a| a.get_short() == Some(c)) else {
                    break;
                };
                seen.insert(arg.get_id().to_string());
                if takes_value(arg) {
                    let rest = &shorts[at + c.len_utf8()..];
                    let rest = rest.strip_prefix('=').unwrap_or(rest);
                    if rest.is_empty() {
                        pending = Some(arg);
                    } else {
                        given.push((arg.get_id().to_string(), rest.to_owned()));
                    }
                    break;
                }
            }
        } else if let Some(sub) = cmd
            .find_subcommand(word)
            .filter(|_| positional == 0 && !only_positionals)
        {
            cmd = sub;
            path.push(sub.get_name().to_owned());
            seen.clear();
        } else {
            positional += 1;
        }
    }
    let target = if let Some(arg) = pending {
        Target::Value(arg, String::new())
    } else if let Some(long) = current
        .strip_prefix("--")
        .filter(|l| l.contains('=') && !only_positionals)
    {
        let (name, _) = long.split_once('=').unwrap_or_default();
        match cmd.get_arguments().find(|a| a.get_long() == Some(name)) {
            Some(arg) => Target::Value(arg, format!("--{name}=")),
            None => Target::Flag(cmd),
        }
    } else if current.starts_with('-') && !only_positionals {
        Target::Flag(cmd)
    } else {
        Target::Word(cmd, positional)
    };
    Walk {
        path,
        target,
        given,
        seen,
    }
}

fn first_line(text: Option<&clap::builder::StyledStr>) -> String {
    text.map(|t| t.to_string())
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_owned()
}

/// Which objects' names complete `arg` of the command at `path`.
fn names_for(path: &[String], arg: &Arg) -> Option<Names> {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    match (path.as_slice(), arg.get_id().as_str()) {
        (_, "namespace") => Some(Names::Namespaces),
        (_, "context") => Some(Names::Contexts),
        (
            ["sync" | "diff" | "history" | "status" | "hydrate"] | ["app", "get" | "delete"],
            "name",
        ) => Some(Names::Apps),
        (
            [
                "rollout",
                "status" | "get" | "promote" | "pause" | "resume" | "abort" | "undo",
            ],
            "name",
        ) => Some(Names::Canaries),
        (["project", "get" | "delete"], "name") | (["app", "add"], "project") => {
            Some(Names::Projects)
        }
        _ => None,
    }
}

/// The candidates the CLI definition gives, and the objects to ask the cluster for.
fn static_candidates(walk: &Walk<'_>, current: &str) -> (Completion, Option<Names>) {
    let mut completion = Completion {
        candidates: Vec::new(),
        directive: NO_FILES,
    };
    let values = |arg: &Arg, prefix: &str, completion: &mut Completion| {
        let possible = arg.get_possible_values();
        if possible.is_empty() {
            if matches!(
                arg.get_value_hint(),
                ValueHint::AnyPath | ValueHint::FilePath | ValueHint::DirPath
            ) {
                completion.directive = FILES;
            }
            return names_for(&walk.path, arg);
        }
        completion
            .candidates
            .extend(possible.iter().filter(|v| !v.is_hide_set()).map(|v| {
                (
                    format!("{prefix}{}", v.get_name()),
                    first_line(v.get_help()),
                )
            }));
        None
    };
    let names = match &walk.target {
        Target::Value(arg, prefix) => values(arg, prefix, &mut completion),
        Target::Flag(cmd) => {
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                if walk.seen.contains(arg.get_id().as_str()) && !repeatable(arg) {
                    continue;
                }
                let help = first_line(arg.get_help());
                if let Some(long) = arg.get_long() {
                    completion
                        .candidates
                        .push((format!("--{long}"), help.clone()));
                }
                if let Some(short) = arg.get_short().filter(|_| current.len() <= 1) {
                    completion.candidates.push((format!("-{short}"), help));
                }
            }
            None
        }
        Target::Word(cmd, positional) if cmd.has_subcommands() && *positional == 0 => {
            completion.candidates.extend(
                cmd.get_subcommands()
                    .filter(|s| !s.is_hide_set())
                    .map(|s| (s.get_name().to_owned(), first_line(s.get_about()))),
            );
            None
        }
        Target::Word(cmd, positional) => {
            let mut positionals: Vec<&Arg> = cmd.get_positionals().collect();
            positionals.sort_by_key(|a| a.get_index());
            let arg = positionals.get(*positional).copied().or_else(|| {
                positionals
                    .last()
                    .copied()
                    .filter(|a| a.get_num_args().is_some_and(|n| n.max_values() > 1))
            });
            match arg {
                Some(arg) => values(arg, "", &mut completion),
                None => None,
            }
        }
    };
    (completion, names)
}

/// The names of `names` in the cluster the given flags point at (empty when it cannot be asked).
async fn cluster_names(names: Names, given: &[(String, String)]) -> Vec<String> {
    let flag = |id: &str| {
        given
            .iter()
            .rev()
            .find(|(k, _)| k == id)
            .map(|(_, v)| v.clone())
    };
    let request_timeout = flag("request_timeout")
        .and_then(|t| RequestTimeout::parse(&t).ok())
        .filter(|t| t.limit().is_some())
        .or_else(|| RequestTimeout::parse(LIST_TIMEOUT).ok())
        .unwrap_or_default();
    let args = KubeArgs {
        kubeconfig: flag("kubeconfig").map(PathBuf::from),
        context: flag("context"),
        namespace: flag("namespace"),
        impersonate: flag("impersonate"),
        impersonate_groups: given
            .iter()
            .filter(|(k, _)| k == "impersonate_groups")
            .map(|(_, v)| v.clone())
            .collect(),
        request_timeout,
    };
    match names {
        Names::Contexts => contexts(args.kubeconfig.as_deref()),
        Names::Apps => list(&args, |c| Api::<App>::namespaced(c.client, &c.namespace)).await,
        Names::Canaries => list(&args, |c| Api::<Canary>::namespaced(c.client, &c.namespace)).await,
        Names::Projects => list(&args, |c| Api::<Project>::all(c.client)).await,
        Names::Namespaces => list(&args, |c| Api::<Namespace>::all(c.client)).await,
    }
}

/// The names of the objects `api` lists in the cluster `args` point at (none when it cannot be
/// asked).
async fn list<K>(args: &KubeArgs, api: impl FnOnce(KubeContext) -> Api<K>) -> Vec<String>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let Ok(ctx) = args.connect().await else {
        return Vec::new();
    };
    api(ctx)
        .list_metadata(&ListParams::default())
        .await
        .map(|list| {
            list.items
                .into_iter()
                .filter_map(|o| o.metadata.name)
                .collect()
        })
        .unwrap_or_default()
}

/// The context names of the kubeconfig kubectl would read.
fn contexts(kubeconfig: Option<&std::path::Path>) -> Vec<String> {
    let config = match kubeconfig {
        Some(path) => kube::config::Kubeconfig::read_from(path),
        None => kube::config::Kubeconfig::read(),
    };
    config
        .map(|c| c.contexts.into_iter().map(|c| c.name).collect())
        .unwrap_or_default()
}

/// Completes the last of `words` (the words after `kubectl gitops`).
pub async fn complete(words: &[String]) -> Completion {
    let mut root = crate::cli::Cli::command();
    root.build();
    let current = words.last().map_or("", String::as_str);
    let walk = walk(&root, words);
    let (mut completion, names) = static_candidates(&walk, current);
    if let Some(names) = names {
        let prefix = match &walk.target {
            Target::Value(_, prefix) => prefix.clone(),
            _ => String::new(),
        };
        completion.candidates.extend(
            cluster_names(names, &walk.given)
                .await
                .into_iter()
                .map(|name| (format!("{prefix}{name}"), String::new())),
        );
    }
    completion
        .candidates
        .retain(|(candidate, _)| candidate.starts_with(current));
    completion
}

/// Answers `kubectl-gitops __complete WORDS…` in cobra's format.
pub async fn run(words: &[String], out: &mut dyn Write) -> std::io::Result<()> {
    let completion = complete(words).await;
    for (candidate, description) in &completion.candidates {
        if description.is_empty() {
            writeln!(out, "{candidate}")?;
        } else {
            writeln!(out, "{candidate}\t{description}")?;
        }
    }
    writeln!(out, ":{}", completion.directive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        let mut words: Vec<String> = line.split(' ').map(str::to_owned).collect();
        if line.is_empty() {
            words = vec![String::new()];
        }
        words
    }

    async fn offered(line: &str) -> Vec<String> {
        complete(&words(line))
            .await
            .candidates
            .into_iter()
            .map(|(c, _)| c)
            .collect()
    }

    #[tokio::test]
    async fn subcommands_complete_from_the_cli_definition() {
        assert_eq!(offered("sy").await, ["sync"]);
        let all = offered("").await;
        for verb in ["app", "sync", "diff", "status", "rollout", "completion"] {
            assert!(all.iter().any(|c| c == verb), "{verb} in {all:?}");
        }
        assert!(!all.iter().any(|c| c == COMMAND), "{all:?}");
        assert_eq!(offered("rollout pro").await, ["promote"]);
        assert_eq!(offered("-n shop rollout pa").await, ["pause"]);
    }

    #[tokio::test]
    async fn flags_complete_with_globals_and_without_those_given() {
        let flags = offered("sync web --").await;
        for flag in [
            "--dry-run",
            "--wait",
            "--timeout",
            "--namespace",
            "--request-timeout",
        ] {
            assert!(flags.iter().any(|c| c == flag), "{flag} in {flags:?}");
        }
        let again = offered("sync web --wait --").await;
        assert!(!again.iter().any(|c| c == "--wait"), "{again:?}");
        assert_eq!(offered("sync web --dry").await, ["--dry-run"]);
    }

    #[tokio::test]
    async fn values_complete_from_value_enums_and_paths_from_files() {
        assert_eq!(offered("status -o y").await, ["yaml"]);
        assert_eq!(offered("status --output=j").await, ["--output=json"]);
        assert_eq!(offered("completion kubectl").await, ["kubectl-plugin"]);
        let path = complete(&words("--kubeconfig ")).await;
        assert_eq!(path.directive, FILES, "{path:?}");
        assert!(path.candidates.is_empty());
        let verify = complete(&words("verify ")).await;
        assert_eq!(verify.directive, FILES, "{verify:?}");
        let mut root = crate::cli::Cli::command();
        root.build();
        let (app, names) = static_candidates(&walk(&root, &words("sync ")), "");
        assert_eq!((app.directive, names), (NO_FILES, Some(Names::Apps)));
    }

    #[test]
    fn names_come_from_the_cluster_for_the_arguments_that_name_objects() {
        let mut root = crate::cli::Cli::command();
        root.build();
        let name_of = |line: &str| {
            let walk = walk(&root, &words(line));
            match walk.target {
                Target::Word(cmd, positional) => {
                    let arg = cmd.get_positionals().nth(positional).expect("a positional");
                    names_for(&walk.path, arg)
                }
                Target::Value(arg, _) => names_for(&walk.path, arg),
                Target::Flag(_) => None,
            }
        };
        assert_eq!(name_of("sync "), Some(Names::Apps));
        assert_eq!(name_of("-n shop history "), Some(Names::Apps));
        assert_eq!(name_of("rollout promote "), Some(Names::Canaries));
        assert_eq!(name_of("project get "), Some(Names::Projects));
        assert_eq!(name_of("status -n "), Some(Names::Namespaces));
        assert_eq!(name_of("--context "), Some(Names::Contexts));
        assert_eq!(name_of("app add web --project "), Some(Names::Projects));
    }

    #[tokio::test]
    async fn the_answer_ends_with_cobras_directive() {
        let mut out = Vec::new();
        run(&words("ver"), &mut out).await.expect("writes to a Vec");
        let text = String::from_utf8(out).expect("utf-8");
        let mut lines = text.lines();
        assert!(
            lines.next().is_some_and(|l| l.starts_with("verify\t")),
            "{text}"
        );
        assert!(
            lines.next().is_some_and(|l| l.starts_with("version\t")),
            "{text}"
        );
        assert_eq!(lines.next(), Some(":4"), "{text}");
    }
}
