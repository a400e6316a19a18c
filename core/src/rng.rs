//! The injected random source (invariant 10).
//!
//! Runtime logic draws randomness only from a [`RandomSource`]: seeded from the operating
//! system in production, from the simulation seed in simulation, so a seed replays exactly.

use std::fmt;
use std::sync::{Arc, Mutex};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// A shared, cloneable source of randomness (ChaCha20, cryptographically secure).
///
/// Values drawn from it are suitable as secrets (client ids) when it was seeded from the
/// operating system.
#[derive(Clone)]
pub struct RandomSource {
    rng: Arc<Mutex<ChaCha20Rng>>,
    seeded: Option<u64>,
}

impl fmt::Debug for RandomSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seeded {
            Some(seed) => write!(f, "RandomSource(seed {seed})"),
            None => write!(f, "RandomSource(os)"),
        }
    }
}

impl RandomSource {
    /// A source seeded from the operating system's secure random generator.
    pub fn from_os() -> Self {
        RandomSource {
            rng: Arc::new(Mutex::new(ChaCha20Rng::from_entropy())),
            seeded: None,
        }
    }

    /// A deterministic source (tests and simulation only: its values are not secret).
    pub fn from_seed(seed: u64) -> Self {
        RandomSource {
            rng: Arc::new(Mutex::new(ChaCha20Rng::seed_from_u64(seed))),
            seeded: Some(seed),
        }
    }

    /// Whether this source was built from a fixed seed.
    pub fn is_seeded(&self) -> bool {
        self.seeded.is_some()
    }

    fn with<T>(&self, f: impl FnOnce(&mut ChaCha20Rng) -> T) -> T {
        // The critical section is a few nanoseconds of arithmetic; a poisoned lock only means a
        // panic elsewhere, and the generator state is still valid.
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut rng)
    }

    /// A uniformly random `u64`.
    pub fn next_u64(&self) -> u64 {
        self.with(|r| r.next_u64())
    }

    /// Fills `dest` with random bytes.
    pub fn fill(&self, dest: &mut [u8]) {
        self.with(|r| r.fill_bytes(dest));
    }

    /// A value in `0..bound` (`bound` > 0).
    pub fn below(&self, bound: u64) -> u64 {
        assert!(bound > 0, "RandomSource::below needs a positive bound");
        self.with(|r| rand::Rng::gen_range(r, 0..bound))
    }

    /// A new independent source derived from this one (for a subsystem or simulated host).
    pub fn fork(&self) -> RandomSource {
        let mut seed = [0u8; 32];
        self.fill(&mut seed);
        RandomSource {
            rng: Arc::new(Mutex::new(ChaCha20Rng::from_seed(seed))),
            seeded: self.seeded,
        }
    }

    /// A lowercase hex token of `bytes` random bytes (e.g. 16 bytes = 128 bits for client ids).
    pub fn hex_token(&self, bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        self.fill(&mut buf);
        buf.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sources_replay() {
        let a = RandomSource::from_seed(7);
        let b = RandomSource::from_seed(7);
        assert_eq!(a.next_u64(), b.next_u64());
        assert_eq!(a.fork().next_u64(), b.fork().next_u64());
        assert_eq!(RandomSource::from_os().hex_token(16).len(), 32);
    }
}
