//! Watching a guest's serial console log for a line: how the orchestrator
//! learns that the kernel reached banger-init, without any guest agent.

use std::time::{Duration, Instant};

use crate::console_log::Cursor;
use crate::error::VmmError;
use crate::hypervisor::{Hypervisor, VmHandle};
use crate::process::{POLL, log_tail, plain};

/// How many console lines an error quotes.
const TAIL_LINES: usize = 20;

/// Waits until a line containing `needle` (compared without terminal
/// colour codes) appears in the console log after `from` (a reader made
/// where this boot's output starts, so earlier boots' output is skipped;
/// it follows the log across rotations), the hypervisor exits, or
/// `timeout` passes. Returns how long it waited; the error carries the
/// console's last lines.
pub fn wait_for_console(
    from: Cursor,
    needle: &str,
    handle: &VmHandle,
    hv: &dyn Hypervisor,
    timeout: Duration,
) -> Result<Duration, VmmError> {
    let started = Instant::now();
    let log = from.log().path().to_path_buf();
    let mut reader = LineScanner::new(needle, from);
    loop {
        // Liveness first, then the log: output written before the process
        // died is still read before we give up on it.
        let alive = hv.is_running(handle);
        if reader.scan() {
            return Ok(started.elapsed());
        }
        let after = started.elapsed();
        if !alive || after >= timeout {
            return Err(VmmError::Console {
                needle: needle.to_owned(),
                tail: log_tail(&log, handle.console_offset, TAIL_LINES),
                log,
                after,
                exited: !alive,
            });
        }
        std::thread::sleep(POLL.min(timeout - after));
    }
}

/// Reads a growing log through a cursor, remembering the unfinished last
/// line, and says when a line contains the needle.
struct LineScanner<'a> {
    needle: &'a [u8],
    cursor: Cursor,
    partial: Vec<u8>,
}

impl<'a> LineScanner<'a> {
    fn new(needle: &'a str, cursor: Cursor) -> Self {
        Self {
            needle: needle.as_bytes(),
            cursor,
            partial: Vec::new(),
        }
    }

    /// Reads what was appended since the last call; true once found.
    fn scan(&mut self) -> bool {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let skipped = self.cursor.skipped();
            let n = match self.cursor.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if self.cursor.skipped() != skipped {
                // Rotated away unread: the unfinished line is not continued.
                self.partial.clear();
            }
            if self.take(&buf[..n]) {
                return true;
            }
        }
    }

    /// Adds a chunk; true when a line so far contains the needle.
    fn take(&mut self, fresh: &[u8]) -> bool {
        self.partial.extend_from_slice(fresh);
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
    use crate::console_log::ConsoleLog;
    use std::io::Write;

    fn scanner_at(
        log: &std::path::Path,
        needle: &'static str,
        offset: u64,
    ) -> LineScanner<'static> {
        LineScanner::new(needle, ConsoleLog::new(log).cursor_at(offset))
    }

    #[test]
    fn finds_needles_across_appends_and_skips_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, "banger-init ready (last boot)\n").unwrap();
        let offset = std::fs::metadata(&log).unwrap().len();
        let mut scanner = scanner_at(&log, "banger-init ready", offset);
        assert!(!scanner.scan(), "the previous boot's line must not count");
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"[ 0.1] Linux version\r\nbanger-in").unwrap();
        assert!(!scanner.scan());
        f.write_all(b"it ready in 310 ms\r\n").unwrap();
        assert!(scanner.scan(), "a line split across two writes");
    }

    #[test]
    fn a_line_rotated_away_before_the_scan_is_still_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, "banger-init ready (last boot)\n").unwrap();
        let log = ConsoleLog::new(&path);
        let mut scanner = LineScanner::new("banger-init ready", log.cursor_at_end());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"flood flood\nbanger-in").unwrap();
        assert!(!scanner.scan());
        f.write_all(b"it ready\nmore flood").unwrap();
        log.rotate_if_over(20).unwrap();
        f.write_all(b" and more\n").unwrap();
        assert!(
            scanner.scan(),
            "the line is in console.log.1 now, and the offset past the new end"
        );
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
        assert!(scanner_at(&log, "Reached target multi-user.target", 0).scan());
    }

    #[test]
    fn an_unfinished_line_counts() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, "x\nlogin: ").unwrap();
        assert!(scanner_at(&log, "login:", 0).scan());
        assert!(!scanner_at(&dir.path().join("absent"), "login:", 0).scan());
    }
}
