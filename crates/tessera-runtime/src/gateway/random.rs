//! `wasi:random` through the gateway: every byte handed out is an interaction.

use std::convert::Infallible;

use rand_core::TryRng;

use super::{Gateway, Interaction};

/// A random source for one call. Bytes come from the host's generator and are
/// reported to the gateway before the guest sees them.
pub struct GatewayRng {
    inner: Box<dyn wasmtime_wasi::Rng + Send>,
    gateway: Gateway,
}

impl std::fmt::Debug for GatewayRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayRng").finish_non_exhaustive()
    }
}

impl GatewayRng {
    /// The `wasi:random/random` source (cryptographically secure).
    pub fn secure(gateway: Gateway) -> Self {
        Self {
            inner: wasmtime_wasi::thread_rng(),
            gateway,
        }
    }

    /// The `wasi:random/insecure` source. It draws from the same secure
    /// generator: the cost difference is irrelevant next to a host call.
    pub fn insecure(gateway: Gateway) -> Self {
        Self::secure(gateway)
    }
}

impl TryRng for GatewayRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.inner.fill_bytes(dst);
        self.gateway.observe(&Interaction::Random { bytes: dst });
        Ok(())
    }
}
