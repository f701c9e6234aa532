//! `vector-index`: exhaustive cosine search over vectors kept in
//! `wasi:keyvalue` (`tessera:retrieval/vector-index`).
//!
//! Every vector is stored twice in the bucket the caller names:
//!
//! | key | value |
//! | --- | --- |
//! | `vec/<index>/meta` | dimensions, vectors, slots used, free slots |
//! | `vec/<index>/block/<n>` | slots `256n .. 256n+255`: each its id, a scale and the vector quantized to 8 bits |
//! | `vec/<index>/v/<slot>` | the full vector (unit length, 32-bit floats) |
//! | `vec/<index>/id/<id>` | the slot of an id |
//!
//! A query reads the meta entry and every block in one batch and scores
//! each quantized vector with an integer dot product (WebAssembly SIMD),
//! then reads the full vectors of the best candidates in a second batch
//! and ranks those exactly. A block of 10,000 384-dimensional vectors is
//! about 4 MB, a quarter of the full vectors. Values are little-endian.

wit_bindgen::generate!({
    world: "vector-index-provider",
    path: "wit",
    generate_all,
});

use std::collections::{BTreeMap, BTreeSet, HashMap};

use exports::tessera::retrieval::vector_index::{Entry, Guest, Hit, IndexStats};
use wasi::keyvalue::{batch, store};

/// Slots per block.
const BLOCK: u32 = 256;
/// The fewest candidates scored again from the full vectors.
const MIN_CANDIDATES: usize = 64;
/// The longest vector accepted.
const MAX_DIMENSIONS: usize = 65_536;

/// The component's single implementation type.
struct Component;

fn message(e: store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "no such store".into(),
        store::Error::AccessDenied => "access denied".into(),
        store::Error::Other(m) => m,
    }
}

fn damaged(what: &str) -> String {
    format!("the stored entry `{what}` is damaged")
}

fn u32_at(bytes: &[u8], at: usize, what: &str) -> Result<u32, String> {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| damaged(what))
}

/// The vector scaled to unit length; an error names a zero, infinite or
/// NaN vector.
fn unit(v: &[f32], what: &str) -> Result<Vec<f32>, String> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return Err(format!(
            "{what} has no direction (all zeros, or not finite)"
        ));
    }
    Ok(v.iter().map(|x| x / norm).collect())
}

/// The vector quantized to 8 bits, and the scale that gives it back.
fn quantize(v: &[f32]) -> (f32, Vec<i8>) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max == 0.0 { 1.0 } else { max / 127.0 };
    (scale, v.iter().map(|x| (x / scale).round() as i8).collect())
}

/// The integer dot product of two quantized vectors, vectorized with
/// WebAssembly SIMD.
#[target_feature(enable = "simd128")]
fn dot_i8(a: &[i8], b: &[u8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y as i8))
        .sum()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `meta`: dimensions, live vectors and slots used (u32 each), then the
/// free slots (u32 each) to the end.
#[derive(Default)]
struct Meta {
    dims: u32,
    count: u32,
    slots: u32,
    free: Vec<u32>,
}

impl Meta {
    fn decode(bytes: &[u8], what: &str) -> Result<Self, String> {
        if bytes.len() < 12 || !bytes.len().is_multiple_of(4) {
            return Err(damaged(what));
        }
        let words: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Meta {
            dims: words[0],
            count: words[1],
            slots: words[2],
            free: words[3..].to_vec(),
        })
    }
    fn encode(&self) -> Vec<u8> {
        [self.dims, self.count, self.slots]
            .iter()
            .chain(&self.free)
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }
}

/// One slot of a block: its id (empty when free), its scale and its
/// quantized vector.
#[derive(Clone, Default)]
struct Slot {
    id: String,
    scale: f32,
    q: Vec<i8>,
}

/// A block: for each of its slots in order, the id (u16 length, bytes),
/// the scale (f32) and, for a live slot, `dims` signed bytes.
fn decode_block(bytes: &[u8], dims: usize, what: &str) -> Result<Vec<Slot>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (id, scale, q, next) = slot_at(bytes, at, dims, what)?;
        out.push(Slot {
            id: id.to_string(),
            scale,
            q: q.iter().map(|b| *b as i8).collect(),
        });
        at = next;
    }
    Ok(out)
}

/// The slot at byte `at` of a block: id, scale, quantized vector (empty
/// for a free slot) and where the next slot starts.
fn slot_at<'a>(
    bytes: &'a [u8],
    at: usize,
    dims: usize,
    what: &str,
) -> Result<(&'a str, f32, &'a [u8], usize), String> {
    let len = bytes
        .get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
        .ok_or_else(|| damaged(what))?;
    let id = bytes
        .get(at + 2..at + 2 + len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| damaged(what))?;
    let mut at = at + 2 + len;
    let scale = f32::from_bits(u32_at(bytes, at, what)?);
    at += 4;
    let n = if id.is_empty() { 0 } else { dims };
    let q = bytes.get(at..at + n).ok_or_else(|| damaged(what))?;
    Ok((id, scale, q, at + n))
}

fn encode_block(slots: &[Slot]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in slots {
        out.extend_from_slice(&(s.id.len() as u16).to_le_bytes());
        out.extend_from_slice(s.id.as_bytes());
        out.extend_from_slice(&s.scale.to_bits().to_le_bytes());
        if !s.id.is_empty() {
            out.extend(s.q.iter().map(|x| *x as u8));
        }
    }
    out
}

/// One index of one bucket.
struct Index {
    bucket: store::Bucket,
    prefix: String,
}

impl Index {
    fn open(bucket: &str, index: &str) -> Result<Self, String> {
        if index.is_empty() || index.contains('/') || index.chars().any(char::is_control) {
            return Err(format!(
                "the index name {index:?} must be non-empty, without `/` or control characters"
            ));
        }
        let b = store::open(bucket)
            .map_err(|e| format!("opening bucket `{bucket}`: {}", message(e)))?;
        Ok(Index {
            bucket: b,
            prefix: format!("vec/{index}/"),
        })
    }

    fn key(&self, rest: std::fmt::Arguments) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn meta(&self) -> Result<Meta, String> {
        let key = self.key(format_args!("meta"));
        match self.bucket.get(&key).map_err(message)? {
            Some(bytes) => Meta::decode(&bytes, &key),
            None => Ok(Meta::default()),
        }
    }

    /// The values of `keys`, in order.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, String> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let found = batch::get_many(&self.bucket, keys).map_err(message)?;
        let mut by_key: HashMap<String, Vec<u8>> = found.into_iter().flatten().collect();
        Ok(keys.iter().map(|k| by_key.remove(k)).collect())
    }

    /// The slots of `ids` (`None` for an id not indexed).
    fn slots_of(&self, ids: &[String]) -> Result<Vec<Option<u32>>, String> {
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.key(format_args!("id/{id}")))
            .collect();
        self.get_many(&keys)?
            .into_iter()
            .zip(&keys)
            .map(|(v, k)| v.map(|b| u32_at(&b, 0, k)).transpose())
            .collect()
    }

    /// The blocks numbered `numbers`, decoded.
    fn blocks(
        &self,
        numbers: &BTreeSet<u32>,
        dims: usize,
    ) -> Result<BTreeMap<u32, Vec<Slot>>, String> {
        let keys: Vec<String> = numbers
            .iter()
            .map(|n| self.key(format_args!("block/{n}")))
            .collect();
        let values = self.get_many(&keys)?;
        numbers
            .iter()
            .zip(values)
            .zip(&keys)
            .map(|((n, v), k)| {
                let slots = match v {
                    Some(b) => decode_block(&b, dims, k)?,
                    None => Vec::new(),
                };
                Ok((*n, slots))
            })
            .collect()
    }

    /// Writes `meta` and the changed blocks, with the other writes and
    /// deletes given.
    fn commit(
        &self,
        meta: &Meta,
        blocks: &BTreeMap<u32, Vec<Slot>>,
        mut writes: Vec<(String, Vec<u8>)>,
        deletes: Vec<String>,
    ) -> Result<(), String> {
        for (n, slots) in blocks {
            writes.push((self.key(format_args!("block/{n}")), encode_block(slots)));
        }
        writes.push((self.key(format_args!("meta")), meta.encode()));
        if !deletes.is_empty() {
            batch::delete_many(&self.bucket, &deletes).map_err(message)?;
        }
        batch::set_many(&self.bucket, &writes).map_err(message)
    }
}

fn set_slot(blocks: &mut BTreeMap<u32, Vec<Slot>>, slot: u32, value: Slot) {
    let block = blocks.entry(slot / BLOCK).or_default();
    let i = (slot % BLOCK) as usize;
    if block.len() <= i {
        block.resize(i + 1, Slot::default());
    }
    block[i] = value;
}

impl Guest for Component {
    fn upsert(bucket: String, index: String, entries: Vec<Entry>) -> Result<u32, String> {
        let idx = Index::open(&bucket, &index)?;
        let mut meta = idx.meta()?;
        let mut seen = BTreeSet::new();
        let mut units = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let what = format!("entries[{i}]");
            if e.id.is_empty() || e.id.len() > 512 || e.id.chars().any(char::is_control) {
                return Err(format!(
                    "{what}: the id {:?} must be 1-512 bytes without control characters",
                    e.id
                ));
            }
            if !seen.insert(e.id.as_str()) {
                return Err(format!("{what}: the id {:?} is given twice", e.id));
            }
            let dims = e.vector.len();
            if dims == 0 || dims > MAX_DIMENSIONS {
                return Err(format!(
                    "{what}: a vector has 1 to {MAX_DIMENSIONS} dimensions, not {dims}"
                ));
            }
            let expected = if meta.dims != 0 {
                meta.dims as usize
            } else {
                entries[0].vector.len()
            };
            if dims != expected {
                return Err(format!(
                    "{what}: the vector has {dims} dimensions, the index's have {expected}"
                ));
            }
            units.push(unit(&e.vector, &format!("{what}.vector"))?);
        }
        if let Some(first) = units.first() {
            meta.dims = first.len() as u32;
        }
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let existing = idx.slots_of(&ids)?;
        let mut slots = Vec::with_capacity(ids.len());
        for old in &existing {
            let slot = match old {
                Some(s) => *s,
                None => {
                    meta.count += 1;
                    match meta.free.pop() {
                        Some(s) => s,
                        None => {
                            meta.slots += 1;
                            meta.slots - 1
                        }
                    }
                }
            };
            slots.push(slot);
        }
        let numbers: BTreeSet<u32> = slots.iter().map(|s| s / BLOCK).collect();
        let mut blocks = idx.blocks(&numbers, meta.dims as usize)?;
        let mut writes = Vec::with_capacity(ids.len() * 2);
        for ((id, v), slot) in ids.into_iter().zip(units).zip(slots) {
            let (scale, q) = quantize(&v);
            writes.push((
                idx.key(format_args!("v/{slot}")),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ));
            writes.push((
                idx.key(format_args!("id/{id}")),
                slot.to_le_bytes().to_vec(),
            ));
            set_slot(&mut blocks, slot, Slot { id, scale, q });
        }
        idx.commit(&meta, &blocks, writes, Vec::new())?;
        Ok(meta.count)
    }

    fn query(bucket: String, index: String, vector: Vec<f32>, k: u32) -> Result<Vec<Hit>, String> {
        let idx = Index::open(&bucket, &index)?;
        let meta = idx.meta()?;
        if meta.count == 0 || k == 0 {
            return Ok(Vec::new());
        }
        let dims = meta.dims as usize;
        if vector.len() != dims {
            return Err(format!(
                "the query vector has {} dimensions, the index's have {dims}",
                vector.len()
            ));
        }
        let query = unit(&vector, "the query vector")?;
        let (qscale, qq) = quantize(&query);
        let numbers: Vec<String> = (0..meta.slots.div_ceil(BLOCK))
            .map(|n| idx.key(format_args!("block/{n}")))
            .collect();
        // Approximate scores of every live slot.
        let mut approx: Vec<(f32, u32)> = Vec::with_capacity(meta.count as usize);
        for (n, value) in idx.get_many(&numbers)?.into_iter().enumerate() {
            let Some(bytes) = value else { continue };
            let mut at = 0;
            let mut slot = n as u32 * BLOCK;
            while at < bytes.len() {
                let (id, scale, q, next) = slot_at(&bytes, at, dims, &numbers[n])?;
                if !id.is_empty() {
                    // Safe on WebAssembly: an engine without SIMD refuses
                    // the module at validation, it cannot misbehave.
                    let d = dot_i8(&qq, q);
                    approx.push((d as f32 * scale * qscale, slot));
                }
                at = next;
                slot += 1;
            }
        }
        let keep = (k as usize * 4).max(MIN_CANDIDATES).min(approx.len());
        if keep < approx.len() {
            approx.select_nth_unstable_by(keep, |a, b| b.0.total_cmp(&a.0));
            approx.truncate(keep);
        }
        // Exact scores of the candidates.
        let keys: Vec<String> = approx
            .iter()
            .map(|(_, s)| idx.key(format_args!("v/{s}")))
            .collect();
        let full = idx.get_many(&keys)?;
        let mut scored: Vec<(f32, u32)> = Vec::with_capacity(keep);
        for (((_, slot), v), key) in approx.iter().zip(full).zip(&keys) {
            let bytes = v.ok_or_else(|| format!("the stored entry `{key}` is missing"))?;
            if bytes.len() != dims * 4 {
                return Err(damaged(key));
            }
            let v: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            scored.push((dot(&query, &v), *slot));
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.truncate(k as usize);
        // The ids of the winners, from their blocks.
        let wanted: BTreeSet<u32> = scored.iter().map(|(_, s)| s / BLOCK).collect();
        let blocks = idx.blocks(&wanted, dims)?;
        scored
            .into_iter()
            .map(|(score, slot)| {
                let id = blocks
                    .get(&(slot / BLOCK))
                    .and_then(|b| b.get((slot % BLOCK) as usize))
                    .map(|s| s.id.clone())
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| damaged(&idx.key(format_args!("block/{}", slot / BLOCK))))?;
                Ok(Hit { id, score })
            })
            .collect()
    }

    fn remove(bucket: String, index: String, ids: Vec<String>) -> Result<u32, String> {
        let idx = Index::open(&bucket, &index)?;
        let mut meta = idx.meta()?;
        let ids: Vec<String> = ids
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let slots = idx.slots_of(&ids)?;
        let found: Vec<(String, u32)> = ids
            .into_iter()
            .zip(slots)
            .filter_map(|(id, s)| s.map(|s| (id, s)))
            .collect();
        if found.is_empty() {
            return Ok(0);
        }
        let numbers: BTreeSet<u32> = found.iter().map(|(_, s)| s / BLOCK).collect();
        let mut blocks = idx.blocks(&numbers, meta.dims as usize)?;
        let mut deletes = Vec::with_capacity(found.len() * 2);
        for (id, slot) in &found {
            set_slot(&mut blocks, *slot, Slot::default());
            meta.free.push(*slot);
            meta.count -= 1;
            deletes.push(idx.key(format_args!("id/{id}")));
            deletes.push(idx.key(format_args!("v/{slot}")));
        }
        idx.commit(&meta, &blocks, Vec::new(), deletes)?;
        Ok(found.len() as u32)
    }

    fn stats(bucket: String, index: String) -> Result<IndexStats, String> {
        let meta = Index::open(&bucket, &index)?.meta()?;
        Ok(IndexStats {
            count: meta.count,
            size: meta.dims,
        })
    }
}

export!(Component);
