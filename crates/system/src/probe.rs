//! What `banger system status` and `banger doctor` look at, without
//! changing anything and without root: the installed binaries' versions
//! and whether each socket is there and takes a connection.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// A socket's state, as far as connecting to it tells.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum SocketState {
    Absent,
    /// It exists but refused this user (or nothing listens on it).
    Refused(String),
    Connects,
}

impl SocketState {
    pub fn of(path: &Path) -> Self {
        match UnixStream::connect(path) {
            Ok(_) => SocketState::Connects,
            Err(e) if e.kind() == io::ErrorKind::NotFound => SocketState::Absent,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => SocketState::Refused(
                "permission denied: only the owner and root may connect".into(),
            ),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                SocketState::Refused("nothing listens on it".into())
            }
            Err(e) => SocketState::Refused(e.to_string()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            SocketState::Absent => "absent".into(),
            SocketState::Refused(why) => format!("present, but {why}"),
            SocketState::Connects => "answers".into(),
        }
    }
}

/// What the root helper's socket says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HelperProbe {
    pub socket: SocketState,
    /// The helper's own version, once it can be asked.
    pub version: Option<String>,
}

/// The root helper at `socket`.
///
/// The one place to swap in the helper's RPC once banger-hostops lands:
/// `banger_hostops::HelperClient::new(socket).ping()` returns the helper's
/// version (and proves the SO_PEERCRED check lets this user in). Until
/// then a connection that is accepted is all that is known.
pub fn helper(socket: &Path) -> HelperProbe {
    let socket_state = SocketState::of(socket);
    // Only the owner is answered: for anyone else the version stays
    // unknown, and the socket's state says it listens.
    let version = match socket_state {
        SocketState::Connects => banger_hostops::HelperClient::new(socket).ping().ok(),
        _ => None,
    };
    HelperProbe {
        socket: socket_state,
        version,
    }
}

/// `BINARY --version`'s version (clap prints `NAME VERSION`).
pub fn binary_version(binary: &Path) -> Result<String, String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_whitespace().nth(1) {
        Some(v) if out.status.success() => Ok(v.to_string()),
        _ => Err(format!(
            "{} --version said nothing usable ({})",
            binary.display(),
            out.status
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_absent_refused_or_answering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        assert_eq!(SocketState::of(&path), SocketState::Absent);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(SocketState::of(&path), SocketState::Connects);
        drop(listener);
        // A stale socket file: present, nothing listening.
        assert!(matches!(SocketState::of(&path), SocketState::Refused(_)));
        assert!(
            SocketState::of(&path)
                .describe()
                .starts_with("present, but")
        );
    }

    #[test]
    fn versions_are_read_from_clap_output() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake");
        std::fs::write(&fake, "#!/bin/sh\necho \"bangerd 9.9.9\"\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert_eq!(binary_version(&fake).unwrap(), "9.9.9");
        assert!(binary_version(&dir.path().join("absent")).is_err());
    }
}
