//! `tessera kv`: the key-value buckets components use through
//! `wasi:keyvalue`. Without `--server` it opens the data directory's stores
//! (its `[store]` settings: the embedded store, and NATS when configured);
//! with `--server` it goes through that server's HTTP API (`/v1/kv`).
//!
//! The embedded store is one file that one process at a time may hold: a
//! running `tessera serve` that has used it keeps it, and the local
//! command then says so and points at `--server`.
//!
//! `--json` prints the documents the HTTP API answers, locally too, and
//! failures as JSON with the API's error codes as their `kind`
//! (`invalid_bucket`, `invalid_key`, `no_such_key`, `conflict`,
//! `store_unavailable`, `store`).

use std::io::Write as _;
use std::path::PathBuf;

use base64::Engine as _;
use serde_json::{Value, json};
use tessera_server::api::{
    BucketInfo, DEFAULT_KEY_PAGE, KeyPage, KvEntry, KvWritten, MAX_KEY_PAGE,
};
use tessera_store::{BackendKind, Expect, SharedStore, StoreError, Stores};

use crate::cmd::remote::Api;
use crate::exit;
use crate::failure::{Failure, Outcome, finish};
use crate::setup::GlobalArgs;

/// Exit codes of `tessera kv`, in its help.
const KV_EXIT_CODES: &str = "Exit codes:
  0  success
  1  internal error, or the store cannot be opened or reached (held by a running
     `tessera serve`: use --server; NATS down)
  2  bad input: usage, an invalid bucket name or key, `get` of a key without a
     value, a failed condition (--expect-revision, --expect-absent)";

/// Arguments of `tessera kv`.
#[derive(Debug, clap::Args)]
#[command(after_help = KV_EXIT_CODES)]
pub struct Args {
    /// Go through a running server's HTTP API (`http://host:port`) instead
    /// of opening the data directory's stores (which a running server
    /// holds).
    #[arg(long, env = "TESSERA_SERVER", global = true)]
    pub server: Option<String>,
    /// Bearer token for `--server` (scope `read` to read, `manage` to
    /// write).
    #[arg(long, env = "TESSERA_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON (the documents the HTTP API answers); failures are JSON
    /// too.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands of `tessera kv`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List the buckets that hold keys, with their backend (`embedded`,
    /// `nats`).
    Buckets,
    /// List a bucket's keys in order, one per line (a page at a time;
    /// `--all` for every page).
    #[command(after_help = KV_EXIT_CODES)]
    List {
        /// The bucket.
        #[arg(long)]
        bucket: String,
        /// Only keys that start with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only keys after this one (a previous page's cursor).
        #[arg(long)]
        after: Option<String>,
        /// Keys per page, 1 to 1000 (default 100; 1000 with `--all`).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_KEY_PAGE as u64))]
        limit: Option<u64>,
        /// Every key, following the cursor to the last page.
        #[arg(long)]
        all: bool,
    },
    /// Print a key's value: its text, or (for bytes that are not UTF-8)
    /// how many bytes it has. Exit 2 when the key has no value.
    #[command(after_help = KV_EXIT_CODES)]
    Get {
        /// The bucket.
        #[arg(long)]
        bucket: String,
        /// The key.
        key: String,
        /// Write the value's bytes to stdout as they are (no newline).
        #[arg(long)]
        raw: bool,
    },
    /// Write a key's value and print the new revision.
    #[command(after_help = KV_EXIT_CODES)]
    Put {
        /// The bucket.
        #[arg(long)]
        bucket: String,
        /// The key.
        key: String,
        /// The value (text).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        value: Option<String>,
        /// Take the value's bytes from this file instead.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Write only if the key's value is at this revision
        /// (compare-and-swap).
        #[arg(long, conflicts_with = "expect_absent")]
        expect_revision: Option<u64>,
        /// Write only if the key has no value.
        #[arg(long)]
        expect_absent: bool,
    },
    /// Remove a key (removing a key without a value is not an error).
    #[command(after_help = KV_EXIT_CODES)]
    Delete {
        /// The bucket.
        #[arg(long)]
        bucket: String,
        /// The key.
        key: String,
        /// Remove only if the key's value is at this revision.
        #[arg(long)]
        expect_revision: Option<u64>,
    },
}

/// Runs the subcommand and returns the exit code.
pub async fn run(global: &GlobalArgs, args: Args) -> i32 {
    let json = args.json;
    let outcome = match (&args.command, json) {
        (Command::Get { raw: true, .. }, true) => Err(Failure::bad_input(
            "usage",
            "--raw writes the value's bytes, --json a document: give one of them",
        )),
        _ => match args.server {
            Some(server) => remote(&server, args.token, args.command, json).await,
            None => local(global, args.command, json).await,
        },
    };
    finish(outcome, json)
}

/// What a subcommand produced, to print.
enum Output {
    /// A document, printed as JSON with `--json`, otherwise by `text`.
    Doc(Value, fn(&Value)),
    /// Bytes for stdout as they are (`get --raw`).
    Raw(Vec<u8>),
}

fn print(output: Output, json: bool) -> Outcome {
    match output {
        Output::Doc(doc, text) if !json => text(&doc),
        Output::Doc(doc, _) => {
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Output::Raw(bytes) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)
                .and_then(|()| out.flush())
                .map_err(|e| Failure::internal("io", format!("writing to stdout: {e}")))?;
        }
    }
    Ok(exit::OK)
}

fn print_buckets(v: &Value) {
    for b in v["buckets"].as_array().into_iter().flatten() {
        println!(
            "{:<32} {}",
            b["name"].as_str().unwrap_or_default(),
            b["backend"].as_str().unwrap_or_default()
        );
    }
}

fn print_keys(v: &Value) {
    for k in v["keys"].as_array().into_iter().flatten() {
        println!("{}", k.as_str().unwrap_or_default());
    }
    if let Some(cursor) = v["cursor"].as_str() {
        eprintln!("(more keys: --after {cursor:?}, or --all)");
    }
}

fn print_value(v: &Value) {
    match v["value"].as_str() {
        Some(text) if text.ends_with('\n') => print!("{text}"),
        Some(text) => println!("{text}"),
        None => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v["value_base64"].as_str().unwrap_or_default())
                .map_or(0, |b| b.len());
            eprintln!(
                "the value is {bytes} bytes of binary data (not UTF-8 text); \
                 use --raw to write them as they are, or --json for base64"
            );
        }
    }
}

fn print_revision(v: &Value) {
    println!("{}", v["revision"]);
}

fn print_deleted(v: &Value) {
    println!(
        "deleted {:?} from {}",
        v["key"].as_str().unwrap_or_default(),
        v["bucket"].as_str().unwrap_or_default()
    );
}

/// The document `get` shows: the API's, or its bytes with `--raw`.
fn got(doc: Value, raw: bool) -> Result<Output, Failure> {
    if !raw {
        return Ok(Output::Doc(doc, print_value));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(doc["value_base64"].as_str().unwrap_or_default())
        .map_err(|e| Failure::internal("bad_answer", format!("value_base64: {e}")))?;
    Ok(Output::Raw(bytes))
}

fn deleted(bucket: &str, key: &str) -> Value {
    json!({ "bucket": bucket, "key": key, "deleted": true })
}

/// The value `put` writes: the text argument or the file's bytes.
fn value_of(value: Option<String>, file: Option<PathBuf>) -> Result<Vec<u8>, Failure> {
    match (value, file) {
        (Some(text), _) => Ok(text.into_bytes()),
        (None, Some(path)) => std::fs::read(&path).map_err(|e| {
            Failure::bad_input("read", format!("{}: {e}", path.display()))
                .with("path", path.display().to_string())
        }),
        (None, None) => Err(Failure::bad_input(
            "usage",
            "give the value, or --file with its bytes",
        )),
    }
}

/// Percent-encodes everything but the unreserved characters, for a path
/// segment or a query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Through a running server's API.
async fn remote(server: &str, token: Option<String>, command: Command, json: bool) -> Outcome {
    let api = Api::new(server, token).map_err(Failure::from)?;
    let output = match command {
        Command::Buckets => Output::Doc(api.request("GET", "/v1/kv", None).await?, print_buckets),
        Command::List {
            bucket,
            prefix,
            after,
            limit,
            all,
        } => {
            let limit = page_size(limit, all);
            let mut after = after;
            let mut doc: Option<Value> = None;
            loop {
                let mut path = format!("/v1/kv/{}?limit={limit}", encode(&bucket));
                if !prefix.is_empty() {
                    path.push_str(&format!("&prefix={}", encode(&prefix)));
                }
                if let Some(a) = &after {
                    path.push_str(&format!("&after={}", encode(a)));
                }
                let page = api.request("GET", &path, None).await?;
                after = page["cursor"].as_str().map(str::to_string);
                doc = Some(match doc {
                    None => page,
                    Some(mut d) => {
                        let more = page["keys"].as_array().cloned().unwrap_or_default();
                        if let Some(keys) = d["keys"].as_array_mut() {
                            keys.extend(more);
                        }
                        d["cursor"] = page["cursor"].clone();
                        d
                    }
                });
                if !all || after.is_none() {
                    break;
                }
            }
            Output::Doc(doc.unwrap_or_default(), print_keys)
        }
        Command::Get { bucket, key, raw } => {
            let path = format!("/v1/kv/{}/{}", encode(&bucket), encode(&key));
            got(api.request("GET", &path, None).await?, raw)?
        }
        Command::Put {
            bucket,
            key,
            value,
            file,
            expect_revision,
            expect_absent,
        } => {
            let mut body = match (value, file) {
                (Some(text), _) => json!({ "value": text }),
                (None, file) => json!({
                    "value_base64": base64::engine::general_purpose::STANDARD
                        .encode(value_of(None, file)?),
                }),
            };
            if let Some(r) = expect_revision {
                body["expect_revision"] = json!(r);
            }
            if expect_absent {
                body["expect_absent"] = json!(true);
            }
            let path = format!("/v1/kv/{}/{}", encode(&bucket), encode(&key));
            Output::Doc(api.request("PUT", &path, Some(body)).await?, print_revision)
        }
        Command::Delete {
            bucket,
            key,
            expect_revision,
        } => {
            let mut path = format!("/v1/kv/{}/{}", encode(&bucket), encode(&key));
            if let Some(r) = expect_revision {
                path.push_str(&format!("?expect_revision={r}"));
            }
            api.request("DELETE", &path, None).await?;
            Output::Doc(deleted(&bucket, &key), print_deleted)
        }
    };
    print(output, json)
}

/// Keys per page: `--limit`, else 100 (1000 with `--all`).
fn page_size(limit: Option<u64>, all: bool) -> usize {
    match limit {
        Some(n) => usize::try_from(n).unwrap_or(MAX_KEY_PAGE),
        None if all => MAX_KEY_PAGE,
        None => DEFAULT_KEY_PAGE,
    }
}

/// A store error as a failure whose kind is the HTTP API's error code.
fn store_failure(e: StoreError) -> Failure {
    let message = e.to_string();
    match e {
        StoreError::InvalidBucket { name, .. } => {
            Failure::bad_input("invalid_bucket", message).with("bucket", name)
        }
        StoreError::InvalidKey { key, .. } => {
            Failure::bad_input("invalid_key", message).with("key", key)
        }
        StoreError::Conflict {
            bucket,
            key,
            expected,
            found,
        } => {
            let f = Failure::bad_input("conflict", message)
                .with("bucket", bucket)
                .with("key", key);
            let f = match expected {
                Expect::Revision(r) => f.with("expected_revision", r),
                Expect::Absent => f.with("expected_absent", true),
                Expect::Any => f,
            };
            match found {
                Some(r) => f.with("found_revision", r),
                None => f,
            }
        }
        StoreError::NotAnInteger { bucket, key } | StoreError::Overflow { bucket, key } => {
            Failure::bad_input("conflict", message)
                .with("bucket", bucket)
                .with("key", key)
        }
        StoreError::Unavailable { backend, at, .. } => {
            Failure::internal("store_unavailable", message)
                .with("backend", backend)
                .with("at", at)
        }
        StoreError::Settings { origin, field, .. } => Failure::bad_input("settings", message)
            .with("settings", origin)
            .with("field", field),
        StoreError::Backend { backend, .. } => {
            Failure::internal("store", message).with("backend", backend)
        }
    }
}

/// Checks the names, then opens the bucket's backend.
async fn open(stores: &Stores, bucket: &str, key: Option<&str>) -> Result<SharedStore, Failure> {
    tessera_store::check_bucket(bucket).map_err(store_failure)?;
    if let Some(key) = key {
        tessera_store::check_key(key).map_err(store_failure)?;
    }
    stores.for_bucket(bucket).await.map_err(store_failure)
}

/// On the data directory's stores.
async fn local(global: &GlobalArgs, command: Command, json: bool) -> Outcome {
    let stores = global
        .stores()
        .map_err(|e| Failure::bad_input("settings", e))?;
    let output = match command {
        Command::Buckets => {
            let s = stores.settings();
            let mut kinds = Vec::new();
            if s.default == BackendKind::Embedded
                || s.buckets.values().any(|b| *b == BackendKind::Embedded)
                || stores.embedded_path().exists()
            {
                kinds.push(BackendKind::Embedded);
            }
            if s.nats.is_some() {
                kinds.push(BackendKind::Nats);
            }
            let mut buckets = Vec::new();
            for kind in kinds {
                let store = stores.backend(kind).await.map_err(store_failure)?;
                for name in store.buckets().await.map_err(store_failure)? {
                    buckets.push(BucketInfo {
                        name,
                        backend: kind.name().to_string(),
                    });
                }
            }
            buckets.sort();
            Output::Doc(json!({ "buckets": buckets }), print_buckets)
        }
        Command::List {
            bucket,
            prefix,
            after,
            limit,
            all,
        } => {
            let store = open(&stores, &bucket, None).await?;
            let limit = page_size(limit, all);
            let mut after = after.filter(|a| !a.is_empty());
            let mut keys = Vec::new();
            let cursor = loop {
                let page = store
                    .list(&bucket, &prefix, after.as_deref(), limit)
                    .await
                    .map_err(store_failure)?;
                keys.extend(page.keys);
                after = page.cursor;
                if !all || after.is_none() {
                    break after;
                }
            };
            let page = KeyPage {
                backend: store.backend().to_string(),
                bucket,
                keys,
                cursor,
            };
            Output::Doc(serde_json::to_value(page).unwrap_or_default(), print_keys)
        }
        Command::Get { bucket, key, raw } => {
            let store = open(&stores, &bucket, Some(&key)).await?;
            let entry = store
                .get(&bucket, &key)
                .await
                .map_err(store_failure)?
                .ok_or_else(|| {
                    Failure::bad_input(
                        "no_such_key",
                        format!("bucket `{bucket}` has no value at key {key:?}"),
                    )
                    .with("bucket", bucket.as_str())
                    .with("key", key.as_str())
                })?;
            got(
                serde_json::to_value(KvEntry::new(&bucket, &key, &entry)).unwrap_or_default(),
                raw,
            )?
        }
        Command::Put {
            bucket,
            key,
            value,
            file,
            expect_revision,
            expect_absent,
        } => {
            let store = open(&stores, &bucket, Some(&key)).await?;
            let value = value_of(value, file)?;
            let expect = match (expect_revision, expect_absent) {
                (Some(r), _) => Expect::Revision(r),
                (None, true) => Expect::Absent,
                (None, false) => Expect::Any,
            };
            let revision = store
                .put(&bucket, &key, &value, expect, None)
                .await
                .map_err(store_failure)?;
            Output::Doc(
                serde_json::to_value(KvWritten { revision }).unwrap_or_default(),
                print_revision,
            )
        }
        Command::Delete {
            bucket,
            key,
            expect_revision,
        } => {
            let store = open(&stores, &bucket, Some(&key)).await?;
            let expect = expect_revision.map_or(Expect::Any, Expect::Revision);
            store
                .delete(&bucket, &key, expect)
                .await
                .map_err(store_failure)?;
            Output::Doc(deleted(&bucket, &key), print_deleted)
        }
    };
    print(output, json)
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn keys_are_percent_encoded_whole() {
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
        assert_eq!(encode("é+%?&#"), "%C3%A9%2B%25%3F%26%23");
        assert_eq!(encode("A-z_0.9~"), "A-z_0.9~");
    }
}
