//! Arbitrary bytes → `JournalStore::import`, into one store opened in a
//! scratch directory for the whole fuzzing run.
//!
//! An input is one export file, or several separated by NUL bytes (a NUL
//! can never appear in a valid export line), imported in order: a finding
//! that needs an earlier import in the same store is then reproducible from
//! one file.
//!
//! Import may refuse an input but never panic, and never allocate beyond
//! what the input justifies (run with `-rss_limit_mb=2048`). What it
//! accepts must be what its readers accept:
//!
//! * the run's header, steps and end record read back without error;
//! * every stored step index is below the end record's step count (the
//!   rule import enforces on the file);
//! * the run exports (unless its component's bytes were not in the file),
//!   and that export imports again under the same id and exports to the
//!   same bytes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tessera_journal::{Error, JournalStore};

struct Fixture {
    store: JournalStore,
    _dir: tempfile::TempDir,
}

fn store() -> &'static JournalStore {
    static STORE: OnceLock<Fixture> = OnceLock::new();
    &STORE
        .get_or_init(|| {
            let dir = tessera_fuzz::scratch("tessera-fuzz-journal");
            let store = JournalStore::open(dir.path()).expect("cannot open the journal store");
            Fixture { store, _dir: dir }
        })
        .store
}

fn export(store: &JournalStore, id: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    store.export(id, &mut out)?;
    Ok(out)
}

fn check(store: &JournalStore, id: &str) {
    let header = store
        .header(id)
        .unwrap_or_else(|e| panic!("imported run {id}: header unreadable: {e}"));
    let steps = store
        .steps(id)
        .unwrap_or_else(|e| panic!("imported run {id}: steps unreadable: {e}"));
    let end = store
        .end(id)
        .unwrap_or_else(|e| panic!("imported run {id}: end record unreadable: {e}"));
    if let Some(end) = &end {
        for (i, _) in &steps {
            assert!(
                *i < end.steps,
                "imported run {id}: stored step {i} is past the {} steps its end record counts",
                end.steps
            );
        }
    }
    let first = match export(store, id) {
        Ok(bytes) => bytes,
        Err(Error::Corrupt(m))
            if m.contains(&format!("blob {} is missing", header.component.digest)) =>
        {
            return;
        }
        Err(e) => panic!("imported run {id} does not export: {e}"),
    };
    let again = store
        .import(&mut first.as_slice(), "re-export")
        .unwrap_or_else(|e| {
            panic!(
                "the export of imported run {id} does not import: {e}\n{}",
                String::from_utf8_lossy(&first)
            )
        });
    assert_eq!(again, id, "re-import names another run");
    let second = export(store, id).expect("a re-imported run exports");
    assert!(
        first == second,
        "run {id} exports differently after a re-import:\n{}\n---\n{}",
        String::from_utf8_lossy(&first),
        String::from_utf8_lossy(&second)
    );
}

fuzz_target!(|data: &[u8]| {
    let store = store();
    for part in data.split(|b| *b == 0) {
        if let Ok(id) = store.import(&mut &part[..], "fuzz.jsonl") {
            check(store, &id);
        }
    }
});
