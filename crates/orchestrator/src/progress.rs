//! How a long operation reports as it goes: phases, progress within a
//! phase, lines for the user. The daemon streams them to its client; a
//! client that goes away does not abort the operation half-way: it
//! finishes (or fails and cleans up) on its own.

use banger_api::Event;
use tokio::sync::mpsc;

#[derive(Clone)]
pub struct Progress {
    tx: mpsc::UnboundedSender<Event>,
}

impl Progress {
    /// Reports into `tx`; the receiver may go away at any time.
    pub fn new(tx: mpsc::UnboundedSender<Event>) -> Self {
        Self { tx }
    }

    /// A reporter nobody listens to.
    pub fn discard() -> Self {
        Self::new(mpsc::unbounded_channel().0)
    }

    fn send(&self, event: Event) {
        // The client may have gone; the operation goes on regardless.
        let _ = self.tx.send(event);
    }
    pub fn phase(&self, name: &str, message: impl Into<String>) {
        self.send(Event::Phase {
            name: name.into(),
            message: message.into(),
        });
    }
    pub fn progress(&self, phase: &str, done: u64, total: Option<u64>) {
        self.send(Event::Progress {
            phase: phase.into(),
            done,
            total,
        });
    }
    pub fn info(&self, message: impl Into<String>) {
        self.send(Event::Info {
            message: message.into(),
        });
    }
    pub fn warn(&self, message: impl Into<String>) {
        self.send(Event::Warning {
            message: message.into(),
        });
    }
}
