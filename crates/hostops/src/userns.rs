//! Writing the id maps of the owner's image build (`map_ids`): the build
//! runs in a user namespace where the owner is 0 and its subordinate ids
//! are 1.. (crates/images/src/userns.rs). Without root, the setuid
//! `newuidmap` writes those maps, which `NoNewPrivileges=yes` forbids; the
//! helper writes them instead, so the owner's unit keeps that hardening.
//!
//! Nothing of the map comes from the request: the helper reads the
//! owner's ranges from /etc/subuid and /etc/subgid itself, and maps only a
//! process that is the owner's (every uid and gid), that has made a user
//! namespace of its own, and whose map is not written yet. The process is
//! held by a directory descriptor of `/proc/PID` from the first check to
//! the last write, so a pid that is reused meanwhile fails (ESRCH) rather
//! than being mapped.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use banger_config::subids::{SUBORDINATE_COUNT, first_range};
use nix::fcntl::{OFlag, openat, readlinkat};
use nix::sys::stat::Mode;

use crate::HostOpsError;

/// Whose namespaces the helper maps, and where their ranges are listed.
#[derive(Clone, Debug)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub subuid: PathBuf,
    pub subgid: PathBuf,
}

impl Owner {
    pub fn new(uid: u32, gid: u32) -> Self {
        Owner {
            uid,
            gid,
            subuid: PathBuf::from("/etc/subuid"),
            subgid: PathBuf::from("/etc/subgid"),
        }
    }
}

fn refuse(message: String) -> HostOpsError {
    HostOpsError::Refused(message)
}

/// The start of the owner's range in `file`.
fn range(owner: &Owner, name: &str, file: &Path) -> Result<u32, HostOpsError> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(HostOpsError::Failed(format!(
                "cannot read {}: {e}",
                file.display()
            )));
        }
    };
    first_range(&text, name, owner.uid).map_err(|found| {
        refuse(format!(
            "{name} has no subordinate range of {SUBORDINATE_COUNT} ids in {} ({found}): \
             run 'sudo banger system install --owner {name}' again",
            file.display()
        ))
    })
}

/// Maps process `pid` (see the module docs).
pub fn map_owner(pid: u32, owner: &Owner) -> Result<(), HostOpsError> {
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(owner.uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .ok_or_else(|| refuse(format!("the owner's uid {} has no user", owner.uid)))?;
    let sub_uid = range(owner, &name, &owner.subuid)?;
    let sub_gid = range(owner, &name, &owner.subgid)?;

    let gone = |e: nix::Error| refuse(format!("process {pid}: {e}"));
    let proc = nix::fcntl::open(
        &PathBuf::from(format!("/proc/{pid}")),
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(gone)?;
    let mut status = String::new();
    std::fs::File::from(open_in(&proc, "status", OFlag::O_RDONLY).map_err(gone)?)
        .take(64 * 1024)
        .read_to_string(&mut status)
        .map_err(|e| refuse(format!("process {pid}: {e}")))?;
    for (field, want) in [("Uid:", owner.uid), ("Gid:", owner.gid)] {
        let all_owners = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .is_some_and(|ids| {
                let ids: Vec<&str> = ids.split_whitespace().collect();
                ids.len() == 4 && ids.iter().all(|id| id.parse() == Ok(want))
            });
        if !all_owners {
            return Err(refuse(format!(
                "process {pid} is not the owner's (every {} must be {want})",
                field.trim_end_matches(':').to_lowercase()
            )));
        }
    }
    let theirs = readlinkat(&proc, "ns/user").map_err(gone)?;
    let ours = std::fs::read_link("/proc/self/ns/user")
        .map_err(|e| HostOpsError::Failed(format!("cannot read this helper's namespace: {e}")))?;
    if theirs.as_os_str() == ours.as_os_str() {
        return Err(refuse(format!(
            "process {pid} has not made a user namespace of its own"
        )));
    }
    let mut current = String::new();
    std::fs::File::from(open_in(&proc, "uid_map", OFlag::O_RDONLY).map_err(gone)?)
        .take(4096)
        .read_to_string(&mut current)
        .map_err(|e| refuse(format!("process {pid}: {e}")))?;
    if !current.trim().is_empty() {
        return Err(refuse(format!("process {pid}'s ids are mapped already")));
    }
    for (file, id, sub) in [
        ("uid_map", owner.uid, sub_uid),
        ("gid_map", owner.gid, sub_gid),
    ] {
        // One write: the kernel takes a map whole, once.
        let text = format!("0 {id} 1\n1 {sub} {SUBORDINATE_COUNT}\n");
        let fd = open_in(&proc, file, OFlag::O_WRONLY).map_err(gone)?;
        std::fs::File::from(fd)
            .write_all(text.as_bytes())
            .map_err(|e| HostOpsError::Failed(format!("writing process {pid}'s {file}: {e}")))?;
    }
    Ok(())
}

fn open_in(dir: &OwnedFd, name: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    openat(
        dir.as_fd(),
        name,
        flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
}
