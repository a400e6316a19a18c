//! openraft's async runtime for the coordinator group: tokio for tasks, time and channels, and
//! a seeded random number generator for election timeouts.
//!
//! openraft draws every randomised election timeout from `AsyncRuntime::thread_rng()`. With
//! `openraft::TokioRuntime` that is rand's OS-seeded thread RNG, which a simulation cannot
//! replay. [`SeededRuntime`] returns a handle on a per-thread ChaCha RNG instead: seeded from
//! the OS unless [`seed_election_randomness`] seeded it (the simulation does, from its seed, on
//! the thread that runs its hosts). Nothing else about the runtime changes.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::async_runtime::TokioOneShotSender;
use openraft::{AsyncRuntime, OptionalSend, TokioInstant};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

thread_local! {
    static ELECTION_RNG: RefCell<Option<ChaCha8Rng>> = const { RefCell::new(None) };
}

/// Seeds the election randomness of every voter that runs on the current thread: the same seed
/// gives the same sequence of election timeouts. Without it each thread seeds from the OS on
/// first use. The simulation calls this with its seed before it starts its hosts.
pub fn seed_election_randomness(seed: u64) {
    ELECTION_RNG.with(|rng| *rng.borrow_mut() = Some(ChaCha8Rng::seed_from_u64(seed)));
}

fn with_rng<T>(draw: impl FnOnce(&mut ChaCha8Rng) -> T) -> T {
    ELECTION_RNG.with(|cell| {
        let mut slot = cell.borrow_mut();
        let rng = slot.get_or_insert_with(|| ChaCha8Rng::seed_from_u64(rand::thread_rng().r#gen()));
        draw(rng)
    })
}

/// A handle on the current thread's election RNG (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct SeededRng;

impl RngCore for SeededRng {
    fn next_u32(&mut self) -> u32 {
        with_rng(|rng| rng.next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        with_rng(|rng| rng.next_u64())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        with_rng(|rng| rng.fill_bytes(dest))
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        with_rng(|rng| rng.try_fill_bytes(dest))
    }
}

/// openraft's runtime for the coordinator: `openraft::TokioRuntime` with [`SeededRng`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeededRuntime;

impl AsyncRuntime for SeededRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = SeededRng;
    type OneshotSender<T: OptionalSend> = TokioOneShotSender<T>;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        openraft::TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        openraft::TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        openraft::TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        openraft::TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        openraft::TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        SeededRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        openraft::TokioRuntime::oneshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws() -> Vec<u64> {
        let mut rng = SeededRuntime::thread_rng();
        (0..8).map(|_| rng.gen_range(150..300)).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_election_timeouts() {
        seed_election_randomness(7);
        let first = draws();
        seed_election_randomness(7);
        assert_eq!(draws(), first);
        seed_election_randomness(8);
        assert_ne!(draws(), first);
    }
}
