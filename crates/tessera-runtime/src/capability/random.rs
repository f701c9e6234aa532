//! `wasi:random`: secure and insecure random bytes and the insecure seed,
//! answered by the gateway.
//!
//! Live, bytes come from the host's secure generator, or (deterministic
//! mode) from [`SplitMix64`] seeded by the manifest; on replay, from the
//! recording. Every read is a step.

use serde::{Deserialize, Serialize};
use wasmtime::StoreContextMut;
use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtxBuilder;

use super::{Capability, Effects, Section};
use crate::gateway::{Bytes, Gateway, Op, Step};
use crate::host::HostState;
use crate::manifest::ManifestError;

/// Largest random buffer a guest may ask for in one call.
pub const MAX_RANDOM_BYTES: u64 = 64 << 20;

const RANDOM: &str = "wasi:random/random@0.2.12";
const INSECURE: &str = "wasi:random/insecure@0.2.12";
const INSECURE_SEED: &str = "wasi:random/insecure-seed@0.2.12";

/// The random capability: no grant.
#[derive(Debug)]
pub struct Random;

/// Which `wasi:random` interface was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RandomSource {
    /// `wasi:random/random`.
    Secure,
    /// `wasi:random/insecure`.
    Insecure,
}

/// A request for random bytes (`get-random-u64` asks for 8, little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BytesRequest {
    /// Which interface.
    pub source: RandomSource,
    /// How many bytes.
    pub len: u64,
}

/// `get-random-bytes`, `get-random-u64` and their insecure twins.
pub struct GetBytes;
impl Op for GetBytes {
    const CAPABILITY: &'static str = "random";
    const NAME: &'static str = "bytes";
    type Request = BytesRequest;
    type Response = Bytes;
}

/// `insecure-seed`.
pub struct InsecureSeed;
impl Op for InsecureSeed {
    const CAPABILITY: &'static str = "random";
    const NAME: &'static str = "insecure-seed";
    type Request = ();
    type Response = (u64, u64);
}

/// The random generator of deterministic mode: SplitMix64, seeded from the
/// manifest. Reproducible by design, and therefore not secret: a component
/// that needs unpredictable secrets must not run deterministically.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fills `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

type Store<'a> = StoreContextMut<'a, HostState>;

fn random_bytes(store: &Store<'_>, source: RandomSource, len: u64) -> wasmtime::Result<Vec<u8>> {
    if len > MAX_RANDOM_BYTES {
        wasmtime::bail!("guest asked for {len} random bytes; at most {MAX_RANDOM_BYTES} per call");
    }
    let gateway = &store.data().gateway;
    let got = gateway.exchange::<GetBytes>(BytesRequest { source, len }, |_| {
        let mut buf = vec![0u8; len as usize];
        if !gateway.seeded_random(&mut buf) {
            wasmtime_wasi::thread_rng().fill_bytes(&mut buf);
        }
        Bytes(buf)
    })?;
    if got.0.len() as u64 != len {
        wasmtime::bail!(
            "recorded random step holds {} bytes, the guest asked for {len}",
            got.0.len()
        );
    }
    Ok(got.0)
}

fn u64_le(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
}

impl Capability for Random {
    const NAME: &'static str = "random";
    const MANIFEST_KEYS: &'static [&'static str] = &[];
    type Grant = ();
    type State = ();

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        let mut random = super::shadowing(linker, RANDOM, &["get-random-bytes", "get-random-u64"])?;
        random.func_wrap("get-random-bytes", |store: Store<'_>, (len,): (u64,)| {
            Ok((random_bytes(&store, RandomSource::Secure, len)?,))
        })?;
        random.func_wrap("get-random-u64", |store: Store<'_>, (): ()| {
            Ok((u64_le(&random_bytes(&store, RandomSource::Secure, 8)?),))
        })?;
        let mut insecure = super::shadowing(
            linker,
            INSECURE,
            &["get-insecure-random-bytes", "get-insecure-random-u64"],
        )?;
        insecure.func_wrap(
            "get-insecure-random-bytes",
            |store: Store<'_>, (len,): (u64,)| {
                Ok((random_bytes(&store, RandomSource::Insecure, len)?,))
            },
        )?;
        insecure.func_wrap("get-insecure-random-u64", |store: Store<'_>, (): ()| {
            Ok((u64_le(&random_bytes(&store, RandomSource::Insecure, 8)?),))
        })?;
        super::shadowing(linker, INSECURE_SEED, &["insecure-seed"])?.func_wrap(
            "insecure-seed",
            |store: Store<'_>, (): ()| {
                let gateway = &store.data().gateway;
                let seed = gateway.exchange::<InsecureSeed>((), |_| {
                    let mut buf = [0u8; 16];
                    if !gateway.seeded_random(&mut buf) {
                        wasmtime_wasi::thread_rng().fill_bytes(&mut buf);
                    }
                    (u64_le(&buf[..8]), u64_le(&buf[8..]))
                })?;
                Ok((seed,))
            },
        )?;
        linker.allow_shadowing(false);
        Ok(())
    }

    fn grant(_: &Section<'_>) -> Result<(), ManifestError> {
        Ok(())
    }

    fn state(_: &(), _: &Gateway, _: &mut WasiCtxBuilder) -> Result<(), crate::Error> {
        Ok(())
    }

    fn effects(_: &()) -> Effects {
        Effects::NONE
    }

    fn describe(step: &Step) -> String {
        match (&*step.op, Bytes::deserialize(&step.response)) {
            ("bytes", Ok(b)) => format!(
                "{:<16} {} bytes ({}): {}",
                step.kind(),
                b.0.len(),
                step.request["source"].as_str().unwrap_or("?"),
                hex::encode(&b.0[..b.0.len().min(16)])
            ),
            _ => super::generic_description(step),
        }
    }
}
