//! Limits that stop a call, and the memory limiter that enforces one of them.
//!
//! Each limit is enforced where wasmtime lets it be: fuel by the engine,
//! the wall-clock deadline by the epoch callback and a host timeout
//! (`call.rs`), memory and tables by [`MemoryLimiter`], output by the
//! capabilities that produce it, instances by the component's semaphore.
//! Every hit is audited through the call's gateway.

use crate::audit::Decision;
use crate::gateway::Gateway;

/// A limit that stopped a call. Carried as the error of the trap so the
/// caller can tell which limit it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitHit {
    /// The fuel budget ran out.
    #[error("fuel exhausted (limit {0})")]
    Fuel(u64),
    /// The wall-clock deadline passed.
    #[error("deadline exceeded (limit {0} ms)")]
    Deadline(u64),
    /// Linear memory would grow past the ceiling.
    #[error("memory limit {0} MiB exceeded")]
    Memory(u64),
    /// A table would grow past the ceiling.
    #[error("table limit {0} elements exceeded")]
    Table(usize),
    /// Output (stdout, stderr or the result) exceeded its ceiling.
    #[error("output limit {limit} bytes exceeded on {stream}")]
    Output {
        /// `stdout`, `stderr`, `logs` or `result`.
        stream: &'static str,
        /// The ceiling.
        limit: u64,
    },
    /// The guest's call stack overflowed.
    #[error("call stack exhausted")]
    Stack,
}

impl LimitHit {
    /// The capability name used in audit events.
    pub fn capability(&self) -> &'static str {
        match self {
            LimitHit::Fuel(_) => "fuel",
            LimitHit::Deadline(_) => "deadline",
            LimitHit::Memory(_) => "memory",
            LimitHit::Table(_) => "table",
            LimitHit::Output { .. } => "output",
            LimitHit::Stack => "stack",
        }
    }
}

/// Largest table a guest may grow to.
pub const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// Enforces the memory ceiling of one instance: the sum of all its linear
/// memories, so a component with several memories gets the limit once.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit_bytes: usize,
    limit_mb: u64,
    total_bytes: usize,
    peak_bytes: usize,
    gateway: Gateway,
}

impl MemoryLimiter {
    pub(crate) fn new(limit_mb: u64, gateway: Gateway) -> Self {
        Self {
            limit_bytes: usize::try_from(limit_mb.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX),
            limit_mb,
            total_bytes: 0,
            peak_bytes: 0,
            gateway,
        }
    }

    /// The largest total size of the instance's linear memories seen, in
    /// bytes.
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }

    /// Total linear memory now, in bytes.
    pub fn current_bytes(&self) -> usize {
        self.total_bytes
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Beyond the memory's own maximum wasmtime refuses the growth after
        // asking here (`memory.grow` returns -1): refuse it first, so it is
        // never counted.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        // Memories only grow, and each memory's creation is reported as a
        // growth from 0: the running sum is the instance's total.
        let total = self
            .total_bytes
            .saturating_add(desired.saturating_sub(current));
        if total > self.limit_bytes {
            let hit = LimitHit::Memory(self.limit_mb);
            self.gateway.audit(
                hit.capability(),
                format!("{total} bytes"),
                Decision::Limit,
                Some(format!(
                    "memory.grow from {current} to {desired} bytes (instance total {total}) refused: {hit}"
                )),
            );
            return Err(hit.into());
        }
        self.total_bytes = total;
        self.peak_bytes = self.peak_bytes.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            let hit = LimitHit::Table(MAX_TABLE_ELEMENTS);
            self.gateway
                .audit(hit.capability(), desired.to_string(), Decision::Limit, None);
            return Err(hit.into());
        }
        Ok(true)
    }
}
