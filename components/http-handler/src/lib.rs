//! `http-handler`: a component of the `wasi:http/proxy` world, written
//! against the standard WASI 0.2 interfaces only (the `wasi` crate), as a
//! Spin or wasmCloud HTTP component is. Tessera serves it at
//! `/http/<name>/…`.
//!
//! Routes (the path the handler sees):
//! - `GET /hello/<who>`: `hello, <who>` with `x-handled-by: tessera-example`;
//! - `POST /echo`: the body back, with the request's `content-type` and a
//!   `x-body-length` header;
//! - `GET /env/<NAME>`: the variable's value, or 404 when it is not set;
//! - `GET /fetch?<url>`: the status and body of a GET of `<url>` (an
//!   outgoing request, allowed only to hosts the manifest grants);
//! - `GET /trap`: the handler panics;
//! - anything else: 404.

use std::io::{Read as _, Write as _};

use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

wasi::http::proxy::export!(Handler);

struct Handler;

fn respond(out: ResponseOutparam, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let fields = Fields::new();
    for (k, v) in headers {
        let _ = fields.append(&k.to_string(), &v.as_bytes().to_vec());
    }
    let resp = OutgoingResponse::new(fields);
    let _ = resp.set_status_code(status);
    let Ok(outgoing) = resp.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(resp));
    if let Ok(mut stream) = outgoing.write() {
        // Writes in chunks the stream accepts (`write_all` of wasi's
        // OutputStream blocks and flushes as needed).
        let _ = stream.write_all(body);
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Ok(body) = request.consume()
        && let Ok(mut stream) = body.stream()
    {
        let _ = stream.read_to_end(&mut bytes);
    }
    bytes
}

fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    request
        .headers()
        .get(&name.to_string())
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A GET of `url`: its status and body, or why it failed.
fn fetch(url: &str) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not an absolute URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    let _ = req.set_method(&Method::Get);
    let _ = req.set_scheme(Some(&if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    }));
    let _ = req.set_authority(Some(authority));
    let _ = req.set_path_with_query(Some(path));
    let future = outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let response = future
        .get()
        .ok_or("no response")?
        .map_err(|_| "response taken twice".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let mut bytes = Vec::new();
    if let Ok(body) = response.consume()
        && let Ok(mut stream) = body.stream()
    {
        let _ = stream.read_to_end(&mut bytes);
    }
    Ok((status, bytes))
}

impl wasi::exports::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let method = request.method();
        let text = [("content-type", "text/plain")];
        match (&method, path.as_str()) {
            (Method::Get, p) if p.starts_with("/hello/") => respond(
                out,
                200,
                &[("content-type", "text/plain"), ("x-handled-by", "tessera-example")],
                format!("hello, {}", &p["/hello/".len()..]).as_bytes(),
            ),
            (Method::Post, "/echo") => {
                let kind = header(&request, "content-type").unwrap_or_default();
                let body = read_body(&request);
                let len = body.len().to_string();
                respond(
                    out,
                    200,
                    &[("content-type", kind.as_str()), ("x-body-length", len.as_str())],
                    &body,
                );
            }
            (Method::Get, p) if p.starts_with("/env/") => {
                match std::env::var(&p["/env/".len()..]) {
                    Ok(v) => respond(out, 200, &text, v.as_bytes()),
                    Err(_) => respond(out, 404, &text, b"not set"),
                }
            }
            (Method::Get, p) if p.starts_with("/fetch?") => match fetch(&p["/fetch?".len()..]) {
                Ok((status, body)) => respond(
                    out,
                    200,
                    &text,
                    format!("{status} {}", String::from_utf8_lossy(&body)).as_bytes(),
                ),
                Err(e) => respond(out, 502, &text, e.as_bytes()),
            },
            (Method::Get, "/trap") => panic!("the handler was asked to trap"),
            _ => respond(out, 404, &text, format!("no route for {path}").as_bytes()),
        }
    }
}
