//! Metric handles, resolved once per type and method at registration (the hot path only
//! increments cached handles).

use metrics::{Counter, Gauge, Histogram};

use crate::object::MethodInfo;

/// Handles for one method.
pub(crate) struct MethodMetrics {
    pub(crate) calls: Counter,
    pub(crate) errors: Counter,
    pub(crate) turn_seconds: Histogram,
}

/// Handles for one type.
pub(crate) struct TypeMetrics {
    pub(crate) methods: Vec<MethodMetrics>,
    pub(crate) activations: Gauge,
    pub(crate) activations_started: Counter,
    pub(crate) overloads: Counter,
    pub(crate) poisoned: Counter,
    pub(crate) saves: Counter,
    pub(crate) save_failures: Counter,
}

impl TypeMetrics {
    pub(crate) fn new(type_name: &'static str, methods: &'static [MethodInfo]) -> Self {
        TypeMetrics {
            methods: methods
                .iter()
                .map(|m| MethodMetrics {
                    calls: metrics::counter!("verse_calls_total", "type" => type_name, "method" => m.name),
                    errors: metrics::counter!("verse_call_errors_total", "type" => type_name, "method" => m.name),
                    turn_seconds: metrics::histogram!("verse_turn_duration_seconds", "type" => type_name, "method" => m.name),
                })
                .collect(),
            activations: metrics::gauge!("verse_activations", "type" => type_name),
            activations_started: metrics::counter!("verse_activations_started_total", "type" => type_name),
            overloads: metrics::counter!("verse_overloads_total", "type" => type_name),
            poisoned: metrics::counter!("verse_poisoned_activations_total", "type" => type_name),
            saves: metrics::counter!("verse_state_saves_total", "type" => type_name),
            save_failures: metrics::counter!("verse_state_save_failures_total", "type" => type_name),
        }
    }
}
