//! OCI registries: pull and push CNCF Wasm OCI artifacts.
//!
//! The distribution protocol (token and basic auth, manifests, chunked
//! blob uploads, streamed blob downloads with digest checks) is
//! `oci-client`'s; the artifact format (the `application/vnd.wasm.config.v0+json`
//! config with the component's world, one `application/wasm` layer) is
//! `oci-wasm`'s, the implementation the Bytecode Alliance's `wkg` and
//! wasmCloud's `wash` use. What this module adds is the policy: which
//! registries may be spoken to over plain HTTP, which artifacts are
//! accepted, size bounds, and a second, independent digest check of every
//! byte before it is handed back.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use futures_util::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_wasm::{WASM_LAYER_MEDIA_TYPE, WASM_MANIFEST_CONFIG_MEDIA_TYPE, WasmClient, WasmConfig};

use crate::tls::Roots;
use crate::{
    CONNECT_TIMEOUT, Digest, Error, FetchOptions, Fetched, MAX_COMPONENT_BYTES, READ_TIMEOUT,
    chain, is_connect_error,
};

/// An OCI reference with an explicit registry:
/// `host[:port]/repository[:tag][@sha256:<hex>]`.
#[derive(Debug, Clone)]
pub struct OciRef {
    reference: Reference,
}

impl OciRef {
    /// Parses a reference written after `oci://`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let bad = |why: String| Error::BadSource {
            source_text: format!("oci://{text}"),
            why,
        };
        let (first, rest) = text.split_once('/').ok_or_else(|| {
            bad("expected oci://host[:port]/repository[:tag|@sha256:<hex>]".into())
        })?;
        if rest.is_empty() || !(first.contains('.') || first.contains(':') || first == "localhost")
        {
            return Err(bad(format!(
                "`{first}` is not a registry host; name it explicitly, e.g. oci://ghcr.io/org/tool:1.0 or oci://127.0.0.1:5000/tool:1.0"
            )));
        }
        if let Some((_, d)) = text.split_once('@') {
            d.parse::<Digest>()
                .map_err(|e| bad(format!("the pinned digest `{d}`: {e}")))?;
        }
        let reference: Reference = text
            .parse()
            .map_err(|e: oci_client::ParseError| bad(e.to_string()))?;
        Ok(Self { reference })
    }

    /// The registry, `host[:port]`.
    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// The pinned manifest digest, if the reference has one.
    pub fn pinned(&self) -> Option<&str> {
        self.reference.digest()
    }

    /// `oci://` and the reference as written (tag and/or digest).
    fn with_manifest(&self, digest: &Digest) -> String {
        let tag = self
            .reference
            .tag()
            .map(|t| format!(":{t}"))
            .unwrap_or_default();
        format!(
            "oci://{}/{}{tag}@{digest}",
            self.reference.registry(),
            self.reference.repository()
        )
    }
}

impl fmt::Display for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "oci://{}/{}",
            self.reference.registry(),
            self.reference.repository()
        )?;
        if let Some(t) = self.reference.tag() {
            write!(f, ":{t}")?;
        }
        if let Some(d) = self.reference.digest() {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// What `push` published.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `oci://host/repo:tag@sha256:<manifest digest>`: pulls exactly this.
    pub reference: String,
    /// The digest of the manifest.
    pub manifest_digest: Digest,
    /// The digest of the component bytes (the layer).
    pub layer_digest: Digest,
}

/// Whether `registry` is spoken to over plain HTTP: loopback registries
/// and those listed as insecure.
fn plain_http(registry: &str, insecure: &[String]) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.split(':').next().unwrap_or(registry),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || host.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
    loopback
        || insecure
            .iter()
            .any(|i| i.eq_ignore_ascii_case(registry) || i.eq_ignore_ascii_case(host))
}

fn client(r: &OciRef, options: &FetchOptions) -> Result<Client, Error> {
    let roots = Roots::load(options.ca_cert.as_deref())?;
    let registry = r.reference.resolve_registry().to_string();
    let protocol = if plain_http(&registry, &options.insecure_registries) {
        ClientProtocol::HttpsExcept(vec![registry])
    } else {
        ClientProtocol::Https
    };
    let config = ClientConfig {
        protocol,
        extra_root_certificates: roots.oci(),
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        user_agent: concat!("tessera/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    };
    // `Client::new` would fall back to a default configuration on error
    // (dropping the extra roots); `try_from` reports it.
    Client::try_from(config).map_err(|e| Error::Client(chain(&e)))
}

fn auth(options: &FetchOptions) -> RegistryAuth {
    match &options.credentials {
        Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        None => RegistryAuth::Anonymous,
    }
}

/// Maps an `oci-client` error to one that names the reference and says
/// what happened.
fn registry_error(r: &OciRef, e: OciDistributionError) -> Error {
    use oci_client::errors::OciErrorCode as Code;
    let reference = r.to_string();
    let unauthorized = |message: String| Error::Unauthorized {
        reference: reference.clone(),
        message,
    };
    let no_manifest = || Error::Registry {
        reference: reference.clone(),
        message: "no such manifest in the registry (check the repository, the tag or the digest)"
            .into(),
    };
    match &e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => unauthorized(chain(&e)),
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => unauthorized(format!("HTTP {}", server_code(&e))),
        OciDistributionError::DigestError(d) => Error::Registry {
            reference,
            message: format!("the content does not match its digest ({d}); refused"),
        },
        // `RequestError` is `#[error(transparent)]`: its `source()` skips
        // the reqwest error itself, so look at it here.
        OciDistributionError::RequestError(re) if re.is_connect() => Error::Unreachable {
            target: format!("registry {} ({reference})", r.registry()),
            message: chain(re),
        },
        _ if is_connect_error(&e) => Error::Unreachable {
            target: format!("registry {} ({reference})", r.registry()),
            message: chain(&e),
        },
        OciDistributionError::ImageManifestNotFoundError(_) => no_manifest(),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&Code> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, Code::ManifestUnknown | Code::NameUnknown))
            {
                no_manifest()
            } else if codes
                .iter()
                .any(|c| matches!(c, Code::Unauthorized | Code::Denied))
            {
                unauthorized(envelope_text(envelope))
            } else {
                Error::Registry {
                    reference,
                    message: envelope_text(envelope),
                }
            }
        }
        _ => Error::Registry {
            reference,
            message: chain(&e),
        },
    }
}

fn server_code(e: &OciDistributionError) -> u16 {
    match e {
        OciDistributionError::ServerError { code, .. } => *code,
        _ => 0,
    }
}

fn envelope_text(envelope: &oci_client::errors::OciEnvelope) -> String {
    envelope
        .errors
        .iter()
        .map(|e| format!("{:?}: {}", e.code, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Pulls the component of a Wasm OCI artifact and verifies it.
pub(crate) async fn pull(r: &OciRef, options: &FetchOptions) -> Result<Fetched, Error> {
    let client = client(r, options)?;
    let reference = r.to_string();
    let (raw, _) = client
        .pull_manifest_raw(&r.reference, &auth(options), &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .map_err(|e| registry_error(r, e))?;
    let manifest_digest = Digest::of(&raw);
    if let Some(pinned) = r.pinned() {
        let expected: Digest = pinned.parse().map_err(|why| Error::BadSource {
            source_text: reference.clone(),
            why,
        })?;
        if expected != manifest_digest {
            return Err(Error::DigestMismatch {
                origin: reference,
                what: "manifest",
                expected,
                actual: manifest_digest,
            });
        }
    }
    let not_wasm = |why: String| Error::NotWasmArtifact {
        reference: reference.clone(),
        why,
    };
    let manifest: OciImageManifest = serde_json::from_slice(&raw)
        .map_err(|e| not_wasm(format!("the manifest is not an OCI image manifest: {e}")))?;
    if manifest.config.media_type != WASM_MANIFEST_CONFIG_MEDIA_TYPE {
        return Err(not_wasm(format!(
            "its config media type is `{}`, expected `{WASM_MANIFEST_CONFIG_MEDIA_TYPE}`",
            manifest.config.media_type
        )));
    }
    let [layer] = manifest.layers.as_slice() else {
        return Err(not_wasm(format!(
            "it has {} layers, expected exactly one",
            manifest.layers.len()
        )));
    };
    if layer.media_type != WASM_LAYER_MEDIA_TYPE {
        return Err(not_wasm(format!(
            "its layer media type is `{}`, expected `{WASM_LAYER_MEDIA_TYPE}`",
            layer.media_type
        )));
    }
    let layer_digest: Digest = layer
        .digest
        .parse()
        .map_err(|e| not_wasm(format!("its layer digest `{}`: {e}", layer.digest)))?;
    let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
    if size > MAX_COMPONENT_BYTES {
        return Err(Error::TooLarge {
            origin: reference,
            size,
            limit: MAX_COMPONENT_BYTES,
        });
    }
    let origin = r.with_manifest(&manifest_digest);
    let mut stream = client
        .pull_blob_stream(&r.reference, layer)
        .await
        .map_err(|e| registry_error(r, e))?;
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        // oci-client verifies the layer digest at the end of the stream
        // and fails the last read if it differs.
        let chunk = match chunk {
            Ok(c) => c,
            // oci-client fails the stream's last read when the digest
            // differs; report what was received, hashed here.
            Err(_) if bytes.len() as u64 == size && Digest::of(&bytes) != layer_digest => {
                return Err(Error::DigestMismatch {
                    actual: Digest::of(&bytes),
                    origin,
                    what: "layer",
                    expected: layer_digest,
                });
            }
            Err(e) => {
                return Err(Error::Transfer {
                    target: origin,
                    message: format!("the layer {layer_digest}: {}", chain(&e)),
                });
            }
        };
        if (bytes.len() + chunk.len()) as u64 > size {
            return Err(Error::Transfer {
                target: origin,
                message: format!(
                    "the layer {layer_digest} is longer than the {size} bytes its manifest announces; refused"
                ),
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    let actual = Digest::of(&bytes);
    if actual != layer_digest {
        return Err(Error::DigestMismatch {
            origin,
            what: "layer",
            expected: layer_digest,
            actual,
        });
    }
    if bytes.len() as u64 != size {
        return Err(Error::Transfer {
            target: origin,
            message: format!(
                "the layer is {} bytes, its manifest announces {size}; refused",
                bytes.len()
            ),
        });
    }
    Ok(Fetched {
        bytes,
        digest: actual,
        origin,
    })
}

/// Publishes component (or core module) bytes as a Wasm OCI artifact under
/// `target`'s tag (`latest` when it names none), and returns the pinned
/// reference that pulls exactly it.
pub async fn push(
    bytes: Vec<u8>,
    origin: &str,
    target: &OciRef,
    options: &FetchOptions,
) -> Result<Pushed, Error> {
    if target.pinned().is_some() {
        return Err(Error::BadSource {
            source_text: target.to_string(),
            why: "a push target names a tag, not a digest (the digest is the result)".into(),
        });
    }
    let layer_digest = Digest::of(&bytes);
    let (config, layer) = if wasmparser::Parser::is_component(&bytes) {
        WasmConfig::from_raw_component(bytes, None)
    } else if wasmparser::Parser::is_core_wasm(&bytes) {
        WasmConfig::from_raw_module(bytes, None)
    } else {
        return Err(Error::NotWasm {
            origin: origin.to_string(),
        });
    }
    .map_err(|e| Error::Registry {
        reference: target.to_string(),
        message: format!("cannot describe {origin} for the artifact's config: {e:#}"),
    })?;
    let client = WasmClient::new(client(target, options)?);
    let auth = auth(options);
    client
        .push(&target.reference, &auth, layer, config, None)
        .await
        .map_err(|e| match e.downcast::<OciDistributionError>() {
            Ok(e) => registry_error(target, e),
            Err(e) => Error::Registry {
                reference: target.to_string(),
                message: format!("{e:#}"),
            },
        })?;
    // Read the manifest back: its digest is what a pinned pull names.
    let (raw, _) = client
        .pull_manifest_raw(&target.reference, &auth, &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .map_err(|e| registry_error(target, e))?;
    let manifest_digest = Digest::of(&raw);
    Ok(Pushed {
        reference: target.with_manifest(&manifest_digest),
        manifest_digest,
        layer_digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_listed_registries_are_plain_http() {
        for r in [
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(plain_http(r, &[]), "{r}");
        }
        assert!(!plain_http("ghcr.io", &[]));
        assert!(!plain_http("10.0.0.5:5000", &[]));
        assert!(plain_http("10.0.0.5:5000", &["10.0.0.5".into()]));
        assert!(plain_http("10.0.0.5:5000", &["10.0.0.5:5000".into()]));
        assert!(!plain_http("10.0.0.5:5000", &["10.0.0.6".into()]));
    }

    #[test]
    fn references_need_a_registry_host() {
        let r = OciRef::parse("127.0.0.1:5000/tools/hello:v1").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/tools/hello:v1");
        let e = OciRef::parse("hello:v1").unwrap_err().to_string();
        assert!(e.contains("expected oci://host"), "{e}");
        let e = OciRef::parse("tools/hello:v1").unwrap_err().to_string();
        assert!(e.contains("`tools` is not a registry host"), "{e}");
        let e = OciRef::parse("ghcr.io/a/b@sha256:12")
            .unwrap_err()
            .to_string();
        assert!(e.contains("64 hex"), "{e}");
        let pinned = format!("ghcr.io/a/b@sha256:{}", "a".repeat(64));
        assert!(OciRef::parse(&pinned).unwrap().pinned().is_some());
    }
}
