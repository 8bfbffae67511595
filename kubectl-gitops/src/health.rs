//! Health of live objects, the way `kubectl rollout status` judges workloads.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Healthy,
    Progressing,
    Degraded,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "Healthy",
            Health::Progressing => "Progressing",
            Health::Degraded => "Degraded",
        }
    }
}

/// Whether the object's status has condition `type_` with status "True".
fn condition_true(status: &Value, type_: &str) -> bool {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == type_ && c["status"] == "True")
}

fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

/// Judges one live object. Kinds without a notion of readiness are healthy once they exist.
pub fn assess(object: &Value) -> (Health, String) {
    let status = &object["status"];
    let spec = &object["spec"];
    let generation = int(&object["metadata"]["generation"]);
    let observed = int(&status["observedGeneration"]);
    match object["kind"].as_str().unwrap_or_default() {
        "Canary" => {
            let message = status["message"].as_str().unwrap_or_default().to_owned();
            match status["phase"].as_str() {
                Some("Aborted") => (Health::Degraded, format!("rollout aborted: {message}")),
                Some(phase @ ("Progressing" | "Paused")) => {
                    (Health::Progressing, format!("rollout {phase}: {message}"))
                }
                _ => (Health::Healthy, "no rollout under way".into()),
            }
        }
        "Deployment" | "StatefulSet" => {
            let wanted = spec["replicas"].as_i64().unwrap_or(1);
            if observed < generation {
                return (
                    Health::Progressing,
                    "waiting for the controller to observe the change".into(),
                );
            }
            let updated = int(&status["updatedReplicas"]);
            let ready = if object["kind"] == "Deployment" {
                int(&status["availableReplicas"])
            } else {
                int(&status["readyReplicas"])
            };
            if object["kind"] == "Deployment"
                && status["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| {
                        c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded"
                    })
            {
                return (
                    Health::Degraded,
                    "the rollout exceeded its progress deadline".into(),
                );
            }
            if updated < wanted || ready < wanted || int(&status["replicas"]) > wanted {
                return (
                    Health::Progressing,
                    format!("{ready} of {wanted} replicas ready, {updated} updated"),
                );
            }
            (
                Health::Healthy,
                format!("{ready} of {wanted} replicas ready"),
            )
        }
        "DaemonSet" => {
            let wanted = int(&status["desiredNumberScheduled"]);
            let ready = int(&status["numberAvailable"]);
            if observed < generation || ready < wanted {
                (
                    Health::Progressing,
                    format!("{ready} of {wanted} pods available"),
                )
            } else {
                (
                    Health::Healthy,
                    format!("{ready} of {wanted} pods available"),
                )
            }
        }
        "Pod" => {
            let phase = status["phase"].as_str().unwrap_or("Pending");
            let ready = condition_true(status, "Ready");
            match phase {
                "Succeeded" => (Health::Healthy, "completed".into()),
                "Failed" => (Health::Degraded, "the pod failed".into()),
                _ if ready => (Health::Healthy, "ready".into()),
                _ => (Health::Progressing, format!("{phase}, not ready")),
            }
        }
        "Job" => {
            if condition_true(status, "Failed") {
                (Health::Degraded, "the job failed".into())
            } else if condition_true(status, "Complete") {
                (Health::Healthy, "completed".into())
            } else {
                (Health::Progressing, "running".into())
            }
        }
        "CustomResourceDefinition" => {
            if condition_true(status, "Established") {
                (Health::Healthy, "established".into())
            } else {
                (Health::Progressing, "not established yet".into())
            }
        }
        _ => (Health::Healthy, String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_deployment_is_healthy_only_when_every_replica_is_updated_and_available() {
        let mut d = json!({"kind": "Deployment", "metadata": {"generation": 2},
            "spec": {"replicas": 3},
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}});
        assert_eq!(assess(&d).0, Health::Healthy);
        d["status"]["availableReplicas"] = json!(2);
        assert_eq!(assess(&d).0, Health::Progressing);
        d["status"]["availableReplicas"] = json!(3);
        d["status"]["observedGeneration"] = json!(1);
        assert_eq!(assess(&d).0, Health::Progressing);
        d["status"]["observedGeneration"] = json!(2);
        d["status"]["replicas"] = json!(4);
        assert_eq!(
            assess(&d).0,
            Health::Progressing,
            "old pods still terminating"
        );
        d["status"]["conditions"] =
            json!([{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]);
        assert_eq!(assess(&d).0, Health::Degraded);
    }

    #[test]
    fn pods_jobs_and_plain_objects() {
        let pod = json!({"kind": "Pod", "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}});
        assert_eq!(assess(&pod).0, Health::Progressing);
        let job = json!({"kind": "Job", "status": {"conditions": [{"type": "Failed", "status": "True"}]}});
        assert_eq!(assess(&job).0, Health::Degraded);
        assert_eq!(assess(&json!({"kind": "ConfigMap"})).0, Health::Healthy);
    }
}
