//! Users from the guest's /etc/passwd and their groups from its
//! /etc/group, parsed here: the agent is a static glibc binary, and
//! glibc's NSS (getpwnam, getgrouplist) would try to load shared modules.

use std::io::Read;
use std::path::Path;

/// Where the accounts are.
pub const PASSWD: &str = "/etc/passwd";
/// Where the groups are.
pub const GROUP: &str = "/etc/group";
/// A passwd or group file bigger than this is not read past it.
const MAX_FILE: u64 = 4 << 20;
/// The kernel takes no more supplementary groups (NGROUPS_MAX).
const MAX_GROUPS: usize = 65536;

/// What a command runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

impl User {
    /// root as the guest has it, or the usual root when its passwd lacks
    /// one (an image without /etc/passwd).
    fn default_root() -> Self {
        Self {
            name: "root".into(),
            uid: 0,
            gid: 0,
            home: "/root".into(),
            shell: "/bin/sh".into(),
        }
    }
}

/// The entry for `name` in a passwd file's text.
pub fn find(passwd: &str, name: &str) -> Option<User> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[0] != name {
            return None;
        }
        Some(User {
            name: f[0].to_owned(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: if f[5].is_empty() { "/" } else { f[5] }.to_owned(),
            shell: if f[6].is_empty() { "/bin/sh" } else { f[6] }.to_owned(),
        })
    })
}

/// Looks `name` up in the guest's passwd (root when `None`). An unknown
/// user is an error that names it.
pub fn lookup(name: Option<&str>) -> Result<User, String> {
    lookup_in(Path::new(PASSWD), name)
}

pub fn lookup_in(passwd: &Path, name: Option<&str>) -> Result<User, String> {
    let text = read_account_file(passwd)?;
    match name {
        None | Some("root") => Ok(find(&text, "root").unwrap_or_else(User::default_root)),
        Some(name) => find(&text, name)
            .ok_or_else(|| format!("no user {name:?} in the guest's {}", passwd.display())),
    }
}

/// The groups `user` is in, as initgroups(3) makes them: its primary
/// group first, then every group of the guest's /etc/group that lists it
/// as a member. No group file is the primary group alone.
pub fn groups(user: &User) -> Result<Vec<u32>, String> {
    groups_in(Path::new(GROUP), user)
}

pub fn groups_in(group: &Path, user: &User) -> Result<Vec<u32>, String> {
    Ok(groups_of(&read_account_file(group)?, user))
}

/// [`groups`] from a group file's text. A line that is not
/// `name:password:gid:members` is skipped; a group is listed once.
pub fn groups_of(group: &str, user: &User) -> Vec<u32> {
    let mut gids = vec![user.gid];
    for line in group.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || !f[3].split(',').any(|m| m == user.name) {
            continue;
        }
        let Ok(gid) = f[2].parse() else { continue };
        if !gids.contains(&gid) {
            gids.push(gid);
        }
    }
    gids.truncate(MAX_GROUPS);
    gids
}

/// An account file's text, up to [`MAX_FILE`]; none is empty.
fn read_account_file(path: &Path) -> Result<String, String> {
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(String::new());
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_TEXT: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        broken:x:notanumber:1::/:/bin/sh\n\
        dev:x:1000:1000:Dev,,,:/home/dev:\n";

    #[test]
    fn entries_are_found_by_name() {
        let dev = find(PASSWD_TEXT, "dev").unwrap();
        assert_eq!((dev.uid, dev.gid), (1000, 1000));
        assert_eq!(dev.home, "/home/dev");
        assert_eq!(dev.shell, "/bin/sh", "an empty shell is /bin/sh");
        assert_eq!(find(PASSWD_TEXT, "root").unwrap().shell, "/bin/bash");
        assert!(find(PASSWD_TEXT, "broken").is_none());
        assert!(find(PASSWD_TEXT, "nobody").is_none());
        assert!(find(PASSWD_TEXT, "ro").is_none());
    }

    #[test]
    fn root_exists_even_without_a_passwd() {
        let dir = tempfile::tempdir().unwrap();
        let root = lookup_in(&dir.path().join("passwd"), None).unwrap();
        assert_eq!((root.uid, root.home.as_str()), (0, "/root"));
        assert_eq!(root.shell, "/bin/sh");
        let err = lookup_in(&dir.path().join("passwd"), Some("dev")).unwrap_err();
        assert!(err.contains("no user \"dev\""), "{err}");
    }

    #[test]
    fn groups_are_the_primary_one_then_those_listing_the_user() {
        let dev = find(PASSWD_TEXT, "dev").unwrap();
        let group = "root:x:0:\n\
            dev:x:1000:\n\
            sudo:x:27:alice,dev\n\
            docker:x:999:dev\n\
            devs:x:1001:developer\n\
            again:x:27:dev\n\
            broken:x:nan:dev\n\
            short:x:5\n\
            audio:x:29:alice, dev\n";
        assert_eq!(groups_of(group, &dev), [1000, 27, 999]);
        let root = find(PASSWD_TEXT, "root").unwrap();
        assert_eq!(groups_of(group, &root), [0]);
        assert_eq!(groups_of("", &dev), [1000]);

        let dir = tempfile::tempdir().unwrap();
        assert_eq!(groups_in(&dir.path().join("group"), &dev).unwrap(), [1000]);
        std::fs::write(dir.path().join("group"), group).unwrap();
        assert_eq!(
            groups_in(&dir.path().join("group"), &dev).unwrap(),
            [1000, 27, 999]
        );
    }
}
