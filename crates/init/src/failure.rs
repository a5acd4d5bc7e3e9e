//! How banger-init fails: one line on the console saying what failed and
//! why, then power off. A guest that cannot boot must never hang.

use std::fmt;

/// A failed boot step.
#[derive(Debug)]
pub struct Failure {
    /// What was being done, e.g. "mounting the base rootfs /dev/vda".
    pub what: String,
    /// Why it failed, e.g. the errno's description.
    pub why: String,
}

impl Failure {
    pub fn new(what: impl Into<String>, why: impl fmt::Display) -> Self {
        Failure {
            what: what.into(),
            why: why.to_string(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "banger-init: {}: {}", self.what, self.why)
    }
}

/// Attaches what was being done to an error.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Failure>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(what(), e))
    }
}

/// Prints the failure and powers the machine off. As PID 1 that never
/// returns; elsewhere (run by hand) the process exits with status 1.
pub fn die(failure: &Failure) -> ! {
    eprintln!("{failure}");
    nix::unistd::sync();
    if nix::unistd::getpid().as_raw() == 1 {
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
        // Power-off failed: exiting makes the kernel panic, and banger
        // boots guests with panic=-1, which reboots (and the hypervisor
        // exits) at once.
    }
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_what_and_why() {
        let err: Result<(), _> = Err("No such device (os error 19)");
        let failure = err.context(|| "mounting /dev/vda".into()).unwrap_err();
        assert_eq!(
            failure.to_string(),
            "banger-init: mounting /dev/vda: No such device (os error 19)"
        );
    }
}
