//! What the fuzz targets share: where the guest components are, and a
//! scratch directory that lives as long as the fuzzing process.
//!
//! Every target builds its expensive state (a runtime with `hello` loaded,
//! a journal store, a server) once per process, so each input costs only
//! the code under test. See `docs/TESTING.md`.

use std::path::{Path, PathBuf};

/// `components/<name>.wasm`, built by `scripts/build-components.sh`.
pub fn component(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../components")
        .join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} missing: run scripts/build-components.sh",
        p.display()
    );
    p
}

/// A fresh directory under `$TESSERA_FUZZ_TMP` (or the system temp
/// directory), removed when the returned guard is dropped. Targets keep it
/// for the life of the process.
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    let parent = std::env::var_os("TESSERA_FUZZ_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .expect("cannot create a scratch directory")
}
