//! Running the OpenSSH tools and reading what they print.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::SshError;

pub(crate) const SSH: &str = "ssh";
pub(crate) const SSH_KEYGEN: &str = "ssh-keygen";

/// Runs `ssh-keygen` with `args` (stdin from /dev/null, so it can never
/// prompt) and returns its output, or an error naming `action` with the
/// last line it printed.
pub(crate) fn keygen(args: &[&OsStr], action: impl FnOnce() -> String) -> Result<Output, SshError> {
    let output = Command::new(SSH_KEYGEN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(SSH_KEYGEN, e))?;
    if !output.status.success() {
        return Err(SshError::ToolFailed {
            action: action(),
            status: describe_status(output.status),
            stderr: last_line(&String::from_utf8_lossy(&output.stderr)),
        });
    }
    Ok(output)
}

pub(crate) fn spawn_error(tool: &'static str, e: io::Error) -> SshError {
    if e.kind() == io::ErrorKind::NotFound {
        SshError::ToolMissing { tool }
    } else {
        SshError::io(format!("running {tool}"), e)
    }
}

pub(crate) fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// The last non-empty line of what a tool printed, trimmed, so it fits in
/// a one-line error.
pub(crate) fn last_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

/// Waits for `child` (stdout and stdin not piped) until `deadline`, killing
/// it if it is still running then; returns its status (None when killed)
/// and everything it wrote to its piped stderr.
pub(crate) fn wait_until(
    mut child: Child,
    deadline: Instant,
) -> io::Result<(Option<ExitStatus>, String)> {
    // ssh's error output is a few lines: the pipe cannot fill before exit.
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep((deadline - now).min(Duration::from_millis(20)));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let mut bytes = Vec::new();
        pipe.read_to_end(&mut bytes)?;
        stderr = String::from_utf8_lossy(&bytes).into_owned();
    }
    Ok((status, stderr))
}

/// A path as the value of an `ssh -o Option=value` that names a file.
/// ssh splits such values into words (double quotes group, backslash
/// escapes `"` and `\`) and expands `%` tokens in them, so `%` is doubled
/// and the path quoted when it holds anything the splitter would act on.
/// (`${VAR}` is expanded too and has no escape: banger's paths never hold
/// it.)
pub(crate) fn config_path(option: &str, path: &Path) -> OsString {
    config_path_then(option, path, "")
}

/// [`config_path`] followed by `tokens`, left for ssh to expand (e.g.
/// `/%C` after a directory).
pub(crate) fn config_path_then(option: &str, path: &Path, tokens: &str) -> OsString {
    let raw = path.as_os_str().as_bytes();
    let needs_quotes = raw.is_empty()
        || raw
            .iter()
            .any(|b| matches!(b, b' ' | b'\t' | b'"' | b'\'' | b'\\' | b'#' | b'='));
    let mut value = Vec::with_capacity(raw.len() + option.len() + 3);
    value.extend_from_slice(option.as_bytes());
    value.push(b'=');
    if needs_quotes {
        value.push(b'"');
    }
    for &b in raw {
        match b {
            b'%' => value.extend_from_slice(b"%%"),
            b'"' | b'\\' if needs_quotes => {
                value.push(b'\\');
                value.push(b);
            }
            _ => value.push(b),
        }
    }
    value.extend_from_slice(tokens.as_bytes());
    if needs_quotes {
        value.push(b'"');
    }
    OsString::from_vec(value)
}

/// How ssh failed, read from what it printed at `LogLevel=ERROR`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The guest presented a key other than the pinned one; carries the
    /// HostKeyAlias ssh named.
    HostKeyChanged(Option<String>),
    /// No key is pinned for the alias (which it carries).
    HostKeyNotPinned(Option<String>),
    /// Anything else ssh itself reported (refused, timed out, auth, mux).
    Ssh(String),
    /// Nothing ssh would print: the remote command's own output.
    NotSsh,
}

/// Lines OpenSSH's client prints (at LogLevel=ERROR) when it, not the
/// remote command, fails.
const SSH_ERROR_PREFIXES: &[&str] = &[
    "ssh: ",
    "ssh_",
    "Connection closed by",
    "Connection reset by",
    "Connection timed out",
    "Connection refused",
    "Connection to ",
    "kex_exchange_identification:",
    "banner exchange:",
    "Host key verification failed",
    "Host key for ",
    "Permission denied (",
    "Received disconnect from",
    "Disconnected from",
    "Control socket ",
    "ControlSocket ",
    "mux_client_",
    "muxclient:",
    "unix_listener:",
    "client_loop:",
    "Timeout, server",
    "Load key ",
    "Bad owner or permissions",
    "Unable to negotiate",
    "Warning: Identity file",
    "no such identity:",
    "packet_write_wait:",
    "Bad packet length",
    "Corrupted MAC",
    "Shared connection to",
];

pub(crate) fn classify(stderr: &str) -> Failure {
    if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || stderr.contains("has changed and you have requested strict checking")
    {
        let alias = stderr.lines().find_map(|line| {
            line.strip_prefix("Host key for ")
                .and_then(|rest| rest.split_once(" has changed"))
                .map(|(alias, _)| alias.to_string())
        });
        return Failure::HostKeyChanged(alias);
    }
    if stderr.contains("host key is known for") && stderr.contains("strict checking") {
        let alias = stderr.lines().find_map(|line| {
            line.split_once(" host key is known for ")
                .and_then(|(_, rest)| rest.split_once(" and you have"))
                .map(|(alias, _)| alias.to_string())
        });
        return Failure::HostKeyNotPinned(alias);
    }
    if stderr.contains("Host key verification failed") {
        // Any other verification failure (e.g. only keys of another type
        // pinned) is a refusal too: never retried.
        return Failure::HostKeyChanged(None);
    }
    let ssh_line = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| SSH_ERROR_PREFIXES.iter().any(|p| l.starts_with(p)));
    match ssh_line {
        Some(line) => Failure::Ssh(line.to_string()),
        None => Failure::NotSsh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_paths_are_escaped_for_ssh() {
        assert_eq!(
            config_path("UserKnownHostsFile", Path::new("/a/b")),
            "UserKnownHostsFile=/a/b"
        );
        assert_eq!(
            config_path("IdentityFile", Path::new("/a/100%/k")),
            "IdentityFile=/a/100%%/k"
        );
        assert_eq!(
            config_path("ControlPath", Path::new(r#"/a b/"q"\k"#)),
            r#"ControlPath="/a b/\"q\"\\k""#
        );
    }

    #[test]
    fn ssh_failures_are_told_apart() {
        let changed = "@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
                       Host key for web.vm has changed and you have requested strict checking.\n\
                       Host key verification failed.\n";
        assert_eq!(
            classify(changed),
            Failure::HostKeyChanged(Some("web.vm".into()))
        );
        let unknown = "No ED25519 host key is known for web.vm and you have requested strict checking.\r\n\
                       Host key verification failed.\r\n";
        assert_eq!(
            classify(unknown),
            Failure::HostKeyNotPinned(Some("web.vm".into()))
        );
        assert_eq!(
            classify("ssh: connect to host 172.16.0.5 port 22: Connection refused\r\n"),
            Failure::Ssh("ssh: connect to host 172.16.0.5 port 22: Connection refused".into())
        );
        assert_eq!(
            classify("Connection timed out during banner exchange\n"),
            Failure::Ssh("Connection timed out during banner exchange".into())
        );
        assert_eq!(classify("make: *** [test] Error 2\n"), Failure::NotSsh);
        assert_eq!(classify(""), Failure::NotSsh);
    }

    #[test]
    fn last_line_skips_blank_lines() {
        assert_eq!(last_line("a\r\nb  \r\n\n"), "b");
        assert_eq!(last_line(""), "");
    }
}
