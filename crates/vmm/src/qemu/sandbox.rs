//! QEMU's seccomp sandbox: a guest that breaks out of the emulated devices
//! lands in a process that cannot exec a program, gain privileges, change
//! scheduling or use obsolete system calls.
//!
//! Whether this QEMU can run with it is asked of QEMU itself, once per
//! binary: QEMU is started with the sandbox and no machine, told over QMP
//! on its stdin to quit, and must exit cleanly. That catches a build
//! without seccomp and a kernel that refuses the filter alike, which
//! parsing `-help` would not.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::process::POLL;

/// The `-sandbox` option every VM gets where QEMU supports it. `spawn=deny`
/// also rules out QEMU features that fork (`script=` TAP helpers, `exec:`
/// migration), which banger does not use.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// How long the probe may take; it answers in about 0.1 s here.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `binary` runs with [`SANDBOX`]: `Ok`, or QEMU's reason why not.
/// Asked once per binary and process.
pub fn support(binary: &Path) -> Result<(), String> {
    static SEEN: OnceLock<Mutex<HashMap<PathBuf, Result<(), String>>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Some(known) = seen.lock().ok().and_then(|m| m.get(binary).cloned()) {
        return known;
    }
    let answer = probe(binary);
    if let Ok(mut m) = seen.lock() {
        m.insert(binary.to_path_buf(), answer.clone());
    }
    answer
}

/// Starts `binary` with the sandbox and no machine and has it quit.
fn probe(binary: &Path) -> Result<(), String> {
    let mut child = Command::new(binary)
        .args(["-sandbox", SANDBOX])
        .args(["-M", "none", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-S", "-qmp", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A QEMU that already exited closes the pipe; its status says why.
        let _ = stdin.write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n");
    }
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < PROBE_TIMEOUT => std::thread::sleep(POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "QEMU with -sandbox did not quit within {}s",
                    PROBE_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for QEMU: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        // QEMU's own messages; a few lines at most, bounded all the same.
        let _ = pipe.by_ref().take(64 * 1024).read_to_string(&mut stderr);
    }
    let reason = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
        .to_owned();
    Err(format!("QEMU exited ({status}) with -sandbox: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_is_not_supported_and_says_why() {
        let err = support(Path::new("/nonexistent/qemu-system-x86_64")).unwrap_err();
        assert!(
            err.contains("cannot run /nonexistent/qemu-system-x86_64"),
            "{err}"
        );
    }

    #[test]
    fn a_binary_that_refuses_the_option_is_not_supported() {
        // `false` exits 1 whatever it is given, as a QEMU without seccomp
        // does for -sandbox.
        let err = probe(Path::new("/bin/false")).unwrap_err();
        assert!(err.contains("with -sandbox"), "{err}");
    }

    #[test]
    fn this_hosts_qemu_runs_sandboxed() {
        let Ok(qemu) = which("qemu-system-x86_64") else {
            banger_testkit::skip("qemu-system-x86_64 is not installed");
            return;
        };
        assert_eq!(support(&qemu), Ok(()));
    }

    fn which(name: &str) -> Result<PathBuf, ()> {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or(())
    }
}
