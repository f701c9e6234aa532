//! Roots of trust: the system's, plus those of a `--ca-cert` PEM file.
//!
//! TLS is rustls with the `ring` provider (already part of the runtime's
//! HTTP stack), so no OpenSSL and no second crypto library is linked.

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::Error;

/// Extra root certificates (DER), trusted besides the system's.
#[derive(Debug, Clone, Default)]
pub(crate) struct Roots {
    pub(crate) extra: Vec<Vec<u8>>,
}

impl Roots {
    /// Reads every certificate of a PEM file; installs the crypto provider.
    pub(crate) fn load(path: Option<&Path>) -> Result<Self, Error> {
        // Both reqwest and oci-client build rustls configurations from the
        // process's default provider; install ring once (a second install
        // is refused harmlessly).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let bad = |why: String| Error::CaCert {
            path: PathBuf::from(path),
            why,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let extra = CertificateDer::pem_slice_iter(&bytes)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
        if extra.is_empty() {
            return Err(bad(
                "no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----` blocks)".into(),
            ));
        }
        Ok(Self { extra })
    }

    /// The certificates for reqwest.
    pub(crate) fn reqwest(&self) -> Result<Vec<reqwest::Certificate>, Error> {
        self.extra
            .iter()
            .map(|der| {
                reqwest::Certificate::from_der(der)
                    .map_err(|e| Error::Client(format!("a --ca-cert certificate: {e}")))
            })
            .collect()
    }

    /// The certificates for oci-client.
    pub(crate) fn oci(&self) -> Vec<oci_client::client::Certificate> {
        self.extra
            .iter()
            .map(|der| oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Der,
                data: der.clone(),
            })
            .collect()
    }
}
