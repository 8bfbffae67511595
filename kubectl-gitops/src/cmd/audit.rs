//! `kubectl gitops audit`: the writes the admission webhook refused, admitted in warn mode or
//! admitted by break-glass, oldest first.

use std::io::Write;

use anyhow::Context as _;
use clap::Args;
use kube::Api;
use kube::api::ListParams;
use shared::audit::AuditRecord;

use crate::exit::Code;
use crate::kube_context::KubeContext;
use crate::output::{self, Format, short};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    kubectl gitops audit -n shop\n  \
    kubectl gitops audit -A --since 24h --user alice@example.com\n  \
    kubectl gitops audit --object deployment/web --diff\n  \
    kubectl gitops audit -A -o json")]
pub struct AuditArgs {
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only records newer than a duration (90s, 30m, 2h, 7d) or an RFC 3339 time.
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,
    /// Only writes by this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Only writes to this object: NAME or KIND/NAME (kind case-insensitive).
    #[arg(long, value_name = "[KIND/]NAME")]
    pub object: Option<String>,
    /// Print the attempted change of each record (Secret values redacted).
    #[arg(long)]
    pub diff: bool,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Format,
}

pub async fn run(args: AuditArgs, ctx: &KubeContext, out: &mut dyn Write) -> anyhow::Result<Code> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let api: Api<AuditRecord> = if args.all_namespaces {
        Api::all(ctx.client.clone())
    } else {
        Api::namespaced(ctx.client.clone(), &ctx.namespace)
    };
    let where_ = if args.all_namespaces {
        "all namespaces".to_owned()
    } else {
        format!("namespace {}", ctx.namespace)
    };
    let mut records: Vec<AuditRecord> = api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("cannot list the audit records of {where_}"))?
        .items
        .into_iter()
        .filter(|r| matches(r, &args, since))
        .collect();
    records.sort_by(|a, b| a.spec.time.cmp(&b.spec.time));
    match args.output {
        Format::Table | Format::Wide => {
            if records.is_empty() {
                eprintln!("no audit records in {where_}");
                return Ok(Code::Success);
            }
            let wide = args.output == Format::Wide;
            let mut headers = vec![];
            if args.all_namespaces {
                headers.push("NAMESPACE");
            }
            headers.extend([
                "TIME", "OUTCOME", "USER", "VERB", "OBJECT", "REASON", "COMMIT",
            ]);
            if wide {
                headers.push("MESSAGE");
            }
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|r| {
                    let s = &r.spec;
                    let mut row = vec![];
                    if args.all_namespaces {
                        row.push(r.metadata.namespace.clone().unwrap_or_default());
                    }
                    row.extend([
                        s.time.clone(),
                        format!("{:?}", s.outcome),
                        match &s.impersonated_by {
                            Some(by) => format!("{} (by {by})", s.user),
                            None => s.user.clone(),
                        },
                        s.verb.clone(),
                        format!("{}/{}", s.object.kind, s.object.name),
                        s.reason.clone(),
                        s.claimed_commit
                            .as_deref()
                            .map(|c| if wide { c } else { short(c) })
                            .unwrap_or("-")
                            .to_owned(),
                    ]);
                    if wide {
                        row.push(s.message.clone());
                    }
                    row
                })
                .collect();
            output::table(out, &headers, &rows)?;
            if args.diff {
                for r in &records {
                    writeln!(
                        out,
                        "\n# {} {} {} by {} ({})",
                        r.spec.time,
                        r.spec.verb,
                        r.spec.object.display_name(),
                        r.spec.user,
                        r.spec.reason
                    )?;
                    write!(out, "{}", r.spec.diff)?;
                }
            }
        }
        format => output::structured(out, format, &records)?,
    }
    Ok(Code::Success)
}

fn matches(record: &AuditRecord, args: &AuditArgs, since: Option<jiff::Timestamp>) -> bool {
    let s = &record.spec;
    if let Some(user) = &args.user
        && &s.user != user
    {
        return false;
    }
    if let Some(object) = &args.object {
        let (kind, name) = match object.split_once('/') {
            Some((kind, name)) => (Some(kind), name),
            None => (None, object.as_str()),
        };
        let kind_ok = kind.is_none_or(|k| {
            k.eq_ignore_ascii_case(&s.object.kind) || k.eq_ignore_ascii_case(&s.object.resource)
        });
        if !kind_ok || s.object.name != name {
            return false;
        }
    }
    if let Some(since) = since {
        let at: Option<jiff::Timestamp> = s.time.parse().ok();
        if at.is_none_or(|at| at < since) {
            return false;
        }
    }
    true
}

/// `90s`, `30m`, `2h`, `7d` before now, or an RFC 3339 time.
pub(crate) fn parse_since(text: &str) -> anyhow::Result<jiff::Timestamp> {
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Ok(at);
    }
    let invalid = || {
        anyhow::anyhow!(
            "--since {text:?} is neither a duration (90s, 30m, 2h, 7d) nor an RFC 3339 time"
        )
    };
    let unit = text.chars().last().ok_or_else(invalid)?;
    let amount: i64 = text[..text.len() - unit.len_utf8()]
        .parse()
        .map_err(|_| invalid())?;
    let seconds = match unit {
        's' => amount,
        'm' => amount * 60,
        'h' => amount * 3600,
        'd' => amount * 86400,
        _ => return Err(invalid()),
    };
    Ok(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times_and_names_the_flag_when_wrong() {
        let hour_ago = parse_since("1h").expect("a duration");
        let delta = jiff::Timestamp::now().duration_since(hour_ago).as_secs();
        assert!((3599..=3601).contains(&delta), "{delta}");
        assert_eq!(
            parse_since("2026-01-02T03:04:05Z")
                .expect("a time")
                .to_string(),
            "2026-01-02T03:04:05Z"
        );
        let err = parse_since("yesterday").expect_err("not a duration");
        assert!(err.to_string().contains("--since \"yesterday\""), "{err}");
    }
}
