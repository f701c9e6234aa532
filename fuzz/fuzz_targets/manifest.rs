//! Arbitrary UTF-8 → `Grants::from_toml`, the manifest parser and every
//! capability's grant validation.
//!
//! It may refuse the text but never panic. Relative `[[files]] host` paths
//! resolve against a scratch directory holding `data/` and `logs/`, so
//! mounts can succeed. Grants that parse must serialize and deserialize
//! back equal (serde_json, the form journals store them in), and binding
//! them to a host configuration must not panic either.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tessera_runtime::{Grants, HostConfig};

fn base() -> &'static Path {
    static BASE: OnceLock<tempfile::TempDir> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tessera_fuzz::scratch("tessera-fuzz-manifest");
        for sub in ["data", "logs"] {
            std::fs::create_dir(dir.path().join(sub)).expect("cannot create a mount directory");
        }
        dir
    })
    .path()
}

fn host() -> &'static HostConfig {
    static HOST: OnceLock<HostConfig> = OnceLock::new();
    HOST.get_or_init(|| {
        let mut host = HostConfig::default();
        host.secrets.insert("api_key".into(), "s3cr3t".into());
        host
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let grants = match Grants::from_toml(text, "fuzz.toml", base()) {
        Ok(g) => g,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let json = serde_json::to_string(&grants).expect("grants always serialize");
    let back: Grants = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("serialized grants do not deserialize: {e}\n{json}"));
    assert_eq!(back, grants, "grants changed through JSON: {json}");
    let _ = grants.effects();
    let mut bound = grants;
    let _ = bound.bind(host());
});
