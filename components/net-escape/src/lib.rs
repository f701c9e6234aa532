//! `net-escape`: tries outgoing HTTP, raw TCP, environment, argument and
//! clock access so the runtime's tests can check what its policy allows.

wit_bindgen::generate!({
    world: "net-escape",
    path: "wit",
});

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use wasi::clocks::monotonic_clock;
use wasi::io::poll;
use wasi::sockets::instance_network::instance_network;
use wasi::sockets::network::{
    ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
};
use wasi::sockets::tcp_create_socket::create_tcp_socket;

/// Most redirects `fetch-follow` will follow.
const MAX_REDIRECTS: usize = 5;
/// How long `tcp-connect` waits for the connection to be established.
const CONNECT_TIMEOUT_NS: u64 = 5_000_000_000;

/// The component's single implementation type.
struct Component;

impl Guest for Component {
    fn fetch_status(url: String) -> Result<u16, String> {
        Ok(http_get::get(&url, false)?.status)
    }

    fn fetch_follow(url: String) -> Result<u16, String> {
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            let response = http_get::get(&url, false)?;
            match response.redirect_location() {
                Some(location) => url = http_get::resolve(&url, location)?,
                None => return Ok(response.status),
            }
        }
        Err(format!("too many redirects (more than {MAX_REDIRECTS})"))
    }

    fn tcp_connect(addr: String) -> Result<(), String> {
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| format!("invalid address {addr:?}: {e}"))?;
        let (family, remote) = match addr {
            SocketAddr::V4(v4) => {
                let [a, b, c, d] = v4.ip().octets();
                (
                    IpAddressFamily::Ipv4,
                    IpSocketAddress::Ipv4(Ipv4SocketAddress {
                        port: v4.port(),
                        address: (a, b, c, d),
                    }),
                )
            }
            SocketAddr::V6(v6) => {
                let [a, b, c, d, e, f, g, h] = v6.ip().segments();
                (
                    IpAddressFamily::Ipv6,
                    IpSocketAddress::Ipv6(Ipv6SocketAddress {
                        port: v6.port(),
                        flow_info: v6.flowinfo(),
                        address: (a, b, c, d, e, f, g, h),
                        scope_id: v6.scope_id(),
                    }),
                )
            }
        };

        let network = instance_network();
        let socket = create_tcp_socket(family)
            .map_err(|e| format!("create-tcp-socket failed: {}", e.name()))?;
        socket
            .start_connect(&network, remote)
            .map_err(|e| format!("start-connect to {addr} failed: {}", e.name()))?;

        let ready = socket.subscribe();
        let timeout = monotonic_clock::subscribe_duration(CONNECT_TIMEOUT_NS);
        loop {
            match socket.finish_connect() {
                // Dropping the streams (children of the socket) closes the
                // connection; the socket itself is dropped afterwards.
                Ok((input, output)) => {
                    drop((input, output));
                    return Ok(());
                }
                Err(ErrorCode::WouldBlock) => {
                    let fired = poll::poll(&[&ready, &timeout]);
                    if fired.contains(&1) && !fired.contains(&0) {
                        return Err(format!("connect to {addr} timed out"));
                    }
                }
                Err(e) => return Err(format!("connect to {addr} failed: {}", e.name())),
            }
        }
    }

    fn post(url: String, body: String, auth: Option<String>) -> Result<(u16, String), String> {
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a), ("content-type", "text/plain")])
            .unwrap_or_else(|| vec![("content-type", "text/plain")]);
        let r = http_get::post(&url, &headers, body.as_bytes())?;
        Ok((r.status, String::from_utf8_lossy(&r.body).into_owned()))
    }

    fn sleep(ms: u64) -> u64 {
        let start = monotonic_clock::now();
        monotonic_clock::subscribe_duration(ms * 1_000_000).block();
        monotonic_clock::now() - start
    }

    fn read_env() -> Vec<(String, String)> {
        std::env::vars().collect()
    }

    fn read_args() -> Vec<String> {
        std::env::args().collect()
    }

    fn wall_clock() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn entropy() -> (u64, Vec<u8>, u64, u64) {
        let secure = wasi::random::random::get_random_u64();
        let insecure = wasi::random::insecure::get_insecure_random_bytes(16);
        let mono = wasi::clocks::monotonic_clock::now();
        let wall = wasi::clocks::wall_clock::now();
        (
            secure,
            insecure,
            mono,
            wall.seconds * 1_000_000_000 + u64::from(wall.nanoseconds),
        )
    }
}

export!(Component);
