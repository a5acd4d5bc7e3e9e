//! The orchestrator's decisions tested with fakes (DESIGN.md, "Testing"):
//! a recording `HostOps`, a `Hypervisor` that runs nothing, and a guest
//! probe, so that journaling, cleanup after each failure and reconcile
//! after a crash at each journaled step run without root, QEMU or a guest.
//! Disks are real (`mkfs.ext4`).

mod fakes;
mod lifecycle;
mod templates;
mod workspaces;

use std::sync::Mutex;

use tokio::sync::Notify;

/// Where a test stops an operation as a crash would: armed with a step's
/// name, the operation that reaches it never goes on (the test then drops
/// it, so nothing after the step runs, cleanup included).
#[derive(Default)]
pub(crate) struct CrashPoint {
    armed: Mutex<Option<&'static str>>,
    hit: Notify,
}

impl CrashPoint {
    pub fn arm(&self, step: &'static str) {
        *self.armed.lock().unwrap() = Some(step);
    }

    pub async fn reached(&self, step: &'static str) {
        if *self.armed.lock().unwrap() == Some(step) {
            self.hit.notify_one();
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once the armed step is reached.
    pub async fn wait(&self) {
        self.hit.notified().await;
    }
}
