//! `http-get`: a tiny blocking HTTP client over `wasi:http` (GET, and POST
//! with a body and headers), shared by the `http-fetch` and `net-escape`
//! components. It never follows redirects; the caller decides what to do
//! with a 3xx response.

use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

/// A received HTTP response.
pub struct Response {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Header names and values in the order the host reported them; values
    /// are decoded as lossy UTF-8.
    pub headers: Vec<(String, String)>,
    /// Raw body bytes (empty when the body was not requested).
    pub body: Vec<u8>,
}

impl Response {
    /// Returns the first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether this is a redirect that carries a `location` header.
    pub fn redirect_location(&self) -> Option<&str> {
        match self.status {
            301 | 302 | 303 | 307 | 308 => self.header("location"),
            _ => None,
        }
    }
}

/// The pieces of an absolute URL that `wasi:http` requests are built from.
#[derive(Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// Scheme, e.g. `http` or `https`.
    pub scheme: &'a str,
    /// Host with optional port, e.g. `example.com:8080`.
    pub authority: &'a str,
    /// Path plus optional query, always starting with `/`.
    pub path_with_query: String,
}

/// Splits an absolute URL (`scheme://authority/path?query#fragment`) into
/// its parts. The fragment is dropped and an empty path becomes `/`.
pub fn parse_url(url: &str) -> Result<Target<'_>, String> {
    let url = url.trim();
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("invalid url {url:?}: missing scheme"))?;
    if scheme.is_empty() {
        return Err(format!("invalid url {url:?}: empty scheme"));
    }
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.is_empty() {
        return Err(format!("invalid url {url:?}: missing host"));
    }
    let path_with_query = if tail.starts_with('/') {
        tail.to_string()
    } else {
        format!("/{tail}")
    };
    Ok(Target {
        scheme,
        authority,
        path_with_query,
    })
}

/// Resolves a `location` header value against the URL it was received from.
/// Handles absolute URLs, scheme-relative (`//host/...`), absolute-path and
/// relative-path references.
pub fn resolve(base: &str, location: &str) -> Result<String, String> {
    if location.contains("://") {
        return Ok(location.to_string());
    }
    let target = parse_url(base)?;
    if let Some(rest) = location.strip_prefix("//") {
        return Ok(format!("{}://{rest}", target.scheme));
    }
    let origin = format!("{}://{}", target.scheme, target.authority);
    if location.starts_with('/') {
        return Ok(format!("{origin}{location}"));
    }
    // Relative path: replace everything after the last `/` of the base path.
    let path = target.path_with_query.split('?').next().unwrap_or("/");
    let dir = &path[..=path.rfind('/').unwrap_or(0)];
    Ok(format!("{origin}{dir}{location}"))
}

/// Performs a single GET request for `url` and waits for the response.
///
/// Redirects are not followed. When `read_body` is false the body is left
/// unread. Failures, including the host's `error-code` (for example
/// `HttpRequestDenied` when its policy refuses the request), are returned as
/// readable messages that contain the error code's debug text.
pub fn get(url: &str, read_body: bool) -> Result<Response, String> {
    send(&Method::Get, url, &[], None, read_body)
}

/// Performs a POST request for `url` with `headers` and `body`.
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response, String> {
    send(&Method::Post, url, headers, Some(body), true)
}

/// Performs one request and waits for the response.
fn send(
    method: &Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    read_body: bool,
) -> Result<Response, String> {
    let target = parse_url(url)?;

    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, &value.as_bytes().to_vec())
            .map_err(|e| format!("header {name}: {e:?}"))?;
    }
    let request = OutgoingRequest::new(fields);
    request
        .set_method(method)
        .map_err(|()| "invalid method".to_string())?;
    let scheme = match target.scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| format!("invalid scheme {:?}", target.scheme))?;
    request
        .set_authority(Some(target.authority))
        .map_err(|()| format!("invalid authority {:?}", target.authority))?;
    request
        .set_path_with_query(Some(&target.path_with_query))
        .map_err(|()| format!("invalid path {:?}", target.path_with_query))?;

    // A request whose body is never opened is sent with an empty body.
    let outgoing = match body {
        Some(_) => Some(
            request
                .body()
                .map_err(|()| "request body already taken".to_string())?,
        ),
        None => None,
    };
    let future = outgoing_handler::handle(request, None)
        .map_err(|e| format!("request to {url} failed: {e:?}"))?;
    if let (Some(outgoing), Some(bytes)) = (outgoing, body) {
        {
            // The stream is a child of the body: drop it before finishing.
            let stream = outgoing
                .write()
                .map_err(|()| "request body stream already taken".to_string())?;
            for chunk in bytes.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| format!("writing the body failed: {e:?}"))?;
            }
        }
        OutgoingBody::finish(outgoing, None)
            .map_err(|e| format!("finishing the body failed: {e:?}"))?;
    }
    let response = loop {
        if let Some(outcome) = future.get() {
            break outcome
                .map_err(|()| "response already taken".to_string())?
                .map_err(|e| format!("request to {url} failed: {e:?}"))?;
        }
        future.subscribe().block();
    };

    let status = response.status();
    let headers = {
        // `headers` is a child resource of `response`: drop it first.
        let fields = response.headers();
        fields
            .entries()
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
            .collect()
    };
    let body = if read_body {
        let incoming = response
            .consume()
            .map_err(|()| "response body already consumed".to_string())?;
        read_all(incoming)?
    } else {
        Vec::new()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Reads an incoming body to the end.
fn read_all(incoming: IncomingBody) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    {
        // The stream is a child of the body, so it must be dropped first.
        let stream = incoming
            .stream()
            .map_err(|()| "response body stream already taken".to_string())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(format!("reading body failed: {}", e.to_debug_string()));
                }
            }
        }
    }
    // Trailers are not needed; dropping the future discards them.
    drop(IncomingBody::finish(incoming));
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = parse_url("http://example.com:8080/a/b?x=1#frag").unwrap();
        assert_eq!(t.scheme, "http");
        assert_eq!(t.authority, "example.com:8080");
        assert_eq!(t.path_with_query, "/a/b?x=1");
        assert_eq!(parse_url("https://h").unwrap().path_with_query, "/");
        assert_eq!(parse_url("https://h?q").unwrap().path_with_query, "/?q");
        assert!(parse_url("example.com").is_err());
        assert!(parse_url("http:///x").is_err());
    }

    #[test]
    fn resolves_locations() {
        let base = "http://h:1/a/b?q";
        assert_eq!(resolve(base, "https://o/x").unwrap(), "https://o/x");
        assert_eq!(resolve(base, "//o/x").unwrap(), "http://o/x");
        assert_eq!(resolve(base, "/x").unwrap(), "http://h:1/x");
        assert_eq!(resolve(base, "c").unwrap(), "http://h:1/a/c");
    }
}
