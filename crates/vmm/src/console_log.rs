//! A VM's console log kept to a size: `console.log` and one previous file,
//! `console.log.1`, read as one stream across rotations.
//!
//! The hypervisor writes the log itself (QEMU's file chardev, Firecracker's
//! stdout) and outlives bangerd, so the file cannot be renamed away from
//! it: the daemon copies it to `console.log.1` and truncates it in place
//! (logrotate's `copytruncate`). Both backends open the log with
//! `O_APPEND` (QEMU's `append=on`, [`crate::process::spawn_detached`] for
//! Firecracker), so after a truncation their next write lands at the new
//! end, not at their old offset past it.
//!
//! Readers (`vm logs`, `-f`, the boot wait) hold a [`Cursor`]: a position
//! in the stream of everything the log was sent since this [`ConsoleLog`]
//! was made, counted across rotations. Rotation and reads take one lock,
//! so a reader sees the files either before a rotation or after it, never
//! half-way, and finishes the previous file before it starts the new one.
//! All readers and the rotation live in the daemon; a daemon restart
//! starts counting again from what is on disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use std::collections::HashMap;

/// Every console log the daemon reads or rotates, by path, so that all
/// readers of one log share its lock and its count.
#[derive(Default)]
pub struct ConsoleLogs {
    logs: Mutex<HashMap<PathBuf, ConsoleLog>>,
}

impl ConsoleLogs {
    /// The log at `path`, made on first use.
    pub fn get(&self, path: &Path) -> ConsoleLog {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.entry(path.to_path_buf())
            .or_insert_with(|| ConsoleLog::new(path))
            .clone()
    }

    /// Drops the log at `path` (its VM is deleted).
    pub fn forget(&self, path: &Path) {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.remove(path);
    }
}

/// One console log and its previous file. Cheap to clone; clones share the
/// lock and the count.
#[derive(Clone, Debug)]
pub struct ConsoleLog {
    current: PathBuf,
    previous: PathBuf,
    ledger: Arc<RwLock<Ledger>>,
}

/// Where the current file starts in the stream. The previous file ends
/// there; what was before it is gone. Measured on first use (the previous
/// file's length), so that making a log costs no I/O.
#[derive(Debug)]
struct Ledger {
    base: Option<u64>,
}

/// What [`ConsoleLog::rotate_if_over`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The log is within the cap (or does not exist).
    Kept,
    /// The log was emptied: this many bytes left it, the last `cap` of
    /// them (at most) kept in the previous file.
    Rotated(u64),
}

impl ConsoleLog {
    /// The log at `path`, its previous file beside it with `.1` appended.
    /// Positions count from the start of the previous file as it is when
    /// the log is first read or rotated.
    pub fn new(path: &Path) -> Self {
        let mut previous = path.as_os_str().to_owned();
        previous.push(".1");
        Self {
            current: path.to_path_buf(),
            previous: PathBuf::from(previous),
            ledger: Arc::new(RwLock::new(Ledger { base: None })),
        }
    }

    pub fn path(&self) -> &Path {
        &self.current
    }

    pub fn previous_path(&self) -> &Path {
        &self.previous
    }

    /// The stream position of the log's end now.
    pub fn end(&self) -> u64 {
        let (_ledger, base) = self.read_ledger();
        base + len_of(&self.current)
    }

    /// A reader at the start of what is kept: the previous file, then the
    /// current one.
    pub fn cursor_at_start(&self) -> Cursor {
        let (ledger, base) = self.read_ledger();
        let pos = base.saturating_sub(len_of(&self.previous));
        drop(ledger);
        self.cursor(pos)
    }

    /// A reader at the log's end: it sees only what is written from now.
    pub fn cursor_at_end(&self) -> Cursor {
        let pos = self.end();
        self.cursor(pos)
    }

    /// A reader at byte `offset` of the current file (a boot's
    /// `console_offset`, measured before any rotation this log saw since).
    pub fn cursor_at(&self, offset: u64) -> Cursor {
        let pos = self.read_ledger().1 + offset;
        self.cursor(pos)
    }

    fn cursor(&self, pos: u64) -> Cursor {
        Cursor {
            log: self.clone(),
            pos,
            skipped: 0,
        }
    }

    /// When the log is longer than `cap` bytes, moves its last `cap` bytes
    /// to the previous file (replacing it) and empties it.
    ///
    /// The bound this keeps: the previous file holds at most `cap` (plus
    /// what the guest writes during the copy); the log at most `cap` plus
    /// what the guest writes between two calls (the daemon calls this
    /// twice a second; a flooded serial port under TCG writes about
    /// 200 KiB a second). A log already far past the cap (left by a banger
    /// without rotation) costs one copy of `cap`, not of all of it. Bytes
    /// written between the copy reaching the end and the truncation, a
    /// system call apart, are lost; no reader saw them, since readers wait
    /// for the lock.
    pub fn rotate_if_over(&self, cap: u64) -> io::Result<Rotation> {
        let (mut ledger, base) = self.write_ledger();
        let mut source = match OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.current)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Rotation::Kept),
            Err(e) => return Err(e),
        };
        let len = source.metadata()?.len();
        if len <= cap {
            return Ok(Rotation::Kept);
        }
        let dropped = len - cap;
        let mut partial = self.previous.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let copied = (|| {
            source.seek(SeekFrom::Start(dropped))?;
            let mut out = File::create(&partial)?;
            let mut copied = io::copy(&mut source, &mut out)?;
            fs::rename(&partial, &self.previous)?;
            // The guest kept writing during the copy and the rename: copy
            // that too, so that only the instant between the last read and
            // the truncation is lost.
            copied += io::copy(&mut source, &mut out)?;
            out.flush()?;
            Ok(copied)
        })();
        let copied = match copied {
            Ok(n) => n,
            Err(e) => {
                let _ = fs::remove_file(&partial);
                return Err(e);
            }
        };
        // Renamed before the truncation: a crash in between leaves the
        // bytes twice, never nowhere.
        source.set_len(0)?;
        ledger.base = Some(base + dropped + copied);
        Ok(Rotation::Rotated(dropped + copied))
    }

    /// Runs `f` while no rotation and no read can happen (removing the
    /// VM's folder).
    pub fn exclusive<T>(&self, f: impl FnOnce() -> T) -> T {
        let _ledger = self.ledger.write().unwrap_or_else(|p| p.into_inner());
        f()
    }

    /// The ledger, shared, and the base it holds.
    fn read_ledger(&self) -> (RwLockReadGuard<'_, Ledger>, u64) {
        let ledger = self.ledger.read().unwrap_or_else(|p| p.into_inner());
        if let Some(base) = ledger.base {
            return (ledger, base);
        }
        drop(ledger);
        drop(self.write_ledger());
        let ledger = self.ledger.read().unwrap_or_else(|p| p.into_inner());
        let base = ledger.base.unwrap_or(0);
        (ledger, base)
    }

    /// The ledger, alone, and the base it holds.
    fn write_ledger(&self) -> (RwLockWriteGuard<'_, Ledger>, u64) {
        let mut ledger = self.ledger.write().unwrap_or_else(|p| p.into_inner());
        let base = *ledger.base.get_or_insert_with(|| len_of(&self.previous));
        (ledger, base)
    }
}

/// A reader of a console log that follows it across rotations: nothing
/// is read twice, and nothing is skipped unless it was rotated away (two
/// rotations) before this reader got to it, which [`Cursor::skipped`]
/// counts.
#[derive(Debug)]
pub struct Cursor {
    log: ConsoleLog,
    pos: u64,
    skipped: u64,
}

impl Cursor {
    /// Reads what comes next into `buf`; 0 when nothing new has been
    /// written (or the log does not exist yet).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let (_ledger, base) = self.log.read_ledger();
        if self.pos < base {
            let previous_len = len_of(&self.log.previous);
            let start = base.saturating_sub(previous_len);
            if self.pos < start {
                self.skipped += start - self.pos;
                self.pos = start;
            }
            let n = read_at(&self.log.previous, self.pos - start, buf)?;
            if n > 0 {
                self.pos += n as u64;
                return Ok(n);
            }
            // The previous file is shorter than the count says (changed by
            // someone else): go on with the current one.
            self.skipped += base - self.pos;
            self.pos = base;
        }
        if self.pos - base > len_of(&self.log.current) {
            // Truncated by someone else than the rotation (or replaced):
            // what is there now is new.
            self.pos = base;
        }
        let n = read_at(&self.log.current, self.pos - base, buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    /// The stream position: [`ConsoleLog::end`] says how far the log goes.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// How many bytes were rotated away before this reader read them.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    pub fn log(&self) -> &ConsoleLog {
        &self.log
    }
}

fn len_of(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Reads from `offset` of the file at `path`; 0 when it does not exist.
fn read_at(path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset))?;
    file.read(buf)
}

#[cfg(test)]
mod tests;
