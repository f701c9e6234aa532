//! `wasi:keyvalue@0.2.0-draft2` (`store`, `atomics`, `batch`): buckets in
//! the host's stores, granted by name.
//!
//! Manifest key: `[keyvalue] buckets = ["notes", "cache:ro"]` — the buckets
//! a component may open, each read-write or, with `:ro`, read-only. Deny
//! by default: opening a bucket that is not granted answers
//! `access-denied` and writes a `deny` audit event; so does a write to a
//! read-only bucket. Where a bucket lives (the embedded store or NATS
//! JetStream) is host configuration ([`HostConfig::stores`], the `[store]`
//! settings of the data directory), never the manifest's business.
//!
//! Every operation is a step: the request (bucket, key, and the value for
//! writes) and what the store answered. A replay answers every one from
//! the journal and never touches a store, so a run that used a bucket
//! replays on a machine that has none. `cas` handles carry the revision
//! they read, so a swap is a compare-and-swap on the store's revision
//! (not on the bytes).

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::WasiCtxBuilder;

use super::{Capability, Effects, HostConfig, Section};
use crate::audit::Decision;
use crate::gateway::{Bytes, Gateway, Op, Step};
use crate::host::HostState;
use crate::manifest::ManifestError;
use crate::policy::Interaction;

/// Keys per page of `list-keys`.
pub const LIST_PAGE: usize = 1000;

/// An open bucket, as the guest holds it.
#[derive(Debug, Clone)]
pub struct BucketHandle {
    name: String,
    writable: bool,
}

/// A compare-and-swap handle: the key and what was read from it.
#[derive(Debug, Clone)]
pub struct CasHandle {
    bucket: BucketHandle,
    key: String,
    current: Option<Versioned>,
}

#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        inline: "
            package wasi:keyvalue@0.2.0-draft2;

            interface store {
                variant error {
                    no-such-store,
                    access-denied,
                    other(string)
                }
                record key-response {
                    keys: list<string>,
                    cursor: option<string>
                }
                open: func(identifier: string) -> result<bucket, error>;
                resource bucket {
                    get: func(key: string) -> result<option<list<u8>>, error>;
                    set: func(key: string, value: list<u8>) -> result<_, error>;
                    delete: func(key: string) -> result<_, error>;
                    exists: func(key: string) -> result<bool, error>;
                    list-keys: func(cursor: option<string>) -> result<key-response, error>;
                }
            }

            interface atomics {
                use store.{bucket, error};
                variant cas-error {
                    store-error(error),
                    cas-failed(cas),
                }
                resource cas {
                    new: static func(bucket: borrow<bucket>, key: string) -> result<cas, error>;
                    current: func() -> result<option<list<u8>>, error>;
                }
                increment: func(bucket: borrow<bucket>, key: string, delta: s64) -> result<s64, error>;
                swap: func(cas: cas, value: list<u8>) -> result<_, cas-error>;
            }

            interface batch {
                use store.{bucket, error};
                get-many: func(bucket: borrow<bucket>, keys: list<string>) -> result<list<option<tuple<string, list<u8>>>>, error>;
                set-many: func(bucket: borrow<bucket>, key-values: list<tuple<string, list<u8>>>) -> result<_, error>;
                delete-many: func(bucket: borrow<bucket>, keys: list<string>) -> result<_, error>;
            }

            world host {
                import store;
                import atomics;
                import batch;
            }
        ",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::BucketHandle,
            "wasi:keyvalue/atomics.cas": super::CasHandle,
        },
    });
}

use bindings::wasi::keyvalue::atomics::CasError as WitCasError;
use bindings::wasi::keyvalue::store::{Error as WitError, KeyResponse};

/// The key-value capability.
#[derive(Debug)]
pub struct KeyValue;

/// How a component may use a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Read and write.
    ReadWrite,
    /// Read only (`name:ro` in the manifest).
    ReadOnly,
}

/// The buckets a component may open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValueGrant {
    /// Bucket name → access.
    #[serde(default)]
    pub buckets: BTreeMap<String, Access>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyValue {
    #[serde(default)]
    buckets: Vec<String>,
}

/// An error as the guest sees it (`wasi:keyvalue/store.error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvError {
    /// `no-such-store`.
    NoSuchStore,
    /// `access-denied`: not granted, or a write to a read-only bucket.
    AccessDenied,
    /// `other`: what the store said.
    Other(String),
}

/// A value and the revision that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The bytes.
    pub value: Bytes,
    /// The store's revision.
    pub revision: u64,
}

/// A request that names a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRequest {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
}

/// `bucket.set`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRequest {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// The value.
    pub value: Bytes,
}

/// `bucket.list-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {
    /// The bucket.
    pub bucket: String,
    /// Where the page starts.
    pub cursor: Option<String>,
}

/// One page of keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPage {
    /// The keys.
    pub keys: Vec<String>,
    /// Where the next page starts.
    pub cursor: Option<String>,
}

/// `atomics.increment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementRequest {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// What to add.
    pub delta: i64,
}

/// `atomics.swap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapRequest {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// The revision the handle read (`None`: the key had no value).
    pub expected: Option<u64>,
    /// The new value.
    pub value: Bytes,
}

/// Why a swap did not happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwapError {
    /// Another writer changed the key: what it holds now.
    Conflict(Option<Versioned>),
    /// The store failed.
    Store(KvError),
}

/// `batch.get-many` / `batch.delete-many`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysRequest {
    /// The bucket.
    pub bucket: String,
    /// The keys.
    pub keys: Vec<String>,
}

/// `batch.set-many`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetManyRequest {
    /// The bucket.
    pub bucket: String,
    /// Keys and values.
    pub entries: Vec<(String, Bytes)>,
}

macro_rules! ops {
    ($($(#[$doc:meta])* $ty:ident $name:literal: $req:ty => $resp:ty;)*) => {
        $(
            $(#[$doc])*
            pub struct $ty;
            impl Op for $ty {
                const CAPABILITY: &'static str = "keyvalue";
                const NAME: &'static str = $name;
                type Request = $req;
                type Response = $resp;
            }
        )*
    };
}

ops! {
    /// `store.open`.
    Open "open": String => Result<(), KvError>;
    /// `bucket.get`.
    Get "get": KeyRequest => Result<Option<Bytes>, KvError>;
    /// `bucket.set`.
    Set "set": SetRequest => Result<(), KvError>;
    /// `bucket.delete`.
    Delete "delete": KeyRequest => Result<(), KvError>;
    /// `bucket.exists`.
    Exists "exists": KeyRequest => Result<bool, KvError>;
    /// `bucket.list-keys`.
    ListKeys "list-keys": ListRequest => Result<KeyPage, KvError>;
    /// `atomics.increment`.
    Increment "increment": IncrementRequest => Result<i64, KvError>;
    /// `atomics.cas.new`: reads the value and its revision.
    CasRead "cas": KeyRequest => Result<Option<Versioned>, KvError>;
    /// `atomics.swap`.
    Swap "swap": SwapRequest => Result<(), SwapError>;
    /// `batch.get-many`.
    GetMany "get-many": KeysRequest => Result<Vec<Option<Bytes>>, KvError>;
    /// `batch.set-many`.
    SetMany "set-many": SetManyRequest => Result<(), KvError>;
    /// `batch.delete-many`.
    DeleteMany "delete-many": KeysRequest => Result<(), KvError>;
}

fn store_error(e: tessera_store::StoreError) -> KvError {
    KvError::Other(e.to_string())
}

/// The store that holds `bucket`, from the host's configuration.
async fn store_for(gateway: &Gateway, bucket: &str) -> Result<tessera_store::SharedStore, KvError> {
    match &gateway.host().stores {
        None => Err(KvError::Other(
            "this host has no key-value store configured".into(),
        )),
        Some(stores) => stores.for_bucket(bucket).await.map_err(store_error),
    }
}

/// The bucket a request is about (its trace span's target).
trait Bucketed {
    fn bucket(&self) -> &str;
}

impl Bucketed for String {
    fn bucket(&self) -> &str {
        self
    }
}

macro_rules! bucketed {
    ($($t:ty),*) => {
        $(impl Bucketed for $t {
            fn bucket(&self) -> &str {
                &self.bucket
            }
        })*
    };
}
bucketed!(
    KeyRequest,
    SetRequest,
    ListRequest,
    IncrementRequest,
    SwapRequest,
    KeysRequest,
    SetManyRequest
);

/// Whether an answer is a refusal (its trace span's decision).
trait Refused {
    fn refused(&self) -> bool;
}

impl<T> Refused for Result<T, KvError> {
    fn refused(&self) -> bool {
        matches!(self, Err(KvError::AccessDenied))
    }
}

impl Refused for Result<(), SwapError> {
    fn refused(&self) -> bool {
        matches!(self, Err(SwapError::Store(KvError::AccessDenied)))
    }
}

/// One exchange through the gateway whose live half waits on a store,
/// traced as a `keyvalue.<op>` span.
async fn exchange<O, F, Fut>(
    gateway: &Gateway,
    request: O::Request,
    live: F,
) -> wasmtime::Result<O::Response>
where
    O: Op,
    O::Request: Bucketed,
    O::Response: Refused,
    F: FnOnce(Gateway, O::Request) -> Fut,
    Fut: Future<Output = O::Response>,
{
    let span = gateway.interaction_span("keyvalue", O::NAME, request.bucket());
    let answer = gateway
        .exchange_async::<O, _, _>(request, |g, q| async move { Ok(live(g, q).await) })
        .await?;
    span.decided(if answer.refused() { "deny" } else { "allow" });
    Ok(answer)
}

/// Refuses a write to a read-only bucket (audited).
fn writable(gateway: &Gateway, b: &BucketHandle, what: &str) -> Result<(), KvError> {
    if b.writable {
        Ok(())
    } else {
        gateway.audit(
            "keyvalue",
            format!("{} {what}", b.name),
            Decision::Deny,
            Some(format!(
                "bucket `{}` is granted read-only (`{}:ro`)",
                b.name, b.name
            )),
        );
        Err(KvError::AccessDenied)
    }
}

/// Whether `op` on `keys` of a bucket may go ahead: a write needs a
/// writable grant, then every key is put to the boundary policies (the
/// first denial refuses the whole operation). Denials are audited.
fn permit(
    gateway: &Gateway,
    b: &BucketHandle,
    op: &str,
    keys: &[&str],
    write: bool,
) -> Result<(), KvError> {
    if write {
        let what = match keys {
            [one] => (*one).to_string(),
            many => format!("{} keys", many.len()),
        };
        writable(gateway, b, &what)?;
    }
    let all = [""];
    let keys = if keys.is_empty() { &all[..] } else { keys };
    for key in keys {
        let asked = Interaction::Kv {
            operation: op.to_string(),
            bucket: b.name.clone(),
            key: (*key).to_string(),
            write,
        };
        if let Err(reason) = gateway.authorize(&asked) {
            gateway.audit(
                "keyvalue",
                format!("{op} {}/{key}", b.name),
                Decision::Deny,
                Some(reason),
            );
            return Err(KvError::AccessDenied);
        }
    }
    Ok(())
}

fn to_wit(e: KvError) -> WitError {
    match e {
        KvError::NoSuchStore => WitError::NoSuchStore,
        KvError::AccessDenied => WitError::AccessDenied,
        KvError::Other(m) => WitError::Other(m),
    }
}

impl HostState {
    fn bucket(&self, b: &Resource<BucketHandle>) -> wasmtime::Result<BucketHandle> {
        Ok(self.table.get(b)?.clone())
    }
}

impl bindings::wasi::keyvalue::store::Host for HostState {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<BucketHandle>, WitError>> {
        let gateway = self.gateway.clone();
        let grant = gateway.grants().keyvalue.buckets.get(&identifier).copied();
        let opened = exchange::<Open, _, _>(&gateway, identifier.clone(), |g, name| async move {
            match grant {
                None => Err(KvError::AccessDenied),
                Some(_) => store_for(&g, &name).await.map(|_| ()),
            }
        })
        .await?;
        match (&grant, &opened) {
            (None, _) => gateway.audit(
                "keyvalue",
                identifier.clone(),
                Decision::Deny,
                Some(format!(
                    "bucket `{identifier}` is not granted (add it to `[keyvalue] buckets` in the manifest)"
                )),
            ),
            (Some(_), Ok(())) => gateway.audit("keyvalue", identifier.clone(), Decision::Allow, None),
            (Some(_), Err(_)) => {}
        }
        match opened {
            Err(e) => Ok(Err(to_wit(e))),
            Ok(()) => {
                let handle = BucketHandle {
                    writable: grant == Some(Access::ReadWrite),
                    name: identifier,
                };
                Ok(Ok(self.table.push(handle)?))
            }
        }
    }
}

impl bindings::wasi::keyvalue::store::HostBucket for HostState {
    async fn get(
        &mut self,
        b: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, WitError>> {
        let b = self.bucket(&b)?;
        let gateway = self.gateway.clone();
        let allowed = permit(&gateway, &b, "get", &[&key], false);
        let request = KeyRequest {
            bucket: b.name,
            key,
        };
        let got = exchange::<Get, _, _>(&gateway, request, |g, q| async move {
            allowed?;
            let store = store_for(&g, &q.bucket).await?;
            let entry = store.get(&q.bucket, &q.key).await.map_err(store_error)?;
            Ok(entry.map(|e| Bytes(e.value)))
        })
        .await?;
        Ok(got.map(|v| v.map(|b| b.0)).map_err(to_wit))
    }

    async fn set(
        &mut self,
        b: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let b = self.bucket(&b)?;
        let gateway = self.gateway.clone();
        let allowed = permit(&gateway, &b, "set", &[&key], true);
        let request = SetRequest {
            bucket: b.name,
            key,
            value: Bytes(value),
        };
        let done = exchange::<Set, _, _>(&gateway, request, |g, q| async move {
            allowed?;
            let store = store_for(&g, &q.bucket).await?;
            store
                .put(
                    &q.bucket,
                    &q.key,
                    &q.value.0,
                    tessera_store::Expect::Any,
                    None,
                )
                .await
                .map(|_| ())
                .map_err(store_error)
        })
        .await?;
        Ok(done.map_err(to_wit))
    }

    async fn delete(
        &mut self,
        b: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let b = self.bucket(&b)?;
        let gateway = self.gateway.clone();
        let allowed = permit(&gateway, &b, "delete", &[&key], true);
        let request = KeyRequest {
            bucket: b.name,
            key,
        };
        let done = exchange::<Delete, _, _>(&gateway, request, |g, q| async move {
            allowed?;
            let store = store_for(&g, &q.bucket).await?;
            store
                .delete(&q.bucket, &q.key, tessera_store::Expect::Any)
                .await
                .map_err(store_error)
        })
        .await?;
        Ok(done.map_err(to_wit))
    }

    async fn exists(
        &mut self,
        b: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, WitError>> {
        let b = self.bucket(&b)?;
        let gateway = self.gateway.clone();
        let allowed = permit(&gateway, &b, "exists", &[&key], false);
        let request = KeyRequest {
            bucket: b.name,
            key,
        };
        let got = exchange::<Exists, _, _>(&gateway, request, |g, q| async move {
            allowed?;
            let store = store_for(&g, &q.bucket).await?;
            let entry = store.get(&q.bucket, &q.key).await.map_err(store_error)?;
            Ok(entry.is_some())
        })
        .await?;
        Ok(got.map_err(to_wit))
    }

    async fn list_keys(
        &mut self,
        b: Resource<BucketHandle>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<KeyResponse, WitError>> {
        let b = self.bucket(&b)?;
        let gateway = self.gateway.clone();
        let allowed = permit(&gateway, &b, "list", &[], false);
        let request = ListRequest {
            bucket: b.name,
            cursor,
        };
        let got = exchange::<ListKeys, _, _>(&gateway, request, |g, q| async move {
            allowed?;
            let store = store_for(&g, &q.bucket).await?;
            let page = store
                .list(&q.bucket, "", q.cursor.as_deref(), LIST_PAGE)
                .await
                .map_err(store_error)?;
            Ok(KeyPage {
                keys: page.keys,
                cursor: page.cursor,
            })
        })
        .await?;
        Ok(got
            .map(|p| KeyResponse {
                keys: p.keys,
                cursor: p.cursor,
            })
            .map_err(to_wit))
    }

    async fn drop(&mut self, b: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl bindings::wasi::keyvalue::atomics::Host for HostState {
    async fn increment(
        &mut self,
        b: Resource<BucketHandle>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, WitError>> {
        let b = self.bucket(&b)?;
        let gateway = self.gateway.clone();
        let allowed = permit(&gateway, &b, "increment", &[&key], true);
        let request = IncrementRequest {
            bucket: b.name,
            key,
            delta,
        };
        let done = exchange::<Increment, _, _>(&gateway, request, |g, q| async move {
            allowed?;
            let store = store_for(&g, &q.bucket).await?;
            store
                .increment(&q.bucket, &q.key, q.delta)
                .await
                .map_err(store_error)
        })
        .await?;
        Ok(done.map_err(to_wit))
    }

    async fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), WitCasError>> {
        let cas = self.table.delete(cas)?;
        let gateway = self.gateway.clone();
        let allowed = permit(&gateway, &cas.bucket, "swap", &[&cas.key], true);
        let request = SwapRequest {
            bucket: cas.bucket.name.clone(),
            key: cas.key.clone(),
            expected: cas.current.as_ref().map(|v| v.revision),
            value: Bytes(value),
        };
        let done = exchange::<Swap, _, _>(&gateway, request, |g, q| async move {
            allowed.map_err(SwapError::Store)?;
            let store = store_for(&g, &q.bucket).await.map_err(SwapError::Store)?;
            let expect = match q.expected {
                Some(r) => tessera_store::Expect::Revision(r),
                None => tessera_store::Expect::Absent,
            };
            match store.put(&q.bucket, &q.key, &q.value.0, expect, None).await {
                Ok(_) => Ok(()),
                Err(tessera_store::StoreError::Conflict { .. }) => {
                    // What the key holds now, for the handle the guest
                    // retries with.
                    let now = store
                        .get(&q.bucket, &q.key)
                        .await
                        .map_err(|e| SwapError::Store(store_error(e)))?;
                    Err(SwapError::Conflict(now.map(|e| Versioned {
                        value: Bytes(e.value),
                        revision: e.revision,
                    })))
                }
                Err(e) => Err(SwapError::Store(store_error(e))),
            }
        })
        .await?;
        match done {
            Ok(()) => Ok(Ok(())),
            Err(SwapError::Store(e)) => Ok(Err(WitCasError::StoreError(to_wit(e)))),
            Err(SwapError::Conflict(current)) => {
                let again = self.table.push(CasHandle {
                    bucket: cas.bucket,
                    key: cas.key,
                    current,
                })?;
                Ok(Err(WitCasError::CasFailed(again)))
            }
        }
    }
}

impl bindings::wasi::keyvalue::atomics::HostCas for HostState {
    async fn new(
        &mut self,
        b: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<CasHandle>, WitError>> {
        let b = self.bucket(&b)?;
        let gateway = self.gateway.clone();
        let allowed = permit(&gateway, &b, "get", &[&key], false);
        let request = KeyRequest {
            bucket: b.name.clone(),
            key: key.clone(),
        };
        let got = exchange::<CasRead, _, _>(&gateway, request, |g, q| async move {
            allowed?;
            let store = store_for(&g, &q.bucket).await?;
            let entry = store.get(&q.bucket, &q.key).await.map_err(store_error)?;
            Ok(entry.map(|e| Versioned {
                value: Bytes(e.value),
                revision: e.revision,
            }))
        })
        .await?;
        match got {
            Err(e) => Ok(Err(to_wit(e))),
            Ok(current) => Ok(Ok(self.table.push(CasHandle {
                bucket: b,
                key,
                current,
            })?)),
        }
    }

    async fn current(
        &mut self,
        cas: Resource<CasHandle>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, WitError>> {
        // What the handle read: no new interaction.
        let cas = self.table.get(&cas)?;
        Ok(Ok(cas.current.as_ref().map(|v| v.value.0.clone())))
    }

    async fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl bindings::wasi::keyvalue::batch::Host for HostState {
    async fn get_many(
        &mut self,
        b: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, WitError>> {
        let b = self.bucket(&b)?;
        let gateway = self.gateway.clone();
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        let allowed = permit(&gateway, &b, "get-many", &names, false);
        let request = KeysRequest {
            bucket: b.name,
            keys: keys.clone(),
        };
        let got = exchange::<GetMany, _, _>(&gateway, request, |g, q| async move {
            allowed?;
            let store = store_for(&g, &q.bucket).await?;
            let entries = store
                .get_many(&q.bucket, &q.keys)
                .await
                .map_err(store_error)?;
            Ok(entries
                .into_iter()
                .map(|e| e.map(|e| Bytes(e.value)))
                .collect())
        })
        .await?;
        Ok(got
            .map(|values| {
                keys.into_iter()
                    .zip(values)
                    .map(|(k, v)| v.map(|v| (k, v.0)))
                    .collect()
            })
            .map_err(to_wit))
    }

    async fn set_many(
        &mut self,
        b: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let b = self.bucket(&b)?;
        let gateway = self.gateway.clone();
        let keys: Vec<&str> = key_values.iter().map(|(k, _)| k.as_str()).collect();
        let allowed = permit(&gateway, &b, "set-many", &keys, true);
        let request = SetManyRequest {
            bucket: b.name,
            entries: key_values.into_iter().map(|(k, v)| (k, Bytes(v))).collect(),
        };
        let done = exchange::<SetMany, _, _>(&gateway, request, |g, q| async move {
            allowed?;
            let store = store_for(&g, &q.bucket).await?;
            let entries: Vec<(String, Vec<u8>)> =
                q.entries.into_iter().map(|(k, v)| (k, v.0)).collect();
            store
                .put_many(&q.bucket, &entries)
                .await
                .map_err(store_error)
        })
        .await?;
        Ok(done.map_err(to_wit))
    }

    async fn delete_many(
        &mut self,
        b: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let b = self.bucket(&b)?;
        let gateway = self.gateway.clone();
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        let allowed = permit(&gateway, &b, "delete-many", &names, true);
        let request = KeysRequest {
            bucket: b.name,
            keys,
        };
        let done = exchange::<DeleteMany, _, _>(&gateway, request, |g, q| async move {
            allowed?;
            let store = store_for(&g, &q.bucket).await?;
            store
                .delete_many(&q.bucket, &q.keys)
                .await
                .map_err(store_error)
        })
        .await?;
        Ok(done.map_err(to_wit))
    }
}

impl Capability for KeyValue {
    const NAME: &'static str = "keyvalue";
    const MANIFEST_KEYS: &'static [&'static str] = &["keyvalue"];
    type Grant = KeyValueGrant;
    type State = ();

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        type Me = wasmtime::component::HasSelf<HostState>;
        bindings::wasi::keyvalue::store::add_to_linker::<HostState, Me>(linker, |s| s)?;
        bindings::wasi::keyvalue::atomics::add_to_linker::<HostState, Me>(linker, |s| s)?;
        bindings::wasi::keyvalue::batch::add_to_linker::<HostState, Me>(linker, |s| s)?;
        draft::link(linker)
    }

    fn grant(section: &Section<'_>) -> Result<KeyValueGrant, ManifestError> {
        let Some(raw) = section.parse::<RawKeyValue>("keyvalue")? else {
            return Ok(KeyValueGrant::default());
        };
        let mut buckets = BTreeMap::new();
        for (i, entry) in raw.buckets.iter().enumerate() {
            let field = format!("keyvalue.buckets[{i}]");
            let (name, access) = match entry.rsplit_once(':') {
                Some((name, "ro")) => (name, Access::ReadOnly),
                Some((name, "rw")) => (name, Access::ReadWrite),
                Some((_, other)) => {
                    return Err(section.invalid(
                        field,
                        format!("`{other}` is not an access mode (`:ro` for read-only, `:rw` or nothing for read-write)"),
                    ));
                }
                None => (entry.as_str(), Access::ReadWrite),
            };
            tessera_store::check_bucket(name)
                .map_err(|e| section.invalid(field.clone(), e.to_string()))?;
            if buckets.insert(name.to_string(), access).is_some() {
                return Err(section.invalid(field, format!("bucket `{name}` is listed twice")));
            }
        }
        Ok(KeyValueGrant { buckets })
    }

    fn bind(_grant: &mut KeyValueGrant, _host: &HostConfig) -> Result<(), super::BindError> {
        // Every bucket has a backend (the settings' default): nothing to
        // resolve at load time; a replay needs no store at all.
        Ok(())
    }

    fn state(_: &KeyValueGrant, _: &Gateway, _: &mut WasiCtxBuilder) -> Result<(), crate::Error> {
        Ok(())
    }

    fn effects(grant: &KeyValueGrant) -> Effects {
        Effects {
            reads: !grant.buckets.is_empty(),
            writes: grant.buckets.values().any(|a| *a == Access::ReadWrite),
            ..Effects::NONE
        }
    }

    fn describe(step: &Step) -> String {
        describe(step).unwrap_or_else(|| super::generic_description(step))
    }
}

/// A value for a step line: text when it is short UTF-8, else its length.
fn show(b: &Bytes) -> String {
    match std::str::from_utf8(&b.0) {
        Ok(s) if s.chars().count() <= 60 && !s.chars().any(char::is_control) => format!("{s:?}"),
        _ => format!("<{} bytes>", b.0.len()),
    }
}

fn show_err(e: &KvError) -> String {
    match e {
        KvError::NoSuchStore => "error: no-such-store".into(),
        KvError::AccessDenied => "error: access-denied".into(),
        KvError::Other(m) => format!("error: {m}"),
    }
}

fn describe(step: &Step) -> Option<String> {
    fn d<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Option<T> {
        T::deserialize(v).ok()
    }
    fn unit(r: Result<(), KvError>) -> String {
        r.map(|()| "ok".to_string())
            .unwrap_or_else(|e| show_err(&e))
    }
    let (req, resp) = (&step.request, &step.response);
    let what = match &*step.op {
        "open" => format!("{} -> {}", d::<String>(req)?, unit(d(resp)?)),
        "get" | "exists" | "cas" | "delete" => {
            let q: KeyRequest = d(req)?;
            let answer = match &*step.op {
                "get" => d::<Result<Option<Bytes>, KvError>>(resp)?
                    .map(|v| v.as_ref().map(show).unwrap_or_else(|| "none".into()))
                    .unwrap_or_else(|e| show_err(&e)),
                "exists" => d::<Result<bool, KvError>>(resp)?
                    .map(|b| b.to_string())
                    .unwrap_or_else(|e| show_err(&e)),
                "cas" => d::<Result<Option<Versioned>, KvError>>(resp)?
                    .map(|v| match v {
                        Some(v) => format!("{} @{}", show(&v.value), v.revision),
                        None => "none".into(),
                    })
                    .unwrap_or_else(|e| show_err(&e)),
                _ => unit(d(resp)?),
            };
            format!("{}/{} -> {answer}", q.bucket, q.key)
        }
        "set" => {
            let q: SetRequest = d(req)?;
            format!(
                "{}/{} = {} -> {}",
                q.bucket,
                q.key,
                show(&q.value),
                unit(d(resp)?)
            )
        }
        "list-keys" => {
            let q: ListRequest = d(req)?;
            let answer = d::<Result<KeyPage, KvError>>(resp)?
                .map(|p| {
                    format!(
                        "{} keys{}",
                        p.keys.len(),
                        if p.cursor.is_some() { ", more" } else { "" }
                    )
                })
                .unwrap_or_else(|e| show_err(&e));
            match q.cursor {
                Some(c) => format!("{} after {c:?} -> {answer}", q.bucket),
                None => format!("{} -> {answer}", q.bucket),
            }
        }
        "increment" => {
            let q: IncrementRequest = d(req)?;
            let answer = d::<Result<i64, KvError>>(resp)?
                .map(|n| n.to_string())
                .unwrap_or_else(|e| show_err(&e));
            format!("{}/{} {:+} -> {answer}", q.bucket, q.key, q.delta)
        }
        "swap" => {
            let q: SwapRequest = d(req)?;
            let answer = match d::<Result<(), SwapError>>(resp)? {
                Ok(()) => "ok".into(),
                Err(SwapError::Conflict(_)) => "conflict".into(),
                Err(SwapError::Store(e)) => show_err(&e),
            };
            let at = q
                .expected
                .map(|r| format!("@{r}"))
                .unwrap_or_else(|| "@none".into());
            format!(
                "{}/{} {at} = {} -> {answer}",
                q.bucket,
                q.key,
                show(&q.value)
            )
        }
        "get-many" | "delete-many" => {
            let q: KeysRequest = d(req)?;
            format!("{} [{}]", q.bucket, q.keys.join(", "))
        }
        "set-many" => {
            let q: SetManyRequest = d(req)?;
            format!(
                "{} {} keys -> {}",
                q.bucket,
                q.entries.len(),
                unit(d(resp)?)
            )
        }
        _ => return None,
    };
    Some(format!("{:<16} {what}", step.kind()))
}

/// `wasi:keyvalue@0.2.0-draft`, the earlier draft (a numeric listing cursor,
/// an unsigned increment, no compare-and-swap), linked beside draft 2 so
/// that components built for either run. Every function answers through
/// its draft-2 counterpart: the same grants, audit events and journal
/// steps.
mod draft {
    use wasmtime::component::Resource;

    use super::bindings::wasi::keyvalue as v2;
    use super::{BucketHandle, LIST_PAGE, WitError};
    use crate::host::HostState;

    #[allow(missing_docs)]
    pub(super) mod bindings {
        wasmtime::component::bindgen!({
            inline: "
                package wasi:keyvalue@0.2.0-draft;

                interface store {
                    variant error {
                        no-such-store,
                        access-denied,
                        other(string)
                    }
                    record key-response {
                        keys: list<string>,
                        cursor: option<u64>
                    }
                    open: func(identifier: string) -> result<bucket, error>;
                    resource bucket {
                        get: func(key: string) -> result<option<list<u8>>, error>;
                        set: func(key: string, value: list<u8>) -> result<_, error>;
                        delete: func(key: string) -> result<_, error>;
                        exists: func(key: string) -> result<bool, error>;
                        list-keys: func(cursor: option<u64>) -> result<key-response, error>;
                    }
                }

                interface atomics {
                    use store.{bucket, error};
                    increment: func(bucket: borrow<bucket>, key: string, delta: u64) -> result<u64, error>;
                }

                interface batch {
                    use store.{bucket, error};
                    get-many: func(bucket: borrow<bucket>, keys: list<string>) -> result<list<option<tuple<string, list<u8>>>>, error>;
                    set-many: func(bucket: borrow<bucket>, key-values: list<tuple<string, list<u8>>>) -> result<_, error>;
                    delete-many: func(bucket: borrow<bucket>, keys: list<string>) -> result<_, error>;
                }

                world host {
                    import store;
                    import atomics;
                    import batch;
                }
            ",
            imports: { default: async | trappable },
            with: {
                "wasi:keyvalue/store.bucket": super::super::BucketHandle,
            },
        });
    }

    use bindings::wasi::keyvalue::store::{Error as DraftError, KeyResponse as DraftKeys};

    fn from_v2(e: WitError) -> DraftError {
        match e {
            WitError::NoSuchStore => DraftError::NoSuchStore,
            WitError::AccessDenied => DraftError::AccessDenied,
            WitError::Other(m) => DraftError::Other(m),
        }
    }

    /// The same bucket handle, borrowed again for a draft-2 call.
    fn again(b: &Resource<BucketHandle>) -> Resource<BucketHandle> {
        Resource::new_borrow(b.rep())
    }

    type Answer<T> = wasmtime::Result<Result<T, DraftError>>;

    impl bindings::wasi::keyvalue::store::Host for HostState {
        async fn open(&mut self, identifier: String) -> Answer<Resource<BucketHandle>> {
            Ok(<Self as v2::store::Host>::open(self, identifier)
                .await?
                .map_err(from_v2))
        }
    }

    impl bindings::wasi::keyvalue::store::HostBucket for HostState {
        async fn get(&mut self, b: Resource<BucketHandle>, key: String) -> Answer<Option<Vec<u8>>> {
            Ok(<Self as v2::store::HostBucket>::get(self, again(&b), key)
                .await?
                .map_err(from_v2))
        }

        async fn set(
            &mut self,
            b: Resource<BucketHandle>,
            key: String,
            value: Vec<u8>,
        ) -> Answer<()> {
            Ok(
                <Self as v2::store::HostBucket>::set(self, again(&b), key, value)
                    .await?
                    .map_err(from_v2),
            )
        }

        async fn delete(&mut self, b: Resource<BucketHandle>, key: String) -> Answer<()> {
            Ok(
                <Self as v2::store::HostBucket>::delete(self, again(&b), key)
                    .await?
                    .map_err(from_v2),
            )
        }

        async fn exists(&mut self, b: Resource<BucketHandle>, key: String) -> Answer<bool> {
            Ok(
                <Self as v2::store::HostBucket>::exists(self, again(&b), key)
                    .await?
                    .map_err(from_v2),
            )
        }

        /// The draft's cursor counts the keys already returned: the page
        /// starts that many keys in (read through draft-2 pages, each a
        /// step).
        async fn list_keys(
            &mut self,
            b: Resource<BucketHandle>,
            cursor: Option<u64>,
        ) -> Answer<DraftKeys> {
            let skip = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
            let mut seen = 0usize;
            let mut keys = Vec::new();
            let mut at: Option<String> = None;
            loop {
                let page =
                    match <Self as v2::store::HostBucket>::list_keys(self, again(&b), at.clone())
                        .await?
                    {
                        Ok(p) => p,
                        Err(e) => return Ok(Err(from_v2(e))),
                    };
                for k in page.keys {
                    if seen >= skip && keys.len() < LIST_PAGE {
                        keys.push(k);
                    } else if keys.len() == LIST_PAGE {
                        // One more key past the page: there is a next one.
                        let next = (skip + keys.len()) as u64;
                        return Ok(Ok(DraftKeys {
                            keys,
                            cursor: Some(next),
                        }));
                    }
                    seen += 1;
                }
                match page.cursor {
                    Some(c) => at = Some(c),
                    None => return Ok(Ok(DraftKeys { keys, cursor: None })),
                }
            }
        }

        async fn drop(&mut self, b: Resource<BucketHandle>) -> wasmtime::Result<()> {
            <Self as v2::store::HostBucket>::drop(self, b).await
        }
    }

    impl bindings::wasi::keyvalue::atomics::Host for HostState {
        async fn increment(
            &mut self,
            b: Resource<BucketHandle>,
            key: String,
            delta: u64,
        ) -> Answer<u64> {
            let Ok(delta) = i64::try_from(delta) else {
                return Ok(Err(DraftError::Other(format!(
                    "the delta {delta} does not fit a 64-bit signed counter"
                ))));
            };
            Ok(match <Self as v2::atomics::Host>::increment(self, again(&b), key, delta).await? {
                Ok(n) => u64::try_from(n).map_err(|_| {
                    DraftError::Other(format!("the counter is {n}, which this draft's unsigned increment cannot return"))
                }),
                Err(e) => Err(from_v2(e)),
            })
        }
    }

    impl bindings::wasi::keyvalue::batch::Host for HostState {
        async fn get_many(
            &mut self,
            b: Resource<BucketHandle>,
            keys: Vec<String>,
        ) -> Answer<Vec<Option<(String, Vec<u8>)>>> {
            Ok(<Self as v2::batch::Host>::get_many(self, again(&b), keys)
                .await?
                .map_err(from_v2))
        }

        async fn set_many(
            &mut self,
            b: Resource<BucketHandle>,
            key_values: Vec<(String, Vec<u8>)>,
        ) -> Answer<()> {
            Ok(
                <Self as v2::batch::Host>::set_many(self, again(&b), key_values)
                    .await?
                    .map_err(from_v2),
            )
        }

        async fn delete_many(
            &mut self,
            b: Resource<BucketHandle>,
            keys: Vec<String>,
        ) -> Answer<()> {
            Ok(
                <Self as v2::batch::Host>::delete_many(self, again(&b), keys)
                    .await?
                    .map_err(from_v2),
            )
        }
    }

    /// Links the draft's interfaces.
    pub(super) fn link(
        linker: &mut wasmtime::component::Linker<HostState>,
    ) -> wasmtime::Result<()> {
        type Me = wasmtime::component::HasSelf<HostState>;
        bindings::wasi::keyvalue::store::add_to_linker::<HostState, Me>(linker, |s| s)?;
        bindings::wasi::keyvalue::atomics::add_to_linker::<HostState, Me>(linker, |s| s)?;
        bindings::wasi::keyvalue::batch::add_to_linker::<HostState, Me>(linker, |s| s)
    }
}
