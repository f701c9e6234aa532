//! The kill points of the crash tests (`kill -9` at random points):
//! reproducible from a seed.

/// How many rounds a crash test runs and where it kills: rounds from
/// `TESSERA_CRASH_ROUNDS` (default 20; the `scripts/*-crash.sh` scripts run
/// 100), kill points from a generator seeded by `TESSERA_CRASH_SEED`
/// (default: the clock). The seed is printed, so a failing round can be
/// replayed.
#[derive(Debug, Clone)]
pub struct CrashPoints {
    /// Rounds to run.
    pub rounds: u64,
    /// The seed of the kill points.
    pub seed: u64,
    state: u64,
}

impl CrashPoints {
    /// Reads the rounds and the seed from the environment and prints the seed.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let rounds = var("TESSERA_CRASH_ROUNDS").unwrap_or(20);
        let seed = var("TESSERA_CRASH_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
        println!("TESSERA_CRASH_SEED={seed}");
        Self {
            rounds,
            seed,
            state: seed,
        }
    }

    /// A number below `n` (xorshift64*).
    pub fn below(&mut self, n: u64) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}
