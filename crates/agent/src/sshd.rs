//! Making the guest's sshd serve new host keys: sshd reads them only
//! when it starts.
//!
//! - Under systemd (PID 1 made /run/systemd/system): `systemctl restart`
//!   of the ssh unit that is active or activating; one that is neither
//!   reads the keys when it starts. Debian's ssh.service kills only the
//!   listener, so open sessions stay.
//! - In minimal mode banger-init supervises sshd and publishes its pid
//!   (`guest_paths::SSHD_PID`): SIGHUP makes sshd execute itself again
//!   under the same pid, reloading its keys, so the supervisor sees
//!   nothing end. The pid is checked to still be banger's sshd, a child
//!   of PID 1, before the signal.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use banger_agent_proto::{SshdRestart, guest_paths};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The units tried, in order: Debian's name, then everyone else's
/// (Debian's `sshd.service` is an alias of the first).
const UNITS: [&str; 2] = ["ssh.service", "sshd.service"];
/// How long a `systemctl` may take (a guest still starting units queues
/// the restart behind them).
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// Restarts sshd in the guest whose root is `root` (`/` but in tests),
/// after its host keys changed. An error means sshd may still serve the
/// old keys.
pub fn restart(root: &Path) -> Result<SshdRestart, String> {
    if root.join("run/systemd/system").is_dir() {
        restart_unit()
    } else {
        signal_supervised(&root.join(guest_paths::SSHD_PID.trim_start_matches('/')))
    }
}

fn restart_unit() -> Result<SshdRestart, String> {
    // One line per unit: active, activating, inactive, failed, ...
    let states = systemctl(&[&["is-active", "--"], &UNITS[..]].concat())?;
    let running = UNITS
        .iter()
        .zip(states.lines())
        .find(|(_, state)| matches!(*state, "active" | "activating" | "reloading"))
        .map(|(unit, _)| *unit);
    let Some(unit) = running else {
        return Ok(SshdRestart::NotRunning);
    };
    // Queued, not waited for (half a second or more under emulation): the
    // host waits for sshd to answer before it hands out ssh details.
    systemctl(&["restart", "--no-block", "--", unit])?;
    Ok(SshdRestart::Restarted {
        how: format!("systemctl restart --no-block {unit}"),
    })
}

/// Runs `systemctl ARGS`, bounded by [`SYSTEMCTL_TIMEOUT`]; its stdout.
/// `is-active` exits non-zero when a unit is not active: only a restart's
/// status is an error.
fn systemctl(args: &[&str]) -> Result<String, String> {
    let shown = format!("systemctl {}", args.join(" "));
    let mut child = Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{shown}: {e}"))?;
    let deadline = Instant::now() + SYSTEMCTL_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => sleep(POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{shown} did not finish within {} s (systemd may still do it)",
                    SYSTEMCTL_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("{shown}: {e}")),
        }
    };
    // systemctl's outputs are a few lines; bounded all the same.
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = out.take(64 * 1024).read_to_string(&mut stdout);
    }
    if let Some(err) = child.stderr.take() {
        let _ = err.take(64 * 1024).read_to_string(&mut stderr);
    }
    if args.first() == Some(&"restart") && !status.success() {
        return Err(format!("{shown}: {status}: {}", last_line(&stderr)));
    }
    Ok(stdout)
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

fn signal_supervised(pid_file: &Path) -> Result<SshdRestart, String> {
    let text = match fs::File::open(pid_file) {
        Ok(file) => {
            let mut text = String::new();
            file.take(32)
                .read_to_string(&mut text)
                .map_err(|e| format!("reading {}: {e}", pid_file.display()))?;
            text
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(SshdRestart::NotRestarted {
                reason: format!(
                    "no systemd, and no {} from banger-init's supervisor (a guest booted by an older banger-init?)",
                    pid_file.display()
                ),
            });
        }
        Err(e) => return Err(format!("reading {}: {e}", pid_file.display())),
    };
    let pid = parse_pid(&text)
        .ok_or_else(|| format!("{} holds no pid: {:?}", pid_file.display(), text.trim()))?;
    if !is_supervised_sshd(pid) {
        return Ok(SshdRestart::NotRestarted {
            reason: format!(
                "pid {pid} of {} is not {} under PID 1 (any more)",
                pid_file.display(),
                guest_paths::MINIMAL_SSHD
            ),
        });
    }
    kill(Pid::from_raw(pid), Signal::SIGHUP)
        .map_err(|e| format!("sending SIGHUP to sshd (pid {pid}): {}", e.desc()))?;
    Ok(SshdRestart::Restarted {
        how: format!("SIGHUP to banger's sshd (pid {pid}), which executes itself again"),
    })
}

/// A pid file's pid: one decimal number above 1, and a newline.
fn parse_pid(text: &str) -> Option<i32> {
    text.trim_end_matches('\n')
        .parse::<i32>()
        .ok()
        .filter(|&pid| pid > 1)
}

/// Whether `pid` runs banger's sshd and is PID 1's child (a session's
/// process, whose parent is the listener, is not).
fn is_supervised_sshd(pid: i32) -> bool {
    let proc = Path::new("/proc").join(pid.to_string());
    let exe_ok = fs::read_link(proc.join("exe"))
        .is_ok_and(|exe| exe == Path::new(guest_paths::MINIMAL_SSHD));
    exe_ok
        && fs::read_to_string(proc.join("stat"))
            .ok()
            .and_then(|stat| parent_of(&stat))
            == Some(1)
}

/// The parent pid in a /proc/PID/stat line: the field after the state,
/// which follows the command name's closing parenthesis (the name itself
/// may hold spaces and parentheses).
fn parent_of(stat: &str) -> Option<i32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_files_and_stat_lines() {
        assert_eq!(parse_pid("123\n"), Some(123));
        assert_eq!(parse_pid("123"), Some(123));
        assert_eq!(parse_pid("1\n"), None);
        assert_eq!(parse_pid("0"), None);
        assert_eq!(parse_pid("-5"), None);
        assert_eq!(parse_pid(" 12"), None);
        assert_eq!(parse_pid("12 13"), None);
        assert_eq!(
            parent_of("42 (sshd: a) b (c)) S 1 42 42 0 -1 4194560"),
            Some(1)
        );
        assert_eq!(parent_of("42 (sshd) S 77 42"), Some(77));
        assert_eq!(parent_of("garbage"), None);
        assert_eq!(last_line("a\nb\n\n"), "b");
    }

    #[test]
    fn minimal_mode_without_a_pid_file_or_with_another_process_is_not_restarted() {
        let root = tempfile::tempdir().unwrap();
        let outcome = restart(root.path()).unwrap();
        assert!(
            matches!(&outcome, SshdRestart::NotRestarted { reason } if reason.contains("sshd.pid")),
            "{outcome:?}"
        );
        // This test process is not banger's sshd: no signal is sent.
        let file = root.path().join("run/banger-agent/sshd.pid");
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, format!("{}\n", std::process::id())).unwrap();
        let outcome = restart(root.path()).unwrap();
        assert!(
            matches!(&outcome, SshdRestart::NotRestarted { reason } if reason.contains("is not")),
            "{outcome:?}"
        );
        fs::write(&file, "not a pid").unwrap();
        assert!(restart(root.path()).is_err());
    }
}
