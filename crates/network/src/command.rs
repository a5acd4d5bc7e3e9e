//! Host commands (ip, nft, iptables): found on PATH or in the sbin
//! directories a daemon's PATH often lacks, run with an argument vector
//! (never a shell), their stderr's last lines kept for the error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::NetError;

/// The path of `tool`, or `None` when the host has none (PATH, then the
/// sbin directories a daemon's PATH often lacks).
pub use banger_config::find_tool;

pub fn require_tool(tool: &'static str, package: &'static str) -> Result<PathBuf, NetError> {
    find_tool(tool).ok_or(NetError::ToolMissing { tool, package })
}

/// How a command line reads in an error: `nft -f -`.
pub fn describe(program: &Path, args: &[&str]) -> String {
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.display().to_string());
    std::iter::once(name.as_str())
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `program args`, feeding `stdin` if given; the output whatever the
/// exit status.
pub fn output(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<Output, NetError> {
    let spawn_error = |source| NetError::Spawn {
        command: describe(program, args),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(spawn_error)?;
    }
    child.wait_with_output().map_err(spawn_error)
}

/// Runs `program args` and fails unless it exits 0; its stdout.
pub fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, NetError> {
    let out = output(program, args, stdin)?;
    if !out.status.success() {
        return Err(failed(program, args, &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn failed(program: &Path, args: &[&str], out: &Output) -> NetError {
    NetError::Command {
        command: describe(program, args),
        status: match out.status.code() {
            Some(code) => format!("exit {code}"),
            None => "killed by a signal".into(),
        },
        stderr: stderr_tail(&String::from_utf8_lossy(&out.stderr)),
    }
}

/// The last three non-empty lines of stderr, joined into one line.
pub fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    if tail.is_empty() {
        "no error output".into()
    } else {
        tail.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_tail_keeps_the_last_lines_on_one_line() {
        assert_eq!(stderr_tail(""), "no error output");
        assert_eq!(stderr_tail("a\n\nb\nc\nd\n"), "b | c | d");
    }

    #[test]
    fn commands_are_described_by_file_name() {
        assert_eq!(
            describe(Path::new("/usr/sbin/nft"), &["-f", "-"]),
            "nft -f -"
        );
    }

    #[test]
    fn a_failing_command_reports_status_and_stderr() {
        let sh = find_tool("sh").unwrap();
        let err = run(&sh, &["-c", "echo oops >&2; exit 3"], None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sh -c echo oops >&2; exit 3 failed (exit 3): oops"
        );
        let out = run(&find_tool("cat").unwrap(), &[], Some("fed")).unwrap();
        assert_eq!(out, "fed");
    }
}
