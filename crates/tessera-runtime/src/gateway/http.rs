//! Outbound `wasi:http` through the gateway.
//!
//! Only targets matching the manifest's `allowed_outbound_hosts` are sent.
//! A refused request fails inside the guest with `HTTP-request-denied` and
//! never leaves the process. Redirects are never followed by the host: a
//! guest that follows one issues a new request, which is checked again.

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::{Gateway, Interaction};
use crate::audit::Decision;

/// The `wasi:http` hooks of one call.
#[derive(Debug)]
pub struct HttpGate {
    gateway: Gateway,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl HttpGate {
    /// The hooks for one call.
    pub fn new(gateway: Gateway) -> Self {
        Self { gateway }
    }

    /// Decides whether `uri` may be requested.
    pub fn allows(&self, uri: &http::Uri) -> Result<(), String> {
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri
            .host()
            .ok_or_else(|| "request has no host".to_string())?
            .to_ascii_lowercase();
        let port = match uri.port_u16() {
            Some(p) => p,
            None => match scheme.as_str() {
                "http" => 80,
                "https" => 443,
                other => return Err(format!("scheme `{other}` is not supported")),
            },
        };
        if self.gateway.grants().allows_outbound(&scheme, &host, port) {
            Ok(())
        } else {
            Err(format!(
                "{scheme}://{host}:{port} is not in http.allowed_outbound_hosts"
            ))
        }
    }
}

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let uri = request.uri().to_string();
        let method = request.method().as_str().to_string();
        let verdict = self.allows(request.uri());
        self.gateway.observe(&Interaction::HttpRequest {
            method: &method,
            uri: &uri,
            allowed: verdict.is_ok(),
        });
        match verdict {
            Err(reason) => {
                self.gateway.audit(
                    "http",
                    format!("{method} {uri}"),
                    Decision::Deny,
                    Some(reason),
                );
                Box::new(async { Err(HttpError::HttpRequestDenied) })
            }
            Ok(()) => {
                self.gateway
                    .audit("http", format!("{method} {uri}"), Decision::Allow, None);
                Box::new(async move {
                    let (res, io) =
                        wasmtime_wasi_http::default_send_request(request, options).await?;
                    Ok((
                        res.map(BodyExt::boxed_unsync),
                        Box::new(io) as Box<dyn Future<Output = _> + Send>,
                    ))
                })
            }
        }
    }
}
