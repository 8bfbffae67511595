//! Break-glass: a member of the break-glass group may write outside Git when the object says why
//! and until when; such a write is admitted with a warning, recorded, and shown as drift until
//! the next sync takes the object back.

use serde_json::Value;

use super::policy::Policy;
use super::verdict::BreakGlass;

/// Annotation with the reason of a break-glass write; required with [`BREAK_GLASS_EXPIRES`].
pub const BREAK_GLASS_REASON: &str = "gitops.kubectl-gitops.dev/break-glass-reason";
/// Annotation with the RFC 3339 time until which a break-glass write stands.
pub const BREAK_GLASS_EXPIRES: &str = "gitops.kubectl-gitops.dev/break-glass-expires";

/// Annotation keys that the decision reads; they must stay inside the project's API group.
pub const DECISION_ANNOTATIONS: [&str; 2] = [BREAK_GLASS_REASON, BREAK_GLASS_EXPIRES];

/// Whether an object carries break-glass annotations (a break-glass write left it so, or one is
/// being attempted).
pub fn has_break_glass_marks(object: &Value) -> bool {
    DECISION_ANNOTATIONS
        .iter()
        .any(|k| object["metadata"]["annotations"].get(k).is_some())
}

/// Reads and checks the break-glass annotations of the object written (or deleted).
pub(crate) fn check(
    object: Option<&Value>,
    policy: &Policy,
    now: jiff::Timestamp,
) -> Result<BreakGlass, String> {
    let annotations = object.map(|o| &o["metadata"]["annotations"]);
    let get = |key: &str| {
        annotations
            .and_then(|a| a[key].as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let reason = get(BREAK_GLASS_REASON)
        .ok_or_else(|| format!("annotation {BREAK_GLASS_REASON} must give the reason"))?;
    let expires = get(BREAK_GLASS_EXPIRES).ok_or_else(|| {
        format!("annotation {BREAK_GLASS_EXPIRES} must give an RFC 3339 expiry time")
    })?;
    let at: jiff::Timestamp = expires.parse().map_err(|e| {
        format!("annotation {BREAK_GLASS_EXPIRES}={expires:?} is not an RFC 3339 time: {e}")
    })?;
    if at <= now {
        return Err(format!("the expiry {expires} has passed"));
    }
    let max =
        jiff::SignedDuration::try_from(policy.break_glass_max).unwrap_or(jiff::SignedDuration::MAX);
    if at.duration_since(now) > max {
        return Err(format!(
            "the expiry {expires} is more than {}s away (the configured maximum)",
            policy.break_glass_max.as_secs()
        ));
    }
    Ok(BreakGlass { reason, expires })
}
