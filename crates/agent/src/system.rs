//! Readiness, hostname and clock.

use std::fs;
use std::io::Write;
use std::path::Path;

use banger_agent_proto::{ClockRequest, HostnameRequest, PROTOCOL_VERSION, Ready, guest_paths};
use http::StatusCode;
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, clock_settime};

use crate::server::{Reply, error, json, no_content};

/// systemd makes this at its start (`sd_booted()` looks for it).
const SYSTEMD_RUNTIME: &str = "/run/systemd/system";
const HOSTNAME_FILE: &str = "/etc/hostname";

pub async fn ready() -> Reply {
    match tokio::task::spawn_blocking(readiness).await {
        Ok(ready) => json(StatusCode::OK, &ready),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn readiness() -> Ready {
    let systemd = Path::new(SYSTEMD_RUNTIME).is_dir();
    let mark = |path: &str| !systemd || Path::new(path).exists();
    Ready {
        protocol: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        systemd,
        sysinit: mark(guest_paths::SYSINIT_MARK),
        multi_user: mark(guest_paths::MULTI_USER_MARK),
        uptime_ms: fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|text| uptime_ms(&text))
            .unwrap_or(0),
    }
}

/// The first field of /proc/uptime ("12.34 56.78"), in milliseconds.
fn uptime_ms(text: &str) -> Option<u64> {
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

/// A hostname the kernel and resolvers accept: 1 to 64 of letters,
/// digits, `-` and `.`, not starting with `-`.
fn valid_hostname(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

pub async fn hostname(req: HostnameRequest) -> Reply {
    if !valid_hostname(&req.name) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "{:?} is not a hostname: use 1 to 64 letters, digits, '-' and '.'",
                req.name
            ),
        );
    }
    let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
        nix::unistd::sethostname(&req.name).map_err(|e| format!("sethostname: {}", e.desc()))?;
        replace_file(
            Path::new(HOSTNAME_FILE),
            format!("{}\n", req.name).as_bytes(),
        )
        .map_err(|e| format!("writing {HOSTNAME_FILE}: {e}"))
    })
    .await;
    match result {
        Ok(Ok(())) => no_content(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Writes a sibling file and renames it over `path`: a symlink at `path`
/// is replaced, never written through.
fn replace_file(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.banger-agent"));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)?;
    file.write_all(content)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

pub fn clock(req: ClockRequest) -> Reply {
    let secs = (req.unix_nanos / 1_000_000_000) as i64;
    let nanos = (req.unix_nanos % 1_000_000_000) as i64;
    match clock_settime(ClockId::CLOCK_REALTIME, TimeSpec::new(secs, nanos)) {
        Ok(()) => no_content(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("setting the clock: {}", e.desc()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_and_hostnames() {
        assert_eq!(uptime_ms("12.34 56.78\n"), Some(12340));
        assert_eq!(uptime_ms(""), None);
        assert!(valid_hostname("dev-box.vm"));
        assert!(!valid_hostname(""));
        assert!(!valid_hostname("-x"));
        assert!(!valid_hostname("a b"));
        assert!(!valid_hostname(&"a".repeat(65)));
    }

    #[test]
    fn replacing_a_file_does_not_write_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "theirs").unwrap();
        let link = dir.path().join("hostname");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        replace_file(&link, b"ours\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "theirs");
        assert_eq!(fs::read_to_string(&link).unwrap(), "ours\n");
    }
}
