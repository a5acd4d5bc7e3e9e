//! Building images without root: the tools that must own files as the
//! image's users (mmdebstrap, `mkfs.ext4 -d` reading them back, removing
//! the tree) run in a user namespace where the owner, the unprivileged
//! user bangerd runs as, is uid and gid 0, and ids 1 to 65536 are the
//! owner's first subordinate range from /etc/subuid and /etc/subgid.
//!
//! So the image's root is the owner on the host: the files root owns in
//! the tree, and the ext4 written from it, belong to the owner, who can
//! read, replace and delete them without the namespace; only files of the
//! image's other users (`_apt`, `systemd-journal`, …) sit on subordinate
//! ids, and only the namespace's root can change those.
//!
//! Writing the mapping of ids other than one's own needs privilege: today
//! the setuid `newuidmap` and `newgidmap` from the `uidmap` package. They
//! cannot gain privilege under systemd's `NoNewPrivileges=yes`, so the
//! mapping sits behind [`IdMapper`]: the child unshares its user
//! namespace, tells the parent its pid, and waits on a pipe until the
//! mapper has written its maps (later the root helper can write
//! `/proc/PID/uid_map` itself, for the owner's child, under NNP).
//!
//! mmdebstrap runs in `--mode=unshare` inside this namespace: as root there
//! it makes no namespace or mapping of its own (its own would map 0 to the
//! first subordinate id instead of the owner), so every step sees one
//! mapping.
// The child side of the handshake runs between fork and exec.
#![allow(unsafe_code)]

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use crate::host_command::{self, CommandError};

/// Ids the namespace maps beyond 0: the owner's subordinate range must
/// hold this many. Debian's own ids go up to 65534 (`nobody`).
pub use banger_config::subids::SUBORDINATE_COUNT;

/// What to run to give the owner subordinate ids, for error messages.
fn grant_hint(user: &str) -> String {
    format!(
        "run 'sudo banger system install --owner {user}', or 'sudo usermod --add-subuids \
         100000-165535 --add-subgids 100000-165535 {user}'"
    )
}

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error(
        "building images as {user} needs subordinate {kind}s of at least {SUBORDINATE_COUNT} ids \
         in {file}, and {user} has {found}: {}",
        grant_hint(user)
    )]
    NoSubordinateIds {
        user: String,
        kind: &'static str,
        file: &'static str,
        found: String,
    },
    #[error("cannot read {file}: {source}")]
    ReadIds {
        file: &'static str,
        source: io::Error,
    },
    #[error("uid {0} has no entry in /etc/passwd: run bangerd as a user with a name")]
    NoUser(u32),
    #[error(
        "this process runs with group {gid}, not {user}'s primary group {primary}, and \
         newuidmap maps only a process of its user's primary group: run bangerd with \
         {user}'s primary group (in its unit, no Group= or Group={primary})"
    )]
    NotPrimaryGroup {
        user: String,
        gid: u32,
        primary: u32,
    },
    #[error(
        "building images without root needs {tool}, which is not installed: run 'sudo apt-get \
         install uidmap'"
    )]
    NoMapTool { tool: &'static str },
    #[error(
        "building images without root needs the setuid {tool}, and this process runs with \
         no_new_privs (systemd NoNewPrivileges=yes), under which it cannot map ids: drop \
         NoNewPrivileges from bangerd's unit, or build as root"
    )]
    NoNewPrivileges { tool: &'static str },
    #[error(
        "unprivileged user namespaces are disabled ({knob} is 0): run 'sudo sysctl -w \
         {sysctl}={value}' (and set it in /etc/sysctl.d to keep it), or build as root"
    )]
    Disabled {
        knob: &'static str,
        sysctl: &'static str,
        value: &'static str,
    },
    #[error(
        "cannot map the owner's ids into the build's user namespace: {0}; check that \
         /etc/subuid and /etc/subgid grant them"
    )]
    Map(CommandError),
    /// A mapper outside this crate (the root helper) failed, in its words.
    #[error("cannot map the owner's ids into the build's user namespace: {0}")]
    MapBy(String),
    #[error(
        "AppArmor denies unprivileged user namespaces their capabilities \
         (kernel.apparmor_restrict_unprivileged_userns is 1): give bangerd an AppArmor profile \
         that allows 'userns,', or run 'sudo sysctl -w \
         kernel.apparmor_restrict_unprivileged_userns=0', or build as root"
    )]
    AppArmor,
    #[error(
        "cannot create a user namespace for the build: {0}; check the sysctls \
         kernel.unprivileged_userns_clone and user.max_user_namespaces, or build as root"
    )]
    Unshare(io::Error),
}

/// The ids the namespace maps: 0 to the owner, 1..=65536 to the start of
/// its subordinate ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdMap {
    /// The owner's name, for messages.
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub sub_uid: u32,
    pub sub_gid: u32,
}

impl IdMap {
    /// The running process's (real uid, effective gid) with the first
    /// large enough subordinate ranges /etc/subuid and /etc/subgid grant.
    pub fn of_this_process() -> Result<Self, UsernsError> {
        let uid = nix::unistd::getuid();
        let gid = nix::unistd::getegid().as_raw();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .ok_or(UsernsError::NoUser(uid.as_raw()))?;
        let read = |file: &'static str| match fs::read_to_string(file) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(UsernsError::ReadIds { file, source }),
        };
        // newuidmap and newgidmap refuse a target whose group is not its
        // user's primary group (checked by hand: "owned by a different
        // user"), and the owner's files made outside the namespace get
        // this group, which must be the one mapped to 0.
        let primary = user.gid.as_raw();
        let real_gid = nix::unistd::getgid().as_raw();
        if gid != primary || real_gid != primary {
            return Err(UsernsError::NotPrimaryGroup {
                user: user.name,
                gid: if gid != primary { gid } else { real_gid },
                primary,
            });
        }
        let uid = uid.as_raw();
        let sub_uid = banger_config::subids::first_range(&read("/etc/subuid")?, &user.name, uid)
            .map_err(|found| UsernsError::NoSubordinateIds {
                user: user.name.clone(),
                kind: "uid",
                file: "/etc/subuid",
                found,
            })?;
        let sub_gid = banger_config::subids::first_range(&read("/etc/subgid")?, &user.name, uid)
            .map_err(|found| UsernsError::NoSubordinateIds {
                user: user.name.clone(),
                kind: "gid",
                file: "/etc/subgid",
                found,
            })?;
        Ok(IdMap {
            user: user.name,
            uid,
            gid,
            sub_uid,
            sub_gid,
        })
    }

    /// `(inside, outside, count)` lines of the uid map.
    pub fn uid_lines(&self) -> [(u32, u32, u32); 2] {
        [(0, self.uid, 1), (1, self.sub_uid, SUBORDINATE_COUNT)]
    }

    /// `(inside, outside, count)` lines of the gid map.
    pub fn gid_lines(&self) -> [(u32, u32, u32); 2] {
        [(0, self.gid, 1), (1, self.sub_gid, SUBORDINATE_COUNT)]
    }
}

/// Writes the uid and gid maps of a process that has just unshared its
/// user namespace (and waits, doing nothing, until this returns).
pub trait IdMapper: Send + Sync + fmt::Debug {
    /// Fails early, before any work, when this mapper cannot work here.
    fn check(&self) -> Result<(), UsernsError>;
    fn map(&self, pid: u32, map: &IdMap) -> Result<(), UsernsError>;
}

/// The setuid `newuidmap` and `newgidmap` (package `uidmap`), which check
/// the ranges against /etc/subuid and /etc/subgid.
#[derive(Debug, Default)]
pub struct NewIdMap;

impl IdMapper for NewIdMap {
    fn check(&self) -> Result<(), UsernsError> {
        for tool in ["newuidmap", "newgidmap"] {
            if find_in_path(tool).is_none() {
                return Err(UsernsError::NoMapTool { tool });
            }
        }
        if no_new_privs() {
            return Err(UsernsError::NoNewPrivileges { tool: "newuidmap" });
        }
        Ok(())
    }

    fn map(&self, pid: u32, map: &IdMap) -> Result<(), UsernsError> {
        for (tool, lines) in [
            ("newuidmap", map.uid_lines()),
            ("newgidmap", map.gid_lines()),
        ] {
            let mut command = Command::new(tool);
            command.arg(pid.to_string());
            for (inside, outside, count) in lines {
                command.args([inside.to_string(), outside.to_string(), count.to_string()]);
            }
            host_command::run(&mut command).map_err(UsernsError::Map)?;
        }
        Ok(())
    }
}

/// Writes `/proc/PID/uid_map` and `gid_map` itself: for a process with
/// CAP_SETUID and CAP_SETGID over the ids, i.e. the root helper mapping
/// the owner's waiting child, which needs no setuid program and so works
/// under `NoNewPrivileges=yes`. The helper must check, before this, that
/// `pid` is the owner's and that the map's ranges are the owner's.
#[derive(Debug, Default)]
pub struct ProcIdMap;

impl IdMapper for ProcIdMap {
    fn check(&self) -> Result<(), UsernsError> {
        Ok(())
    }

    fn map(&self, pid: u32, map: &IdMap) -> Result<(), UsernsError> {
        for (file, lines) in [("uid_map", map.uid_lines()), ("gid_map", map.gid_lines())] {
            let path = PathBuf::from(format!("/proc/{pid}/{file}"));
            // One write: the kernel takes a map whole, once.
            let text: String = lines
                .iter()
                .map(|(inside, outside, count)| format!("{inside} {outside} {count}\n"))
                .collect();
            fs::write(&path, text).map_err(|e| {
                UsernsError::Map(CommandError::Failed {
                    program: format!("writing {}", path.display()),
                    status: "refused".into(),
                    stderr_tail: e.to_string(),
                })
            })?;
        }
        Ok(())
    }
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

fn no_new_privs() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("NoNewPrivs:") && l.split_whitespace().nth(1) == Some("1"))
    })
}

/// Refuses early where the kernel will not let an unprivileged user
/// create a user namespace (Debian's knob, the generic limit), or lets it
/// but without capabilities in it (Ubuntu's AppArmor restriction, under
/// which mmdebstrap would fail halfway, less clearly).
fn check_kernel() -> Result<(), UsernsError> {
    let zero = |path: &str| fs::read_to_string(path).is_ok_and(|s| s.trim() == "0");
    if zero("/proc/sys/kernel/unprivileged_userns_clone") {
        return Err(UsernsError::Disabled {
            knob: "/proc/sys/kernel/unprivileged_userns_clone",
            sysctl: "kernel.unprivileged_userns_clone",
            value: "1",
        });
    }
    if zero("/proc/sys/user/max_user_namespaces") {
        return Err(UsernsError::Disabled {
            knob: "/proc/sys/user/max_user_namespaces",
            sysctl: "user.max_user_namespaces",
            value: "15000",
        });
    }
    // The restriction is on unconfined processes; a profile may allow
    // `userns`, so a confined bangerd is left to try.
    let unconfined = [
        "/proc/self/attr/apparmor/current",
        "/proc/self/attr/current",
    ]
    .iter()
    .find_map(|p| fs::read_to_string(p).ok())
    .is_some_and(|s| s.trim_end_matches(['\n', '\0']).trim() == "unconfined");
    if unconfined
        && fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
            .is_ok_and(|s| s.trim() == "1")
    {
        return Err(UsernsError::AppArmor);
    }
    Ok(())
}

/// Runs host tools as root of a user namespace with the owner's [`IdMap`].
#[derive(Clone, Debug)]
pub struct UserNamespace {
    map: IdMap,
    mapper: Arc<dyn IdMapper>,
}

impl UserNamespace {
    /// For this process's user, mapped by `mapper`; fails in one line,
    /// saying what to do, when the host cannot give it one.
    pub fn for_this_process(mapper: Arc<dyn IdMapper>) -> Result<Self, UsernsError> {
        check_kernel()?;
        let map = IdMap::of_this_process()?;
        mapper.check()?;
        Ok(Self { map, mapper })
    }

    pub fn id_map(&self) -> &IdMap {
        &self.map
    }

    /// Runs `command` in a new user namespace, through `run` (which spawns
    /// it once, e.g. [`host_command::run_logged`]): the child unshares,
    /// writes its pid on one pipe and reads the other until the mapper,
    /// on a thread here (spawning blocks until the child execs), has
    /// written the maps. Then it is uid and gid 0 with full capabilities
    /// over the mapped ids, and execs.
    pub fn run_in<T>(
        &self,
        mut command: Command,
        run: impl FnOnce(&mut Command) -> Result<T, CommandError>,
    ) -> Result<Result<T, CommandError>, UsernsError> {
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from);
        let (pid_r, pid_w) = pipe().map_err(UsernsError::Unshare)?;
        let (go_r, go_w) = pipe().map_err(UsernsError::Unshare)?;
        let child = ChildFds {
            pid_w: pid_w.as_raw_fd(),
            go_r: go_r.as_raw_fd(),
            go_w: go_w.as_raw_fd(),
        };
        // SAFETY: the closure runs in the forked child before exec and
        // only makes system calls (unshare, close, write, read,
        // setgroups) on descriptors this function keeps open until the
        // command has been spawned; it allocates nothing and takes no lock.
        unsafe {
            command.pre_exec(move || child.enter());
        }
        std::thread::scope(|scope| {
            let mapper = scope.spawn(move || self.map_child(pid_r, go_w));
            let result = run(&mut command);
            // Ours to close once the child exists (or failed to): the
            // mapper sees the end of the pid pipe if the child never wrote.
            drop((pid_w, go_r));
            match mapper.join().expect("the id mapper thread panicked")? {
                // The child never asked to be mapped: unshare failed.
                false => match result {
                    Err(CommandError::Spawn { source, .. }) => Err(UsernsError::Unshare(source)),
                    other => Ok(other),
                },
                true => Ok(result),
            }
        })
    }

    /// Reads the child's pid, maps it and lets it go; `Ok(false)` when the
    /// child never got as far as asking.
    fn map_child(&self, pid_r: OwnedFd, go_w: OwnedFd) -> Result<bool, UsernsError> {
        let mut pid = [0u8; 4];
        if fs::File::from(pid_r).read_exact(&mut pid).is_err() {
            return Ok(false);
        }
        let pid = u32::from_le_bytes(pid);
        self.mapper.map(pid, &self.map)?;
        fs::File::from(go_w)
            .write_all(b"g")
            .map_err(UsernsError::Unshare)?;
        Ok(true)
    }
}

/// The child's ends of the handshake, as raw numbers (the parent owns
/// the descriptors).
#[derive(Clone, Copy)]
struct ChildFds {
    pid_w: i32,
    go_r: i32,
    go_w: i32,
}

impl ChildFds {
    /// In the child, between fork and exec: async-signal-safe calls only.
    fn enter(&self) -> io::Result<()> {
        use nix::libc;
        let fail = || Err(io::Error::last_os_error());
        // SAFETY: plain system calls on integers and a stack buffer; the
        // descriptors are open (inherited from the parent, which holds
        // them until spawn returns).
        unsafe {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return fail();
            }
            // Only the mapper may hold the write end, or a failed mapper
            // would leave this read waiting forever.
            libc::close(self.go_w);
            let pid = libc::getpid().to_le_bytes();
            if libc::write(self.pid_w, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                return fail();
            }
            let mut go = 0u8;
            loop {
                match libc::read(self.go_r, (&raw mut go).cast(), 1) {
                    1 => break,
                    // The mapper gave up: its error is the one reported.
                    0 => return Err(io::Error::from_raw_os_error(libc::EPERM)),
                    _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                    _ => return fail(),
                }
            }
            // The owner's other groups are not mapped: drop them rather
            // than carry them in as `nogroup`.
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return fail();
            }
        }
        Ok(())
    }
}

/// Who runs the steps that must own the tree's files: root itself, or
/// the owner as root of a [`UserNamespace`].
#[derive(Clone, Debug)]
pub enum TreeOwner {
    Root,
    Namespace(UserNamespace),
}

impl TreeOwner {
    /// Root when this process is root; else the owner's namespace.
    pub fn for_this_process(mapper: &Arc<dyn IdMapper>) -> Result<Self, UsernsError> {
        if crate::debian::running_as_root() {
            Ok(Self::Root)
        } else {
            UserNamespace::for_this_process(mapper.clone()).map(Self::Namespace)
        }
    }

    /// [`host_command::run`], as the tree's owner.
    pub(crate) fn run(&self, command: Command) -> Result<Output, TreeError> {
        self.spawn(command, host_command::run)
    }

    /// [`host_command::run_logged`], as the tree's owner.
    pub(crate) fn run_logged(&self, command: Command, log: &Path) -> Result<(), TreeError> {
        self.spawn(command, |c| host_command::run_logged(c, log))
    }

    fn spawn<T>(
        &self,
        mut command: Command,
        run: impl FnOnce(&mut Command) -> Result<T, CommandError>,
    ) -> Result<T, TreeError> {
        match self {
            Self::Root => run(&mut command).map_err(TreeError::Tool),
            Self::Namespace(ns) => ns
                .run_in(command, run)
                .map_err(TreeError::Namespace)?
                .map_err(TreeError::Tool),
        }
    }

    /// Bytes allocated and inodes used by the tree (hard links once). As
    /// root, read here; in the namespace with `du`, as files of the
    /// image's other users may be unreadable to the owner.
    pub(crate) fn tree_usage(&self, root: &Path) -> Result<(u64, u64), TreeError> {
        if let Self::Root = self {
            return crate::ext4::tree_usage(root).map_err(|e| TreeError::Io {
                action: "measure",
                path: root.to_owned(),
                source: e,
            });
        }
        let du = |unit: &str| -> Result<u64, TreeError> {
            let mut command = Command::new("du");
            command
                .args(["--summarize", "--one-file-system", unit])
                .arg(root);
            let out = self.run(command).map_err(|e| e.into_io("measure", root))?;
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| TreeError::Io {
                    action: "measure",
                    path: root.to_owned(),
                    source: io::Error::other("du printed no number"),
                })
        };
        Ok((du("--block-size=1")?, du("--inodes")?))
    }

    /// Removes the tree (`rm` in the namespace, where the image's other
    /// users' directories can be emptied).
    pub(crate) fn remove_tree(&self, root: &Path) -> Result<(), TreeError> {
        match self {
            Self::Root => match fs::remove_dir_all(root) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(TreeError::Io {
                    action: "remove",
                    path: root.to_owned(),
                    source,
                }),
            },
            Self::Namespace(_) => {
                if fs::symlink_metadata(root).is_err() {
                    return Ok(());
                }
                let mut command = Command::new("rm");
                command.args(["-rf", "--one-file-system", "--"]).arg(root);
                self.run(command)
                    .map(|_| ())
                    .map_err(|e| e.into_io("remove", root))
            }
        }
    }
}

impl TreeError {
    /// A helper tool's failure (`du`, `rm`) as the action it served, so
    /// the message does not blame the step's main tool.
    fn into_io(self, action: &'static str, path: &Path) -> Self {
        match self {
            TreeError::Tool(e) => TreeError::Io {
                action,
                path: path.to_owned(),
                source: io::Error::other(e.to_string()),
            },
            other => other,
        }
    }
}

/// A step run as the tree's owner that failed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error(transparent)]
    Tool(CommandError),
    #[error(transparent)]
    Namespace(UsernsError),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_is_the_owner_at_zero_then_its_subordinate_ids() {
        let map = IdMap {
            user: "banger".into(),
            uid: 1000,
            gid: 1001,
            sub_uid: 100000,
            sub_gid: 200000,
        };
        assert_eq!(map.uid_lines(), [(0, 1000, 1), (1, 100000, 65536)]);
        assert_eq!(map.gid_lines(), [(0, 1001, 1), (1, 200000, 65536)]);
    }

    fn sample_map() -> IdMap {
        IdMap {
            user: "banger".into(),
            uid: 1000,
            gid: 1001,
            sub_uid: 100000,
            sub_gid: 200000,
        }
    }

    /// A mapper that fails, after the child has unshared and is waiting.
    #[derive(Debug)]
    struct Refusing;

    impl IdMapper for Refusing {
        fn check(&self) -> Result<(), UsernsError> {
            Ok(())
        }
        fn map(&self, _pid: u32, _map: &IdMap) -> Result<(), UsernsError> {
            Err(UsernsError::NoMapTool { tool: "refusing" })
        }
    }

    /// The seam as the root helper will use it: the child waits in its
    /// new namespace until the maps are written (here by root writing
    /// /proc/PID/*_map, no setuid tool), then runs as 0 with exactly the
    /// owner's mapping; a mapper that fails leaves the child to fail, not
    /// to hang, and its error is the one reported.
    #[test]
    fn the_child_waits_for_the_mapper_and_runs_with_its_map() {
        if !crate::debian::running_as_root() {
            return banger_testkit::skip("needs root to write another process's id maps");
        }
        // The child is this process's user (root here, the owner in
        // bangerd): that is the id mapped to 0.
        let ns = UserNamespace {
            map: IdMap {
                uid: 0,
                gid: 0,
                ..sample_map()
            },
            mapper: Arc::new(ProcIdMap),
        };
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map",
        ]);
        let out = ns.run_in(command, host_command::run).unwrap().unwrap();
        let words: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            words,
            [
                "0", "0", "0", "0", "1", "1", "100000", "65536", "0", "0", "1", "1", "200000",
                "65536"
            ]
        );

        let refusing = UserNamespace {
            map: sample_map(),
            mapper: Arc::new(Refusing),
        };
        let started = std::time::Instant::now();
        let err = refusing
            .run_in(Command::new("true"), host_command::run)
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs refusing"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn errors_say_what_to_run() {
        let e = UsernsError::NoSubordinateIds {
            user: "banger".into(),
            kind: "uid",
            file: "/etc/subuid",
            found: "none".into(),
        }
        .to_string();
        assert!(
            e.contains(
                "sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 banger"
            ),
            "{e}"
        );
        assert!(!e.contains('\n'));
        let e = UsernsError::NoMapTool { tool: "newuidmap" }.to_string();
        assert!(e.contains("apt-get install uidmap"), "{e}");
    }
}
