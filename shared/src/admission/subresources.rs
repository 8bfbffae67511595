//! Every write path and its verdict: the object itself, each subresource, and CONNECT (exec,
//! attach, port-forward, proxy). [`TABLE`] is the one list; the decision routes by it and the
//! README shows it (a test keeps the two equal).

use super::review::{AdmissionRequest, Operation};
use super::verdict::{Reason, Verdict, Violation, violation};
use super::{Knowledge, Scope, rollouts};
use crate::project::ConnectPolicy;

/// How a write path is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The object itself: the contract, condition by condition.
    Object,
    /// Replicas through the scale subresource: decided on the live parent with the new count.
    Scale,
    /// A pod's eviction: decided as a delete of the live pod.
    Eviction,
    /// A Canary's status: it may not move the stable commit back.
    CanaryStatus,
    /// Status of any other kind: sent only when the write also changes metadata (labels,
    /// annotations, owner references, finalizers), which some kinds keep from a status write;
    /// decided as a write of the object.
    StatusMetadata,
    /// Admitted without a record.
    Admit,
    /// Controllers only (kubelets, the scheduler, kube-system service accounts); anyone else is
    /// refused, members of the break-glass group admitted and recorded.
    Controllers,
    /// A connection into a pod: allowed where every project deploying to the namespace allows
    /// it, refused otherwise; recorded either way.
    Connect,
    /// Audit records: created by the webhook, never changed, deleted only with their namespace.
    Records,
    /// Never sent to the webhook by its configuration.
    NotSent,
}

/// One row of the table: which writes, and how they are decided in an enforced namespace.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Operations, as the review names them.
    pub operations: &'static str,
    /// `group/resource/subresource`; `*` matches any, an empty group is the core group.
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    pub rule: Rule,
    /// The verdict in words, for the README.
    pub verdict: &'static str,
}

const GITOPS: &str = crate::provenance::API_GROUP;

/// Every write path, most specific first; the first row that matches a review decides it.
pub const TABLE: &[Entry] = &[
    Entry {
        operations: "CREATE",
        group: GITOPS,
        resource: "auditrecords",
        subresource: "",
        rule: Rule::NotSent,
        verdict: "not sent: the webhook writes its records itself",
    },
    Entry {
        operations: "UPDATE, DELETE",
        group: GITOPS,
        resource: "auditrecords",
        subresource: "",
        rule: Rule::Records,
        verdict: "refused (`record-kept`); controllers delete them with their namespace",
    },
    Entry {
        operations: "CREATE, UPDATE, DELETE",
        group: GITOPS,
        resource: "apps",
        subresource: "",
        rule: Rule::Object,
        verdict: "the app's project must permit it where it lives, its repository, branch and \
                  destination (`project-forbids`, `unknown-project`); its repository, branch, \
                  path, destination and project change only from Git (`app-repointed`); \
                  deleting it leaves its objects guarded (`unknown-app`)",
    },
    Entry {
        operations: "UPDATE",
        group: GITOPS,
        resource: "apps",
        subresource: "status",
        rule: Rule::Object,
        verdict: "`lastSyncedCommit` only on the branch, never back and never cleared, the first \
                  of what the head declares; a `rollback` only by the break-glass group, \
                  recorded (`status-not-explained`)",
    },
    Entry {
        operations: "UPDATE",
        group: GITOPS,
        resource: "canaries",
        subresource: "status",
        rule: Rule::CanaryStatus,
        verdict: "`stableCommit` only on the branch and never back; a rollout under way of a \
                  canary commit on the branch, newer than the stable one (or the recorded \
                  rollback), started on a commit that changes the target's pod template \
                  (`status-not-explained`); steps, weights and pauses are the rollout's",
    },
    Entry {
        operations: "UPDATE",
        group: "*",
        resource: "*",
        subresource: "status",
        rule: Rule::StatusMetadata,
        verdict: "status belongs to the server and controllers: sent only when the write also \
                  changes labels, annotations, owner references or finalizers (which a status \
                  write keeps for some kinds), then decided as a write of the object",
    },
    Entry {
        operations: "CREATE, UPDATE, DELETE",
        group: "*",
        resource: "events",
        subresource: "",
        rule: Rule::NotSent,
        verdict: "not sent: Events report, they are not what Git declares",
    },
    Entry {
        operations: "CREATE, UPDATE, DELETE",
        group: "coordination.k8s.io|authorization.k8s.io|authentication.k8s.io",
        resource: "*",
        subresource: "",
        rule: Rule::NotSent,
        verdict: "not sent: Leases and access reviews are runtime state",
    },
    Entry {
        operations: "CREATE, UPDATE, DELETE",
        group: "*",
        resource: "*",
        subresource: "",
        rule: Rule::Object,
        verdict: "the contract: traceable writes pass, controllers may set what Git leaves \
                  unset, objects still on the branch are not deleted (a DELETECOLLECTION is \
                  decided object by object)",
    },
    Entry {
        operations: "UPDATE",
        group: "",
        resource: "namespaces",
        subresource: "finalize",
        rule: Rule::StatusMetadata,
        verdict: "as a status write (a Namespace's finalize keeps label changes too; a change of \
                  its enforcement label goes to the switch's webhook)",
    },
    Entry {
        operations: "UPDATE",
        group: "*",
        resource: "*",
        subresource: "scale",
        rule: Rule::Scale,
        verdict: "replicas Git sets stay Git's (`scale-managed`), a rollout's share excepted; \
                  controllers (an HPA) scale what Git leaves unset",
    },
    Entry {
        operations: "CREATE",
        group: "",
        resource: "pods",
        subresource: "eviction",
        rule: Rule::Eviction,
        verdict: "decided as a delete of the pod: a pod no sync wrote is evicted (a disruption its \
                  PodDisruptionBudget governs, a drain); one the branch still declares only by \
                  controllers or break-glass (`delete-on-branch`)",
    },
    Entry {
        operations: "CREATE",
        group: "",
        resource: "pods",
        subresource: "binding",
        rule: Rule::Controllers,
        verdict: "the scheduler only (`subresource-denied`)",
    },
    Entry {
        operations: "UPDATE",
        group: "",
        resource: "pods",
        subresource: "ephemeralcontainers",
        rule: Rule::Controllers,
        verdict: "refused (`subresource-denied`): Git never declares a debug container",
    },
    Entry {
        operations: "UPDATE",
        group: "",
        resource: "pods",
        subresource: "resize",
        rule: Rule::Controllers,
        verdict: "refused (`subresource-denied`): a pod's resources are its template's",
    },
    Entry {
        operations: "CREATE",
        group: "",
        resource: "serviceaccounts",
        subresource: "token",
        rule: Rule::Controllers,
        verdict: "kubelets and controllers only (`subresource-denied`): a token acts as the \
                  workload",
    },
    Entry {
        operations: "CONNECT",
        group: "",
        resource: "pods",
        subresource: "exec|attach|portforward|proxy",
        rule: Rule::Connect,
        verdict: "refused (`connect-denied`) unless every project deploying to the namespace \
                  sets `connect: Allow`; recorded either way",
    },
    Entry {
        operations: "CONNECT",
        group: "",
        resource: "services",
        subresource: "proxy",
        rule: Rule::Connect,
        verdict: "as exec into a pod",
    },
    Entry {
        operations: "CREATE, UPDATE, DELETE, CONNECT",
        group: "*",
        resource: "*",
        subresource: "*",
        rule: Rule::Controllers,
        verdict: "any other subresource: controllers only (`subresource-denied`)",
    },
];

impl Entry {
    fn matches(&self, request: &AdmissionRequest) -> bool {
        let r = &request.resource;
        let sub = request.subresource().unwrap_or_default();
        let one_of =
            |pattern: &str, value: &str| pattern == "*" || pattern.split('|').any(|p| p == value);
        let op = request.operation.as_str();
        self.operations.split(", ").any(|o| o == op)
            && one_of(self.group, &r.group)
            && one_of(self.resource, &r.resource)
            && match self.subresource {
                "" => sub.is_empty(),
                pattern => !sub.is_empty() && one_of(pattern, sub),
            }
    }
}

/// How the write of `request` is decided.
pub fn rule(request: &AdmissionRequest) -> Rule {
    TABLE
        .iter()
        .find(|e| e.matches(request))
        .map(|e| match e.rule {
            // Sent after all (a configuration of another version): decided as the object.
            Rule::NotSent if request.subresource().is_none() => Rule::Object,
            Rule::NotSent => Rule::Admit,
            rule => rule,
        })
        .unwrap_or(Rule::Controllers)
}

/// The table as the README shows it (Markdown).
pub fn markdown_table() -> String {
    let mut text = String::from(
        "| operation | resource | subresource | verdict in an enforced namespace (and for cluster-scoped objects an app manages) |\n| --- | --- | --- | --- |\n",
    );
    for e in TABLE {
        let resource = match e.group {
            "*" | "" => e.resource.to_owned(),
            group if group.contains('|') => {
                format!("{} of {}", e.resource, group.replace('|', ", "))
            }
            group => format!("{}.{group}", e.resource),
        };
        let subresource = match e.subresource {
            "" => "—".to_owned(),
            s => s.replace('|', ", "),
        };
        text.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            e.operations,
            resource.replace('|', ", "),
            subresource,
            e.verdict
        ));
    }
    text
}

/// Decides a write path other than the object or its scale.
pub(crate) fn decide(
    rule: Rule,
    request: &AdmissionRequest,
    scope: Scope,
    knowledge: &dyn Knowledge,
    controller: bool,
) -> Result<Verdict, Violation> {
    match rule {
        Rule::Object
        | Rule::Scale
        | Rule::Eviction
        | Rule::StatusMetadata
        | Rule::Admit
        | Rule::NotSent => Ok(Verdict::allow(Reason::Subresource)),
        Rule::CanaryStatus => rollouts::status(request, knowledge),
        Rule::Controllers if controller => Ok(Verdict::allow(Reason::Subresource)),
        Rule::Controllers => Err(violation(
            Reason::SubresourceDenied,
            format!(
                "{} of {} is written only by controllers",
                request.subresource().unwrap_or("this subresource"),
                request.resource.resource
            ),
        )
        .for_members()),
        Rule::Records => records(request, controller),
        Rule::Connect => connect(request, scope, knowledge),
    }
}

/// Audit records are kept as the webhook wrote them.
fn records(request: &AdmissionRequest, controller: bool) -> Result<Verdict, Violation> {
    match request.operation {
        Operation::Create => Ok(Verdict::allow(Reason::Unmanaged)),
        Operation::Delete if controller => Ok(Verdict::allow(Reason::Controller)),
        _ => Err(violation(
            Reason::RecordKept,
            "audit records are never changed, and deleted only with their namespace",
        )
        .unbreakable()),
    }
}

/// exec, attach, port-forward and proxy: allowed where every project that deploys to the
/// namespace allows connections, and kept for audit either way.
fn connect(
    request: &AdmissionRequest,
    scope: Scope,
    knowledge: &dyn Knowledge,
) -> Result<Verdict, Violation> {
    let namespace = request.namespace().unwrap_or_default();
    let what = format!(
        "{} into {} {namespace}/{}",
        request.subresource().unwrap_or("connect"),
        request
            .resource
            .resource
            .strip_suffix('s')
            .unwrap_or(&request.resource.resource),
        request.name()
    );
    let projects: Vec<_> = knowledge
        .projects()
        .into_iter()
        .filter(|p| p.permits_destination(namespace).is_ok())
        .collect();
    let denying: Vec<&str> = projects
        .iter()
        .filter(|p| p.spec.connect != ConnectPolicy::Allow)
        .map(|p| p.name())
        .collect();
    if scope == Scope::Enforce && !projects.is_empty() && denying.is_empty() {
        return Ok(Verdict::recorded(
            Reason::ConnectAllowed,
            format!(
                "{what} by {}: allowed by its projects",
                request.user_info.username
            ),
        ));
    }
    let why = if projects.is_empty() {
        format!("{what}: no project deploys to namespace {namespace}")
    } else {
        format!(
            "{what}: project {} does not allow connections (connect: Allow)",
            denying.join(", ")
        )
    };
    Err(violation(Reason::ConnectDenied, why).for_members())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(operation: &str, group: &str, resource: &str, sub: &str) -> AdmissionRequest {
        serde_json::from_value(serde_json::json!({
            "uid": "1", "operation": operation, "name": "x", "namespace": "shop",
            "kind": {"group": group, "version": "v1", "kind": "X"},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "subResource": sub,
        }))
        .expect("a request")
    }

    #[test]
    fn every_write_path_has_a_rule() {
        for (op, group, resource, sub, expected) in [
            ("UPDATE", "apps", "deployments", "", Rule::Object),
            ("DELETE", "", "configmaps", "", Rule::Object),
            ("UPDATE", "apps", "deployments", "scale", Rule::Scale),
            ("UPDATE", "example.com", "widgets", "scale", Rule::Scale),
            (
                "UPDATE",
                "",
                "pods",
                "ephemeralcontainers",
                Rule::Controllers,
            ),
            ("UPDATE", "", "pods", "resize", Rule::Controllers),
            ("CREATE", "", "pods", "binding", Rule::Controllers),
            ("CREATE", "", "pods", "eviction", Rule::Eviction),
            ("CREATE", "", "serviceaccounts", "token", Rule::Controllers),
            ("CONNECT", "", "pods", "exec", Rule::Connect),
            ("CONNECT", "", "pods", "attach", Rule::Connect),
            ("CONNECT", "", "pods", "portforward", Rule::Connect),
            ("CONNECT", "", "services", "proxy", Rule::Connect),
            ("UPDATE", GITOPS, "canaries", "status", Rule::CanaryStatus),
            ("UPDATE", GITOPS, "auditrecords", "", Rule::Records),
            ("DELETE", GITOPS, "auditrecords", "", Rule::Records),
            ("UPDATE", "", "pods", "status", Rule::StatusMetadata),
            (
                "UPDATE",
                "apps",
                "deployments",
                "status",
                Rule::StatusMetadata,
            ),
            ("CREATE", "", "events", "", Rule::Object),
            ("UPDATE", "coordination.k8s.io", "leases", "", Rule::Object),
            (
                "UPDATE",
                "example.com",
                "widgets",
                "frobnicate",
                Rule::Controllers,
            ),
            ("CONNECT", "", "nodes", "proxy", Rule::Controllers),
        ] {
            assert_eq!(
                rule(&request(op, group, resource, sub)),
                expected,
                "{op} {group}/{resource}/{sub}"
            );
        }
    }

    #[test]
    fn the_readme_shows_the_table() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .unwrap_or_default();
        assert!(
            readme.contains(&markdown_table()),
            "README.md does not show the table of write paths; paste this:\n{}",
            markdown_table()
        );
    }
}
