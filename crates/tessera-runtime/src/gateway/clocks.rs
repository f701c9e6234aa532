//! `wasi:clocks` and `wasi:random` through the gateway.
//!
//! The guest-visible reads (`wall-clock.now`, `monotonic-clock.now`,
//! `get-random-bytes`, `get-random-u64`, their insecure twins and
//! `insecure-seed`) are answered by the gateway: live from the host, or from
//! the recording when replaying. Each is one interaction. The clocks inside
//! the WASI context are still the host's real ones; they drive timers
//! (`subscribe-duration`), which are scheduling, not data.

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::StoreContextMut;
use wasmtime::component::Linker;
use wasmtime_wasi::p2::bindings::clocks::wall_clock::Datetime;

use super::{Bytes, HostState, Interaction, RandomSource, VIRTUAL_EPOCH_SECONDS};

/// Largest random buffer a guest may ask for in one call.
pub const MAX_RANDOM_BYTES: u64 = 64 << 20;

const WALL_CLOCK: &str = "wasi:clocks/wall-clock@0.2.12";
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";
const RANDOM: &str = "wasi:random/random@0.2.12";
const INSECURE: &str = "wasi:random/insecure@0.2.12";
const INSECURE_SEED: &str = "wasi:random/insecure-seed@0.2.12";

type Store<'a> = StoreContextMut<'a, HostState>;

fn random_bytes(store: &Store<'_>, source: RandomSource, len: u64) -> wasmtime::Result<Vec<u8>> {
    if len > MAX_RANDOM_BYTES {
        wasmtime::bail!("guest asked for {len} random bytes; at most {MAX_RANDOM_BYTES} per call");
    }
    let probe = Interaction::Random {
        source,
        bytes: Bytes(vec![0; len as usize]),
    };
    let got = store.data().gateway.exchange(probe, |_| {
        let mut buf = vec![0u8; len as usize];
        if !store.data().gateway.seeded_random(&mut buf) {
            wasmtime_wasi::thread_rng().fill_bytes(&mut buf);
        }
        Interaction::Random {
            source,
            bytes: Bytes(buf),
        }
    })?;
    match got {
        Interaction::Random { bytes, .. } => Ok(bytes.0),
        _ => unreachable!("exchange returns the probe's kind"),
    }
}

/// Deterministic mode: nanoseconds of virtual time, one per unit of fuel
/// consumed so far. `None` when the call is not deterministic.
fn virtual_nanos(store: &Store<'_>) -> Option<u64> {
    let gateway = &store.data().gateway;
    if !gateway.deterministic() {
        return None;
    }
    let remaining = store.get_fuel().unwrap_or(0);
    Some(gateway.grants().limits.fuel.saturating_sub(remaining))
}

fn u64_le(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
}

/// Replaces the guest-visible clock and random reads with gateway answers.
/// Call after wasmtime-wasi's `add_to_linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);

    linker
        .instance(WALL_CLOCK)?
        .func_wrap("now", |store: Store<'_>, (): ()| {
            let probe = Interaction::WallClock {
                seconds: 0,
                nanoseconds: 0,
            };
            let virtual_ns = virtual_nanos(&store);
            let got = store.data().gateway.exchange(probe, |_| match virtual_ns {
                Some(ns) => Interaction::WallClock {
                    seconds: VIRTUAL_EPOCH_SECONDS + ns / 1_000_000_000,
                    nanoseconds: (ns % 1_000_000_000) as u32,
                },
                None => {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    Interaction::WallClock {
                        seconds: now.as_secs(),
                        nanoseconds: now.subsec_nanos(),
                    }
                }
            })?;
            match got {
                Interaction::WallClock {
                    seconds,
                    nanoseconds,
                } => Ok((Datetime {
                    seconds,
                    nanoseconds,
                },)),
                _ => unreachable!("exchange returns the probe's kind"),
            }
        })?;

    linker
        .instance(MONOTONIC_CLOCK)?
        .func_wrap("now", |store: Store<'_>, (): ()| {
            let virtual_ns = virtual_nanos(&store);
            let gateway = &store.data().gateway;
            let got = gateway.exchange(Interaction::MonotonicClock { nanos: 0 }, |_| {
                Interaction::MonotonicClock {
                    nanos: virtual_ns.unwrap_or_else(|| {
                        u64::try_from(gateway.elapsed().as_nanos()).unwrap_or(u64::MAX)
                    }),
                }
            })?;
            match got {
                Interaction::MonotonicClock { nanos } => Ok((nanos,)),
                _ => unreachable!("exchange returns the probe's kind"),
            }
        })?;

    let mut random = linker.instance(RANDOM)?;
    random.func_wrap("get-random-bytes", |store: Store<'_>, (len,): (u64,)| {
        Ok((random_bytes(&store, RandomSource::Secure, len)?,))
    })?;
    random.func_wrap("get-random-u64", |store: Store<'_>, (): ()| {
        Ok((u64_le(&random_bytes(&store, RandomSource::Secure, 8)?),))
    })?;

    let mut insecure = linker.instance(INSECURE)?;
    insecure.func_wrap(
        "get-insecure-random-bytes",
        |store: Store<'_>, (len,): (u64,)| {
            Ok((random_bytes(&store, RandomSource::Insecure, len)?,))
        },
    )?;
    insecure.func_wrap("get-insecure-random-u64", |store: Store<'_>, (): ()| {
        Ok((u64_le(&random_bytes(&store, RandomSource::Insecure, 8)?),))
    })?;

    linker
        .instance(INSECURE_SEED)?
        .func_wrap("insecure-seed", |store: Store<'_>, (): ()| {
            let got = store.data().gateway.exchange(
                Interaction::InsecureSeed { seed: (0, 0) },
                |_| {
                    let mut rng = wasmtime_wasi::thread_rng();
                    Interaction::InsecureSeed {
                        seed: (rng.next_u64(), rng.next_u64()),
                    }
                },
            )?;
            match got {
                Interaction::InsecureSeed { seed } => Ok((seed,)),
                _ => unreachable!("exchange returns the probe's kind"),
            }
        })?;

    linker.allow_shadowing(false);
    Ok(())
}
