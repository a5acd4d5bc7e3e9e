//! `banger.minimal=1`: for images with no init and no sshd of their own
//! (OCI images). banger-init stays PID 1 in the new root: it mounts what a
//! login needs, makes the accounts sshd needs, starts the sshd the host
//! put under `/.banger` and the guest agent (boot.rs put it on /run), and
//! starts each again if it dies, reaps orphans,
//! and powers off on a shutdown request: SIGTERM, SIGINT (ctrl-alt-del,
//! which is how Firecracker asks), SIGUSR1, SIGUSR2, SIGPWR (busybox's
//! `halt`, `poweroff`, `reboot`), or the ACPI power button (how QEMU
//! asks). Every request powers off: a banger VM is restarted by the host.

use std::convert::Infallible;
use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::reboot::{RebootMode, reboot, set_cad_enabled};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, alarm, getpid, sync};

use banger_agent_proto::guest_paths;

use crate::boot;
use crate::failure::{Context, Failure};
use crate::{files, users};

/// Where banger's guest tools are mounted (boot.rs, crates/images/src/guest_tools.rs).
const SSHD: &str = guest_paths::MINIMAL_SSHD;
const SSHD_CONFIG: &str = "/.banger/sshd_config";
const SHELL: &str = "/.banger/bin/sh";

/// sshd exiting this many times, each within [`QUICK_EXIT`] of its start,
/// means it cannot run: the guest powers off rather than sit unreachable.
const MAX_QUICK_EXITS: u32 = 5;
const QUICK_EXIT: Duration = Duration::from_secs(10);
/// The agent is restarted after a second, or after this long once it
/// has exited [`MAX_QUICK_EXITS`] times quickly in a row; the guest stays
/// up for ssh either way.
const AGENT_BACKOFF_SECS: u32 = 30;
/// How long processes get between SIGTERM and SIGKILL at power-off.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// `input_event` on x86_64: a 16-byte timeval, then type, code, value.
const INPUT_EVENT_SIZE: usize = 24;
const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;

/// `workspace`: where the workspace disk is mounted (`/root/NAME`), to be
/// unmounted before the work disk under it at power-off.
pub fn run(workspace: Option<PathBuf>) -> Result<Infallible, Failure> {
    mount_runtime()?;
    prepare_accounts()?;
    fs::create_dir_all("/run/sshd").context(|| "creating /run/sshd".into())?;

    let shutdown_signals = [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPWR,
    ];
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    // The agent's restart timer (alarm(2)).
    mask.add(Signal::SIGALRM);
    for s in shutdown_signals {
        mask.add(s);
    }
    // Blocked before any thread or child exists, so every one of these
    // arrives through the signalfd (children get an empty mask from std).
    mask.thread_block()
        .map_err(|e| Failure::new("blocking signals", e.desc()))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Failure::new("opening a signalfd", e.desc()))?;
    // Ctrl-alt-del becomes SIGINT to PID 1 instead of an instant reboot.
    set_cad_enabled(false).map_err(|e| Failure::new("disabling ctrl-alt-del", e.desc()))?;
    let buttons = watch_power_buttons();

    let mut sshd = start_sshd()?;
    let mut agent = Supervised::default();
    agent.start();
    println!(
        "banger-init supervising: sshd pid {} ({buttons} power button{}), agent {}",
        sshd.0,
        if buttons == 1 { "" } else { "s" },
        agent
            .pid
            .map_or_else(|| "not running".to_owned(), |p| format!("pid {p}")),
    );
    let mut quick_exits = 0;
    loop {
        let info = match signals.read_signal() {
            Ok(Some(info)) => info,
            Ok(None) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(Failure::new("reading signals", e.desc())),
        };
        let signal = Signal::try_from(info.ssi_signo as i32).ok();
        if signal.is_some_and(|s| shutdown_signals.contains(&s)) {
            power_off(
                signal.map_or("a signal", Signal::as_str),
                workspace.as_deref(),
            );
        }
        if signal == Some(Signal::SIGALRM) && agent.pid.is_none() {
            agent.start();
        }
        // SIGCHLD: reap everything that ended (orphans included).
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if status.pid().is_some() && status.pid() == agent.pid {
                        agent.exited(&status);
                        continue;
                    }
                    if status.pid() != Some(sshd.0) {
                        continue;
                    }
                    quick_exits = if sshd.1.elapsed() < QUICK_EXIT {
                        quick_exits + 1
                    } else {
                        0
                    };
                    if quick_exits >= MAX_QUICK_EXITS {
                        return Err(Failure::new(
                            "running sshd",
                            format!("it exited {quick_exits} times in a row ({status:?})"),
                        ));
                    }
                    println!("banger-init supervising: sshd ended ({status:?}); starting it again");
                    std::thread::sleep(Duration::from_secs(1));
                    sshd = start_sshd()?;
                }
            }
        }
    }
}

/// devpts for terminals and a tmpfs on /dev/shm, as an init would (the
/// tmpfs on /run is boot.rs's, with the agent on it).
fn mount_runtime() -> Result<(), Failure> {
    let plain = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    for (fstype, target, flags, options) in [
        ("devpts", "/dev/pts", plain, "ptmxmode=0666,mode=0620"),
        ("tmpfs", "/dev/shm", plain | MsFlags::MS_NODEV, "mode=1777"),
    ] {
        boot::mount_kernel_fs(fstype, target, flags, Some(options))?;
    }
    Ok(())
}

/// `root` with a shell that exists, an `sshd` user, root not locked.
fn prepare_accounts() -> Result<(), Failure> {
    let passwd = Path::new("/etc/passwd");
    let existing = read_or_empty(passwd)?;
    let wanted = users::passwd_for_sshd(&existing, |s| Path::new(s).is_file(), SHELL);
    if wanted != existing {
        rewrite(passwd, &wanted, 0o644)?;
    }
    let shadow = Path::new("/etc/shadow");
    if let Some(unlocked) = users::shadow_unlocked(&read_or_empty(shadow)?) {
        rewrite(shadow, &unlocked, 0o640)?;
    }
    Ok(())
}

fn read_or_empty(path: &Path) -> Result<String, Failure> {
    match fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(Failure::new(format!("reading {}", path.display()), e)),
    }
}

/// Replaces `path` (never writing through a symlink there), keeping its
/// mode, or `new_mode` for a new file.
fn rewrite(path: &Path, text: &str, new_mode: u32) -> Result<(), Failure> {
    let mode = fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map_or(new_mode, |m| m.permissions().mode() & 0o7777);
    if let Some(dir) = path.parent() {
        // A `scratch` image may have no /etc at all.
        fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
    }
    files::replace_file(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .context(|| format!("writing {}", path.display()))
}

/// Starts sshd in the foreground (`-D`), logging to the console (`-e`);
/// its pid and when it started.
fn start_sshd() -> Result<(Pid, Instant), Failure> {
    let child = Command::new(SSHD)
        .args(["-D", "-e", "-f", SSHD_CONFIG])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| {
            // "No such file" may be the file or its loader: say which.
            let listing = fs::read_dir("/.banger/lib")
                .map(|d| d.flatten().count().to_string())
                .unwrap_or_else(|e| format!("unreadable ({e})"));
            Failure::new(
                format!("starting {SSHD}"),
                format!(
                    "{e} (it is there: {}; /.banger/lib holds {listing} files; the host puts them on the system disk for minimal images)",
                    Path::new(SSHD).is_file()
                ),
            )
        })?;
    let pid = Pid::from_raw(child.id() as i32);
    // Reaped by the SIGCHLD loop with waitpid, not through `child`.
    drop(child);
    publish_sshd_pid(pid);
    Ok((pid, Instant::now()))
}

/// Writes sshd's pid where the agent looks for it when it is given new
/// host keys (it sends SIGHUP, and sshd executes itself again under the
/// same pid). Renamed into place, so the agent never reads half of it; a
/// failure costs only that restart, so it is said and boot goes on.
fn publish_sshd_pid(pid: Pid) {
    let path = Path::new(guest_paths::SSHD_PID);
    let tmp = path.with_extension("pid.tmp");
    if let Err(e) = fs::write(&tmp, format!("{pid}\n")).and_then(|()| fs::rename(&tmp, path)) {
        println!(
            "banger-init supervising: cannot write {}: {e} (new host keys will need a restart of the guest)",
            path.display()
        );
    }
}

/// The guest agent under the supervisor: restarted when it ends, after a
/// delay (an alarm, so the signal loop keeps answering meanwhile). Unlike
/// sshd, an agent that cannot run does not power the guest off.
#[derive(Default)]
struct Supervised {
    pid: Option<Pid>,
    started: Option<Instant>,
    quick_exits: u32,
}

impl Supervised {
    fn start(&mut self) {
        match Command::new(guest_paths::BINARY)
            .arg("agent")
            .stdin(Stdio::null())
            .spawn()
        {
            Ok(child) => {
                self.pid = Some(Pid::from_raw(child.id() as i32));
                self.started = Some(Instant::now());
                // Reaped by the SIGCHLD loop, like sshd.
                drop(child);
            }
            Err(e) => {
                println!(
                    "banger-init supervising: cannot start the agent {}: {e}",
                    guest_paths::BINARY
                );
                self.pid = None;
                self.quick_exits += 1;
                self.restart_later();
            }
        }
    }

    fn exited(&mut self, status: &WaitStatus) {
        self.pid = None;
        let quick = self.started.is_some_and(|t| t.elapsed() < QUICK_EXIT);
        self.quick_exits = if quick { self.quick_exits + 1 } else { 0 };
        println!("banger-init supervising: the agent ended ({status:?}); starting it again");
        self.restart_later();
    }

    fn restart_later(&self) {
        let secs = if self.quick_exits >= MAX_QUICK_EXITS {
            AGENT_BACKOFF_SECS
        } else {
            1
        };
        alarm::set(secs);
    }
}

/// A thread per power button (an input device named "Power Button"),
/// turning a press into SIGPWR for PID 1. How many it found.
fn watch_power_buttons() -> usize {
    let Ok(entries) = fs::read_dir("/sys/class/input") else {
        return 0;
    };
    let mut found = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("event")) else {
            continue;
        };
        let label = fs::read_to_string(entry.path().join("device/name")).unwrap_or_default();
        if !label.contains("Power Button") {
            continue;
        }
        let Ok(mut device) = File::open(Path::new("/dev/input").join(name)) else {
            continue;
        };
        found += 1;
        std::thread::spawn(move || {
            let mut event = [0u8; INPUT_EVENT_SIZE];
            while device.read_exact(&mut event).is_ok() {
                let kind = u16::from_ne_bytes([event[16], event[17]]);
                let code = u16::from_ne_bytes([event[18], event[19]]);
                let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
                if kind == EV_KEY && code == KEY_POWER && value == 1 {
                    let _ = kill(getpid(), Signal::SIGPWR);
                }
            }
        });
    }
    found
}

/// Stops every process (SIGTERM, then SIGKILL after [`STOP_GRACE`]),
/// unmounts the disks (the workspace, on the work disk, first), and
/// powers off.
fn power_off(why: &str, workspace: Option<&Path>) -> ! {
    println!("banger-init supervising: {why}: powering off");
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(50)),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    while waitpid(None, Some(WaitPidFlag::WNOHANG)).is_ok_and(|s| s != WaitStatus::StillAlive) {}
    sync();
    if let Some(dir) = workspace {
        let _ = umount2(dir, MntFlags::empty());
    }
    let _ = umount2("/root", MntFlags::empty());
    let _ = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    );
    sync();
    let _ = reboot(RebootMode::RB_POWER_OFF);
    std::process::exit(1)
}
