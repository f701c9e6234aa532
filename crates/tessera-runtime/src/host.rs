//! The data of one store: a plain struct of per-capability states.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capability::States;
use crate::gateway::Gateway;
use crate::limits::MemoryLimiter;

/// The data of one store: the per-capability states of one call, and the
/// wasmtime-wasi context whose resources (streams, descriptors, pollables)
/// they share.
pub struct HostState {
    /// wasmtime-wasi's context: preopens, stdio streams; clocks, random,
    /// environment and sockets are answered by the capabilities instead.
    pub(crate) wasi: WasiCtx,
    /// `wasi:http`'s context (the gateway's hooks are in `caps.http`).
    pub(crate) http: WasiHttpCtx,
    /// Every resource handle of the call.
    pub(crate) table: ResourceTable,
    /// Per-capability states.
    pub(crate) caps: States,
    /// The memory and table limits.
    pub(crate) limiter: MemoryLimiter,
    /// The call's gateway.
    pub(crate) gateway: Gateway,
}

impl HostState {
    /// Builds the per-call state: each capability builds its own from its
    /// grant; the WASI context gets the streams and preopens they set up.
    pub fn new(gateway: Gateway) -> Result<Self, crate::Error> {
        let grants = gateway.grants().clone();
        let mut b = WasiCtx::builder();
        // Raw sockets are refused by the `sockets` capability before they
        // reach the context; the context refuses them too.
        b.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        let caps = States::new(&grants, &gateway, &mut b)?;
        Ok(Self {
            wasi: b.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            caps,
            limiter: MemoryLimiter::new(grants.limits.memory_mb, gateway.clone()),
            gateway,
        })
    }

    /// The call's gateway.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Peak total linear memory seen during the call, in bytes.
    pub fn peak_memory_bytes(&self) -> usize {
        self.limiter.peak_bytes()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.caps.http,
        }
    }
}
