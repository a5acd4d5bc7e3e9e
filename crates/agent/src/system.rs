//! Readiness, hostname and clock.

use std::fs;
use std::path::Path;

use banger_agent_proto::{ClockRequest, HostnameRequest, PROTOCOL_VERSION, Ready, guest_paths};
use http::StatusCode;
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, clock_settime};

use crate::server::{Reply, error, json, no_content};
use crate::{Agent, etc};

/// systemd makes this at its start (`sd_booted()` looks for it).
const SYSTEMD_RUNTIME: &str = "/run/systemd/system";
/// The most of /etc/hosts read to rewrite it.
const MAX_HOSTS: u64 = 1024 * 1024;

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

pub async fn hostname(agent: &Agent, req: HostnameRequest) -> Reply {
    if let Err(e) = check_hostname(&req.name) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let root = agent.root.clone();
    match tokio::task::spawn_blocking(move || set_hostname(&root, &req.name)).await {
        Ok(Ok(())) => no_content(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub(crate) fn check_hostname(name: &str) -> Result<(), String> {
    if valid_hostname(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a hostname: use 1 to 64 letters, digits, '-' and '.'"
        ))
    }
}

/// The kernel's hostname, `/etc/hostname`, and the 127.0.1.1 line of
/// `/etc/hosts` (as banger-init sets them at boot), the files under
/// `root`. `name` was checked by [`check_hostname`].
pub(crate) fn set_hostname(root: &Path, name: &str) -> Result<(), String> {
    nix::unistd::sethostname(name).map_err(|e| format!("sethostname: {}", e.desc()))?;
    let etc = root.join("etc");
    let hostname = etc.join("hostname");
    etc::replace_file(
        &hostname,
        format!("{name}\n").as_bytes(),
        etc::mode_or(&hostname, 0o644),
    )
    .map_err(|e| format!("writing {}: {e}", hostname.display()))?;
    let hosts = etc.join("hosts");
    let existing = etc::read_bounded(&hosts, MAX_HOSTS)
        .map_err(|e| format!("reading {}: {e}", hosts.display()))?;
    etc::replace_file(
        &hosts,
        etc::hosts_with(&existing, name).as_bytes(),
        etc::mode_or(&hosts, 0o644),
    )
    .map_err(|e| format!("writing {}: {e}", hosts.display()))
}

pub fn clock(req: ClockRequest) -> Reply {
    match set_clock(&req) {
        Ok(()) => no_content(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Steps the guest's clock to the host's time.
pub(crate) fn set_clock(req: &ClockRequest) -> Result<(), String> {
    let secs = (req.unix_nanos / 1_000_000_000) as i64;
    let nanos = (req.unix_nanos % 1_000_000_000) as i64;
    clock_settime(ClockId::CLOCK_REALTIME, TimeSpec::new(secs, nanos))
        .map_err(|e| format!("setting the clock: {}", e.desc()))
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
}
