//! `https://` URLs: fetched with reqwest (rustls), streamed with a size
//! bound, and verified against their digest pin before they are returned.

use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};

use crate::tls::Roots;
use crate::{
    CONNECT_TIMEOUT, Digest, Error, MAX_COMPONENT_BYTES, READ_TIMEOUT, Source, chain,
    is_connect_error,
};

/// Parses `https://host/path[#sha256=<hex>]`.
pub(crate) fn parse(text: &str) -> Result<Source, Error> {
    let bad = |why: String| Error::BadSource {
        source_text: text.to_string(),
        why,
    };
    let mut url = reqwest::Url::parse(text).map_err(|e| bad(format!("not a URL: {e}")))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("the URL names no host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "credentials in a URL would be recorded with the component's origin; serve the file without them".into(),
        ));
    }
    let pin = match url.fragment() {
        None => None,
        Some(f) => {
            let hex = f.strip_prefix("sha256=").ok_or_else(|| {
                bad(format!(
                    "the fragment `#{f}` is not a pin; write #sha256=<64 hex digits>"
                ))
            })?;
            Some(
                format!("sha256:{hex}")
                    .parse::<Digest>()
                    .map_err(|e| bad(format!("#sha256=: {e}")))?,
            )
        }
    };
    url.set_fragment(None);
    Ok(Source::Https { url, pin })
}

/// GETs `url` and returns its body if it hashes to `pin`.
pub(crate) async fn get(url: &reqwest::Url, pin: &Digest, roots: &Roots) -> Result<Vec<u8>, Error> {
    let target = url.to_string();
    let client = reqwest::Client::builder()
        .https_only(true)
        .tls_certs_merge(roots.reqwest()?)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("tessera/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Client(chain(&e)))?;
    let response = client.get(url.clone()).send().await.map_err(|e| {
        if is_connect_error(&e) {
            Error::Unreachable {
                target: target.clone(),
                message: chain(&e),
            }
        } else {
            Error::Transfer {
                target: target.clone(),
                message: chain(&e),
            }
        }
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(Error::HttpStatus {
            url: target,
            status: status.as_u16(),
        });
    }
    if let Some(len) = response.content_length()
        && len > MAX_COMPONENT_BYTES
    {
        return Err(Error::TooLarge {
            origin: target,
            size: len,
            limit: MAX_COMPONENT_BYTES,
        });
    }
    let mut hasher = Sha256::new();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::Transfer {
            target: target.clone(),
            message: chain(&e),
        })?;
        if (body.len() + chunk.len()) as u64 > MAX_COMPONENT_BYTES {
            return Err(Error::TooLarge {
                origin: target,
                size: (body.len() + chunk.len()) as u64,
                limit: MAX_COMPONENT_BYTES,
            });
        }
        hasher.update(&chunk);
        body.extend_from_slice(&chunk);
    }
    let actual = Digest(format!("sha256:{}", hex::encode(hasher.finalize())));
    if &actual != pin {
        return Err(Error::DigestMismatch {
            origin: target,
            what: "component",
            expected: pin.clone(),
            actual,
        });
    }
    Ok(body)
}
