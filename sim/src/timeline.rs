//! The trace as a cluster timeline: which simulated host is running now, and a `tracing`
//! layer that writes the real code's log events into the run's [`History`] trace, each on the
//! global simulated time and with the host it happened on (and the names of its spans).
//!
//! turmoil gives every simulated host its own tokio runtime, so the current host is found by
//! the current runtime's id: every host registers itself ([`register_host`]) when its future
//! starts (again after a restart: a restart is a new runtime). Outside every host (the
//! harness between steps) the host is `harness`.
//!
//! Only events at `INFO` and above from Verse's crates and at `WARN` and above from the others
//! (openraft, tonic, h2...) are recorded, so the trace stays readable and cheap; they are part
//! of the trace's fingerprint, so the determinism test covers them too.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

use crate::history::History;

thread_local! {
    /// Runtime (simulated host) → host name, for the hosts of the run on this thread.
    static HOSTS: RefCell<HashMap<tokio::runtime::Id, String>> = RefCell::new(HashMap::new());
}

/// Registers the current tokio runtime as simulated host `name` (call at the start of the
/// host's future).
pub fn register_host(name: &str) {
    let id = tokio::runtime::Handle::current().id();
    HOSTS.with(|hosts| hosts.borrow_mut().insert(id, name.to_owned()));
}

/// The simulated host running now, if it registered.
pub fn current_host() -> Option<String> {
    let id = tokio::runtime::Handle::try_current().ok()?.id();
    HOSTS.with(|hosts| hosts.borrow().get(&id).cloned())
}

/// Forgets every registered host of this thread (a new run starts).
pub fn clear_hosts() {
    HOSTS.with(|hosts| hosts.borrow_mut().clear());
}

/// Writes log events into a [`History`] (module docs).
struct TimelineLayer {
    history: History,
}

/// Formats an event's fields as `message key=value ...`.
struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S> Layer<S> for TimelineLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let mut line = format!("{} {}", metadata.level(), metadata.target());
        if let Some(scope) = ctx.event_scope(event) {
            let spans: Vec<&str> = scope.from_root().map(|span| span.name()).collect();
            if !spans.is_empty() {
                let _ = write!(line, " [{}]", spans.join(":"));
            }
        }
        line.push(':');
        event.record(&mut Fields(&mut line));
        let host = current_host().unwrap_or_else(|| "harness".to_owned());
        self.history.note(&host, &line);
    }
}

/// Records the log events of the code running on this thread into `history` until the guard
/// is dropped (a thread-local default subscriber: parallel runs on other threads keep theirs).
pub fn install(history: History) -> tracing::subscriber::DefaultGuard {
    let filter = Targets::new()
        .with_target("verse_core", Level::INFO)
        .with_target("verse_transport", Level::INFO)
        .with_target("verse_coord_raft", Level::INFO)
        .with_target("verse_sim", Level::INFO)
        .with_default(Level::WARN);
    let subscriber =
        tracing_subscriber::registry().with(TimelineLayer { history }.with_filter(filter));
    tracing::subscriber::set_default(subscriber)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_events_land_on_the_timeline_with_their_host_and_spans() {
        let history = History::new();
        let guard = install(history.clone());
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        runtime.block_on(async {
            register_host("node7");
            let span = tracing::info_span!("handoff", shard = 3);
            let _entered = span.enter();
            tracing::warn!(target: "verse_core::cluster", shard = 3, "move failed");
            tracing::debug!(target: "verse_core::cluster", "not recorded: below INFO");
            tracing::info!(target: "h2::codec", "not recorded: another crate's INFO");
        });
        tracing::error!(target: "verse_sim", "outside every host");
        drop(guard);
        tracing::error!(target: "verse_sim", "not recorded: the layer is gone");
        clear_hosts();
        let trace = history.trace();
        let lines: Vec<&str> = trace.lines().collect();
        assert_eq!(lines.len(), 2, "{trace}");
        assert!(lines[0].contains("node7"), "{trace}");
        assert!(lines[0].contains("WARN verse_core::cluster [handoff]: move failed shard=3"));
        assert!(lines[1].contains("harness") && lines[1].contains("outside every host"));
    }
}
