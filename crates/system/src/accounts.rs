//! The owner's account: who they are, their subordinate uid/gid range
//! (unprivileged image builds map ids with it: `mmdebstrap --mode=unshare`),
//! and their membership of the `kvm` group. Changes go through `usermod`,
//! which keeps the account files' locking and format.

use std::ffi::CString;
use std::path::PathBuf;
use std::process::Command;

use banger_images::host_command;
use nix::unistd::{Group, User, getgrouplist};

use crate::SystemError;

/// The group that opens `/dev/kvm` on Debian and most distributions.
pub const KVM_GROUP: &str = "kvm";
/// The size of the range given to an owner that has none: 65536, what
/// useradd gives, and what a Debian root filesystem's ids fit in.
pub const SUBID_COUNT: u64 = 65536;
/// Where useradd starts handing out ranges (SUB_UID_MIN in login.defs).
const SUBID_MIN: u64 = 100_000;

/// The user the install runs its daemon as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// The user named `name` (getpwnam): not root, and with a name a unit's
/// `User=` can hold.
pub fn resolve_owner(name: &str) -> Result<Owner, SystemError> {
    let valid = !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return Err(SystemError::OddOwnerName(name.to_string()));
    }
    let user = User::from_name(name)
        .map_err(|source| SystemError::OwnerLookup {
            name: name.to_string(),
            source,
        })?
        .ok_or_else(|| SystemError::UnknownOwner(name.to_string()))?;
    if user.uid.is_root() {
        return Err(SystemError::RootOwner);
    }
    Ok(Owner {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        home: user.dir,
    })
}

/// One line of /etc/subuid or /etc/subgid: `user:first:count`, where the
/// user may be a name or a uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubidEntry {
    pub user: String,
    pub start: u64,
    pub count: u64,
}

pub fn parse_subids(text: &str) -> Vec<SubidEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.trim().splitn(3, ':');
            let user = parts.next()?.to_string();
            let start = parts.next()?.parse().ok()?;
            let count = parts.next()?.parse().ok()?;
            Some(SubidEntry { user, start, count })
        })
        .collect()
}

/// Whether `owner` already has a range (by name or by uid).
pub fn has_range(entries: &[SubidEntry], owner: &Owner) -> bool {
    let uid = owner.uid.to_string();
    entries
        .iter()
        .any(|e| e.count > 0 && (e.user == owner.name || e.user == uid))
}

/// Where a new range starts: past every existing one, so it overlaps
/// none (useradd hands them out the same way: 100000, 165536, ...).
pub fn free_range(entries: &[SubidEntry]) -> u64 {
    entries
        .iter()
        .map(|e| e.start.saturating_add(e.count))
        .max()
        .unwrap_or(0)
        .max(SUBID_MIN)
}

/// Gives `owner` a subordinate uid and gid range where they have none;
/// says what it did, or None when both were there.
pub fn ensure_subids(owner: &Owner) -> Result<Option<String>, SystemError> {
    let mut done = Vec::new();
    for (file, flag) in [
        ("/etc/subuid", "--add-subuids"),
        ("/etc/subgid", "--add-subgids"),
    ] {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(SystemError::io("cannot read", file)(e)),
        };
        let entries = parse_subids(&text);
        if has_range(&entries, owner) {
            continue;
        }
        let start = free_range(&entries);
        let range = format!("{start}-{}", start + SUBID_COUNT - 1);
        host_command::run(
            Command::new("usermod")
                .args([flag, &range, "--"])
                .arg(&owner.name),
        )?;
        done.push(format!("{file} {range}"));
    }
    Ok((!done.is_empty()).then(|| done.join(", ")))
}

/// The `kvm` group, when the host has one.
pub fn kvm_group() -> Option<Group> {
    Group::from_name(KVM_GROUP).ok().flatten()
}

/// Whether `user` (with primary group `gid`) is in `group`, as login
/// would make it (getgrouplist: every NSS source, not just /etc/group).
pub fn in_group(user: &str, gid: u32, group: &Group) -> bool {
    let Ok(name) = CString::new(user) else {
        return false;
    };
    getgrouplist(&name, nix::unistd::Gid::from_raw(gid))
        .is_ok_and(|groups| groups.contains(&group.gid))
}

/// Adds `owner` to the `kvm` group when the host has one and they are not
/// in it; true when it did.
pub fn ensure_kvm_member(owner: &Owner) -> Result<bool, SystemError> {
    let Some(group) = kvm_group() else {
        return Ok(false);
    };
    if in_group(&owner.name, owner.gid, &group) {
        return Ok(false);
    }
    host_command::run(
        Command::new("usermod")
            .args(["--append", "--groups", KVM_GROUP, "--"])
            .arg(&owner.name),
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Owner {
        Owner {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/alice".into(),
        }
    }

    #[test]
    fn ranges_are_read_and_a_new_one_overlaps_none() {
        let entries = parse_subids("# comment\nbob:100000:65536\n1001:165536:65536\nbad line\n");
        assert_eq!(entries.len(), 2);
        assert_eq!(free_range(&entries), 231_072);
        assert!(!has_range(&entries, &alice()));
        let odd = parse_subids("bob:100000:70000\n");
        assert_eq!(free_range(&odd), 170_000);
        assert_eq!(free_range(&[]), 100_000);
    }

    #[test]
    fn an_owner_with_a_range_by_name_or_uid_keeps_it() {
        assert!(has_range(&parse_subids("alice:300000:65536\n"), &alice()));
        assert!(has_range(&parse_subids("1000:300000:65536\n"), &alice()));
        assert!(!has_range(&parse_subids("alice:300000:0\n"), &alice()));
    }

    #[test]
    fn root_unknown_and_odd_owners_are_refused() {
        assert!(matches!(resolve_owner("root"), Err(SystemError::RootOwner)));
        assert!(matches!(
            resolve_owner("no-such-user-banger"),
            Err(SystemError::UnknownOwner(_))
        ));
        for odd in ["", "-rf", "a b", "a\nb", "x:y"] {
            assert!(
                matches!(resolve_owner(odd), Err(SystemError::OddOwnerName(_))),
                "{odd:?}"
            );
        }
        let e = resolve_owner("root").unwrap_err().to_string();
        assert!(e.contains("--owner"), "{e}");
    }
}
