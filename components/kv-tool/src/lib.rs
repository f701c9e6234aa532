//! `kv-tool`: notes and counters in key-value buckets through
//! `wasi:keyvalue@0.2.0-draft2` (`store`, `atomics`, `batch`), so the
//! runtime's tests and the examples exercise every operation a component
//! can ask of a bucket.

wit_bindgen::generate!({
    world: "kv-tool",
    path: "wit",
    generate_all,
});

use wasi::keyvalue::{atomics, batch, store};

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
    store::open(bucket).map_err(|e| format!("opening `{bucket}`: {}", message(e)))
}

fn text(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| "the value is not UTF-8 text".to_string())
}

impl Guest for Component {
    fn set(bucket: String, key: String, value: String) -> Result<(), String> {
        open(&bucket)?
            .set(&key, value.as_bytes())
            .map_err(message)
    }

    fn get(bucket: String, key: String) -> Result<Option<String>, String> {
        open(&bucket)?
            .get(&key)
            .map_err(message)?
            .map(text)
            .transpose()
    }

    fn delete(bucket: String, key: String) -> Result<(), String> {
        open(&bucket)?.delete(&key).map_err(message)
    }

    fn exists(bucket: String, key: String) -> Result<bool, String> {
        open(&bucket)?.exists(&key).map_err(message)
    }

    fn keys(bucket: String) -> Result<Vec<String>, String> {
        let b = open(&bucket)?;
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = b.list_keys(cursor.as_deref()).map_err(message)?;
            all.extend(page.keys);
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(all),
            }
        }
    }

    fn increment(bucket: String, key: String, delta: i64) -> Result<i64, String> {
        let b = open(&bucket)?;
        atomics::increment(&b, &key, delta).map_err(message)
    }

    fn append(bucket: String, key: String, suffix: String) -> Result<String, String> {
        let b = open(&bucket)?;
        let mut cas = atomics::Cas::new(&b, &key).map_err(message)?;
        loop {
            let now = cas.current().map_err(message)?.unwrap_or_default();
            let mut next = text(now)?;
            next.push_str(&suffix);
            match atomics::swap(cas, next.as_bytes()) {
                Ok(()) => return Ok(next),
                Err(atomics::CasError::CasFailed(again)) => cas = again,
                Err(atomics::CasError::StoreError(e)) => return Err(message(e)),
            }
        }
    }

    fn set_many(bucket: String, entries: Vec<(String, String)>) -> Result<(), String> {
        let b = open(&bucket)?;
        let entries: Vec<(String, Vec<u8>)> = entries
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        batch::set_many(&b, &entries).map_err(message)
    }

    fn get_many(bucket: String, keys: Vec<String>) -> Result<Vec<Option<String>>, String> {
        let b = open(&bucket)?;
        batch::get_many(&b, &keys)
            .map_err(message)?
            .into_iter()
            .map(|e| e.map(|(_, v)| text(v)).transpose())
            .collect()
    }

    fn delete_many(bucket: String, keys: Vec<String>) -> Result<(), String> {
        let b = open(&bucket)?;
        batch::delete_many(&b, &keys).map_err(message)
    }
}

export!(Component);
