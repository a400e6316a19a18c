//! What [`crate::runtime::validate`] reads from an activation's mailbox: a consistent
//! snapshot of its slot state machine, taken under the mailbox lock.

use super::{ActivationShared, Phase};

/// An activation's slot state at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotState {
    pub(crate) phase: Phase,
    /// The lock-free `gone` hint.
    pub(crate) gone_hint: bool,
    /// A turn (call or tick) is running.
    pub(crate) running: bool,
    /// A deactivation was asked for.
    pub(crate) deactivation_requested: bool,
    /// The running turn is poisoned.
    pub(crate) poisoned: bool,
}

impl ActivationShared {
    /// The slot state, read under the mailbox lock.
    pub(crate) fn slot_state(&self) -> SlotState {
        let mailbox = self.lock();
        SlotState {
            phase: mailbox.phase,
            gone_hint: self.is_gone_hint(),
            running: mailbox.running.is_some(),
            deactivation_requested: mailbox.deactivate.is_some(),
            poisoned: self.is_poisoned(),
        }
    }
}
