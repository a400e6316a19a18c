//! Core state validity: the harness runs `Node::validate` (`verse_core::runtime::validate`) on
//! every running node after every simulation step and records a broken invariant as
//! [`Event::Invalid`]; each one fails the seed.

use std::time::Duration;

use crate::history::Event;

/// The violations among `events`.
pub fn check(events: &[(Duration, Event)]) -> Vec<String> {
    events
        .iter()
        .filter_map(|(at, event)| match event {
            Event::Invalid(host, violation) => {
                Some(format!("validate: {host}'s core state at {at:?}: {violation}"))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_states_fail_and_nothing_else_does() {
        let events = [
            (Duration::from_secs(1), Event::Crash("node1".into())),
            (Duration::from_secs(2), Event::Invalid("node2".into(), "two activations of x".into())),
        ];
        let found = check(&events);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("node2") && found[0].contains("two activations"));
    }
}
