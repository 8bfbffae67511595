//! A fresh namespace per test, labelled so leftovers can be found, deleted when the test ends.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::Kubectl;

/// Label on every namespace a test creates; its value is the test's short name.
pub const TEST_LABEL: &str = "e2e.kubectl-gitops.dev/test";

#[derive(Debug)]
pub struct TestNamespace {
    pub name: String,
    kubectl: Kubectl,
}

impl TestNamespace {
    /// Creates `e2e-<test>-<unique>` in the shared cluster.
    pub fn new(test: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let kubectl = crate::cluster().kubectl();
        let name = format!(
            "e2e-{test}-{:x}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        assert!(name.len() <= 63, "namespace name {name} is too long");
        kubectl.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    {TEST_LABEL}: {test}\n"
        ));
        TestNamespace { name, kubectl }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let outcome = self.kubectl.run(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
        if !outcome.success {
            eprintln!(
                "warning: could not delete namespace {}: {}",
                self.name, outcome.stderr
            );
        }
    }
}
