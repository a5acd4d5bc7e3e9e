//! The hypervisor as a host process: spawned detached, known again by pid
//! and start time (so a reused pid is never mistaken for it), signalled,
//! and waited for. Shared by both backends.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::VmmError;
use crate::hypervisor::VmHandle;

/// How often waits poll: short enough not to add visible latency.
pub(crate) const POLL: Duration = Duration::from_millis(20);
/// How long a process gets to exit after SIGTERM before SIGKILL.
pub const TERM_WAIT: Duration = Duration::from_secs(3);
/// How long a process gets to disappear after SIGKILL.
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// What `/proc/PID/stat` says about a process, as far as we need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: R, S, D, Z (zombie), X (dead), ...
    pub state: char,
    /// Fields 14 and 15: CPU time in user and kernel mode, clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Field 22: clock ticks after boot at which the process started.
    pub start_time: u64,
}

impl ProcStat {
    /// Reads `/proc/PID/stat`; `None` when there is no such process.
    pub fn read(pid: u32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Self::parse(&text)
    }

    /// Parses a `/proc/PID/stat` line. The command name (field 2) is in
    /// parentheses and may itself contain spaces and parentheses, so the
    /// fields are counted from the last `)`.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = &text[text.rfind(')')? + 1..];
        // Field N is at index N - 3 from here (field 3 is the state).
        let f: Vec<&str> = rest.split_whitespace().take(20).collect();
        let number = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
        let state = f.first()?.chars().next()?;
        Some(Self {
            state,
            utime: number(14)?,
            stime: number(15)?,
            start_time: number(22)?,
        })
    }

    /// A zombie or dead process has finished: only its parent's wait is due.
    pub fn is_alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// What the hypervisor process costs the host (for `vm stats`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessUsage {
    /// CPU time used so far, user plus kernel.
    pub cpu: Duration,
    /// Resident memory (`VmRSS`).
    pub rss_bytes: u64,
    /// How long the process has been running.
    pub age: Duration,
}

/// The usage of the handle's process; `None` when it is not running.
pub fn usage(handle: &VmHandle) -> Option<ProcessUsage> {
    let stat = ProcStat::read(handle.pid)?;
    if stat.start_time != handle.start_time || !stat.is_alive() {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", handle.pid)).ok()?;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    usage_from(&stat, &status, &uptime, clock_ticks())
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

fn usage_from(stat: &ProcStat, status: &str, uptime: &str, ticks: u64) -> Option<ProcessUsage> {
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let up: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let started = stat.start_time as f64 / ticks as f64;
    let cpu_ticks = stat.utime + stat.stime;
    Some(ProcessUsage {
        cpu: Duration::from_millis(cpu_ticks * 1000 / ticks),
        rss_bytes: rss_kib * 1024,
        age: Duration::from_secs_f64((up - started).max(0.0)),
    })
}

/// Is the process with this pid and start time alive (not a zombie)?
pub fn is_alive(pid: u32, start_time: u64) -> bool {
    pid > 0 && ProcStat::read(pid).is_some_and(|s| s.start_time == start_time && s.is_alive())
}

/// Starts `program` in a session of its own (no controlling terminal, not
/// in bangerd's process group, so neither a terminal's signals nor
/// bangerd's exit reach it), stdin from /dev/null, stdout and stderr
/// appended to `log`. `O_APPEND`: when the daemon truncates a console log
/// that grew too long ([`crate::console_log`]), the next write lands at
/// the new end instead of leaving a hole up to the old offset.
pub fn spawn_detached(
    program: &Path,
    args: &[std::ffi::OsString],
    log: &Path,
) -> Result<Child, VmmError> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| VmmError::Io {
            what: "opening the log",
            path: log.to_path_buf(),
            source,
        })?;
    let err = out.try_clone().map_err(|source| VmmError::Io {
        what: "opening the log",
        path: log.to_path_buf(),
        source,
    })?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    in_new_session(&mut cmd);
    cmd.spawn().map_err(|source| VmmError::Spawn {
        binary: program.to_path_buf(),
        source,
    })
}

#[allow(unsafe_code)]
fn in_new_session(cmd: &mut Command) {
    // SAFETY: the hook runs in the forked child before exec and only calls
    // setsid(2), which is async-signal-safe; it neither allocates nor takes
    // a lock, so it cannot deadlock on state copied from other threads.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        });
    }
}

/// Waits for the child in a thread of its own so that, while this process
/// lives, the hypervisor does not linger as a zombie after it exits. (If
/// this process exits first, the hypervisor is re-parented and reaped by
/// init or the nearest subreaper.)
pub fn reap_in_background(mut child: Child) {
    let pid = child.id();
    let spawned = std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || {
            let _ = child.wait();
        });
    // Without a thread the child is reaped by nobody until we exit; it is
    // still detached and is_running still sees it end (as a zombie).
    drop(spawned);
}

/// The start time of a child just spawned.
pub fn start_time_of(child: &Child) -> Option<u64> {
    ProcStat::read(child.id()).map(|s| s.start_time)
}

/// Waits up to `timeout` for the process to be gone; true if it is.
pub(crate) fn wait_gone(pid: u32, start_time: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_alive(pid, start_time) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Sends `signal` if the process is still the one in the handle; a
/// process already gone is not an error (the VM is stopped either way).
pub(crate) fn send_signal(handle: &VmHandle, signal: Signal) -> Result<(), VmmError> {
    if !is_alive(handle.pid, handle.start_time) {
        return Ok(());
    }
    let pid = i32::try_from(handle.pid)
        .map_err(|_| VmmError::Spec(format!("pid {} is out of range", handle.pid)))?;
    match kill(Pid::from_raw(pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(source) => Err(VmmError::Signal {
            pid: handle.pid,
            signal: signal.as_str().to_owned(),
            source,
        }),
    }
}

/// Converts a signal number, refusing numbers that are not signals.
pub(crate) fn signal_from(number: i32) -> Result<Signal, VmmError> {
    Signal::try_from(number).map_err(|_| VmmError::InvalidSignal(number))
}

/// The stop sequence both backends share: `ask` the guest to power off
/// (errors ignored: the guest may not listen), wait up to `grace`, then
/// SIGTERM and up to [`TERM_WAIT`], then SIGKILL and up to [`KILL_WAIT`].
pub(crate) fn stop_sequence(
    handle: &VmHandle,
    grace: Duration,
    ask: impl FnOnce(),
) -> Result<(), VmmError> {
    let (pid, start) = (handle.pid, handle.start_time);
    if !is_alive(pid, start) {
        return Ok(());
    }
    ask();
    if wait_gone(pid, start, grace) {
        return Ok(());
    }
    send_signal(handle, Signal::SIGTERM)?;
    if wait_gone(pid, start, TERM_WAIT) {
        return Ok(());
    }
    send_signal(handle, Signal::SIGKILL)?;
    if wait_gone(pid, start, KILL_WAIT) {
        return Ok(());
    }
    Err(VmmError::Unkillable {
        pid,
        after: KILL_WAIT,
    })
}

/// The length of a file, 0 when it does not exist yet.
pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The last `n` non-empty lines written to `path` after byte `from` (at
/// most the last 64 KiB of them), lossily decoded, `\r` dropped.
pub fn log_tail(path: &Path, from: u64, n: usize) -> Vec<String> {
    const MAX: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    // A log shorter than the offset was replaced: read it all.
    let from = if from > len { 0 } else { from };
    let start = from.max(len.saturating_sub(MAX));
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let lines: Vec<String> = bytes
        .split(|&b| b == b'\n')
        .map(|l| quotable(&String::from_utf8_lossy(&plain(l))))
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// A console line fit to quote in an error a person reads: no C1
/// controls or bidirectional overrides (which [`plain`], working on bytes,
/// leaves in UTF-8 text), no trailing blanks, and at most
/// [`QUOTED_LINE_CHARS`] characters, since the guest decides how long its
/// lines are.
fn quotable(line: &str) -> String {
    let mut out: String = line
        .trim_end()
        .chars()
        .filter(|&c| !matches!(c, '\u{80}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
        .take(QUOTED_LINE_CHARS + 1)
        .collect();
    if out.chars().count() > QUOTED_LINE_CHARS {
        out = out.chars().take(QUOTED_LINE_CHARS).collect();
        out.push('…');
    }
    out
}

/// The longest console line an error quotes.
const QUOTED_LINE_CHARS: usize = 300;

/// A console line as a person reads it: terminal escape sequences
/// (systemd's colours, `ESC [ ... letter`) and other control characters
/// (`\r`, NUL) removed, tabs kept.
pub fn plain(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            0x1b => {
                i += 1;
                if line.get(i) == Some(&b'[') {
                    // CSI: parameters and intermediates, then one final byte.
                    i += 1;
                    while i < line.len() && !(0x40..=0x7e).contains(&line[i]) {
                        i += 1;
                    }
                }
                i += 1;
            }
            b'\t' => {
                out.push(b'\t');
                i += 1;
            }
            c if c < 0x20 || c == 0x7f => i += 1,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line from a QEMU process, with a command name that has a
    // space and a parenthesis to make field counting honest.
    const STAT: &str = "4242 (qemu (x) 86) S 1 4242 4242 0 -1 4194624 5366 0 0 0 210 47 0 0 20 0 3 0 \
                        123456789 1234567168 20000 18446744073709551615 1 1 0 0 0 0 0 4096 16963 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn parses_state_and_start_time() {
        let s = ProcStat::parse(STAT).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.start_time, 123456789);
        assert!(s.is_alive());
        let zombie = STAT.replacen(") S ", ") Z ", 1);
        assert!(!ProcStat::parse(&zombie).unwrap().is_alive());
        assert_eq!(ProcStat::parse("4242 (qemu) S 1 2"), None);
        assert_eq!(ProcStat::parse("garbage"), None);
    }

    #[test]
    fn usage_from_proc_files() {
        let stat = ProcStat::parse(STAT).unwrap();
        assert_eq!((stat.utime, stat.stime), (210, 47));
        let status =
            "Name:\tqemu-system-x86\nVmPeak:\t 2000000 kB\nVmRSS:\t  523456 kB\nThreads:\t3\n";
        let u = usage_from(&stat, status, "1234577.89 2000000.00\n", 100).unwrap();
        assert_eq!(u.cpu, Duration::from_millis(2570));
        assert_eq!(u.rss_bytes, 523456 * 1024);
        assert_eq!(u.age.as_secs(), 10);
        assert_eq!(usage_from(&stat, "Name: x\n", "1 1", 100), None);
    }

    #[test]
    fn knows_this_process_and_rejects_another_start_time() {
        let me = std::process::id();
        let stat = ProcStat::read(me).unwrap();
        assert!(is_alive(me, stat.start_time));
        assert!(!is_alive(me, stat.start_time + 1));
        assert!(!is_alive(0, 0));
        let handle = VmHandle {
            backend: crate::Backend::Qemu,
            pid: me,
            start_time: stat.start_time,
            control_socket: "/none".into(),
            console_log: "/none".into(),
            console_offset: 0,
        };
        let u = usage(&handle).unwrap();
        assert!(u.rss_bytes > 0, "{u:?}");
        let other = VmHandle {
            start_time: stat.start_time + 1,
            ..handle
        };
        assert_eq!(usage(&other), None);
    }

    #[test]
    fn signal_numbers_are_checked() {
        assert_eq!(signal_from(9).unwrap(), Signal::SIGKILL);
        assert!(matches!(signal_from(0), Err(VmmError::InvalidSignal(0))));
        assert!(matches!(
            signal_from(999),
            Err(VmmError::InvalidSignal(999))
        ));
    }

    #[test]
    fn plain_drops_colours_and_control_characters() {
        let line =
            b"[\x1b[0;32m  OK  \x1b[0m] Reached target \x1b[0;1;39mmulti-user.target\x1b[0m\r";
        assert_eq!(
            String::from_utf8(plain(line)).unwrap(),
            "[  OK  ] Reached target multi-user.target"
        );
        assert_eq!(plain(b"a\tb\x00c\x1b"), b"a\tbc");
        assert_eq!(quotable("ok\u{9b}2J \u{202e}x  "), "ok2J x");
        let long = quotable(&"y".repeat(100_000));
        assert_eq!(long.chars().count(), QUOTED_LINE_CHARS + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn tail_reads_only_after_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "old boot\r\n\nline 1\nline 2\r\nline 3").unwrap();
        assert_eq!(log_tail(&log, 0, 2), vec!["line 2", "line 3"]);
        assert_eq!(log_tail(&log, 10, 10), vec!["line 1", "line 2", "line 3"]);
        assert_eq!(log_tail(&log, 1000, 1), vec!["line 3"]);
        assert!(log_tail(&dir.path().join("none"), 0, 5).is_empty());
    }

    #[test]
    fn spawned_process_is_detached_and_stopped_by_signals() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let child = spawn_detached(Path::new("sleep"), &["30".into()], &log).unwrap();
        let pid = child.id();
        let start_time = start_time_of(&child).unwrap();
        // Its own session: the session id is its own pid.
        let sid = nix::unistd::getsid(Some(Pid::from_raw(pid as i32))).unwrap();
        assert_eq!(sid.as_raw() as u32, pid);
        // Its output is appended (O_APPEND, 02000 in fdinfo's octal flags):
        // the console log's rotation truncates under it.
        for fd in [1, 2] {
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
                .unwrap();
            assert_ne!(flags & 0o2000, 0, "fd {fd}: {info}");
        }
        reap_in_background(child);
        let handle = VmHandle {
            backend: crate::Backend::Qemu,
            pid,
            start_time,
            control_socket: dir.path().join("none.sock"),
            console_log: log,
            console_offset: 0,
        };
        let started = Instant::now();
        // `sleep` ignores nothing: SIGTERM ends it right after the grace.
        stop_sequence(&handle, Duration::from_millis(100), || {}).unwrap();
        assert!(!is_alive(pid, start_time));
        assert!(started.elapsed() < Duration::from_secs(2));
        // Gone: signalling again is fine.
        send_signal(&handle, Signal::SIGKILL).unwrap();
    }
}
