//! The unit the journal records: one host interaction as a typed request and
//! response, stored generically.
//!
//! A capability declares each of its host operations as an [`Op`]: a name,
//! a request type and a response type, both serde types (the op's codec).
//! The gateway turns a live exchange into a [`Step`] — capability, op,
//! request and response as JSON values — which is what an observer (the
//! journal) stores and what a replay source gives back. Nothing outside the
//! capability knows the shape of its requests: the journal stores, renders
//! (through [`crate::capability::describe`]) and compares steps without a
//! line of code per capability.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One host interaction, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The capability that performed it (`clocks`, `http`, `files`, …).
    pub capability: Cow<'static, str>,
    /// The operation within the capability (`wall-clock`, `request`, …).
    pub op: Cow<'static, str>,
    /// What the guest asked for; compared on replay.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub request: Value,
    /// What the guest was given; on replay, the answer.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub response: Value,
}

impl Step {
    /// `capability.op`, e.g. `http.request`.
    pub fn kind(&self) -> String {
        format!("{}.{}", self.capability, self.op)
    }

    /// Whether this (recorded) step answers the request `probe` made now:
    /// same capability, same operation, same request.
    pub fn answers(&self, probe: &Step) -> bool {
        self.capability == probe.capability && self.op == probe.op && self.request == probe.request
    }

    /// The response decoded as `O`'s response type.
    pub fn decode<O: Op>(&self) -> Result<O::Response, String> {
        O::Response::deserialize(&self.response)
            .map_err(|e| format!("recorded {} response does not decode: {e}", self.kind()))
    }
}

/// How a replay treats an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// The recorded response is the answer; the host is not touched (clocks,
    /// random, environment, HTTP, configuration).
    Answer,
    /// The operation runs again (against the replay's own sandbox: captured
    /// output, rebuilt files) and only the request is checked.
    Perform,
    /// The operation runs again and its response must equal the recorded
    /// one too (bytes read from a rebuilt file).
    Verify,
}

/// One kind of host operation of a capability, with its codec.
pub trait Op: 'static {
    /// The capability's name, as in [`Step::capability`].
    const CAPABILITY: &'static str;
    /// The operation's name, as in [`Step::op`].
    const NAME: &'static str;
    /// How a replay treats it.
    const REPLAY: Replay = Replay::Answer;
    /// What the guest asks (compared on replay; secrets only as [`Sealed`]).
    type Request: Payload;
    /// What the guest is given (secrets only as [`Sealed`]).
    type Response: Payload;
}

/// What a request or response type must be: plain data with a serde codec,
/// compared by value on replay.
pub trait Payload:
    Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static
{
}

impl<T> Payload for T where
    T: Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static
{
}

/// A step as a capability made it: its typed request and response, not yet
/// encoded. An observer receives this; encoding it ([`StepData::to_step`])
/// is left to whoever keeps it (the journal does it on its writer thread),
/// so recording costs the guest a clone, not a serialization.
pub trait StepData: std::fmt::Debug + Send + Sync {
    /// The capability.
    fn capability(&self) -> &'static str;
    /// The operation.
    fn op(&self) -> &'static str;
    /// The generic, serialized form.
    fn to_step(&self) -> Step;
}

/// A typed step of operation `O`.
pub struct Typed<O: Op> {
    /// What was asked.
    pub request: O::Request,
    /// What was answered.
    pub response: O::Response,
}

impl<O: Op> std::fmt::Debug for Typed<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(O::NAME)
            .field("request", &self.request)
            .field("response", &self.response)
            .finish()
    }
}

impl<O: Op> StepData for Typed<O> {
    fn capability(&self) -> &'static str {
        O::CAPABILITY
    }

    fn op(&self) -> &'static str {
        O::NAME
    }

    fn to_step(&self) -> Step {
        Step {
            capability: O::CAPABILITY.into(),
            op: O::NAME.into(),
            request: to_value(&self.request),
            response: to_value(&self.response),
        }
    }
}

/// A recorded interaction, shared between observers.
pub type Recorded = std::sync::Arc<dyn StepData>;

/// A payload as JSON. Payload types are plain data (strings, numbers, maps
/// with string keys): serializing them cannot fail.
pub(crate) fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Bytes in a step, serialized as lowercase hex (long ones become blobs in
/// the journal).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(s) if s.len() <= 80 => write!(f, "{s:?}"),
            _ => write!(f, "<{} bytes>", self.0.len()),
        }
    }
}

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <Cow<'de, str> as Deserialize>::deserialize(d)?;
        hex::decode(s.as_ref())
            .map(Bytes)
            .map_err(serde::de::Error::custom)
    }
}

/// The key of the keyed digests that stand in for secrets in journals.
///
/// Held by the host (the CLI and the server keep one per data directory),
/// never written into a journal: with it, a replay on the same host checks
/// that a secret had the same value; without it, a journal reveals nothing
/// about the secret, not even whether two journals from different hosts
/// saw the same one.
#[derive(Clone)]
pub struct RedactionKey([u8; 32]);

impl std::fmt::Debug for RedactionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedactionKey(..)")
    }
}

impl RedactionKey {
    /// A key from 32 bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh random key (digests are then comparable only within this
    /// process).
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        wasmtime_wasi::thread_rng().fill_bytes(&mut k);
        Self(k)
    }

    /// Reads the key stored at `path`, or creates it (mode 0600) with a
    /// random value.
    pub fn load_or_create(path: &std::path::Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(b) => {
                let text = String::from_utf8_lossy(&b);
                let bytes = hex::decode(text.trim()).ok().filter(|v| v.len() == 32);
                match bytes {
                    Some(v) => {
                        let mut k = [0u8; 32];
                        k.copy_from_slice(&v);
                        Ok(Self(k))
                    }
                    None => Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: not 64 hex characters", path.display()),
                    )),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::random();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                match opts.open(path) {
                    Ok(mut f) => {
                        std::io::Write::write_all(&mut f, hex::encode(key.0).as_bytes())?;
                        Ok(key)
                    }
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(path)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `hmac-sha256:<hex>` of `value` under this key, bound to `name` so the
    /// same value under two names gives two digests.
    pub fn digest(&self, name: &str, value: &str) -> String {
        use hmac::Mac;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// A value that is either plain or a secret. A secret is serialized as a
/// redaction marker with its keyed digest (`{"redacted": "hmac-sha256:…"}`),
/// never as its value; a replay gets the value again from its own host and
/// checks it against the digest. Two secrets are equal when their digests
/// are (a secret read back from a journal has no value).
#[derive(Clone, Eq)]
pub enum Sealed {
    /// A value that may be journaled (set in a manifest).
    Plain(String),
    /// A secret: the value (absent when read back from a journal) and its
    /// digest.
    Secret {
        /// The value, live only.
        value: Option<String>,
        /// `hmac-sha256:<hex>`.
        digest: String,
    },
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sealed::Plain(v) => write!(f, "{v:?}"),
            Sealed::Secret { digest, .. } => write!(f, "<redacted {digest}>"),
        }
    }
}

impl PartialEq for Sealed {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Sealed::Plain(a), Sealed::Plain(b)) => a == b,
            (Sealed::Secret { digest: a, .. }, Sealed::Secret { digest: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// The marker a journal holds in place of a secret.
pub const REDACTED: &str = "redacted";

impl Sealed {
    /// A secret value named `name`, sealed under `key`.
    pub fn secret(key: &RedactionKey, name: &str, value: String) -> Self {
        let digest = key.digest(name, &value);
        Sealed::Secret {
            value: Some(value),
            digest,
        }
    }

    /// The value to hand the guest. A secret read back from a journal is
    /// resolved with `lookup` (the replaying host's value) and must match
    /// the recorded digest.
    pub fn reveal(
        &self,
        key: &RedactionKey,
        name: &str,
        lookup: impl FnOnce() -> Option<String>,
    ) -> Result<String, String> {
        match self {
            Sealed::Plain(v) => Ok(v.clone()),
            Sealed::Secret { value: Some(v), .. } => Ok(v.clone()),
            Sealed::Secret {
                value: None,
                digest,
            } => {
                let v = lookup().ok_or_else(|| {
                    format!("secret `{name}` was set when recorded and is not provided now")
                })?;
                if &key.digest(name, &v) == digest {
                    Ok(v)
                } else {
                    Err(format!(
                        "secret `{name}` differs from the recorded one (its keyed digest does not match; \
                         a journal from another data directory cannot check secrets)"
                    ))
                }
            }
        }
    }
}

impl Serialize for Sealed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Sealed::Plain(v) => s.serialize_str(v),
            Sealed::Secret { digest, .. } => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(REDACTED, digest)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Sealed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Plain(String),
            Secret { redacted: String },
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Plain(v) => Sealed::Plain(v),
            Raw::Secret { redacted } => Sealed::Secret {
                value: None,
                digest: redacted,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_serialize_as_digests_and_reveal_only_the_same_value() {
        let key = RedactionKey::new([7; 32]);
        let s = Sealed::secret(&key, "API_KEY", "hunter2".into());
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert!(json.contains("hmac-sha256:"), "{json}");
        let back: Sealed = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.reveal(&key, "API_KEY", || Some("hunter2".into())),
            Ok("hunter2".into())
        );
        assert!(
            back.reveal(&key, "API_KEY", || Some("other".into()))
                .is_err()
        );
        assert!(back.reveal(&key, "API_KEY", || None).is_err());
        let other_key = RedactionKey::new([8; 32]);
        assert!(
            back.reveal(&other_key, "API_KEY", || Some("hunter2".into()))
                .is_err()
        );
        // The same value under another name has another digest.
        assert_ne!(key.digest("A", "v"), key.digest("B", "v"));
    }

    #[test]
    fn steps_answer_only_the_same_request() {
        let a = Step {
            capability: "http".into(),
            op: "request".into(),
            request: serde_json::json!({"uri": "http://x/", "body": "sha256:1"}),
            response: Value::Null,
        };
        let mut b = a.clone();
        assert!(a.answers(&b));
        b.request["body"] = "sha256:2".into();
        assert!(!a.answers(&b));
    }
}
