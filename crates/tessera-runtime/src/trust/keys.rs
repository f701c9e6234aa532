//! Signing keys, signed components and signed content.
//!
//! Keys and component signatures follow the WebAssembly signatures proposal
//! as its reference implementation, the `wasmsign2` crate, writes them: an
//! ed25519 key pair, the public key file `0x01 ‖ 32 bytes`, the secret key
//! file `0x81 ‖ 64 bytes` (PEM, DER and OpenSSH keys are read too), a key
//! id of `HMAC-SHA256("key_id", public key)[..12]`, and the signature in a
//! `signature` custom section at the start of the component. A component
//! signed by `tessera sign` verifies with `wasmsign2 verify` and the
//! reverse.
//!
//! Files that are not components — an audit checkpoint, an exported
//! journal — are signed with the same keys over a domain-separated message
//! (see [`ContentSignature`]), so a signature made for one purpose cannot
//! be presented for another.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::TrustError;

/// A public key and the name it goes by.
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// The name (the key file's stem, or the name in `trust.toml`).
    pub name: String,
    /// The key, with its key id attached.
    pub key: wasmsign2::PublicKey,
}

impl PublicKey {
    /// The key id, hex: `HMAC-SHA256("key_id", key)[..12]`.
    pub fn id(&self) -> String {
        key_id_hex(&self.key)
    }
}

/// The hex key id of a public key.
pub fn key_id_hex(key: &wasmsign2::PublicKey) -> String {
    let key = key.clone().attach_default_key_id();
    key.key_id().map(hex::encode).unwrap_or_default()
}

/// A secret key and the public key it signs for.
#[derive(Debug, Clone)]
pub struct SecretKey {
    /// The secret key.
    pub key: wasmsign2::SecretKey,
    /// Its public half, with the key id attached.
    pub public: wasmsign2::PublicKey,
}

impl SecretKey {
    /// The key id of the public half, hex.
    pub fn id(&self) -> String {
        key_id_hex(&self.public)
    }
}

/// Generates a key pair and writes `<out>.key` (the secret key, readable
/// by its owner only) and `<out>.pub`. Existing files are not overwritten.
/// Returns the two paths and the key id.
pub fn generate(out: &Path) -> Result<(PathBuf, PathBuf, String), TrustError> {
    let pair = wasmsign2::KeyPair::generate();
    let secret = with_extension(out, "key");
    let public = with_extension(out, "pub");
    for p in [&secret, &public] {
        if p.exists() {
            return Err(TrustError::Key {
                path: p.clone(),
                message: "already exists; not overwritten".into(),
            });
        }
    }
    write_new(&secret, &pair.sk.to_bytes(), true)?;
    write_new(&public, &pair.pk.to_bytes(), false)?;
    Ok((secret, public, key_id_hex(&pair.pk)))
}

fn with_extension(out: &Path, ext: &str) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), TrustError> {
    let err = |e: std::io::Error| TrustError::Key {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Reads a key file and parses it with `parse`; errors name the file and
/// say which kind of key was expected.
fn read_key<K, E: std::fmt::Display>(
    path: &Path,
    kind: &str,
    parse: impl FnOnce(&[u8]) -> Result<K, E>,
) -> Result<K, TrustError> {
    let bad = |message: String| TrustError::Key {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    parse(&bytes).map_err(|e| bad(format!("not an ed25519 {kind} key: {e}")))
}

/// Reads a secret key (raw `wasmsign2` form, PEM or DER).
pub fn read_secret(path: &Path) -> Result<SecretKey, TrustError> {
    let key = read_key(path, "secret", wasmsign2::SecretKey::from_any)?;
    let public = wasmsign2::PublicKey {
        pk: key.sk.public_key(),
        key_id: None,
    }
    .attach_default_key_id();
    Ok(SecretKey { key, public })
}

/// Reads a public key (raw `wasmsign2` form, PEM or DER), named by `name`.
pub fn read_public(path: &Path, name: &str) -> Result<PublicKey, TrustError> {
    let key = read_key(path, "public", wasmsign2::PublicKey::from_any)?;
    Ok(PublicKey {
        name: name.to_string(),
        key: key.attach_default_key_id(),
    })
}

/// Signs a component (or core module): returns its bytes with a
/// `signature` section first. A signature already present is replaced.
pub fn sign_component(bytes: &[u8], key: &SecretKey) -> Result<Vec<u8>, TrustError> {
    let module = wasmsign2::Module::deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| TrustError::Sign(format!("not a WebAssembly binary: {e}")))?;
    let signed = key
        .key
        .sign(module, key.public.key_id())
        .map_err(|e| TrustError::Sign(e.to_string()))?;
    let mut out = Vec::with_capacity(bytes.len() + 128);
    signed
        .serialize(&mut out)
        .map_err(|e| TrustError::Sign(e.to_string()))?;
    Ok(out)
}

/// What the signatures of a binary say about a set of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signatures {
    /// No `signature` section.
    Unsigned,
    /// Valid signatures by these keys (names, in the order given).
    SignedBy(Vec<String>),
    /// Signed, but no signature is valid for any of the keys: the key ids
    /// the signatures name, and whether one of them is a given key's (then
    /// the bytes were changed after signing).
    Invalid {
        /// The key ids (hex) the signatures carry.
        key_ids: Vec<String>,
        /// A signature names one of the given keys but does not verify.
        tampered: bool,
    },
    /// The signature section cannot be parsed.
    Malformed(String),
}

/// Checks the embedded signatures of `bytes` against `keys`: one pass
/// over the bytes when a signature holds (the signed hash is computed once
/// for every key); the signature section is read again only to say why
/// none does.
pub fn signatures(bytes: &[u8], keys: &[PublicKey]) -> Signatures {
    let set = wasmsign2::PublicKeySet::new(keys.iter().map(|k| k.key.clone()).collect());
    match set.verify(&mut std::io::Cursor::new(bytes), None) {
        Ok(valid) => {
            let names = keys
                .iter()
                .filter(|k| valid.contains(&k.key))
                .map(|k| k.name.clone())
                .collect();
            return Signatures::SignedBy(names);
        }
        Err(wasmsign2::WSError::NoSignatures) => return Signatures::Unsigned,
        Err(wasmsign2::WSError::VerificationFailed) => {}
        Err(e) => return Signatures::Malformed(e.to_string()),
    }
    let info = match wasmsign2::signature_info_from_reader(&mut std::io::Cursor::new(bytes), None) {
        Ok(info) => info,
        Err(wasmsign2::WSError::NoSignatures) => return Signatures::Unsigned,
        Err(e) => return Signatures::Malformed(e.to_string()),
    };
    let key_ids: Vec<String> = info.key_ids().iter().map(hex::encode).collect();
    let tampered = keys.iter().any(|k| key_ids.contains(&k.id()));
    Signatures::Invalid { key_ids, tampered }
}

/// A detached signature over some content, for one purpose.
///
/// The signed message is `"tessera-content-signature/1" ‖ 0 ‖ purpose ‖ 0
/// ‖ SHA-256(content)`; the signature is ed25519 by the key with `key_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentSignature {
    /// Always `tessera-content-signature/1`.
    pub format: String,
    /// What the content is (`audit-head`, `journal-export`).
    pub purpose: String,
    /// The signing key's id, hex.
    pub key_id: String,
    /// The content's SHA-256, hex.
    pub sha256: String,
    /// The ed25519 signature, base64.
    pub signature: String,
}

/// The `format` of a [`ContentSignature`].
pub const CONTENT_SIGNATURE_FORMAT: &str = "tessera-content-signature/1";

fn content_message(purpose: &str, sha256: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(64 + purpose.len());
    msg.extend_from_slice(CONTENT_SIGNATURE_FORMAT.as_bytes());
    msg.push(0);
    msg.extend_from_slice(purpose.as_bytes());
    msg.push(0);
    msg.extend_from_slice(sha256);
    msg
}

/// Signs `content` for `purpose`.
pub fn sign_content(purpose: &str, content: &[u8], key: &SecretKey) -> ContentSignature {
    let sum = Sha256::digest(content);
    let sig = key.key.sk.sign(content_message(purpose, &sum), None);
    ContentSignature {
        format: CONTENT_SIGNATURE_FORMAT.into(),
        purpose: purpose.into(),
        key_id: key.id(),
        sha256: hex::encode(sum),
        signature: base64::engine::general_purpose::STANDARD.encode(sig.as_ref()),
    }
}

/// Checks a [`ContentSignature`] over `content` for `purpose`: `Ok` with
/// the name of the key that made it, or why it does not hold.
pub fn verify_content<'k>(
    purpose: &str,
    content: &[u8],
    sig: &ContentSignature,
    keys: &'k [PublicKey],
) -> Result<&'k PublicKey, String> {
    if sig.format != CONTENT_SIGNATURE_FORMAT {
        return Err(format!("unknown signature format `{}`", sig.format));
    }
    if sig.purpose != purpose {
        return Err(format!(
            "a signature for `{}`, not for `{purpose}`",
            sig.purpose
        ));
    }
    let sum = Sha256::digest(content);
    if hex::encode(sum) != sig.sha256 {
        return Err("the content changed after it was signed (SHA-256 differs)".into());
    }
    let key = keys
        .iter()
        .find(|k| k.id() == sig.key_id)
        .ok_or_else(|| format!("signed by key {}, which is not trusted", sig.key_id))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&sig.signature)
        .map_err(|e| format!("signature is not base64: {e}"))?;
    let s = ed25519_compact::Signature::from_slice(&raw)
        .map_err(|e| format!("not an ed25519 signature: {e}"))?;
    key.key
        .pk
        .verify(content_message(purpose, &sum), &s)
        .map_err(|_| format!("the signature by key {} does not verify", key.name))?;
    Ok(key)
}
