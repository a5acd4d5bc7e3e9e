//! Watching a guest's serial console log for a line: how the orchestrator
//! learns that the kernel reached banger-init, without any guest agent.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::VmmError;
use crate::hypervisor::{Hypervisor, VmHandle};
use crate::process::{POLL, log_tail, plain};

/// How many console lines an error quotes.
const TAIL_LINES: usize = 20;

/// Waits until a line containing `needle` (compared without terminal
/// colour codes) appears in `log` after the handle's `console_offset`
/// (earlier boots' output is skipped), the
/// hypervisor exits, or `timeout` passes. Returns how long it waited; the
/// error carries the console's last lines.
pub fn wait_for_console(
    log: &Path,
    needle: &str,
    handle: &VmHandle,
    hv: &dyn Hypervisor,
    timeout: Duration,
) -> Result<Duration, VmmError> {
    let started = Instant::now();
    let mut reader = LineScanner::new(needle, handle.console_offset);
    loop {
        // Liveness first, then the log: output written before the process
        // died is still read before we give up on it.
        let alive = hv.is_running(handle);
        if reader.scan(log) {
            return Ok(started.elapsed());
        }
        let after = started.elapsed();
        if !alive || after >= timeout {
            return Err(VmmError::Console {
                needle: needle.to_owned(),
                log: log.to_path_buf(),
                after,
                exited: !alive,
                tail: log_tail(log, handle.console_offset, TAIL_LINES),
            });
        }
        std::thread::sleep(POLL.min(timeout - after));
    }
}

/// Reads a growing file from an offset, remembering where it stopped and
/// the unfinished last line, and says when a line contains the needle.
struct LineScanner<'a> {
    needle: &'a [u8],
    offset: u64,
    partial: Vec<u8>,
}

impl<'a> LineScanner<'a> {
    fn new(needle: &'a str, offset: u64) -> Self {
        Self {
            needle: needle.as_bytes(),
            offset,
            partial: Vec::new(),
        }
    }

    /// Reads what was appended since the last call; true once found.
    fn scan(&mut self, log: &Path) -> bool {
        let Ok(mut file) = File::open(log) else {
            return false;
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // Truncated or replaced under us: start over.
            self.offset = 0;
            self.partial.clear();
        }
        let mut fresh = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut fresh).is_err()
        {
            return false;
        }
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        // The unfinished line counts too (a prompt has no newline), but is
        // kept until it is finished.
        // Lines are compared as a person sees them: without colours.
        let found = self
            .partial
            .split(|&b| b == b'\n')
            .any(|line| contains(&plain(line), self.needle));
        if let Some(last_newline) = self.partial.iter().rposition(|&b| b == b'\n') {
            self.partial.drain(..=last_newline);
        }
        // A guest that never ends its line must not grow this forever.
        const MAX_PARTIAL: usize = 64 * 1024;
        if self.partial.len() > MAX_PARTIAL {
            let cut = self.partial.len() - MAX_PARTIAL / 2;
            self.partial.drain(..cut);
        }
        found
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn finds_needles_across_appends_and_skips_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, "banger-init ready (last boot)\n").unwrap();
        let offset = std::fs::metadata(&log).unwrap().len();
        let mut scanner = LineScanner::new("banger-init ready", offset);
        assert!(
            !scanner.scan(&log),
            "the previous boot's line must not count"
        );
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"[ 0.1] Linux version\r\nbanger-in").unwrap();
        assert!(!scanner.scan(&log));
        f.write_all(b"it ready in 310 ms\r\n").unwrap();
        assert!(scanner.scan(&log), "a line split across two writes");
    }

    #[test]
    fn colours_do_not_hide_a_needle() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(
            &log,
            "[\x1b[0;32m  OK  \x1b[0m] Reached target \x1b[0;1;39mmulti-user.target\x1b[0m.\r\n",
        )
        .unwrap();
        assert!(LineScanner::new("Reached target multi-user.target", 0).scan(&log));
    }

    #[test]
    fn an_unfinished_line_counts() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, "x\nlogin: ").unwrap();
        assert!(LineScanner::new("login:", 0).scan(&log));
        assert!(!LineScanner::new("login:", 0).scan(&dir.path().join("absent")));
    }
}
