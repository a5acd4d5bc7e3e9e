//! Running host tools (apt, dpkg-deb, mkfs.ext4, mmdebstrap) with argument
//! vectors, never a shell, and turning failures into one-line errors that
//! carry the last lines of the tool's stderr.

use std::process::{Command, Output};

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
}
