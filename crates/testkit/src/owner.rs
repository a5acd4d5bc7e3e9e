//! Running part of a test as an unprivileged owner, as bangerd runs under
//! its system unit, from a test that runs as root (CI), without changing
//! the host: the test binary runs itself again (one `#[ignore]`d test,
//! by exact name) in a mount namespace of its own where /etc is overlaid
//! with /etc/subuid and /etc/subgid granting the owner subordinate ids,
//! and with the owner's uid and gid. The overlay goes when the child
//! exits; the host's /etc is never written.
// Mount and credential calls between fork and exec.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

/// The owner tests run as: `nobody`, which every Debian host has, and
/// which owns nothing a test could harm.
pub const OWNER_UID: u32 = 65534;
pub const OWNER_GID: u32 = 65534;
/// The subordinate ids the overlay grants it (unused on CI hosts).
pub const OWNER_SUBORDINATE: u32 = 2_000_000;

/// How the owner's side runs.
#[derive(Clone, Copy, Debug)]
pub struct AsOwner {
    /// /etc/subuid and /etc/subgid grant the owner 65536 ids from
    /// [`OWNER_SUBORDINATE`]; else they are there and empty.
    pub subordinate_ids: bool,
    /// With `no_new_privs` set, as systemd's `NoNewPrivileges=yes` does.
    pub no_new_privs: bool,
    /// A group other than the owner's primary one ([`OWNER_GID`]), as a
    /// unit's `Group=` can give.
    pub group: Option<u32>,
}

impl AsOwner {
    /// As a host set up for banger: subordinate ids, no `no_new_privs`.
    pub const SET_UP: AsOwner = AsOwner {
        subordinate_ids: true,
        no_new_privs: false,
        group: None,
    };
}

/// Runs the `#[ignore]`d test `test` (its full path, e.g.
/// `debian::tests::owner_side`) of the current test binary as
/// [`OWNER_UID`], set up as `how` says, with `env` set; `scratch` (made
/// here, owned by root) holds the overlay. Returns its output for the
/// caller to assert on.
pub fn run_ignored_test_as_owner(
    test: &str,
    scratch: &Path,
    how: AsOwner,
    env: &[(&str, &Path)],
) -> Output {
    let upper = scratch.join("etc-upper");
    let work = scratch.join("etc-work");
    fs::create_dir_all(&upper).expect("create the overlay's upper directory");
    fs::create_dir_all(&work).expect("create the overlay's work directory");
    let grant = if how.subordinate_ids {
        format!("nobody:{OWNER_SUBORDINATE}:65536\n")
    } else {
        String::new()
    };
    for file in ["subuid", "subgid"] {
        fs::write(upper.join(file), &grant).expect("write the subordinate ids");
    }
    let options = format!(
        "lowerdir=/etc,upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    let c = |s: &[u8]| CString::new(s).expect("no NUL in a path");
    let (overlay, etc, root, options) = (c(b"overlay"), c(b"/etc"), c(b"/"), c(options.as_bytes()));
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args([
            "--ignored",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            test,
        ])
        .envs(env.iter().map(|(k, v)| (k, v)));
    // SAFETY: runs in the forked child before exec and only makes system
    // calls with C strings made above, before the fork; no allocation,
    // no lock.
    unsafe {
        command.pre_exec(move || {
            use nix::libc;
            let check = |r: libc::c_int| {
                if r == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                overlay.as_ptr(),
                etc.as_ptr(),
                overlay.as_ptr(),
                0,
                options.as_ptr().cast(),
            ))?;
            check(libc::setgroups(0, std::ptr::null()))?;
            let gid = how.group.unwrap_or(OWNER_GID);
            check(libc::setresgid(gid, gid, gid))?;
            check(libc::setresuid(OWNER_UID, OWNER_UID, OWNER_UID))?;
            if how.no_new_privs {
                check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            }
            Ok(())
        });
    }
    command.output().expect("run the test binary as the owner")
}
