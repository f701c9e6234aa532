//! Applying a [`Retention`] policy: which runs go, which blobs go with
//! them, and what the journal then weighs.
//!
//! Everything here runs inside one redb write transaction on the writer
//! thread, so the runs it sees, the holds that protect them and the
//! deletions it makes are one consistent state: a pin taken, or a run
//! begun, at the same moment is either seen or made after the pruning.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::format::ComponentRef;
use crate::retention::{Limits, Retention, format_bytes};
use crate::store::{BLOBS, ENDS, HOLDS, RUNS, STEPS, db_err};

/// One run the inventory knows about.
#[derive(Debug, Clone)]
pub(crate) struct RunInfo {
    pub id: String,
    pub started: String,
    pub started_at: Option<time::OffsetDateTime>,
    pub component: String,
    pub digest: String,
    pub complete: bool,
    pub steps: u64,
    /// Header, steps and end record, as stored.
    pub record_bytes: u64,
    pub header_bytes: u64,
    pub end_bytes: u64,
    /// Blobs its steps reference (the component's digest is separate).
    pub blobs: Vec<String>,
    pub holds: Vec<String>,
}

impl RunInfo {
    fn refs(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.digest).chain(self.blobs.iter())
    }
}

/// Every run (oldest first) and every blob with its size.
#[derive(Debug, Default)]
pub(crate) struct Inventory {
    pub runs: Vec<RunInfo>,
    pub blobs: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct LightHeader {
    started: String,
    component: ComponentRef,
    #[serde(default)]
    grants: serde_json::Value,
}

/// The name retention uses for a run's component: the registry name of a
/// run a server recorded (origin `hello v3`), the file name without
/// `.wasm` of one the CLI recorded (origin `components/hello.wasm`).
pub fn component_name(origin: &str) -> String {
    if let Some((name, v)) = origin.rsplit_once(" v")
        && !v.is_empty()
        && v.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty()
    {
        return name.to_string();
    }
    let file = origin.rsplit(['/', '\\']).next().unwrap_or(origin);
    file.strip_suffix(".wasm").unwrap_or(file).to_string()
}

fn has_blob_ref(bytes: &[u8]) -> bool {
    bytes.windows(7).any(|w| w == b"\"blob\":")
}

pub(crate) fn inventory(w: &WriteTransaction) -> Result<Inventory, Error> {
    let runs = w.open_table(RUNS).map_err(db_err)?;
    let steps = w.open_table(STEPS).map_err(db_err)?;
    let ends = w.open_table(ENDS).map_err(db_err)?;
    let holds = w.open_table(HOLDS).map_err(db_err)?;
    let blobs = w.open_table(BLOBS).map_err(db_err)?;
    let mut by_run: HashMap<String, Vec<String>> = HashMap::new();
    for e in holds.iter().map_err(db_err)? {
        let (k, _) = e.map_err(db_err)?;
        let (run, holder) = k.value();
        by_run
            .entry(run.to_string())
            .or_default()
            .push(holder.to_string());
    }
    let mut out = Inventory::default();
    for e in runs.iter().map_err(db_err)? {
        let (k, v) = e.map_err(db_err)?;
        let id = k.value();
        let h: LightHeader = serde_json::from_slice(v.value())
            .map_err(|e| Error::Corrupt(format!("run {id}: header: {e}")))?;
        let header_bytes = v.value().len() as u64;
        let end = ends.get(id).map_err(db_err)?;
        let end_bytes = end.as_ref().map_or(0, |e| e.value().len() as u64);
        let mut record_bytes = header_bytes + end_bytes;
        let mut refs = Vec::new();
        if let Some(d) = crate::store::grants_blob(&serde_json::json!({ "grants": h.grants })) {
            refs.push(d);
        }
        let mut n = 0;
        for s in steps.range((id, 0)..=(id, u64::MAX)).map_err(db_err)? {
            let (_, v) = s.map_err(db_err)?;
            n += 1;
            record_bytes += v.value().len() as u64;
            if has_blob_ref(v.value()) {
                let value: serde_json::Value = serde_json::from_slice(v.value())
                    .map_err(|e| Error::Corrupt(format!("run {id}: step: {e}")))?;
                crate::store::collect_blob_refs(&value, &mut refs);
            }
        }
        refs.sort();
        refs.dedup();
        out.runs.push(RunInfo {
            id: id.to_string(),
            started_at: time::OffsetDateTime::parse(
                &h.started,
                &time::format_description::well_known::Rfc3339,
            )
            .ok(),
            started: h.started,
            component: component_name(&h.component.origin),
            digest: h.component.digest,
            complete: end.is_some(),
            steps: n,
            record_bytes,
            header_bytes,
            end_bytes,
            blobs: refs,
            holds: by_run.remove(id).unwrap_or_default(),
        });
    }
    for e in blobs.iter().map_err(db_err)? {
        let (k, v) = e.map_err(db_err)?;
        out.blobs
            .insert(k.value().to_string(), v.value().len() as u64);
    }
    out.runs
        .sort_by(|a, b| a.started.cmp(&b.started).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// A run removed (or, in a dry run, that would be).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrunedRun {
    /// The run.
    pub run_id: String,
    /// Its component's name.
    pub component: String,
    /// When it started.
    pub started: String,
    /// Which limit removed it (`max_age 30d`, `component hello: max_runs 10`).
    pub reason: String,
    /// Its records' bytes (header, steps, end).
    pub bytes: u64,
}

/// A run a limit would have removed but something holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldRun {
    /// The run.
    pub run_id: String,
    /// Who holds it: `pin`, `in-progress`, or a holder's name.
    pub held_by: Vec<String>,
}

/// What [`JournalStore::prune`](crate::JournalStore::prune) did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Nothing was removed: this is what would be.
    pub dry_run: bool,
    /// The runs removed, oldest first.
    pub removed: Vec<PrunedRun>,
    /// Runs a limit would have removed but which are held.
    pub held: Vec<HeldRun>,
    /// Runs left.
    pub runs_kept: u64,
    /// Blobs removed because no run left references them.
    pub blobs_removed: u64,
    /// Their bytes.
    pub blob_bytes_removed: u64,
    /// The journal file's size before.
    pub file_bytes_before: u64,
    /// Its size after pruning and compacting (in a dry run, an estimate).
    pub file_bytes_after: u64,
}

impl PruneReport {
    /// Bytes of disk given back (or that would be).
    pub fn bytes_freed(&self) -> u64 {
        self.file_bytes_before.saturating_sub(self.file_bytes_after)
    }
}

/// Why a run may not go.
fn holders(r: &RunInfo, live: &HashSet<String>) -> Vec<String> {
    let mut h = r.holds.clone();
    if !r.complete && live.contains(&r.id) {
        h.push("in-progress".into());
    }
    h
}

/// The runs to remove, with reasons, and the held ones.
pub(crate) struct Plan {
    pub remove: BTreeMap<usize, String>,
    pub held: BTreeMap<usize, Vec<String>>,
}

struct Planner<'a> {
    inv: &'a Inventory,
    live: &'a HashSet<String>,
    plan: Plan,
}

impl Planner<'_> {
    /// Marks run `i` for removal unless held; returns whether it will go.
    fn take(&mut self, i: usize, reason: impl FnOnce() -> String) -> bool {
        if self.plan.remove.contains_key(&i) {
            return true;
        }
        let h = holders(&self.inv.runs[i], self.live);
        if h.is_empty() {
            self.plan.remove.insert(i, reason());
            true
        } else {
            self.plan.held.entry(i).or_insert(h);
            false
        }
    }

    fn kept(&self, idx: &[usize]) -> Vec<usize> {
        idx.iter()
            .copied()
            .filter(|i| !self.plan.remove.contains_key(i))
            .collect()
    }

    /// Age, count and (logical) bytes over a set of runs, oldest first.
    fn apply(&mut self, idx: &[usize], limits: &Limits, scope: &str, now: time::OffsetDateTime) {
        let inv = self.inv;
        if let Some(age) = limits.max_age {
            let cutoff = now - age;
            for &i in idx {
                if inv.runs[i].started_at.is_some_and(|t| t < cutoff) {
                    self.take(i, || {
                        format!("{scope}max_age {}", humantime::format_duration(age))
                    });
                }
            }
        }
        if let Some(max) = limits.max_runs {
            let kept = self.kept(idx);
            let mut excess = (kept.len() as u64).saturating_sub(max);
            for i in kept {
                if excess == 0 {
                    break;
                }
                if self.take(i, || format!("{scope}max_runs {max}")) {
                    excess -= 1;
                }
            }
        }
        if let Some(max) = limits.max_bytes {
            let kept = self.kept(idx);
            let mut uses: HashMap<&str, u64> = HashMap::new();
            let mut total = 0;
            for &i in &kept {
                let r = &inv.runs[i];
                total += r.record_bytes;
                for d in r.refs() {
                    let n = uses.entry(d.as_str()).or_default();
                    if *n == 0 {
                        total += inv.blobs.get(d).copied().unwrap_or(0);
                    }
                    *n += 1;
                }
            }
            for i in kept {
                if total <= max {
                    break;
                }
                if self.take(i, || format!("{scope}max_bytes {}", format_bytes(max))) {
                    let r = &inv.runs[i];
                    total -= r.record_bytes;
                    for d in r.refs() {
                        if let Some(n) = uses.get_mut(d.as_str()) {
                            *n -= 1;
                            if *n == 0 {
                                total -= inv.blobs.get(d).copied().unwrap_or(0);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What pruning for the journal's size on disk aims at in one round.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DiskAim {
    /// The bytes the journal may occupy after compaction.
    pub target: u64,
    /// Bytes on disk per stored byte, measured now.
    pub ratio: f64,
    /// At most this many runs go for size in this round (the estimate is
    /// corrected between rounds; a file's fixed overhead makes it too high
    /// once few runs are left, and this keeps a bad estimate from taking
    /// every run at once).
    pub most: usize,
    /// The newest run is not removed for size.
    pub spare_newest: bool,
    /// At least this many runs go in this round, whatever the estimate
    /// says: a compacted file still above `target` (its fixed overhead
    /// makes the proportional estimate too low once few runs are left).
    pub at_least: usize,
}

/// Plans a pruning. `disk` is, when the global byte limit applies, the
/// size on disk to bring the journal under.
pub(crate) fn plan(
    inv: &Inventory,
    policy: &Retention,
    live: &HashSet<String>,
    now: time::OffsetDateTime,
    disk: Option<DiskAim>,
) -> Plan {
    let mut p = Planner {
        inv,
        live,
        plan: Plan {
            remove: BTreeMap::new(),
            held: BTreeMap::new(),
        },
    };
    for (name, limits) in &policy.components {
        let idx: Vec<usize> = (0..inv.runs.len())
            .filter(|&i| &inv.runs[i].component == name)
            .collect();
        p.apply(&idx, limits, &format!("component {name}: "), now);
    }
    let all: Vec<usize> = (0..inv.runs.len()).collect();
    let global = Limits {
        max_bytes: None,
        ..policy.global.clone()
    };
    p.apply(&all, &global, "", now);
    if let Some(DiskAim {
        target,
        ratio,
        most,
        spare_newest,
        at_least,
    }) = disk
    {
        // On disk: what is left after removing the marked runs (and every
        // blob nothing else references), scaled by the page overhead.
        let mut uses: HashMap<&str, u64> = HashMap::new();
        let mut total: u64 = 0;
        for (i, r) in inv.runs.iter().enumerate() {
            if p.plan.remove.contains_key(&i) {
                continue;
            }
            total += r.record_bytes;
            for d in r.refs() {
                *uses.entry(d.as_str()).or_default() += 1;
            }
        }
        for (d, size) in &inv.blobs {
            if uses.contains_key(d.as_str()) {
                total += size;
            }
        }
        let limit = format_bytes(policy.global.max_bytes.unwrap_or(target));
        let mut taken = 0;
        for i in 0..inv.runs.len() - usize::from(spare_newest && !inv.runs.is_empty()) {
            if ((total as f64 * ratio) as u64 <= target && taken >= at_least) || taken >= most {
                break;
            }
            if p.plan.remove.contains_key(&i) {
                continue;
            }
            if p.take(i, || format!("max_bytes {limit}")) {
                taken += 1;
                let r = &inv.runs[i];
                total -= r.record_bytes;
                for d in r.refs() {
                    if let Some(n) = uses.get_mut(d.as_str()) {
                        *n -= 1;
                        if *n == 0 {
                            total -= inv.blobs.get(d).copied().unwrap_or(0);
                        }
                    }
                }
            }
        }
    }
    p.plan
}

/// Stored bytes (records and referenced blobs) left after a plan.
pub(crate) fn remaining_bytes(inv: &Inventory, plan: &Plan) -> u64 {
    let mut refs = HashSet::new();
    let mut total = 0;
    for (i, r) in inv.runs.iter().enumerate() {
        if !plan.remove.contains_key(&i) {
            total += r.record_bytes;
            refs.extend(r.refs().map(String::as_str));
        }
    }
    total
        + inv
            .blobs
            .iter()
            .filter(|(d, _)| refs.contains(d.as_str()))
            .map(|(_, s)| s)
            .sum::<u64>()
}

/// Blobs (count, bytes) no run left after a plan references.
pub(crate) fn unreferenced_blobs(inv: &Inventory, plan: &Plan) -> (u64, u64) {
    let mut refs = HashSet::new();
    for (i, r) in inv.runs.iter().enumerate() {
        if !plan.remove.contains_key(&i) {
            refs.extend(r.refs().map(String::as_str));
        }
    }
    inv.blobs
        .iter()
        .filter(|(d, _)| !refs.contains(d.as_str()))
        .fold((0, 0), |(n, b), (_, s)| (n + 1, b + s))
}

/// Stored bytes (records and every blob) now.
pub(crate) fn stored_bytes(inv: &Inventory) -> u64 {
    inv.runs.iter().map(|r| r.record_bytes).sum::<u64>() + inv.blobs.values().sum::<u64>()
}

/// Deletes the runs `now` (indices into `inv`, all of them in `plan`);
/// with `keep`, also every blob that no run the plan keeps references
/// (except `keep`, the blobs of runs begun but not yet stored). Returns
/// the blobs removed and their bytes.
pub(crate) fn execute(
    w: &WriteTransaction,
    inv: &Inventory,
    plan: &Plan,
    now: &[usize],
    keep: Option<&HashSet<String>>,
) -> Result<Vec<(String, u64)>, Error> {
    {
        let mut runs = w.open_table(RUNS).map_err(db_err)?;
        let mut steps = w.open_table(STEPS).map_err(db_err)?;
        let mut ends = w.open_table(ENDS).map_err(db_err)?;
        let mut holds = w.open_table(HOLDS).map_err(db_err)?;
        for &i in now {
            let id = inv.runs[i].id.as_str();
            runs.remove(id).map_err(db_err)?;
            ends.remove(id).map_err(db_err)?;
            steps
                .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)
                .map_err(db_err)?;
            holds
                .retain_in((id, "")..=(id, "\u{10ffff}"), |_, _| false)
                .map_err(db_err)?;
        }
    }
    let Some(keep) = keep else {
        return Ok(Vec::new());
    };
    let mut blobs = w.open_table(BLOBS).map_err(db_err)?;
    let mut referenced: HashSet<&str> = keep.iter().map(String::as_str).collect();
    for (i, r) in inv.runs.iter().enumerate() {
        if !plan.remove.contains_key(&i) {
            referenced.extend(r.refs().map(String::as_str));
        }
    }
    let mut gone = Vec::new();
    for (d, size) in &inv.blobs {
        if !referenced.contains(d.as_str()) {
            blobs.remove(d.as_str()).map_err(db_err)?;
            gone.push((d.clone(), *size));
        }
    }
    Ok(gone)
}

/// The report's list of removed runs.
pub(crate) fn removed(inv: &Inventory, plan: &Plan) -> Vec<PrunedRun> {
    plan.remove
        .iter()
        .map(|(&i, reason)| {
            let r = &inv.runs[i];
            PrunedRun {
                run_id: r.id.clone(),
                component: r.component.clone(),
                started: r.started.clone(),
                reason: reason.clone(),
                bytes: r.record_bytes,
            }
        })
        .collect()
}

/// The report's list of held runs.
pub(crate) fn held(inv: &Inventory, plan: &Plan) -> Vec<HeldRun> {
    plan.held
        .iter()
        .map(|(&i, h)| HeldRun {
            run_id: inv.runs[i].id.clone(),
            held_by: h.clone(),
        })
        .collect()
}

/// How long to wait between full background prunings (age and count
/// limits): at least a second, and ten times what the last one took.
pub(crate) fn next_interval(took: Duration) -> Duration {
    (took * 10).max(Duration::from_secs(1))
}

/// What the journal holds and weighs (`tessera runs stats`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalStats {
    /// Size of the journal file on disk.
    pub file_bytes: u64,
    /// Bytes in pages redb has allocated (the file can shrink to about
    /// this by compaction; the rest is free space it reuses).
    pub allocated_bytes: u64,
    /// Runs stored.
    pub runs: u64,
    /// Runs without an end record (being recorded, or cut off by a crash).
    pub incomplete: u64,
    /// Runs held against pruning (pinned, or held by a plan or agent).
    pub held: u64,
    /// Steps stored.
    pub steps: u64,
    /// Bytes of the runs' records (headers, steps, end records).
    pub record_bytes: u64,
    /// Of which headers.
    pub header_bytes: u64,
    /// Of which end records (the rest are steps).
    pub end_bytes: u64,
    /// Blobs stored (component bytes and long payloads, each once).
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// `file_bytes / runs` (0 with no runs).
    pub bytes_per_run: u64,
    /// Per component, by name.
    pub components: Vec<ComponentStats>,
}

/// One component's share of the journal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentStats {
    /// The component's name (see [`component_name`]).
    pub name: String,
    /// Its runs.
    pub runs: u64,
    /// Their records' bytes.
    pub record_bytes: u64,
    /// Bytes of the blobs its runs reference (its own bytes among them);
    /// a blob shared with another component counts for both.
    pub blob_bytes: u64,
    /// `(record_bytes + blob_bytes) / runs`.
    pub bytes_per_run: u64,
    /// Start of its oldest run.
    pub oldest: String,
    /// Start of its newest run.
    pub newest: String,
}

impl JournalStats {
    pub(crate) fn of(inv: &Inventory, file_bytes: u64, redb: &redb::DatabaseStats) -> Self {
        let mut comps: BTreeMap<&str, (ComponentStats, HashSet<&str>)> = BTreeMap::new();
        for r in &inv.runs {
            let (c, blobs) = comps.entry(r.component.as_str()).or_insert_with(|| {
                (
                    ComponentStats {
                        name: r.component.clone(),
                        runs: 0,
                        record_bytes: 0,
                        blob_bytes: 0,
                        bytes_per_run: 0,
                        oldest: r.started.clone(),
                        newest: r.started.clone(),
                    },
                    HashSet::new(),
                )
            });
            c.runs += 1;
            c.record_bytes += r.record_bytes;
            c.newest = r.started.clone();
            for d in r.refs() {
                if blobs.insert(d.as_str()) {
                    c.blob_bytes += inv.blobs.get(d).copied().unwrap_or(0);
                }
            }
        }
        let components = comps
            .into_values()
            .map(|(mut c, _)| {
                c.bytes_per_run = (c.record_bytes + c.blob_bytes) / c.runs.max(1);
                c
            })
            .collect();
        let runs = inv.runs.len() as u64;
        Self {
            file_bytes,
            allocated_bytes: redb.allocated_pages() * redb.page_size() as u64,
            runs,
            incomplete: inv.runs.iter().filter(|r| !r.complete).count() as u64,
            held: inv.runs.iter().filter(|r| !r.holds.is_empty()).count() as u64,
            steps: inv.runs.iter().map(|r| r.steps).sum(),
            record_bytes: inv.runs.iter().map(|r| r.record_bytes).sum(),
            header_bytes: inv.runs.iter().map(|r| r.header_bytes).sum(),
            end_bytes: inv.runs.iter().map(|r| r.end_bytes).sum(),
            blobs: inv.blobs.len() as u64,
            blob_bytes: inv.blobs.values().sum(),
            bytes_per_run: file_bytes.checked_div(runs).unwrap_or(0),
            components,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::component_name;

    #[test]
    fn component_names_come_from_origins() {
        assert_eq!(component_name("hello v3"), "hello");
        assert_eq!(component_name("components/hello.wasm"), "hello");
        assert_eq!(component_name("/abs/path/x y.wasm"), "x y");
        assert_eq!(component_name("upload"), "upload");
        assert_eq!(component_name("odd vx"), "odd vx");
    }
}
