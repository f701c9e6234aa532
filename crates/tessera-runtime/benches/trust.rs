//! What the trust policy costs on load, each against a baseline in the
//! same run.
//!
//! * `digest`: SHA-256 of the component's bytes, which every load computes
//!   with or without a policy (the baseline).
//! * `check, cold`: a policy that has not seen the digest: parse the
//!   signature section, hash the signed sections, verify ed25519.
//! * `check, cached`: the same policy again (the verdict is kept by digest).
//! * `load from cache` without and with the policy: `prepare` + `load` of a
//!   component whose compiled code is in the compile cache; with the policy
//!   that adds the cached check and the seal (an HMAC of the entry's
//!   header).
//!
//! Run: `cargo bench -p tessera-runtime --bench trust` (`BENCH_ROUNDS`
//! changes the number of interleaved rounds). Medians over interleaved
//! rounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_runtime::trust::{self, TrustPolicy};
use tessera_runtime::{Grants, Runtime, RuntimeConfig, digest_of};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn time(n: usize, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n as u32
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let dir = tempfile::tempdir().unwrap();
    trust::keys::generate(&dir.path().join("release")).unwrap();
    let key = trust::keys::read_secret(&dir.path().join("release.key")).unwrap();
    let policy_path = dir.path().join("trust.toml");
    std::fs::write(
        &policy_path,
        "[keys]\nrelease = \"release.pub\"\n[[rule]]\nnames = [\"*\"]\nsigned-by = [\"release\"]\n",
    )
    .unwrap();
    let policy = || TrustPolicy::load(&policy_path).unwrap();

    println!("component        size      digest (baseline)   check, cold       check, cached");
    for name in ["hello", "py-sandbox"] {
        let bytes = std::fs::read(tessera_test_support::component(name)).unwrap();
        let signed = trust::keys::sign_component(&bytes, &key).unwrap();
        let digest = digest_of(&signed);
        let n = if signed.len() > 1 << 20 { 3 } else { 200 };
        let (mut base, mut cold, mut cached) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            base.push(time(n, || {
                std::hint::black_box(digest_of(&signed));
            }));
            let fresh: Vec<TrustPolicy> = (0..n).map(|_| policy()).collect();
            let mut it = fresh.iter();
            cold.push(time(n, || {
                let p = it.next().unwrap();
                p.check(name, &signed, &digest).unwrap();
            }));
            let warm = policy();
            warm.check(name, &signed, &digest).unwrap();
            cached.push(time(n * 10, || {
                warm.check(name, &signed, &digest).unwrap();
            }));
        }
        let (b, c, w) = (median(base), median(cold), median(cached));
        println!(
            "{name:<14} {:>7} KiB  {:>10.1} µs    {:>10.1} µs ({:.2}x)  {:>8.2} µs",
            signed.len() / 1024,
            us(b),
            us(c),
            c.as_secs_f64() / b.as_secs_f64(),
            us(w)
        );
    }

    // prepare + load from the compile cache, without and with the policy.
    let cache = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(tessera_test_support::component("hello")).unwrap();
    let signed = trust::keys::sign_component(&bytes, &key).unwrap();
    // One policy shared by runtimes: its verdict for hello is kept.
    let shared = Arc::new(policy().with_seal_key([5; 32]));
    let make = |mode: u8| {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(cache.path().to_path_buf()),
            trust: match mode {
                0 => None,
                1 => Some(Arc::new(policy().with_seal_key([5; 32]))),
                _ => Some(shared.clone()),
            },
            pooling: false,
            ..RuntimeConfig::default()
        })
        .unwrap()
    };
    // Fill the cache (sealed) once.
    {
        let rt = make(2);
        let p = rt
            .prepare_named(signed.clone(), "hello.wasm", "hello")
            .unwrap();
        rt.load(&p, Grants::deny_all()).unwrap();
    }
    let (mut plain, mut trusted, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (out, with) in [(&mut plain, 0), (&mut trusted, 1), (&mut kept, 2)] {
            // A new runtime per load, so each load reads the disk cache
            // (the runtime keeps compiled components in memory).
            let rts: Vec<Runtime> = (0..20).map(|_| make(with)).collect();
            let mut it = rts.iter();
            out.push(time(20, || {
                let rt = it.next().unwrap();
                let p = rt
                    .prepare_named(signed.clone(), "hello.wasm", "hello")
                    .unwrap();
                let l = rt.load(&p, Grants::deny_all()).unwrap();
                assert!(matches!(
                    l.cache_status(),
                    tessera_runtime::CacheStatus::Hit
                ));
            }));
        }
    }
    let (a, b, c) = (median(plain), median(trusted), median(kept));
    let pct = |x: Duration| (x.as_secs_f64() / a.as_secs_f64() - 1.0) * 100.0;
    println!("hello, prepare + load from the compile cache:");
    println!(
        "  without a policy                         {:>8.1} µs",
        us(a)
    );
    println!(
        "  policy, first sight (cold check + seal)  {:>8.1} µs ({:+.1}%)",
        us(b),
        pct(b)
    );
    println!(
        "  policy, verdict kept (seal only)         {:>8.1} µs ({:+.1}%)",
        us(c),
        pct(c)
    );
}
