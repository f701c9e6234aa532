//! `wasi:clocks`: wall clock, monotonic clock, their resolutions, and
//! timers, all answered by the gateway.
//!
//! Every read is a step: live from the host clock, from fuel-driven virtual
//! clocks in deterministic mode, or from the recording when replaying.
//! Timers (`subscribe-instant`, `subscribe-duration`) are steps too: live,
//! the pollable waits on the host clock; in deterministic mode and on
//! replay it is ready at once and the virtual clock jumps to its deadline,
//! so waiting never depends on the machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::bindings::clocks::wall_clock::Datetime;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

use super::{Capability, Effects, Section};
use crate::gateway::{Gateway, Op, Step};
use crate::host::HostState;
use crate::manifest::ManifestError;

/// Where deterministic mode's virtual wall clock starts:
/// 2024-01-01T00:00:00Z. It then advances one nanosecond per unit of fuel,
/// and jumps forward when the guest waits on a timer.
pub const VIRTUAL_EPOCH_SECONDS: u64 = 1_704_067_200;

const WALL_CLOCK: &str = "wasi:clocks/wall-clock@0.2.12";
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// The clocks capability: no grant (clocks are always available; replay
/// and deterministic mode make them reproducible).
#[derive(Debug)]
pub struct Clocks;

/// Per-instance state: how far timers have moved the virtual clock.
#[derive(Debug, Default, Clone)]
pub struct ClockState {
    skipped_nanos: Arc<AtomicU64>,
}

/// A wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WallTime {
    /// Seconds since the Unix epoch.
    pub seconds: u64,
    /// Nanoseconds within the second.
    pub nanoseconds: u32,
}

/// Which clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockKind {
    /// `wasi:clocks/wall-clock`.
    Wall,
    /// `wasi:clocks/monotonic-clock`.
    Monotonic,
}

/// `wall-clock.now`.
pub struct WallNow;
impl Op for WallNow {
    const CAPABILITY: &'static str = "clocks";
    const NAME: &'static str = "wall-clock";
    type Request = ();
    type Response = WallTime;
}

/// `monotonic-clock.now`: nanoseconds since the call began.
pub struct MonotonicNow;
impl Op for MonotonicNow {
    const CAPABILITY: &'static str = "clocks";
    const NAME: &'static str = "monotonic-clock";
    type Request = ();
    type Response = u64;
}

/// `resolution` of either clock, in nanoseconds.
pub struct Resolution;
impl Op for Resolution {
    const CAPABILITY: &'static str = "clocks";
    const NAME: &'static str = "resolution";
    type Request = ClockKind;
    type Response = u64;
}

/// A timer the guest subscribed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimerRequest {
    /// `subscribe-duration`: nanoseconds from now.
    Duration {
        /// Nanoseconds.
        nanos: u64,
    },
    /// `subscribe-instant`: a monotonic instant.
    Instant {
        /// Nanoseconds since the call began.
        nanos: u64,
    },
}

/// `subscribe-duration` / `subscribe-instant`: the monotonic instant (ns
/// since the call began) when the timer was set.
pub struct Timer;
impl Op for Timer {
    const CAPABILITY: &'static str = "clocks";
    const NAME: &'static str = "timer";
    type Request = TimerRequest;
    type Response = u64;
}

type Store<'a> = StoreContextMut<'a, HostState>;

/// Deterministic mode: nanoseconds of virtual time, one per unit of fuel
/// consumed so far plus the time skipped by timers. `None` when the call is
/// not deterministic.
fn virtual_nanos(store: &Store<'_>) -> Option<u64> {
    let gateway = &store.data().gateway;
    if !gateway.deterministic() {
        return None;
    }
    let remaining = store.get_fuel().unwrap_or(0);
    let burnt = gateway.grants().limits.fuel.saturating_sub(remaining);
    let skipped = store
        .data()
        .caps
        .clocks
        .skipped_nanos
        .load(Ordering::Relaxed);
    Some(burnt.saturating_add(skipped))
}

fn monotonic_live(store: &Store<'_>) -> u64 {
    virtual_nanos(store).unwrap_or_else(|| {
        u64::try_from(store.data().gateway.elapsed().as_nanos()).unwrap_or(u64::MAX)
    })
}

/// A timer's pollable: waits on the host clock live; ready at once in
/// deterministic mode and on replay.
struct GatewayTimer {
    wait: Option<Duration>,
}

#[async_trait::async_trait]
impl Pollable for GatewayTimer {
    async fn ready(&mut self) {
        if let Some(d) = self.wait.take() {
            tokio::time::sleep(d).await;
        }
    }
}

fn timer(mut store: Store<'_>, request: TimerRequest) -> wasmtime::Result<Resource<DynPollable>> {
    let now = monotonic_live(&store);
    let deterministic = store.data().gateway.deterministic();
    let gateway = store.data().gateway.clone();
    let set_at = gateway.exchange::<Timer>(request, |_| now)?;
    let target = match request {
        TimerRequest::Duration { nanos } => set_at.saturating_add(nanos),
        TimerRequest::Instant { nanos } => nanos,
    };
    let remaining = target.saturating_sub(set_at);
    let wait = if gateway.replaying() || deterministic {
        if deterministic {
            // Waiting costs no fuel: the virtual clock jumps instead.
            store
                .data()
                .caps
                .clocks
                .skipped_nanos
                .fetch_add(remaining, Ordering::Relaxed);
        }
        None
    } else {
        Some(Duration::from_nanos(remaining))
    };
    let table = &mut store.data_mut().table;
    let timer = table.push(GatewayTimer { wait })?;
    subscribe(table, timer)
}

impl Capability for Clocks {
    const NAME: &'static str = "clocks";
    const MANIFEST_KEYS: &'static [&'static str] = &[];
    type Grant = ();
    type State = ClockState;

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        let mut wall = super::shadowing(linker, WALL_CLOCK, &["now", "resolution"])?;
        wall.func_wrap("now", |store: Store<'_>, (): ()| {
            let virtual_ns = virtual_nanos(&store);
            let t = store
                .data()
                .gateway
                .exchange::<WallNow>((), |_| match virtual_ns {
                    Some(ns) => WallTime {
                        seconds: VIRTUAL_EPOCH_SECONDS + ns / 1_000_000_000,
                        nanoseconds: (ns % 1_000_000_000) as u32,
                    },
                    None => {
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap_or_default();
                        WallTime {
                            seconds: now.as_secs(),
                            nanoseconds: now.subsec_nanos(),
                        }
                    }
                })?;
            Ok((Datetime {
                seconds: t.seconds,
                nanoseconds: t.nanoseconds,
            },))
        })?;
        wall.func_wrap("resolution", |store: Store<'_>, (): ()| {
            let ns = store
                .data()
                .gateway
                .exchange::<Resolution>(ClockKind::Wall, |_| 1)?;
            Ok((Datetime {
                seconds: ns / 1_000_000_000,
                nanoseconds: (ns % 1_000_000_000) as u32,
            },))
        })?;
        let mut mono = super::shadowing(
            linker,
            MONOTONIC_CLOCK,
            &[
                "now",
                "resolution",
                "subscribe-instant",
                "subscribe-duration",
            ],
        )?;
        mono.func_wrap("now", |store: Store<'_>, (): ()| {
            let now = monotonic_live(&store);
            Ok((store.data().gateway.exchange::<MonotonicNow>((), |_| now)?,))
        })?;
        mono.func_wrap("resolution", |store: Store<'_>, (): ()| {
            Ok((store
                .data()
                .gateway
                .exchange::<Resolution>(ClockKind::Monotonic, |_| 1)?,))
        })?;
        mono.func_wrap(
            "subscribe-duration",
            |store: Store<'_>, (nanos,): (u64,)| {
                Ok((timer(store, TimerRequest::Duration { nanos })?,))
            },
        )?;
        mono.func_wrap("subscribe-instant", |store: Store<'_>, (nanos,): (u64,)| {
            Ok((timer(store, TimerRequest::Instant { nanos })?,))
        })?;
        linker.allow_shadowing(false);
        Ok(())
    }

    fn grant(_: &Section<'_>) -> Result<(), ManifestError> {
        Ok(())
    }

    fn state(_: &(), _: &Gateway, _: &mut WasiCtxBuilder) -> Result<ClockState, crate::Error> {
        Ok(ClockState::default())
    }

    fn effects(_: &()) -> Effects {
        Effects::NONE
    }

    fn describe(step: &Step) -> String {
        let what = match &*step.op {
            "wall-clock" => match WallTime::deserialize(&step.response) {
                Ok(t) => time::OffsetDateTime::from_unix_timestamp(t.seconds as i64)
                    .ok()
                    .and_then(|d| d.replace_nanosecond(t.nanoseconds).ok())
                    .and_then(|d| {
                        d.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_else(|| format!("{}.{:09}", t.seconds, t.nanoseconds)),
                Err(_) => return super::generic_description(step),
            },
            "monotonic-clock" => match step.response.as_u64() {
                Some(n) => format!("{:.6} s", n as f64 / 1e9),
                None => return super::generic_description(step),
            },
            "timer" => format!("{} (set at {} ns)", step.request, step.response),
            _ => return super::generic_description(step),
        };
        format!("{:<16} {what}", step.kind())
    }
}
