//! `keyword-index`: BM25 keyword search over passages kept in
//! `wasi:keyvalue` (`tessera:retrieval/keyword-index`).
//!
//! The index is an inverted index in the bucket the caller names:
//!
//! | key | value |
//! | --- | --- |
//! | `bm25/<index>/meta` | passages, their total length in terms, distinct terms |
//! | `bm25/<index>/doc/<id>` | the passage's length, its distinct terms and its text |
//! | `bm25/<index>/term/<term>` | the postings: each passage holding the term, how often, and the passage's length |
//!
//! A search reads the meta entry and one postings entry per query term in
//! one batch; it never reads the passages. Values are little-endian binary
//! (layouts at [`Meta`], [`Doc`] and [`Posting`]).

wit_bindgen::generate!({
    world: "keyword-index-provider",
    path: "wit",
    generate_all,
});

use std::collections::{BTreeMap, BTreeSet, HashMap};

use exports::tessera::retrieval::keyword_index::{Guest, Hit, IndexStats, Passage};
use rust_stemmers::{Algorithm, Stemmer};
use unicode_segmentation::UnicodeSegmentation;
use wasi::keyvalue::{batch, store};

/// BM25's term-frequency saturation.
const K1: f32 = 1.2;
/// BM25's length normalization.
const B: f32 = 0.75;
/// Longer words (in bytes) are not indexed: they are not words.
const MAX_TERM_BYTES: usize = 64;

/// The component's single implementation type.
struct Component;

fn message(e: store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "no such store".into(),
        store::Error::AccessDenied => "access denied".into(),
        store::Error::Other(m) => m,
    }
}

fn open(bucket: &str) -> Result<store::Bucket, String> {
    store::open(bucket).map_err(|e| format!("opening bucket `{bucket}`: {}", message(e)))
}

fn check_index(index: &str) -> Result<(), String> {
    if index.is_empty() || index.contains('/') || index.chars().any(char::is_control) {
        return Err(format!(
            "the index name {index:?} must be non-empty, without `/` or control characters"
        ));
    }
    Ok(())
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.chars().any(char::is_control) || id.len() > 512 {
        return Err(format!(
            "the passage id {id:?} must be 1-512 bytes without control characters"
        ));
    }
    Ok(())
}

/// The terms of a text, in order: Unicode words, lowercased, English stop
/// words left out, stemmed.
fn terms(text: &str) -> Vec<String> {
    let stemmer = Stemmer::create(Algorithm::English);
    let stop = stop_words();
    text.unicode_words()
        .map(str::to_lowercase)
        .filter(|w| w.len() <= MAX_TERM_BYTES && !stop.contains(w.as_str()))
        .map(|w| stemmer.stem(&w).into_owned())
        .collect()
}

/// The English stop words, built once per instance (an `add` of many
/// passages asks for them once per passage).
fn stop_words() -> &'static BTreeSet<&'static str> {
    static STOP: std::sync::OnceLock<BTreeSet<&'static str>> = std::sync::OnceLock::new();
    STOP.get_or_init(|| {
        stop_words::get(stop_words::LANGUAGE::English)
            .iter()
            .copied()
            .collect()
    })
}

/// A little-endian reader over a stored value.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'a str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!("the stored entry `{}` is damaged", self.what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().unwrap_or_default(),
        ))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    fn str(&mut self) -> Result<String, String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| format!("the stored entry `{}` is damaged", self.what))
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// `meta`: passages (u32), total length in terms (u64), distinct terms (u32).
#[derive(Default)]
struct Meta {
    docs: u32,
    total_len: u64,
    terms: u32,
}

impl Meta {
    fn decode(bytes: &[u8], what: &str) -> Result<Self, String> {
        let mut r = Reader { bytes, what };
        Ok(Meta {
            docs: r.u32()?,
            total_len: r.u64()?,
            terms: r.u32()?,
        })
    }
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&self.docs.to_le_bytes());
        out.extend_from_slice(&self.total_len.to_le_bytes());
        out.extend_from_slice(&self.terms.to_le_bytes());
        out
    }
}

/// `doc/<id>`: length in terms (u32), distinct terms (u32, then each as u16
/// length and bytes), then the text to the end.
struct Doc {
    len: u32,
    terms: Vec<String>,
    text: String,
}

impl Doc {
    fn decode(bytes: &[u8], what: &str) -> Result<Self, String> {
        let mut r = Reader { bytes, what };
        let len = r.u32()?;
        let n = r.u32()? as usize;
        let terms = (0..n).map(|_| r.str()).collect::<Result<_, _>>()?;
        let text = String::from_utf8(r.bytes.to_vec())
            .map_err(|_| format!("the stored entry `{what}` is damaged"))?;
        Ok(Doc { len, terms, text })
    }
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.text.len() + 8 * self.terms.len());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&(self.terms.len() as u32).to_le_bytes());
        for t in &self.terms {
            put_str(&mut out, t);
        }
        out.extend_from_slice(self.text.as_bytes());
        out
    }
}

/// One entry of `term/<term>`: the passage id (u16 length and bytes), how
/// often the term occurs in it (u32) and the passage's length (u32).
struct Posting {
    id: String,
    tf: u32,
    len: u32,
}

fn decode_postings(bytes: &[u8], what: &str) -> Result<Vec<Posting>, String> {
    let mut r = Reader { bytes, what };
    let mut out = Vec::new();
    while !r.bytes.is_empty() {
        out.push(Posting {
            id: r.str()?,
            tf: r.u32()?,
            len: r.u32()?,
        });
    }
    Ok(out)
}

fn encode_postings(postings: &[Posting]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in postings {
        put_str(&mut out, &p.id);
        out.extend_from_slice(&p.tf.to_le_bytes());
        out.extend_from_slice(&p.len.to_le_bytes());
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
        check_index(index)?;
        Ok(Index {
            bucket: open(bucket)?,
            prefix: format!("bm25/{index}/"),
        })
    }

    fn meta_key(&self) -> String {
        format!("{}meta", self.prefix)
    }
    fn doc_key(&self, id: &str) -> String {
        format!("{}doc/{id}", self.prefix)
    }
    fn term_key(&self, term: &str) -> String {
        format!("{}term/{term}", self.prefix)
    }

    fn meta(&self) -> Result<Meta, String> {
        let key = self.meta_key();
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

    fn docs(&self, ids: &[String]) -> Result<Vec<Option<Doc>>, String> {
        let keys: Vec<String> = ids.iter().map(|id| self.doc_key(id)).collect();
        self.get_many(&keys)?
            .into_iter()
            .zip(&keys)
            .map(|(v, k)| v.map(|b| Doc::decode(&b, k)).transpose())
            .collect()
    }

    /// The postings of `terms`, keyed by term.
    fn postings(&self, terms: &BTreeSet<String>) -> Result<BTreeMap<String, Vec<Posting>>, String> {
        let keys: Vec<String> = terms.iter().map(|t| self.term_key(t)).collect();
        let values = self.get_many(&keys)?;
        terms
            .iter()
            .zip(values)
            .zip(&keys)
            .map(|((t, v), k)| {
                let list = match v {
                    Some(b) => decode_postings(&b, k)?,
                    None => Vec::new(),
                };
                Ok((t.clone(), list))
            })
            .collect()
    }

    /// Removes the passages `ids` (those that exist) and adds `added`, in
    /// one read of the touched postings and one write.
    fn update(
        &self,
        ids: &[String],
        added: Vec<(String, Doc, BTreeMap<String, u32>)>,
    ) -> Result<u32, String> {
        let mut meta = self.meta()?;
        let old = self.docs(ids)?;
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut gone: BTreeSet<&str> = BTreeSet::new();
        let mut removed = 0u32;
        for (id, doc) in ids.iter().zip(&old) {
            if let Some(doc) = doc {
                touched.extend(doc.terms.iter().cloned());
                gone.insert(id);
                meta.docs -= 1;
                meta.total_len -= u64::from(doc.len);
                removed += 1;
            }
        }
        for (_, _, tf) in &added {
            touched.extend(tf.keys().cloned());
        }
        let mut postings = self.postings(&touched)?;
        let mut writes: Vec<(String, Vec<u8>)> = Vec::new();
        let mut deletes: Vec<String> = Vec::new();
        for list in postings.values_mut() {
            let was_empty = list.is_empty();
            list.retain(|p| !gone.contains(p.id.as_str()));
            if !was_empty {
                meta.terms -= 1;
            }
        }
        let readded: BTreeSet<String> = added.iter().map(|(id, _, _)| id.clone()).collect();
        for (id, doc, tf) in added {
            for (term, n) in tf {
                if let Some(list) = postings.get_mut(&term) {
                    list.push(Posting {
                        id: id.clone(),
                        tf: n,
                        len: doc.len,
                    });
                }
            }
            meta.docs += 1;
            meta.total_len += u64::from(doc.len);
            writes.push((self.doc_key(&id), doc.encode()));
        }
        for id in gone.iter().filter(|id| !readded.contains(**id)) {
            deletes.push(self.doc_key(id));
        }
        for (term, list) in &postings {
            if list.is_empty() {
                deletes.push(self.term_key(term));
            } else {
                meta.terms += 1;
                writes.push((self.term_key(term), encode_postings(list)));
            }
        }
        writes.push((self.meta_key(), meta.encode()));
        if !deletes.is_empty() {
            batch::delete_many(&self.bucket, &deletes).map_err(message)?;
        }
        batch::set_many(&self.bucket, &writes).map_err(message)?;
        Ok(removed)
    }
}

impl Guest for Component {
    fn add(bucket: String, index: String, passages: Vec<Passage>) -> Result<u32, String> {
        let idx = Index::open(&bucket, &index)?;
        let mut seen = BTreeSet::new();
        let mut added = Vec::with_capacity(passages.len());
        for (i, p) in passages.into_iter().enumerate() {
            check_id(&p.id).map_err(|e| format!("passages[{i}]: {e}"))?;
            if !seen.insert(p.id.clone()) {
                return Err(format!("passages[{i}]: the id {:?} is given twice", p.id));
            }
            let words = terms(&p.text);
            let mut tf: BTreeMap<String, u32> = BTreeMap::new();
            for w in &words {
                *tf.entry(w.clone()).or_default() += 1;
            }
            let doc = Doc {
                len: words.len() as u32,
                terms: tf.keys().cloned().collect(),
                text: p.text,
            };
            added.push((p.id, doc, tf));
        }
        let ids: Vec<String> = added.iter().map(|(id, _, _)| id.clone()).collect();
        idx.update(&ids, added)?;
        Ok(idx.meta()?.docs)
    }

    fn search(bucket: String, index: String, query: String, k: u32) -> Result<Vec<Hit>, String> {
        let idx = Index::open(&bucket, &index)?;
        let meta = idx.meta()?;
        if meta.docs == 0 || k == 0 {
            return Ok(Vec::new());
        }
        let query_terms: BTreeSet<String> = terms(&query).into_iter().collect();
        let postings = idx.postings(&query_terms)?;
        let n = meta.docs as f32;
        let avg = meta.total_len as f32 / n;
        let mut scores: HashMap<String, f32> = HashMap::new();
        for list in postings.values() {
            if list.is_empty() {
                continue;
            }
            let df = list.len() as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for p in list {
                let tf = p.tf as f32;
                let norm = K1 * (1.0 - B + B * p.len as f32 / avg.max(f32::MIN_POSITIVE));
                *scores.entry(p.id.clone()).or_default() += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        let mut hits: Vec<Hit> = scores
            .into_iter()
            .map(|(id, score)| Hit { id, score })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        hits.truncate(k as usize);
        Ok(hits)
    }

    fn get(
        bucket: String,
        index: String,
        ids: Vec<String>,
    ) -> Result<Vec<Option<Passage>>, String> {
        let idx = Index::open(&bucket, &index)?;
        Ok(idx
            .docs(&ids)?
            .into_iter()
            .zip(ids)
            .map(|(d, id)| d.map(|d| Passage { id, text: d.text }))
            .collect())
    }

    fn remove(bucket: String, index: String, ids: Vec<String>) -> Result<u32, String> {
        let idx = Index::open(&bucket, &index)?;
        let unique: Vec<String> = ids
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        idx.update(&unique, Vec::new())
    }

    fn stats(bucket: String, index: String) -> Result<IndexStats, String> {
        let meta = Index::open(&bucket, &index)?.meta()?;
        Ok(IndexStats {
            count: meta.docs,
            size: meta.terms,
        })
    }
}

export!(Component);
