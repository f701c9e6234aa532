//! `config-tool`: reads configuration through `wasi:config/store`, and uses
//! a configured key to call an API, so the runtime's tests can check that
//! values reach the guest and secrets never reach a journal.

wit_bindgen::generate!({
    world: "config-tool",
    path: "wit",
    generate_all,
});

use wasi::config::store;

/// The component's single implementation type.
struct Component;

fn message(e: store::Error) -> String {
    match e {
        store::Error::Upstream(m) => format!("upstream: {m}"),
        store::Error::Io(m) => format!("io: {m}"),
    }
}

impl Guest for Component {
    fn get(key: String) -> Result<Option<String>, String> {
        store::get(&key).map_err(message)
    }

    fn get_all() -> Result<Vec<(String, String)>, String> {
        store::get_all().map_err(message)
    }

    fn call_with_key(key: String, url: String) -> Result<u16, String> {
        let value = store::get(&key)
            .map_err(message)?
            .ok_or_else(|| format!("`{key}` is not configured"))?;
        call(&url, &value)
    }

    fn call_with_env(name: String, url: String) -> Result<u16, String> {
        let value = std::env::var(&name).map_err(|e| format!("`{name}`: {e}"))?;
        call(&url, &value)
    }
}

/// POSTs `{}` to `url` with `value` as a bearer token.
fn call(url: &str, value: &str) -> Result<u16, String> {
    let auth = format!("Bearer {value}");
    let response = http_get::post(url, &[("authorization", &auth)], b"{}")?;
    Ok(response.status)
}

export!(Component);
