//! Where a component comes from: a local file, an `https://` URL pinned by
//! digest, or an OCI registry.
//!
//! Components are shared the way container images are: published to an OCI
//! registry as a CNCF Wasm OCI artifact (config media type
//! `application/vnd.wasm.config.v0+json`, one `application/wasm` layer — the
//! format wasmCloud, Spin, Wassette and `wkg` use), or served as a plain file
//! over HTTPS. This crate turns such a source into verified bytes, and
//! publishes bytes to a registry, so that every entry point (the CLI's
//! `components add`, `call` and `inspect`, and later a server endpoint)
//! fetches the same way.
//!
//! Nothing fetched is used before it is verified:
//!
//! - an `https://` URL must carry a digest pin (`--digest sha256:…` or
//!   `URL#sha256=…`): without one it is refused, and bytes whose SHA-256
//!   differs are refused naming both digests;
//! - an OCI manifest pinned by digest (`oci://host/repo@sha256:…`) must hash
//!   to that digest; the layer must hash to the digest the manifest names
//!   (checked by `oci-client` while streaming, and again here on the whole
//!   blob), and its size must match;
//! - any source may additionally be pinned with [`FetchOptions::digest`],
//!   the digest of the component bytes (the digest Tessera shows everywhere,
//!   which for an OCI artifact is also its layer digest).
//!
//! Registries are reached over HTTPS, except loopback registries
//! (`localhost`, `127.0.0.0/8`, `[::1]`) and those named in
//! [`FetchOptions::insecure_registries`], which are reached over plain
//! HTTP. Extra roots of trust come from [`FetchOptions::ca_cert`]. Access
//! is anonymous unless [`FetchOptions::credentials`] are given; they are
//! sent to the registry only, and never appear in an origin, a message or a
//! `Debug` rendering.
#![deny(missing_docs)]

mod https;
mod oci;
mod tls;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

pub use oci::{OciRef, Pushed, push};

/// The largest component a remote source may deliver (512 MiB).
pub const MAX_COMPONENT_BYTES: u64 = 512 * 1024 * 1024;

/// How long to wait for a TCP connection to a URL or a registry.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a read may stall before a transfer is abandoned.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A SHA-256 content digest, `sha256:` followed by 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl FromStr for Digest {
    type Err = String;

    /// Parses `sha256:<64 hex digits>` (hex in either case).
    fn from_str(s: &str) -> Result<Self, String> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| match s.split_once(':') {
                Some((alg, _)) => format!("algorithm `{alg}` is not supported; use sha256:<hex>"),
                None => "expected sha256:<64 hex digits>".to_string(),
            })?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "expected 64 hex digits after `sha256:`, got {} characters{}",
                hex.len(),
                if hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    ""
                } else {
                    " (not all hex)"
                }
            ));
        }
        Ok(Self(format!("sha256:{}", hex.to_ascii_lowercase())))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a component's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A local file.
    File(PathBuf),
    /// An `https://` URL, with the pin its `#sha256=` fragment carries.
    Https {
        /// The URL, without its fragment.
        url: reqwest::Url,
        /// The digest the URL's fragment pins, if it has one.
        pin: Option<Digest>,
    },
    /// An OCI reference.
    Oci(OciRef),
}

impl Source {
    /// Reads a command-line argument: `https://…` is a URL, `oci://…` an
    /// OCI reference, anything else a local path.
    pub fn parse(arg: &Path) -> Result<Self, Error> {
        let Some(text) = arg.to_str() else {
            return Ok(Self::File(arg.to_path_buf()));
        };
        if let Some(rest) = text.strip_prefix("oci://") {
            return OciRef::parse(rest).map(Self::Oci);
        }
        if text.starts_with("https://") {
            return https::parse(text);
        }
        if let Some((scheme, _)) = text.split_once("://")
            && !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
        {
            return Err(Error::BadSource {
                source_text: text.to_string(),
                why: format!(
                    "`{scheme}://` is not a component source; use a file path, https://…#sha256=<hex>, or oci://host/repo:tag"
                ),
            });
        }
        Ok(Self::File(arg.to_path_buf()))
    }

    /// Whether the bytes come from the network.
    pub fn is_remote(&self) -> bool {
        !matches!(self, Self::File(_))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Https { url, .. } => write!(f, "{url}"),
            Self::Oci(r) => write!(f, "{r}"),
        }
    }
}

/// Registry credentials for HTTP basic authentication. Their `Debug`
/// rendering hides the password.
#[derive(Clone)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to fetch (and push).
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// The digest the component bytes must have. Required for an `https://`
    /// URL that carries no `#sha256=` pin; optional otherwise.
    pub digest: Option<Digest>,
    /// A PEM file of extra root certificates to trust, besides the
    /// system's, for `https://` URLs and registries.
    pub ca_cert: Option<PathBuf>,
    /// Registries (`host` or `host:port`) reached over plain HTTP although
    /// they are not on a loopback address.
    pub insecure_registries: Vec<String>,
    /// Basic-auth credentials for the registry; anonymous without them.
    pub credentials: Option<Credentials>,
}

/// Verified component bytes and where they came from.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The component bytes.
    pub bytes: Vec<u8>,
    /// Their SHA-256 digest.
    pub digest: Digest,
    /// Where they came from, fully pinned: the path, the URL with
    /// `#sha256=`, or `oci://host/repo:tag@sha256:<manifest digest>`.
    pub origin: String,
}

/// Fetches a component and verifies it before handing it back.
pub async fn fetch(source: &Source, options: &FetchOptions) -> Result<Fetched, Error> {
    let fetched = match source {
        Source::File(path) => {
            let bytes = tokio::fs::read(path).await.map_err(|e| Error::Read {
                path: path.clone(),
                source: e,
            })?;
            Fetched {
                digest: Digest::of(&bytes),
                bytes,
                origin: path.display().to_string(),
            }
        }
        Source::Https { url, pin } => {
            let pin = match (pin, &options.digest) {
                (Some(a), Some(b)) if a != b => {
                    return Err(Error::ConflictingPins {
                        source_text: url.to_string(),
                        url_pin: a.clone(),
                        option_pin: b.clone(),
                    });
                }
                (Some(p), _) | (None, Some(p)) => p.clone(),
                (None, None) => {
                    return Err(Error::Unpinned {
                        url: url.to_string(),
                    });
                }
            };
            let tls = tls::Roots::load(options.ca_cert.as_deref())?;
            let bytes = https::get(url, &pin, &tls).await?;
            Fetched {
                digest: pin.clone(),
                bytes,
                origin: format!("{url}#sha256={}", pin.hex()),
            }
        }
        Source::Oci(r) => oci::pull(r, options).await?,
    };
    if let Some(expected) = &options.digest
        && expected != &fetched.digest
    {
        return Err(Error::DigestMismatch {
            origin: fetched.origin,
            what: "component",
            expected: expected.clone(),
            actual: fetched.digest,
        });
    }
    Ok(fetched)
}

/// Why a component could not be fetched or pushed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The argument is not a source this crate understands.
    #[error("{source_text}: {why}")]
    BadSource {
        /// The argument as given.
        source_text: String,
        /// What is wrong with it.
        why: String,
    },
    /// An `https://` URL without a digest pin.
    #[error(
        "{url}: a URL must be pinned by digest so the bytes used are the bytes meant: add --digest sha256:<hex> or end the URL with #sha256=<hex> (`sha256sum FILE` prints the hex)"
    )]
    Unpinned {
        /// The URL.
        url: String,
    },
    /// The URL's `#sha256=` pin and `--digest` disagree.
    #[error("{source_text}: the URL pins {url_pin} but --digest pins {option_pin}")]
    ConflictingPins {
        /// The URL.
        source_text: String,
        /// The pin in the URL.
        url_pin: Digest,
        /// The pin given as an option.
        option_pin: Digest,
    },
    /// Fetched bytes hash to another digest than the one expected.
    #[error("{origin}: {what} digest mismatch: expected {expected}, got {actual}; refused")]
    DigestMismatch {
        /// Where the bytes came from.
        origin: String,
        /// Which bytes: `component`, `manifest` or `layer`.
        what: &'static str,
        /// The digest pinned or announced.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A local file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `--ca-cert` file is unreadable or holds no certificate.
    #[error("--ca-cert {}: {why}", path.display())]
    CaCert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// No connection could be made.
    #[error("{target}: cannot connect: {message}")]
    Unreachable {
        /// The URL or registry.
        target: String,
        /// The underlying error.
        message: String,
    },
    /// The HTTPS server answered with an error status.
    #[error("{url}: the server answered HTTP {status}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// A transfer failed after it started (TLS, timeout, broken stream).
    #[error("{target}: {message}")]
    Transfer {
        /// The URL or reference.
        target: String,
        /// The underlying error.
        message: String,
    },
    /// The registry refused or failed a request.
    #[error("{reference}: {message}")]
    Registry {
        /// The reference.
        reference: String,
        /// What the registry said.
        message: String,
    },
    /// The registry's credentials were refused, or are needed.
    #[error(
        "{reference}: the registry refused access ({message}); give credentials with --registry-user and TESSERA_REGISTRY_PASSWORD"
    )]
    Unauthorized {
        /// The reference.
        reference: String,
        /// What the registry said.
        message: String,
    },
    /// The artifact is not a Wasm OCI artifact.
    #[error("{reference}: not a Wasm OCI artifact: {why}")]
    NotWasmArtifact {
        /// The reference.
        reference: String,
        /// What differs from the format.
        why: String,
    },
    /// The component is larger than [`MAX_COMPONENT_BYTES`].
    #[error("{origin}: {size} bytes is over the limit of {limit} bytes for a component")]
    TooLarge {
        /// Where it came from.
        origin: String,
        /// Its size (announced or received so far).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The bytes to push are not WebAssembly.
    #[error("{origin}: not a WebAssembly component or module, refusing to push")]
    NotWasm {
        /// Where the bytes came from.
        origin: String,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

impl Error {
    /// Whether the failure is Tessera's or the machine's rather than the
    /// input's (so the CLI exits with "internal error").
    pub fn is_internal(&self) -> bool {
        matches!(self, Self::Client(_))
    }
}

/// An error and its chain of causes, as one line (`a: b: c`), without
/// repeating a cause already contained in its predecessor's text.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// Whether anything in the chain is a failure to connect (refused,
/// unroutable, DNS, connect timeout).
pub(crate) fn is_connect_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(s) = next {
        if let Some(r) = s.downcast_ref::<reqwest::Error>()
            && r.is_connect()
        {
            return true;
        }
        next = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_and_normalise() {
        let hex = "AB".repeat(32);
        let d: Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(d.as_str(), format!("sha256:{}", "ab".repeat(32)));
        assert!(
            "sha512:00"
                .parse::<Digest>()
                .unwrap_err()
                .contains("sha512")
        );
        assert!(
            "sha256:abc"
                .parse::<Digest>()
                .unwrap_err()
                .contains("64 hex")
        );
        assert!(
            format!("sha256:{}", "zz".repeat(32))
                .parse::<Digest>()
                .unwrap_err()
                .contains("not all hex")
        );
    }

    #[test]
    fn sources_are_told_apart() {
        assert!(matches!(
            Source::parse(Path::new("components/hello.wasm")).unwrap(),
            Source::File(_)
        ));
        let pin = format!("sha256={}", "0".repeat(64));
        match Source::parse(Path::new(&format!("https://example.com/a.wasm#{pin}"))).unwrap() {
            Source::Https { url, pin } => {
                assert_eq!(url.as_str(), "https://example.com/a.wasm");
                assert!(pin.is_some());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Source::parse(Path::new("oci://127.0.0.1:5000/tools/hello:v1")).unwrap(),
            Source::Oci(_)
        ));
        let e = Source::parse(Path::new("ftp://x/y"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ftp://` is not a component source"), "{e}");
        let e = Source::parse(Path::new("http://x/y"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`http://` is not a component source"), "{e}");
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
