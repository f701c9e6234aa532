//! `http-fetch`: performs HTTP GET requests through `wasi:http` so the
//! runtime's outgoing-network policy can be exercised end to end.

wit_bindgen::generate!({
    world: "http-fetch",
    path: "wit",
});

/// The component's single implementation type.
struct Component;

impl Guest for Component {
    fn fetch(url: String) -> Result<Response, String> {
        let response = http_get::get(&url, true)?;
        Ok(Response {
            status: response.status,
            headers: response.headers,
            body: String::from_utf8_lossy(&response.body).into_owned(),
        })
    }
}

export!(Component);
