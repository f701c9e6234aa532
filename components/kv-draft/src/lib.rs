//! `kv-draft`: a component built against `wasi:keyvalue@0.2.0-draft`, so
//! the runtime's tests check that components built for the earlier draft
//! run beside those built for draft 2.

wit_bindgen::generate!({
    world: "kv-draft",
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
        open(&bucket)?.set(&key, value.as_bytes()).map_err(message)
    }

    fn get(bucket: String, key: String) -> Result<Option<String>, String> {
        open(&bucket)?.get(&key).map_err(message)?.map(text).transpose()
    }

    fn increment(bucket: String, key: String, delta: u64) -> Result<u64, String> {
        let b = open(&bucket)?;
        atomics::increment(&b, &key, delta).map_err(message)
    }

    fn keys(bucket: String) -> Result<Vec<String>, String> {
        let b = open(&bucket)?;
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = b.list_keys(cursor).map_err(message)?;
            all.extend(page.keys);
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(all),
            }
        }
    }

    fn round_trip(bucket: String, entries: Vec<(String, String)>) -> Result<Vec<Option<String>>, String> {
        let b = open(&bucket)?;
        let keys: Vec<String> = entries.iter().map(|(k, _)| k.clone()).collect();
        let entries: Vec<(String, Vec<u8>)> =
            entries.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        batch::set_many(&b, &entries).map_err(message)?;
        batch::get_many(&b, &keys)
            .map_err(message)?
            .into_iter()
            .map(|e| e.map(|(_, v)| text(v)).transpose())
            .collect()
    }
}

export!(Component);
