//! The files of an app, as `sync`, `diff`, `verify` and the webhook's mirrors load them: whatever
//! the bytes, loading answers with manifests or errors and never panics, and what loads goes
//! through normalisation and the Canary checks.
//!
//! Input: a selector byte, then up to four files separated by NUL bytes. Bits `2i..2i+2` of the
//! selector give file `i`'s extension: `.yaml`, `.json`, `.yml` or `.md` (not a manifest file).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::{canary, manifest, normalise};

const EXTENSIONS: [&str; 4] = ["yaml", "json", "yml", "md"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let names: Vec<String> = (0..4)
        .map(|i| {
            let ext = EXTENSIONS[usize::from((selector >> (2 * i)) & 3)];
            format!("apps/web/f{i}.{ext}")
        })
        .collect();
    let files: Vec<(&str, &[u8])> = names
        .iter()
        .map(String::as_str)
        .zip(rest.splitn(4, |b| *b == 0))
        .collect();

    let manifests = match manifest::load_app(files) {
        Ok(manifests) => manifests,
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error without errors");
            let _ = errors.to_string();
            return;
        }
    };
    for m in &manifests {
        let _ = (m.key().to_string(), m.location(), m.group_version());
        let normalised = normalise::for_comparison(&m.object);
        // `contains` is reflexive: every field of an object is in it, with its own value.
        assert!(
            normalise::contains(&normalised, &normalised),
            "{normalised}"
        );
        assert!(normalise::contains(&m.object, &normalised), "{normalised}");
        let _ = normalise::yaml_sides(Some(&m.object), None);
        if canary::is_canary(m) {
            // load_app checked every Canary: its spec is valid and its target declared beside it.
            let spec = canary::spec_of(m).expect("load_app accepted the Canary");
            let _ = spec.ready_timeout();
            let target = canary::strategy_for(&manifests, m.namespace(), &spec.target);
            assert!(target.is_some(), "the Canary is found by its target");
            for d in manifests
                .iter()
                .filter(|d| d.kind() == "Deployment" && d.name() == spec.target)
            {
                let total = canary::total_replicas(&d.object);
                for weight in spec.weights() {
                    let _ = canary::split(total, weight);
                }
                let _ = canary::stable_copy(&d.object, total);
            }
        }
    }
});
