//! A QEMU guest saved to and restored from a file with QEMU's migration
//! stream. banger opens the file and hands it to QEMU over QMP (`getfd`,
//! then an `fd:NAME` URI); QEMU never opens a path, and no path is ever
//! part of a command line: an `exec:` URI would run one through a shell
//! (and the seccomp sandbox's `spawn=deny` forbids it anyway).
//!
//! Measured against QEMU 7.2: the source ends in run state `postmigrate`
//! (a `cont` runs it again), its disks flushed and let go; the
//! destination, started with `-incoming defer`, reports migration status
//! `completed` and run state `paused` (the source was stopped when it was
//! saved), and needs a `cont`. A stream QEMU cannot load makes it print
//! `load of migration failed: …` and exit 1.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::qmp::Qmp;
use crate::error::VmmError;
use crate::hypervisor::SavedState;
use crate::process::POLL;
use crate::state_file::{self, RESTORING, SAVING};

/// The name the save's file goes by in QEMU (`getfd`).
const SAVE_FD: &str = "banger-save";
/// The name the restore's file goes by in QEMU.
const LOAD_FD: &str = "banger-load";
/// `max-bandwidth` for a save, bytes a second. QEMU's default (128 MiB/s
/// in 7.2) spares a network shared with a running guest; a paused guest
/// going to a local file wants no limit: the test guest's 77 MB took
/// 0.50-0.52 s with the default, 0.09-0.15 s without. 1 TiB/s is "none",
/// and far from any bound QEMU checks.
const UNTHROTTLED: u64 = 1 << 40;
/// How long a cancelled save gets to let go of the file.
const CANCEL_WAIT: Duration = Duration::from_secs(2);

/// Where a migration is, from `query-migrate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Not finished (`setup`, `active`, `device`, ...; `none` before it
    /// starts).
    Running {
        status: String,
        transferred: u64,
    },
    Completed,
    /// `failed` or `cancelled`, with QEMU's `error-desc` when it gave one.
    Failed(String),
}

impl Status {
    /// Reads `query-migrate`'s answer.
    pub(crate) fn parse(v: &Value) -> Self {
        let status = v["status"].as_str().unwrap_or("none");
        match status {
            "completed" => Status::Completed,
            "failed" | "cancelled" => Status::Failed(
                v["error-desc"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| match status {
                        "failed" => "the migration failed, no reason given".into(),
                        _ => "the migration was cancelled".into(),
                    }),
            ),
            other => Status::Running {
                status: other.to_owned(),
                transferred: v["ram"]["transferred"].as_u64().unwrap_or(0),
            },
        }
    }
}

/// Why [`wait`] stopped without `completed`.
enum WaitError {
    Failed(String),
    TimedOut { status: String, transferred: u64 },
    Qmp(VmmError),
}

/// The time left until `deadline`, at least a millisecond (a command
/// still gets its answer read).
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

/// Polls `query-migrate` until the migration completes or fails, or
/// `deadline`, or `gone` says QEMU is gone.
fn wait(qmp: &mut Qmp, deadline: Instant, gone: &mut dyn FnMut() -> bool) -> Result<(), WaitError> {
    loop {
        let v = qmp
            .execute("query-migrate", None, left(deadline))
            .map_err(WaitError::Qmp)?;
        match Status::parse(&v) {
            Status::Completed => return Ok(()),
            Status::Failed(why) => return Err(WaitError::Failed(why)),
            Status::Running {
                status,
                transferred,
            } => {
                if Instant::now() >= deadline {
                    return Err(WaitError::TimedOut {
                        status,
                        transferred,
                    });
                }
                if gone() {
                    return Err(WaitError::Qmp(
                        qmp.error("QEMU exited during the migration".into()),
                    ));
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Pauses the guest (`stop`, checked as [`Qmp::pause`] does) and writes its state to a new file at
/// `dest`, within `deadline`. The guest stays paused, whatever happens
/// after the `stop`; on failure `dest` is removed.
pub(crate) fn save(qmp: &mut Qmp, dest: &Path, deadline: Instant) -> Result<SavedState, VmmError> {
    // First, so that a bad `dest` fails with the guest still running.
    let file = state_file::create(dest)?;
    let started = Instant::now();
    let result = write_state(qmp, &file, dest, deadline).and_then(|()| {
        let bytes = file.metadata().map_err(|source| VmmError::Io {
            what: "reading the saved state",
            path: dest.to_path_buf(),
            source,
        })?;
        Ok(SavedState {
            files: vec![dest.to_path_buf()],
            bytes: bytes.len(),
            took: started.elapsed(),
        })
    });
    if result.is_err() {
        drop(file);
        state_file::remove(&[dest.to_path_buf()]);
    }
    result
}

fn write_state(qmp: &mut Qmp, file: &File, dest: &Path, deadline: Instant) -> Result<(), VmmError> {
    let fail = |message: String| VmmError::State {
        action: SAVING,
        path: dest.to_path_buf(),
        message,
    };
    qmp.pause(left(deadline))?;
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": UNTHROTTLED })),
        left(deadline),
    )?;
    qmp.pass_fd(SAVE_FD, file.as_fd(), left(deadline))?;
    if let Err(e) = qmp.execute(
        "migrate",
        Some(json!({ "uri": format!("fd:{SAVE_FD}") })),
        left(deadline),
    ) {
        // QEMU keeps a named file until a command takes it.
        let _ = qmp.execute(
            "closefd",
            Some(json!({ "fdname": SAVE_FD })),
            Duration::from_secs(1),
        );
        return Err(e);
    }
    match wait(qmp, deadline, &mut || false) {
        Ok(()) => Ok(()),
        Err(WaitError::Qmp(e)) => Err(e),
        Err(WaitError::Failed(why)) => Err(fail(format!("QEMU: {why}"))),
        Err(WaitError::TimedOut {
            status,
            transferred,
        }) => {
            // Have QEMU let go of the file before it is removed.
            let _ = qmp.execute("migrate_cancel", None, Duration::from_secs(1));
            let _ = wait(qmp, Instant::now() + CANCEL_WAIT, &mut || false);
            Err(fail(format!(
                "not done in time (migration {status}, {transferred} bytes of memory \
                 written): cancelled; give it longer, or free the disk it writes to"
            )))
        }
    }
}

/// Loads the guest's state from `file` into a QEMU started with
/// `-incoming defer`, then lets it run, within `deadline`. `gone` says
/// whether QEMU has exited (as it does when it cannot load the stream).
pub(crate) fn load(
    qmp: &mut Qmp,
    file: &File,
    path: &Path,
    deadline: Instant,
    gone: &mut dyn FnMut() -> bool,
) -> Result<(), VmmError> {
    let fail = |message: String| VmmError::State {
        action: RESTORING,
        path: path.to_path_buf(),
        message,
    };
    qmp.pass_fd(LOAD_FD, file.as_fd(), left(deadline))?;
    qmp.execute(
        "migrate-incoming",
        Some(json!({ "uri": format!("fd:{LOAD_FD}") })),
        left(deadline),
    )?;
    match wait(qmp, deadline, gone) {
        Ok(()) => {}
        Err(WaitError::Qmp(e)) => return Err(e),
        Err(WaitError::Failed(why)) => return Err(fail(format!("QEMU: {why}"))),
        Err(WaitError::TimedOut { status, .. }) => {
            return Err(fail(format!("not loaded in time (migration {status})")));
        }
    }
    // `paused` when the source was stopped before the save (as
    // `save_state` does); a stream of a running guest starts by itself.
    if qmp.query_status(left(deadline))? != "running" {
        qmp.execute("cont", None, left(deadline))?;
    }
    match qmp.query_status(left(deadline))?.as_str() {
        "running" => Ok(()),
        other => Err(fail(format!("loaded, but the VM is {other}, not running"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    /// A fake QEMU for a save: answers every command with `{}`,
    /// `query-status` with `paused` and `query-migrate` with `migration`;
    /// returns the commands it got.
    fn fake_qemu(socket: &Path, migration: &'static str) -> std::thread::JoinHandle<Vec<String>> {
        let listener = UnixListener::bind(socket).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            writer
                .write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"major\": 7, \"minor\": 2, \"micro\": 0}}}}\n")
                .unwrap();
            let mut seen = Vec::new();
            loop {
                let mut line = String::new();
                // The getfd line's file is discarded by a plain read.
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return seen;
                }
                let v: Value = serde_json::from_str(&line).unwrap();
                let command = v["execute"].as_str().unwrap().to_owned();
                let answer = match command.as_str() {
                    "query-migrate" => format!("{{\"return\": {migration}}}"),
                    "query-status" => {
                        r#"{"return": {"status": "paused", "running": false}}"#.to_owned()
                    }
                    "migrate_cancel" => {
                        seen.push(command);
                        return seen;
                    }
                    _ => "{\"return\": {}}".to_owned(),
                };
                if seen.last() != Some(&command) {
                    seen.push(command);
                }
                writer.write_all(answer.as_bytes()).unwrap();
                writer.write_all(b"\n").unwrap();
            }
        })
    }

    #[test]
    fn a_failed_save_quotes_qemu_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let server = fake_qemu(
            &socket,
            r#"{"status": "failed", "error-desc": "Unable to write to file: No space left on device"}"#,
        );
        let dest = dir.path().join("state");
        let mut qmp = Qmp::connect(&socket, Duration::from_secs(5)).unwrap();
        let err = save(&mut qmp, &dest, Instant::now() + Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "saving the VM's state to {}: QEMU: Unable to write to file: No space left on device",
                dest.display()
            )
        );
        assert!(!dest.exists());
        drop(qmp);
        assert_eq!(
            server.join().unwrap(),
            [
                "qmp_capabilities",
                "stop",
                "query-status",
                "migrate-set-parameters",
                "getfd",
                "migrate",
                "query-migrate"
            ]
        );
    }

    #[test]
    fn a_save_out_of_time_is_cancelled_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let server = fake_qemu(
            &socket,
            r#"{"status": "active", "ram": {"transferred": 1048576}}"#,
        );
        let dest = dir.path().join("state");
        let mut qmp = Qmp::connect(&socket, Duration::from_secs(5)).unwrap();
        let started = Instant::now();
        let err = save(&mut qmp, &dest, Instant::now() + Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not done in time (migration active, 1048576 bytes"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!dest.exists());
        drop(qmp);
        assert_eq!(server.join().unwrap().last().unwrap(), "migrate_cancel");
    }

    #[test]
    fn reads_query_migrate() {
        assert_eq!(
            Status::parse(&json!({"status": "completed", "total-time": 25})),
            Status::Completed
        );
        assert_eq!(
            Status::parse(&json!({"status": "active", "ram": {"transferred": 4096}})),
            Status::Running {
                status: "active".into(),
                transferred: 4096
            }
        );
        assert_eq!(
            Status::parse(&json!({})),
            Status::Running {
                status: "none".into(),
                transferred: 0
            }
        );
        assert_eq!(
            Status::parse(&json!({"status": "failed", "error-desc": "Unable to write to file"})),
            Status::Failed("Unable to write to file".into())
        );
        assert_eq!(
            Status::parse(&json!({"status": "cancelled"})),
            Status::Failed("the migration was cancelled".into())
        );
    }
}
