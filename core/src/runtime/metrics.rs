//! Metric handles, resolved once per type and method at registration.
//!
//! Hot counters (calls, activations) are sharded per worker thread and exported to the
//! `metrics` recorder by the node's ticker about once a second: one atomic shared by every
//! worker costs more than a local call itself (the cache line ping-pongs between cores).

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use metrics::{Counter, Gauge, Histogram};

use crate::object::MethodInfo;

const SLOTS: usize = 8;

/// A counter line of its own (two cache lines, against adjacent-line prefetch).
#[repr(align(128))]
#[derive(Default)]
struct Slot(AtomicI64);

/// A counter sharded over worker threads.
#[derive(Default)]
pub(crate) struct ShardedCount {
    slots: [Slot; SLOTS],
}

fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: Cell<usize> = Cell::new(NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS);
    }
    SLOT.with(Cell::get)
}

impl ShardedCount {
    /// Adds `delta` on this thread's slot.
    pub(crate) fn add(&self, delta: i64) {
        self.slots[thread_slot()].0.fetch_add(delta, Ordering::Relaxed);
    }

    /// The sum over all slots.
    pub(crate) fn total(&self) -> i64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

/// Handles for one method.
pub(crate) struct MethodMetrics {
    pub(crate) calls: ShardedCount,
    calls_exported: Counter,
    pub(crate) errors: Counter,
    pub(crate) turn_seconds: Histogram,
}

/// Handles for one type.
pub(crate) struct TypeMetrics {
    pub(crate) methods: Vec<MethodMetrics>,
    pub(crate) activations: ShardedCount,
    activations_exported: Gauge,
    pub(crate) activations_started: ShardedCount,
    activations_started_exported: Counter,
    pub(crate) overloads: Counter,
    pub(crate) poisoned: Counter,
    pub(crate) saves: Counter,
    pub(crate) save_failures: Counter,
}

impl TypeMetrics {
    pub(crate) fn new(type_name: &'static str, methods: &[MethodInfo]) -> Self {
        TypeMetrics {
            methods: methods
                .iter()
                .map(|m| MethodMetrics {
                    calls: ShardedCount::default(),
                    calls_exported: metrics::counter!("verse_calls_total", "type" => type_name, "method" => m.name),
                    errors: metrics::counter!("verse_call_errors_total", "type" => type_name, "method" => m.name),
                    turn_seconds: metrics::histogram!("verse_turn_duration_seconds", "type" => type_name, "method" => m.name),
                })
                .collect(),
            activations: ShardedCount::default(),
            activations_exported: metrics::gauge!("verse_activations", "type" => type_name),
            activations_started: ShardedCount::default(),
            activations_started_exported: metrics::counter!("verse_activations_started_total", "type" => type_name),
            overloads: metrics::counter!("verse_overloads_total", "type" => type_name),
            poisoned: metrics::counter!("verse_poisoned_activations_total", "type" => type_name),
            saves: metrics::counter!("verse_state_saves_total", "type" => type_name),
            save_failures: metrics::counter!("verse_state_save_failures_total", "type" => type_name),
        }
    }

    /// Publishes the sharded counters to the recorder.
    pub(crate) fn export(&self) {
        for method in &self.methods {
            method.calls_exported.absolute(method.calls.total().max(0) as u64);
        }
        self.activations_exported.set(self.activations.total() as f64);
        self.activations_started_exported.absolute(self.activations_started.total().max(0) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharded_counts_sum_over_threads() {
        let count = std::sync::Arc::new(ShardedCount::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let count = count.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| count.add(1)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        count.add(-10);
        assert_eq!(count.total(), 3990);
    }
}
