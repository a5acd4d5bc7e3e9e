//! Running host tools (apt, dpkg-deb, mkfs.ext4, mmdebstrap) with argument
//! vectors, never a shell, and turning failures into one-line errors that
//! carry the last lines of the tool's stderr.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// How many trailing stderr lines an error quotes.
const STDERR_TAIL_LINES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run {program}: {source} (is it installed?)")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr_tail}")]
    Failed {
        program: String,
        status: String,
        stderr_tail: String,
    },
    #[error("{program} failed ({status}): {tail} (full log: {})", log.display())]
    FailedLogged {
        program: String,
        status: String,
        tail: String,
        log: PathBuf,
    },
    #[error("cannot write the build log {}: {source}", log.display())]
    Log {
        log: PathBuf,
        source: std::io::Error,
    },
}

/// Runs `command` to completion, capturing its output; a non-zero exit is
/// an error quoting the end of stderr.
pub fn run(command: &mut Command) -> Result<Output, CommandError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command.output().map_err(|source| CommandError::Spawn {
        program: program.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(CommandError::Failed {
            program,
            status: output.status.to_string(),
            stderr_tail: tail(&String::from_utf8_lossy(&output.stderr)),
        });
    }
    Ok(output)
}

/// Runs `command` with its stdout and stderr appended to the log file at
/// `log` (after a `$ program args…` line), so long tools stream their
/// output where the user can follow it; a failure quotes the log's end.
pub fn run_logged(command: &mut Command, log: &Path) -> Result<(), CommandError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let log_err = |source| CommandError::Log {
        log: log.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(log_err)?;
    let args: Vec<String> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    writeln!(file, "$ {program} {}", args.join(" ")).map_err(log_err)?;
    let start = file.metadata().map_err(log_err)?.len();
    let stderr = file.try_clone().map_err(log_err)?;
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(stderr))
        .status()
        .map_err(|source| CommandError::Spawn {
            program: program.clone(),
            source,
        })?;
    if status.success() {
        return Ok(());
    }
    Err(CommandError::FailedLogged {
        program,
        status: status.to_string(),
        tail: tail(&read_from(log, start)),
        log: log.to_owned(),
    })
}

/// What `log` holds from byte `start` on (at most the last 64 KiB).
fn read_from(log: &Path, start: u64) -> String {
    let Ok(mut file) = File::open(log) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = start.max(len.saturating_sub(64 << 10));
    let mut text = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_ok() {
        let _ = file.read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The last few non-empty lines of `text`, joined with " | ".
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    if lines.is_empty() {
        "no error output".into()
    } else {
        lines[start..].join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\n\nb\nc\nd\n"), "b | c | d");
        assert_eq!(tail("  \n"), "no error output");
    }

    #[test]
    fn failures_quote_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo first >&2; echo boom >&2; exit 3"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("boom") && err.contains("exit status: 3"),
            "{err}"
        );
        let err = run(&mut Command::new("/nonexistent/tool"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot run /nonexistent/tool"), "{err}");
    }

    #[test]
    fn logged_runs_append_and_failures_name_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        run_logged(Command::new("sh").args(["-c", "echo hello"]), &log).unwrap();
        let err = run_logged(
            Command::new("sh").args(["-c", "echo out; echo 'E: no space left' >&2; exit 2"]),
            &log,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("E: no space left"), "{err}");
        assert!(err.contains("full log: "), "{err}");
        assert!(!err.contains("hello"), "only this run's output: {err}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("$ sh -c echo hello\nhello\n"), "{text}");
    }
}
