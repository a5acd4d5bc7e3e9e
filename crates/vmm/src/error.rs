//! What can go wrong starting, watching and stopping a hypervisor. Every
//! message is one line written for the operator; where a process or a
//! guest failed, it carries the last lines of the log that says why.

use std::path::PathBuf;
use std::time::Duration;

/// An error of the `vmm` crate.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The launch spec cannot be turned into a command line or API calls.
    #[error("invalid VM launch spec: {0}")]
    Spec(String),

    /// A file or folder the backend needs could not be made or read.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// The hypervisor binary could not be executed at all.
    #[error("cannot run {}: {source}: check the hypervisor binary (banger doctor)", binary.display())]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },

    /// The hypervisor exited before the VM was started.
    #[error("{program} exited during start ({status}): {}; full log: {}", one_line(tail), log.display())]
    Exited {
        program: String,
        status: String,
        log: PathBuf,
        /// The log's last lines, oldest first.
        tail: Vec<String>,
    },

    /// The hypervisor neither started the VM nor exited in time; it was killed.
    #[error("{program} did not start the VM within {:.0?} and was killed: {}; full log: {}", after, one_line(tail), log.display())]
    StartTimeout {
        program: String,
        after: Duration,
        log: PathBuf,
        tail: Vec<String>,
    },

    /// QMP (QEMU's control socket) failed or answered an error.
    #[error("QMP {}: {message}", socket.display())]
    Qmp { socket: PathBuf, message: String },

    /// Firecracker's API refused a request or could not be reached.
    #[error("firecracker API {method} {path}: {message}")]
    FirecrackerApi {
        method: &'static str,
        path: String,
        /// HTTP status, when an answer came.
        status: Option<u16>,
        message: String,
    },

    /// The guest's console never showed what was awaited.
    #[error("the guest console {} has no {needle:?} after {:.1?} ({}); last console lines: {}", log.display(), after, if *exited { "the hypervisor exited" } else { "the VM is still running" }, one_line(tail))]
    Console {
        needle: String,
        log: PathBuf,
        after: Duration,
        /// Whether the hypervisor process died (else the wait timed out).
        exited: bool,
        tail: Vec<String>,
    },

    /// `kill` was given a number that is not a signal.
    #[error("{0} is not a signal number: use e.g. 9 (SIGKILL) or 15 (SIGTERM)")]
    InvalidSignal(i32),

    /// Signalling the process failed (e.g. it belongs to another user).
    #[error("sending {signal} to hypervisor pid {pid}: {source}")]
    Signal {
        pid: u32,
        signal: String,
        source: nix::errno::Errno,
    },

    /// This backend cannot do what was asked (e.g. save a VM's state).
    #[error("the {backend} backend cannot {what}")]
    Unsupported {
        backend: crate::select::Backend,
        what: &'static str,
    },

    /// Saving a VM's state, or starting one from a saved state, failed;
    /// `message` quotes the hypervisor's reason.
    #[error("{action} {}: {message}", path.display())]
    State {
        /// "saving the VM's state to" or "restoring the VM's state from".
        action: &'static str,
        path: PathBuf,
        message: String,
    },

    /// Growing a VM's disk was refused, or the hypervisor failed it.
    #[error("growing the disk {} to {bytes} bytes: {message}", path.display())]
    Grow {
        path: PathBuf,
        bytes: u64,
        message: String,
    },

    /// The process survived SIGKILL (stuck in the kernel, e.g. on I/O).
    #[error(
        "hypervisor pid {pid} is still there {:.1?} after SIGKILL: look at `ps -o stat,wchan -p {pid}`",
        after
    )]
    Unkillable { pid: u32, after: Duration },
}

/// Log lines joined into one line for an error message.
pub(crate) fn one_line(tail: &[String]) -> String {
    if tail.is_empty() {
        "(the log is empty)".into()
    } else {
        tail.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line() {
        let e = VmmError::Exited {
            program: "qemu-system-x86_64".into(),
            status: "exit status: 1".into(),
            log: "/vm/qemu.log".into(),
            tail: vec!["a".into(), "qemu: bad kernel".into()],
        };
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        assert!(s.contains("a | qemu: bad kernel"), "{s}");
        assert!(s.contains("/vm/qemu.log"), "{s}");
        let e = VmmError::Console {
            needle: "ready".into(),
            log: "/vm/console.log".into(),
            after: Duration::from_millis(1500),
            exited: true,
            tail: vec![],
        };
        assert_eq!(
            e.to_string(),
            "the guest console /vm/console.log has no \"ready\" after 1.5s (the hypervisor exited); \
             last console lines: (the log is empty)"
        );
    }
}
