//! The write of an object (namespaced or cluster-scoped): whether what it brings is what the
//! protected branch says, condition by condition of the contract.

use std::sync::Arc;

use serde_json::{Value, json};

use super::Knowledge;
use super::policy;
use super::review::{AdmissionRequest, Operation, Write};
use super::verdict::{Reason, Verdict, Violation, short, violation};
use super::walk::{ChangeKind, Ownership, unexplained_changes};
use crate::app::App;
use crate::canary;
use crate::manifest::Manifest;
use crate::provenance::{APP_ANNOTATION, Provenance};

pub(crate) struct Decision<'a> {
    pub request: &'a AdmissionRequest,
    pub write: &'a Write<'a>,
    pub knowledge: &'a dyn Knowledge,
    pub controller: bool,
    /// The writer is a member of the break-glass group.
    pub member: bool,
}

impl<'a> Decision<'a> {
    pub fn new(
        request: &'a AdmissionRequest,
        write: &'a Write<'a>,
        policy: &super::Policy,
        knowledge: &'a dyn Knowledge,
    ) -> Self {
        Decision {
            request,
            write,
            knowledge,
            controller: policy.is_controller(&request.user_info),
            member: policy.may_break_glass(&request.user_info),
        }
    }
}

impl Decision<'_> {
    /// The verdict on the object itself (or its scale) when Git explains it, else why not.
    pub fn object(&self) -> Result<Verdict, Violation> {
        let old_provenance = self.write.old.as_deref().and_then(Provenance::read);
        let new_provenance = self.write.new.as_deref().and_then(Provenance::read);
        if self.write.operation == Operation::Delete {
            return self.delete(old_provenance);
        }
        // Objects a controller derives from a managed one (a ReplicaSet from a Deployment) carry
        // copies of its annotations; the owner is what Git governs. (An owner the write itself
        // adds to an object that had none does not make it derived.)
        if self.controller
            && self.write.new.as_deref().is_some_and(has_controller_owner)
            && self.write.old.as_deref().is_none_or(has_controller_owner)
        {
            return Ok(Verdict::allow(Reason::Controller));
        }
        if let Some(old) = self.write.old.as_deref()
            && !old["metadata"]["deletionTimestamp"].is_null()
        {
            return self.terminating(old);
        }
        // Provenance is the sync's to write: a controller does not change it, and nobody takes
        // away the App uid that ties an object to the App that wrote it.
        if let (Some(old), Some(new)) = (&old_provenance, &new_provenance)
            && ((self.controller && old != new) || (old.app_uid.is_some() && new.app_uid.is_none()))
        {
            return Err(violation(
                Reason::ProvenanceRemoved,
                "the write changes the provenance of a managed object, which only a sync writes",
            ));
        }
        let Some(provenance) = new_provenance else {
            if old_provenance.is_some() {
                return Err(violation(
                    Reason::ProvenanceRemoved,
                    "the write removes the provenance of a managed object",
                ));
            }
            if self.controller {
                return Ok(Verdict::allow(Reason::Controller));
            }
            return Err(violation(
                Reason::NoProvenance,
                "the object carries no provenance: it was not written by a sync from Git",
            ));
        };
        // Stripping an object's managed fields would make the next apply's manager own fields
        // Git later drops, so they would never be removed.
        if !self.controller
            && old_provenance.is_some()
            && self.write.old.as_deref().is_some_and(has_managed_fields)
            && !self.write.new.as_deref().is_some_and(has_managed_fields)
        {
            return Err(violation(
                Reason::FieldChanged,
                "the write strips the object's managed fields (metadata.managedFields)",
            ));
        }
        match self.managed_write(&provenance, old_provenance.as_ref()) {
            // A controller is held to the fields Git sets; whether the app, its commit or its
            // mirror are at hand is not its concern.
            Err(v) if self.controller && !v.reason.is_about_content() => {
                Ok(Verdict::allow(Reason::Controller))
            }
            // Only the break-glass group marks an object as broken into (the sync takes the
            // marks away): a write Git explains otherwise may not add them.
            Ok(_) if !self.member && !self.controller && self.adds_break_glass_marks() => {
                Err(violation(
                    Reason::AnnotationChanged,
                    "the break-glass annotations are set only by members of the break-glass group",
                ))
            }
            other => other,
        }
    }

    /// An object being deleted (finalizers hold it): controllers finish the job; anyone else
    /// may only let finalizers go, not change what the object is meanwhile.
    fn terminating(&self, old: &Value) -> Result<Verdict, Violation> {
        if self.controller {
            return Ok(Verdict::allow(Reason::Terminating));
        }
        let Some(new) = self.write.new.as_deref() else {
            return Ok(Verdict::allow(Reason::Terminating));
        };
        let finalizers = |v: &Value| -> Vec<String> {
            v["metadata"]["finalizers"]
                .as_array()
                .map(|f| {
                    f.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (before, after) = (finalizers(old), finalizers(new));
        let only_released = after.iter().all(|f| before.contains(f));
        let rest = |v: &Value| {
            let mut v = crate::normalise::for_comparison(v);
            if let Some(metadata) = v["metadata"].as_object_mut() {
                metadata.remove("finalizers");
            }
            v
        };
        if only_released && rest(old) == rest(new) {
            return Ok(Verdict::allow(Reason::Terminating));
        }
        Err(violation(
            Reason::FieldChanged,
            "the object is being deleted: a write may only remove its finalizers",
        ))
    }

    fn delete(&self, provenance: Option<Provenance>) -> Result<Verdict, Violation> {
        if self.controller {
            // Garbage collection and namespace deletion.
            return Ok(Verdict::allow(Reason::Controller));
        }
        let Some(provenance) = provenance else {
            // What no sync wrote may hold what does not come back (a claim a StatefulSet made, a
            // Secret an operator keeps): controllers and break-glass delete it. A Pod (drained,
            // restarted) and a Job a CronJob started (stuck under `Forbid`) are runs, not state.
            let kind = (
                self.request.kind.group.as_str(),
                self.request.kind.kind.as_str(),
            );
            let run = match kind {
                ("", "Pod") => true,
                ("batch", "Job") => self
                    .write
                    .old
                    .as_deref()
                    .is_some_and(|o| controller_owner_kind(o) == Some("CronJob")),
                _ => false,
            };
            if run {
                return Ok(Verdict::allow(Reason::Unmanaged));
            }
            return Err(violation(
                Reason::NoProvenance,
                "the object carries no provenance: in an enforced namespace only controllers (and \
                 break-glass) delete what no sync wrote, Pods and the Jobs of CronJobs excepted",
            ));
        };
        let app = super::app_of(self.knowledge, &provenance)
            .ok_or_else(|| self.unknown_app(&provenance))?;
        let head = self
            .knowledge
            .head_manifests(&app)
            .map_err(|e| violation(Reason::GitUnavailable, e).of(&app, Some(&provenance.commit)))?;
        let refused = |detail: String| {
            Err(Violation {
                fetch_may_help: true,
                ..violation(Reason::DeleteOnBranch, detail).of(&app, Some(&provenance.commit))
            })
        };
        if let Some(m) = head.iter().find(|m| self.declares(m, &app)) {
            // A rollback the app records (break-glass) prunes what its commit does not declare.
            let rolled_back_without_it = app
                .status
                .as_ref()
                .and_then(|s| s.rollback.as_deref())
                .and_then(|r| self.knowledge.app_manifests(&app, r).ok())
                .is_some_and(|at| !at.iter().any(|m| self.declares(m, &app)));
            if rolled_back_without_it {
                return Ok(Verdict::allow(Reason::Pruned));
            }
            return refused(format!(
                "the object is still declared in {} at the head of branch {}",
                m.location(),
                app.spec.branch
            ));
        }
        // A rollout's stable copy is Git's target at the stable commit while the rollout keeps
        // replicas on it.
        if let Some(namespace) = self.request.namespace()
            && self.is_deployment()
            && let Some(target) = canary::target_of_stable(self.request.name())
            && let Some(strategy) = self.knowledge.rollout(&app.key(), namespace, target)
            && let Some(status) = strategy.status.as_ref().filter(|s| s.in_rollout())
            && status.weight_in_force() < 100
        {
            // The sync deletes it as soon as the rollout ends: the Canary may be newer than
            // the webhook's copy.
            return refused(format!(
                "the object is the stable copy of Deployment {target}, which a rollout under way \
                 keeps replicas on"
            ))
            .map_err(|v| Violation {
                rollout_may_help: true,
                ..v
            });
        }
        Ok(Verdict::allow(Reason::Pruned))
    }

    /// Objects of an app that no longer exists stay as Git last set them: nobody but
    /// controllers and break-glass changes or deletes them, until an app of that name is defined
    /// again (whose project then governs them) or the namespace is deleted.
    fn unknown_app(&self, provenance: &Provenance) -> Violation {
        violation(
            Reason::UnknownApp,
            format!(
                "annotation {APP_ANNOTATION} names app {}, which does not exist{} (an app's objects \
                 stay guarded after the app is deleted; only its sync takes them over)",
                provenance.app,
                if self.knowledge.app(&provenance.app).is_some() {
                    " any more: an App of that name was defined again since"
                } else {
                    ""
                }
            ),
        )
    }

    fn managed_write(
        &self,
        provenance: &Provenance,
        old: Option<&Provenance>,
    ) -> Result<Verdict, Violation> {
        let commit = provenance.commit.as_str();
        let app = super::app_of(self.knowledge, provenance)
            .ok_or_else(|| self.unknown_app(provenance))?;
        let with = |v: Violation| v.of(&app, Some(commit));
        if let Some(old) = old
            && (old.app != provenance.app || super::app_of(self.knowledge, old).is_none())
        {
            self.handover(old, provenance)?;
        }
        // The trust root: the app's project permits the app as defined, and this object.
        let project = policy::project_of(self.knowledge, &app)?;
        policy::permits_object(
            &project,
            &app,
            &self.request.kind.group,
            &self.request.kind.kind,
            self.request.namespace(),
        )?;
        let git =
            |r: super::Lookup<bool>| r.map_err(|e| with(violation(Reason::GitUnavailable, e)));
        if !git(self.knowledge.has_commit(&app, commit))? {
            let full_id = commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit());
            return Err(Violation {
                fetch_may_help: full_id,
                ..with(violation(
                    Reason::UnknownCommit,
                    format!("commit {commit} does not exist in {}", app.spec.repo_url),
                ))
            });
        }
        let head = self
            .knowledge
            .branch_head(&app)
            .map_err(|e| with(violation(Reason::GitUnavailable, e)))?;
        if !git(self.knowledge.is_ancestor(&app, commit, &head))? {
            let branches = self.knowledge.branches_with(&app, commit);
            let where_ = if branches.is_empty() {
                "on no branch".to_owned()
            } else {
                format!("only on {}", branches.join(", "))
            };
            return Err(Violation {
                fetch_may_help: true,
                ..with(violation(
                    Reason::NotOnBranch,
                    format!(
                        "commit {commit} is not merged into branch {} ({where_})",
                        app.spec.branch
                    ),
                ))
            });
        }
        // The stable copy of a rollout runs the commit the rollout started from, which may
        // predate the project's signature policy; the rollout's canary commit must satisfy it.
        match self.rollout_from(&app, commit) {
            Some(canary) => super::signed::check(self.knowledge, &project, &app, &canary)?,
            None => super::signed::check(self.knowledge, &project, &app, commit)?,
        }
        let path = crate::git::normalise_path(&provenance.source_path);
        let root = crate::git::normalise_path(&app.spec.path);
        let inside = root.is_empty() || path == root || path.starts_with(&format!("{root}/"));
        let manifests = self
            .knowledge
            .manifests(&app, commit, &path)
            .map_err(|e| with(violation(Reason::GitUnavailable, e)))?;
        let declared = manifests.iter().find(|m| self.declares(m, &app));
        // A rollout's stable copy is declared by its target at the stable commit.
        let stable = match declared {
            None if inside => self.stable_copy_of(&app, &manifests, commit, &path),
            _ => None,
        };
        let declared = declared.or(stable.as_ref().map(|(m, _)| m));
        let Some(declared) = declared.filter(|_| inside) else {
            return Err(Violation {
                // A stable copy written right after its rollout started.
                rollout_may_help: self.is_deployment()
                    && canary::target_of_stable(self.request.name()).is_some(),
                ..with(violation(
                    Reason::NotDeclared,
                    format!(
                        "{path} at commit {} of {} does not declare {}{}",
                        short(commit),
                        app.spec.repo_url,
                        self.request.object_name(),
                        if inside {
                            String::new()
                        } else {
                            format!(" (and is outside the app's path {})", app.spec.path)
                        }
                    ),
                ))
            });
        };

        if stable.is_none() {
            self.not_a_downgrade(&app, provenance, old, declared, &head)?;
        }

        // Condition 4: every change is explained by the manifest at that commit.
        let mut wanted = match &stable {
            Some((m, replicas)) => canary::stable_copy(&m.object, *replicas),
            None => declared.object.clone(),
        };
        crate::normalise::as_stored(&mut wanted);
        if stable.is_none()
            && let Some(replicas) = self.rollout_replicas(&app, declared)
        {
            // Git's spec holds the replicas; one that is not a map explains none of them.
            match wanted
                .as_object_mut()
                .map(|w| w.entry("spec").or_insert(Value::Null))
            {
                Some(spec @ Value::Null) => *spec = json!({"replicas": replicas}),
                Some(Value::Object(spec)) => {
                    spec.insert("replicas".into(), replicas.into());
                }
                _ => {}
            }
        }
        if let Some(ns) = self.request.namespace()
            && declared.namespace().is_none()
        {
            wanted["metadata"]["namespace"] = ns.into();
        }
        provenance.stamp(&mut wanted);
        let commit_changed = old.is_some_and(|o| o.commit != commit);
        let ownership = Ownership::of(self.write.new.as_deref(), self.write.scale);
        let changes = unexplained_changes(
            self.write.old.as_deref(),
            self.write.new.as_deref(),
            &wanted,
            self.controller,
            &ownership,
        );
        if let Some(first) = changes.first() {
            let reason = match first.kind {
                ChangeKind::Label => Reason::LabelChanged,
                ChangeKind::Annotation => Reason::AnnotationChanged,
                _ if self.write.scale => Reason::ScaleManaged,
                _ if commit_changed || old.is_none() => Reason::ContentDiffers,
                _ => Reason::FieldChanged,
            };
            // A Secret's values never reach a message: refusals become Events and records that
            // people who may not read Secrets can read.
            let secret = self.request.kind.group.is_empty() && self.request.kind.kind == "Secret";
            let listed: Vec<String> = changes
                .iter()
                .take(5)
                .map(|c| {
                    if secret {
                        c.redacted().describe()
                    } else {
                        c.describe()
                    }
                })
                .collect();
            let more = if changes.len() > 5 {
                format!(" and {} more", changes.len() - 5)
            } else {
                String::new()
            };
            return Err(Violation {
                // Replicas are the one field a rollout step sets.
                rollout_may_help: self.is_deployment()
                    && changes.iter().any(|c| c.path == "spec.replicas"),
                ..with(violation(
                    reason,
                    format!(
                        "{} at commit {}: {}{more}",
                        declared.location(),
                        short(commit),
                        listed.join("; ")
                    ),
                ))
            });
        }
        let mut verdict = Verdict::allow(Reason::Traceable);
        verdict.app = Some(provenance.app.clone());
        verdict.commit = Some(commit.to_owned());
        Ok(verdict)
    }

    /// A write that moves an object from one app to another: only once the app it belongs to
    /// has let it go (the app is gone, or its branch no longer declares the object). Two apps
    /// cannot both hold an object, and a write cannot take one from the app that declares it.
    fn handover(&self, old: &Provenance, new: &Provenance) -> Result<(), Violation> {
        let Some(previous) = super::app_of(self.knowledge, old) else {
            return Ok(());
        };
        let refused = |detail: String| {
            Err(Violation {
                app: Some(previous.clone()),
                commit: Some(old.commit.clone()),
                ..violation(Reason::AppChanged, detail)
            })
        };
        match self.knowledge.head_manifests(&previous) {
            Ok(head) => match head.iter().find(|m| self.declares(m, &previous)) {
                Some(m) => refused(format!(
                    "the object belongs to app {}, whose branch {} still declares it in {}; the \
                     write claims it for app {}",
                    old.app,
                    previous.spec.branch,
                    m.location(),
                    new.app
                )),
                None => Ok(()),
            },
            Err(e) => refused(format!(
                "the object belongs to app {}, whose branch cannot be read ({e}); the write \
                 claims it for app {}",
                old.app, new.app
            )),
        }
    }

    /// Condition 5: the commit is not older than what the object (or its app) was synced from,
    /// unless the app records a rollback to it. An object created afresh, with nothing to
    /// compare with, must be as the head of the branch declares it.
    fn not_a_downgrade(
        &self,
        app: &Arc<App>,
        provenance: &Provenance,
        old: Option<&Provenance>,
        declared: &Manifest,
        head: &str,
    ) -> Result<(), Violation> {
        let commit = provenance.commit.as_str();
        let with = |v: Violation| v.of(app, Some(commit));
        let git =
            |r: super::Lookup<bool>| r.map_err(|e| with(violation(Reason::GitUnavailable, e)));
        let status = app.status.as_ref();
        let rollback = status.and_then(|s| s.rollback.as_deref());
        if rollback == Some(commit) {
            return Ok(());
        }
        // The commit the object was synced from, if this very App synced it (not an earlier App
        // of the same name), else what the app last synced; either only if the mirror holds it
        // (a commit rewritten out of the branch, or another repository's, compares with nothing).
        let same_app = |o: &&Provenance| {
            o.app == provenance.app
                && super::app_of(self.knowledge, o)
                    .is_some_and(|a| a.metadata.uid == app.metadata.uid)
        };
        let known =
            |c: &String| git(self.knowledge.has_commit(app, c)).map(|k| k.then(|| c.clone()));
        let mut reference = match old.filter(same_app) {
            Some(old) => known(&old.commit)?,
            None => None,
        };
        if reference.is_none()
            && let Some(synced) = status.and_then(|s| s.last_synced_commit.as_ref())
        {
            reference = known(synced)?;
        }
        match reference {
            Some(reference) if reference == commit => Ok(()),
            Some(reference) => {
                let downgrade = |detail: String| Err(with(violation(Reason::Downgrade, detail)));
                if git(self.knowledge.is_ancestor(app, commit, &reference))? {
                    return downgrade(format!(
                        "commit {} is older than {}, which the object or app was already synced \
                         from",
                        short(commit),
                        short(&reference)
                    ));
                }
                // A commit merged from an older base is not older by ancestry, but may carry
                // older content: while the reference is on the branch, a write must descend
                // from it.
                if git(self.knowledge.is_ancestor(app, &reference, head))?
                    && !git(self.knowledge.is_ancestor(app, &reference, commit))?
                {
                    return downgrade(format!(
                        "commit {} does not descend from {}, which the object or app was already \
                         synced from (it was merged from an older base)",
                        short(commit),
                        short(&reference)
                    ));
                }
                Ok(())
            }
            None if commit == head => Ok(()),
            None => {
                let path = crate::git::normalise_path(&provenance.source_path);
                let at_head = self
                    .knowledge
                    .manifests(app, head, &path)
                    .map_err(|e| with(violation(Reason::GitUnavailable, e)))?;
                if at_head
                    .iter()
                    .any(|m| self.declares(m, app) && m.object == declared.object)
                {
                    return Ok(());
                }
                Err(Violation {
                    fetch_may_help: false,
                    ..with(violation(
                        Reason::Downgrade,
                        format!(
                            "commit {} is not the head of branch {} ({}), which declares {} \
                             differently or not at all, and the app records no sync to compare \
                             with",
                            short(commit),
                            app.spec.branch,
                            short(head),
                            self.request.object_name()
                        ),
                    ))
                })
            }
        }
    }

    /// Whether the write sets a break-glass annotation the object did not have with that value.
    fn adds_break_glass_marks(&self) -> bool {
        let get = |v: Option<&Value>, key: &str| {
            v.and_then(|o| o["metadata"]["annotations"].get(key).cloned())
        };
        let (old, new) = (self.write.old.as_deref(), self.write.new.as_deref());
        super::DECISION_ANNOTATIONS
            .iter()
            .any(|key| get(new, key).is_some() && get(new, key) != get(old, key))
    }

    fn is_deployment(&self) -> bool {
        self.request.kind.group == "apps" && self.request.kind.kind == "Deployment"
    }

    /// The replicas a rollout under way holds the Deployment Git declares at: the canary's share.
    fn rollout_replicas(&self, app: &App, declared: &Manifest) -> Option<i64> {
        if !self.is_deployment() {
            return None;
        }
        let namespace = self.request.namespace()?;
        let strategy = self
            .knowledge
            .rollout(&app.key(), namespace, self.request.name())?;
        let status = strategy.status.as_ref().filter(|s| s.in_rollout())?;
        let total = canary::total_replicas(&declared.object);
        Some(canary::split(total, status.weight_in_force().clamp(0, 100)).1)
    }

    /// For `<target>-stable`: the target as the file declares it, when a rollout under way keeps
    /// a stable copy of it at exactly this commit; with the replicas the rollout gives it (of the
    /// replicas Git declares at the canary's commit: the status's own count is not trusted).
    /// The target and status of the rollout under way whose stable copy this write is, stamped
    /// with its stable commit `commit`.
    fn stable_copy_rollout<'r>(
        &'r self,
        app: &App,
        commit: &str,
    ) -> Option<(&'r str, canary::CanaryStatus)> {
        if !self.is_deployment() {
            return None;
        }
        let namespace = self.request.namespace()?;
        let target = canary::target_of_stable(self.request.name())?;
        let strategy = self.knowledge.rollout(&app.key(), namespace, target)?;
        let status = strategy.status.clone().filter(|s| s.in_rollout())?;
        (status.stable_commit.as_deref() == Some(commit)).then_some((target, status))
    }

    /// The canary commit of the rollout under way whose stable copy this write is.
    fn rollout_from(&self, app: &App, commit: &str) -> Option<String> {
        self.stable_copy_rollout(app, commit)?.1.canary_commit
    }

    fn stable_copy_of(
        &self,
        app: &App,
        manifests: &[Manifest],
        commit: &str,
        path: &str,
    ) -> Option<(Manifest, i64)> {
        let (target, status) = self.stable_copy_rollout(app, commit)?;
        let namespace = self.request.namespace()?;
        let is_target = |m: &&Manifest| {
            m.kind() == "Deployment"
                && m.group_version().0 == "apps"
                && m.name() == target
                && m.namespace().is_none_or(|ns| ns == namespace)
        };
        let declared = manifests.iter().find(is_target)?;
        let total = status
            .canary_commit
            .as_deref()
            .and_then(|c| self.knowledge.manifests(app, c, path).ok())
            .and_then(|ms| ms.iter().find(is_target).map(|m| m.object.clone()))
            .map(|m| canary::total_replicas(&m))
            .unwrap_or_else(|| canary::total_replicas(&declared.object));
        let replicas = canary::split(total, status.weight_in_force().clamp(0, 100)).0;
        Some((declared.clone(), replicas))
    }

    /// Whether a manifest declares the object of the review.
    pub fn declares(&self, m: &Manifest, app: &App) -> bool {
        let r = self.request;
        let namespace = match m.namespace() {
            Some(ns) => Some(ns.to_owned()),
            None if r.namespace().is_some() => Some(app.destination()),
            None => None,
        };
        m.group_version().0 == r.kind.group
            && m.kind() == r.kind.kind
            && m.name() == r.name()
            && namespace.as_deref() == r.namespace()
    }
}

fn has_managed_fields(object: &Value) -> bool {
    object["metadata"]["managedFields"]
        .as_array()
        .is_some_and(|m| !m.is_empty())
}

fn has_controller_owner(object: &Value) -> bool {
    controller_owner_kind(object).is_some()
}

/// The kind of the object's controller owner, if one owns it.
fn controller_owner_kind(object: &Value) -> Option<&str> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)
        .map(|o| o["kind"].as_str().unwrap_or_default())
}
