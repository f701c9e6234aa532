//! `wasi:clocks` through the gateway: every clock read is an interaction.

use std::time::{Duration, Instant, SystemTime};

use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

use super::{Gateway, Interaction};

/// The guest's wall clock: the host's real time, reported to the gateway.
#[derive(Debug)]
pub struct GatewayWallClock {
    gateway: Gateway,
}

impl GatewayWallClock {
    /// A wall clock for one call.
    pub fn new(gateway: Gateway) -> Self {
        Self { gateway }
    }
}

impl HostWallClock for GatewayWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.gateway.observe(&Interaction::WallClock {
            nanos: now.as_nanos(),
        });
        now
    }
}

/// The guest's monotonic clock, starting near zero at instantiation.
#[derive(Debug)]
pub struct GatewayMonotonicClock {
    start: Instant,
    gateway: Gateway,
}

impl GatewayMonotonicClock {
    /// A monotonic clock for one call.
    pub fn new(gateway: Gateway) -> Self {
        Self {
            start: Instant::now(),
            gateway,
        }
    }
}

impl HostMonotonicClock for GatewayMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.gateway.observe(&Interaction::MonotonicClock { nanos });
        nanos
    }
}
