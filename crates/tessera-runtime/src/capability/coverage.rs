//! What the gateway does with every function of the WASI 0.2 worlds Tessera
//! links (`wasi:cli/imports` and `wasi:http/proxy`).
//!
//! Each function is one of three things: answered by the gateway (a step in
//! the journal, checked on replay), refused by the gateway (an audit event
//! and a step), or local — it acts only on values a capability already
//! handed the guest (a stream the gateway owns, an HTTP request being built)
//! and reaches nothing else on the host. A test walks the WIT of both
//! worlds and fails on any function this table does not name, so a wasmtime
//! upgrade that adds a host function cannot open a path around the gateway
//! unnoticed.

/// How the gateway covers one host function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Answered by this capability through the gateway.
    Gateway(&'static str),
    /// Refused by this capability, with an audit event.
    Refused(&'static str),
    /// Acts only on values the gateway already handed out.
    Local(&'static str),
}

const STREAMS: &str = "acts on a stream a capability made: captured stdio, empty stdin, \
gateway file streams, HTTP bodies of a recorded exchange";
const HTTP_VALUES: &str = "builds or reads request and response values in the guest's own \
table; bytes cross the host only in outgoing-handler.handle";
const NO_SOCKET: &str = "unreachable: the gateway refuses every socket and lookup, so the guest \
never holds one";

/// How `function` of `interface` (`wasi:filesystem/types`, no version) is
/// covered, or `None` if the gateway does not know it.
pub fn coverage(interface: &str, function: &str) -> Option<Coverage> {
    use Coverage::*;
    let gateway = |cap| Some(Gateway(cap));
    match interface {
        "wasi:clocks/wall-clock" | "wasi:clocks/monotonic-clock" => gateway("clocks"),
        "wasi:random/random" | "wasi:random/insecure" | "wasi:random/insecure-seed" => {
            gateway("random")
        }
        "wasi:cli/environment" => gateway("env"),
        "wasi:cli/stdin"
        | "wasi:cli/exit"
        | "wasi:cli/terminal-stdin"
        | "wasi:cli/terminal-stdout"
        | "wasi:cli/terminal-stderr" => gateway("stdio"),
        "wasi:cli/stdout" | "wasi:cli/stderr" => Some(Local(
            "hands out the gateway's captured stream; every write is a stdio step",
        )),
        "wasi:io/error" => Some(Local("formats an error value")),
        "wasi:io/poll" => Some(Local(
            "waits on pollables a capability made (gateway timers, streams, HTTP futures)",
        )),
        "wasi:io/streams" => Some(Local(STREAMS)),
        "wasi:filesystem/preopens" => gateway("files"),
        "wasi:filesystem/types" => match function {
            "filesystem-error-code" => Some(Local("inspects an error value")),
            f if super::files::PATH_METHODS.contains(&f)
                || super::files::fd::FD_METHODS.contains(&f) =>
            {
                gateway("files")
            }
            _ => None,
        },
        "wasi:sockets/tcp-create-socket" | "wasi:sockets/udp-create-socket" => {
            Some(Refused("sockets"))
        }
        "wasi:sockets/ip-name-lookup" => match function {
            "resolve-addresses" => Some(Refused("sockets")),
            _ => Some(Local(NO_SOCKET)),
        },
        "wasi:sockets/instance-network" => Some(Local(
            "returns a network token, usable only with a socket, which the gateway never grants",
        )),
        "wasi:sockets/network" | "wasi:sockets/tcp" | "wasi:sockets/udp" => Some(Local(NO_SOCKET)),
        "wasi:http/outgoing-handler" => gateway("http"),
        "wasi:http/types" => Some(Local(HTTP_VALUES)),
        _ => None,
    }
}
