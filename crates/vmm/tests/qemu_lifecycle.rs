//! The QEMU backend end to end under TCG, with the artifacts a user gets:
//! Debian's cloud kernel as vmlinux, banger's initramfs with banger-init,
//! a tiny ext4 base whose /sbin/init is the `boot-probe` example of
//! crates/init, and a system disk. Two boots in all: one that stays up
//! (`probe.stay`), is paused and resumed, and is stopped from the host
//! while paused; one that powers itself off; plus a start that fails at
//! once on a bad kernel. And a guest saved and resumed: a boot that
//! counts (`probe.tick`), saved, its QEMU killed, a new QEMU started from
//! the saved state that goes on counting; and starts from broken states
//! that fail cleanly. And a disk grown under a running guest, paused and
//! not, whose kernel says it saw the new size.
//!
//! Needs qemu-system-x86_64, mkfs.ext4 and apt (for the kernel, cached in
//! the test cache); skips with the reason when one is missing.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_images::initramfs::{self, GUEST_MODULES, InitramfsSpec};
use banger_images::kernel;
use banger_testkit::{mkfs_ext4, static_guest_binaries};
use banger_vmm::ConsoleLog;
use banger_vmm::process::{KILL_WAIT, TERM_WAIT};
use banger_vmm::qemu::qmp::Qmp;
use banger_vmm::{
    Accel, Backend, DiskSpec, Hypervisor, LaunchSpec, Selection, VmHandle, VmmError,
    hypervisor_for, wait_for_console,
};

const BASE_UUID: &str = "7c2e0f0e-6a3c-4d53-9c3e-0ba5e0000001";
const SYSTEM_UUID: &str = "7c2e0f0e-6a3c-4d53-9c3e-0ba5e0000002";
/// A TCG boot to the image's init takes ~2.5 s here; this is "hung".
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

struct Guest {
    dir: tempfile::TempDir,
    vmlinux: PathBuf,
    initramfs: PathBuf,
}

/// Kills the VM when dropped, so that a failed assertion leaves no QEMU
/// running behind the test (a VM already gone is left alone: `kill`
/// checks the pid's start time).
struct Reaper(Arc<dyn Hypervisor>, VmHandle);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill(&self.1, 9);
    }
}

fn qemu() -> Option<Arc<dyn Hypervisor>> {
    let binary = banger_vmm::select::find_program(Path::new("qemu-system-x86_64")).ok()?;
    Some(hypervisor_for(&Selection {
        backend: Backend::Qemu,
        // The KVM here is PVM, which cannot run a stock kernel; CI has none.
        accel: Accel::Tcg,
        binary,
        reason: "test".into(),
    }))
}

fn prepare() -> Option<Guest> {
    if !banger_testkit::have_tools(&["qemu-system-x86_64", "mkfs.ext4"]) {
        return None;
    }
    let pkg = banger_testkit::debian_kernel()?;
    let bins = static_guest_binaries();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let vmlinux = d.join("vmlinux");
    kernel::extract_vmlinux_file(&pkg.bzimage(), &vmlinux).expect("extract vmlinux");
    let initramfs_path = d.join("initramfs.cpio.gz");
    let modules_dir = pkg.modules_dir();
    initramfs::build_initramfs(
        &InitramfsSpec {
            init: &bins.init,
            modules_dir: &modules_dir,
            modules: GUEST_MODULES,
        },
        &initramfs_path,
    )
    .expect("build initramfs");
    let base = d.join("base");
    for sub in ["sbin", "dev", "proc", "sys", "etc", "root", "run", "tmp"] {
        fs::create_dir_all(base.join(sub)).unwrap();
    }
    fs::copy(&bins.boot_probe, base.join("sbin/init")).unwrap();
    mkfs_ext4(
        &d.join("base.ext4"),
        &base,
        "banger-base",
        Some(BASE_UUID),
        "32M",
    );
    let system = d.join("system");
    fs::create_dir_all(&system).unwrap();
    mkfs_ext4(
        &d.join("system.ext4"),
        &system,
        "banger-system",
        Some(SYSTEM_UUID),
        "32M",
    );
    Some(Guest {
        dir,
        vmlinux,
        initramfs: initramfs_path,
    })
}

impl Guest {
    fn spec(&self, extra_cmdline: &str) -> LaunchSpec {
        let d = self.dir.path();
        LaunchSpec {
            name: "lifecycle".into(),
            vm_dir: d.join("vm"),
            runtime_dir: d.join("run"),
            vcpu: 1,
            memory_mib: 512,
            vmlinux: self.vmlinux.clone(),
            bzimage: PathBuf::new(),
            initramfs: self.initramfs.clone(),
            cmdline: format!(
                "quiet banger.base=UUID={BASE_UUID} banger.system=UUID={SYSTEM_UUID} {extra_cmdline}"
            ),
            disks: vec![
                DiskSpec {
                    path: d.join("base.ext4"),
                    read_only: true,
                },
                DiskSpec {
                    path: d.join("system.ext4"),
                    read_only: false,
                },
            ],
            net: None,
            console_log: d.join("vm/console.log"),
            incoming: None,
        }
    }
}

#[test]
fn starts_waits_for_the_console_stops_and_boots_again() {
    let Some(hv) = qemu() else {
        banger_testkit::skip("qemu-system-x86_64 is not installed");
        return;
    };
    let Some(guest) = prepare() else { return };

    // Boot 1: a guest that stays up, stopped from the host.
    let spec = guest.spec("probe.stay");
    let t0 = Instant::now();
    let handle = hv.start(&spec).expect("start");
    let _reaper = Reaper(hv.clone(), handle.clone());
    let spawned = t0.elapsed();
    assert_eq!(handle.backend, Backend::Qemu);
    assert!(hv.is_running(&handle));
    assert!(handle.control_socket.ends_with("run/qmp.sock"));
    assert!(spec.runtime_dir.join("qemu.pid").exists());
    // The handle is what bangerd persists: a fresh backend (as after a
    // daemon restart) knows the process again from it alone.
    let persisted: VmHandle =
        serde_json::from_str(&serde_json::to_string(&handle).unwrap()).unwrap();
    assert!(qemu().unwrap().is_running(&persisted));

    let to_init = wait_for_console(
        ConsoleLog::new(&spec.console_log).cursor_at(handle.console_offset),
        "banger-init ready",
        &handle,
        hv.as_ref(),
        BOOT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let to_image = wait_for_console(
        ConsoleLog::new(&spec.console_log).cursor_at(handle.console_offset),
        "PROBE done: staying up",
        &handle,
        hv.as_ref(),
        BOOT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(hv.is_running(&handle), "the guest should stay up");
    // The guest runs in a QEMU confined by its seccomp filter.
    let status = fs::read_to_string(format!("/proc/{}/status", handle.pid)).unwrap();
    assert!(
        status.lines().any(|l| l == "Seccomp:\t2"),
        "QEMU runs under a seccomp filter:\n{status}"
    );
    assert!(matches!(
        hv.kill(&handle, 4242),
        Err(VmmError::InvalidSignal(4242))
    ));
    pause_and_resume(hv.as_ref(), &handle);
    // Stopped while paused: stop resumes it first.
    hv.pause(&handle).expect("pause before stop");

    let grace = Duration::from_secs(2);
    let t1 = Instant::now();
    hv.stop(&handle, grace).expect("stop");
    let stopped = t1.elapsed();
    assert!(!hv.is_running(&handle));
    assert!(
        stopped < grace + TERM_WAIT + KILL_WAIT,
        "stop took {stopped:?}"
    );
    // Stopping or killing what is gone is fine.
    hv.stop(&handle, grace).expect("second stop");
    hv.kill(&handle, 9).expect("kill after stop");
    println!(
        "boot 1: start returned after {spawned:?}; banger-init ready {to_init:?} later, the \
         image's init {to_image:?} after that; stop took {stopped:?} (grace {grace:?})"
    );

    // Boot 2, same console log: a guest that powers itself off. What
    // boot 1 printed must not satisfy the wait, and the exit is noticed.
    let spec = guest.spec("");
    let t2 = Instant::now();
    let handle = hv.start(&spec).expect("second start");
    let _reaper2 = Reaper(hv.clone(), handle.clone());
    assert!(handle.console_offset > 0, "the log holds boot 1");
    let err = wait_for_console(
        ConsoleLog::new(&spec.console_log).cursor_at(handle.console_offset),
        "PROBE done: staying up",
        &handle,
        hv.as_ref(),
        BOOT_TIMEOUT,
    )
    .expect_err("boot 1's line must not count for boot 2");
    let took = t2.elapsed();
    let VmmError::Console { exited, tail, .. } = &err else {
        panic!("{err}")
    };
    assert!(*exited, "{err}");
    assert!(
        tail.iter().any(|l| l == "PROBE done: powering off"),
        "{err}"
    );
    assert!(
        !tail.iter().any(|l| l.contains("staying up")),
        "the tail must be boot 2's: {err}"
    );
    assert!(!hv.is_running(&handle));
    println!("boot 2: powered itself off, noticed {took:?} after start");
}

/// Pauses a running guest: QEMU says `paused` and its CPU time barely
/// grows; then resumes it and QEMU says `running`.
fn pause_and_resume(hv: &dyn Hypervisor, handle: &VmHandle) {
    let status = || run_state(handle);
    let cpu = || banger_vmm::process::usage(handle).expect("QEMU runs").cpu;
    let over = Duration::from_secs(2);
    let before = cpu();
    std::thread::sleep(over);
    let running = cpu().saturating_sub(before);

    let t = Instant::now();
    hv.pause(handle).unwrap_or_else(|e| panic!("{e}"));
    let paused_in = t.elapsed();
    assert_eq!(status(), "paused");
    hv.pause(handle).expect("pausing a paused VM is fine");
    assert!(hv.is_running(handle), "a paused VM's process stays");
    let before = cpu();
    std::thread::sleep(over);
    let paused = cpu().saturating_sub(before);
    assert!(
        paused < Duration::from_millis(200),
        "a paused QEMU used {paused:?} of CPU in {over:?} (running, {running:?})"
    );

    hv.resume(handle).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status(), "running");
    hv.resume(handle).expect("resuming a running VM is fine");
    println!(
        "pause took {paused_in:?}; CPU over {over:?}: {running:?} running idle, {paused:?} paused"
    );
}

#[test]
fn a_bad_kernel_fails_start_with_qemus_words() {
    let Some(hv) = qemu() else {
        banger_testkit::skip("qemu-system-x86_64 is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("vmlinux"), b"this is not a kernel").unwrap();
    fs::write(d.join("initramfs"), b"nor an initramfs").unwrap();
    let spec = LaunchSpec {
        name: "bad-kernel".into(),
        vm_dir: d.join("vm"),
        runtime_dir: d.join("run"),
        vcpu: 1,
        memory_mib: 128,
        vmlinux: d.join("vmlinux"),
        initramfs: d.join("initramfs"),
        console_log: d.join("vm/console.log"),
        ..LaunchSpec::default()
    };
    let t0 = Instant::now();
    let err = hv.start(&spec).expect_err("a bad kernel cannot start");
    let took = t0.elapsed();
    let message = err.to_string();
    println!("{message} ({took:?})");
    assert!(matches!(err, VmmError::Exited { .. }), "{message}");
    assert!(!message.contains('\n'), "{message}");
    // QEMU's own error, from qemu.log (7.2 says "qemu: linux kernel too
    // old to load a ram disk" for a file that is no kernel at all).
    let VmmError::Exited { tail, log, .. } = &err else {
        unreachable!()
    };
    assert!(tail.iter().any(|l| l.contains("kernel")), "{message}");
    assert!(log.ends_with("vm/qemu.log"), "{message}");
    assert!(!hv_running_left(d), "QEMU must not outlive a failed start");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// How long a save may take: ≈ 0.1-0.3 s for this guest here.
const SAVE_TIMEOUT: Duration = Duration::from_secs(60);

/// The numbers of the `PROBE tick: N` lines in `log` after byte `from`.
fn ticks(log: &Path, from: u64) -> Vec<u64> {
    let bytes = fs::read(log).unwrap_or_default();
    let from = usize::try_from(from).unwrap().min(bytes.len());
    String::from_utf8_lossy(&bytes[from..])
        .lines()
        .filter_map(|l| l.trim().strip_prefix("PROBE tick: "))
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// What QEMU's `query-status` says.
fn run_state(handle: &VmHandle) -> String {
    Qmp::connect(&handle.control_socket, Duration::from_secs(5))
        .and_then(|mut q| q.query_status(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn saves_and_resumes_where_it_left_off() {
    let Some(hv) = qemu() else {
        banger_testkit::skip("qemu-system-x86_64 is not installed");
        return;
    };
    let Some(guest) = prepare() else { return };
    let d = guest.dir.path();
    let spec = guest.spec("probe.stay probe.tick");
    let handle = hv.start(&spec).expect("start");
    let _reaper = Reaper(hv.clone(), handle.clone());
    wait_for_console(
        ConsoleLog::new(&spec.console_log).cursor_at(handle.console_offset),
        "PROBE tick: 2",
        &handle,
        hv.as_ref(),
        BOOT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // A file already there is refused before the guest is paused.
    let state = d.join("state");
    fs::write(&state, b"precious").unwrap();
    let err = hv
        .save_state(&handle, &state, SAVE_TIMEOUT)
        .expect_err("an existing file is never overwritten");
    assert!(matches!(err, VmmError::Io { .. }), "{err}");
    assert_eq!(fs::read(&state).unwrap(), b"precious");
    assert_eq!(run_state(&handle), "running");
    fs::remove_file(&state).unwrap();

    let saved = hv
        .save_state(&handle, &state, SAVE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(saved.files, std::slice::from_ref(&state));
    let meta = fs::metadata(&state).unwrap();
    assert_eq!(saved.bytes, meta.len());
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o077, 0, "the state is private");
    }
    // Paused, and left so: the caller decides.
    assert_eq!(run_state(&handle), "postmigrate");
    let last = *ticks(&spec.console_log, handle.console_offset)
        .last()
        .expect("ticks before the save");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        ticks(&spec.console_log, handle.console_offset).last(),
        Some(&last),
        "a saved guest stays paused"
    );
    hv.kill(&handle, 9).unwrap();
    let gone_by = Instant::now() + KILL_WAIT;
    while hv.is_running(&handle) && Instant::now() < gone_by {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!hv.is_running(&handle));

    // A new QEMU from the saved state: the guest goes on counting.
    let mut resume = spec.clone();
    resume.incoming = Some(state.clone());
    let t0 = Instant::now();
    let resumed = hv.start(&resume).unwrap_or_else(|e| panic!("{e}"));
    let _reaper2 = Reaper(hv.clone(), resumed.clone());
    let restored = t0.elapsed();
    assert_eq!(run_state(&resumed), "running");
    let next = format!("PROBE tick: {}", last + 1);
    let to_tick = wait_for_console(
        ConsoleLog::new(&resume.console_log).cursor_at(resumed.console_offset),
        &next,
        &resumed,
        hv.as_ref(),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let after = ticks(&resume.console_log, resumed.console_offset);
    assert_eq!(after.first(), Some(&(last + 1)), "no reboot: {after:?}");
    let console = fs::read(&resume.console_log).unwrap();
    let since = String::from_utf8_lossy(&console[resumed.console_offset as usize..]).into_owned();
    assert!(!since.contains("banger-init ready"), "no reboot: {since}");
    println!(
        "saved {} bytes ({} MiB guest) in {:?}; a new QEMU from it: start returned after \
         {restored:?}, tick {} {to_tick:?} later",
        saved.bytes,
        resume.memory_mib,
        saved.took,
        last + 1
    );

    // Saved again and resumed in place instead: after a save QEMU says
    // `postmigrate`, which a pause accepts as paused and `cont` runs.
    hv.save_state(&resumed, &d.join("state-again"), SAVE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run_state(&resumed), "postmigrate");
    hv.pause(&resumed).expect("a saved VM is paused already");
    let last = *ticks(&resume.console_log, resumed.console_offset)
        .last()
        .expect("ticks before the second save");
    hv.resume(&resumed).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run_state(&resumed), "running");
    wait_for_console(
        ConsoleLog::new(&resume.console_log).cursor_at(resumed.console_offset),
        &format!("PROBE tick: {}", last + 1),
        &resumed,
        hv.as_ref(),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    hv.stop(&resumed, Duration::from_millis(500)).expect("stop");

    // Broken states fail the start with QEMU's words, and leave no QEMU.
    let whole = fs::read(&state).unwrap();
    let mut corrupt = whole.clone();
    corrupt[..4].copy_from_slice(b"XXXX");
    for (what, bytes) in [
        ("truncated", whole[..whole.len() / 2].to_vec()),
        ("corrupt header", corrupt),
    ] {
        let broken = d.join("broken");
        let _ = fs::remove_file(&broken);
        fs::write(&broken, &bytes).unwrap();
        let mut spec = spec.clone();
        spec.incoming = Some(broken);
        let t = Instant::now();
        let err = hv.start(&spec).expect_err(what);
        let message = err.to_string();
        println!("{what}: {message} ({:?})", t.elapsed());
        assert!(matches!(err, VmmError::Exited { .. }), "{what}: {message}");
        assert!(message.contains("migration"), "{what}: {message}");
        assert!(!message.contains('\n'), "{message}");
        assert!(
            !hv_running_left(d),
            "{what}: QEMU must not outlive a failed restore"
        );
    }
    // A missing file or a symlink: refused before QEMU is spawned.
    let mut spec = spec.clone();
    spec.incoming = Some(d.join("missing"));
    let err = hv.start(&spec).expect_err("missing");
    assert!(matches!(err, VmmError::Io { .. }), "{err}");
    let link = d.join("link");
    std::os::unix::fs::symlink(&state, &link).unwrap();
    spec.incoming = Some(link);
    let err = hv.start(&spec).expect_err("a symlink");
    assert!(matches!(err, VmmError::Io { .. }), "{err}");
}

/// What `query-block` says drive `id` holds, in bytes.
fn drive_size(handle: &VmHandle, id: &str) -> u64 {
    let blocks = Qmp::connect(&handle.control_socket, Duration::from_secs(5))
        .and_then(|mut q| q.execute("query-block", None, Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    let drive = blocks
        .as_array()
        .and_then(|all| all.iter().find(|b| b["device"] == id))
        .unwrap_or_else(|| panic!("no drive {id}: {blocks}"));
    drive["inserted"]["image"]["virtual-size"]
        .as_u64()
        .unwrap_or_else(|| panic!("no size: {drive}"))
}

#[test]
fn grows_a_disk_under_a_running_and_a_paused_guest() {
    const MIB: u64 = 1 << 20;
    let Some(hv) = qemu() else {
        banger_testkit::skip("qemu-system-x86_64 is not installed");
        return;
    };
    let Some(guest) = prepare() else { return };
    // virtio_blk's "new size" line is a notice: let it reach the console.
    let spec = guest.spec("probe.stay loglevel=6");
    let handle = hv.start(&spec).expect("start");
    let _reaper = Reaper(hv.clone(), handle.clone());
    let console = || ConsoleLog::new(&spec.console_log).cursor_at(handle.console_offset);
    wait_for_console(
        console(),
        "PROBE done: staying up",
        &handle,
        hv.as_ref(),
        BOOT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (base, system) = (&spec.disks[0].path, &spec.disks[1].path);
    let len = |p: &Path| fs::metadata(p).unwrap().len();
    assert_eq!(len(system), 32 * MIB);

    // Paused: the file and QEMU's drive grow at once; the guest hears of
    // it when it runs again.
    hv.pause(&handle).unwrap();
    let t = Instant::now();
    hv.grow_disk(&handle, 1, system, 48 * MIB)
        .unwrap_or_else(|e| panic!("{e}"));
    let took = t.elapsed();
    assert_eq!(len(system), 48 * MIB);
    assert_eq!(drive_size(&handle, "d1"), 48 * MIB);
    assert_eq!(run_state(&handle), "paused");
    hv.resume(&handle).unwrap();
    let sectors = |bytes: u64| format!("[vdb] new size: {} 512-byte", bytes / 512);
    wait_for_console(
        console(),
        &sectors(48 * MIB),
        &handle,
        hv.as_ref(),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // Running: the guest's kernel sees it straight away.
    hv.grow_disk(&handle, 1, system, 64 * MIB)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(len(system), 64 * MIB);
    assert_eq!(drive_size(&handle, "d1"), 64 * MIB);
    wait_for_console(
        console(),
        &sectors(64 * MIB),
        &handle,
        hv.as_ref(),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The same size again is fine.
    hv.grow_disk(&handle, 1, system, 64 * MIB).unwrap();

    // Refused, and nothing changed: smaller, another drive's index, a
    // drive QEMU does not have, a read-only drive.
    let err = hv.grow_disk(&handle, 1, system, 40 * MIB).unwrap_err();
    assert!(err.to_string().contains("never shrinks"), "{err}");
    let err = hv.grow_disk(&handle, 0, system, 80 * MIB).unwrap_err();
    assert!(err.to_string().contains("not this file"), "{err}");
    let err = hv.grow_disk(&handle, 5, system, 80 * MIB).unwrap_err();
    assert!(err.to_string().contains("QEMU has no drive d5"), "{err}");
    let base_len = len(base);
    let err = hv.grow_disk(&handle, 0, base, base_len + MIB).unwrap_err();
    println!("a read-only drive: {err}");
    assert!(matches!(err, VmmError::Grow { .. }), "{err}");
    assert_eq!(len(base), base_len);
    assert_eq!(len(system), 64 * MIB);
    assert_eq!(drive_size(&handle, "d1"), 64 * MIB);

    // After a save QEMU has let go of its disks until `cont`.
    let state = guest.dir.path().join("state");
    hv.save_state(&handle, &state, SAVE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    // QEMU 7.2 aborts on a block_resize then: refused before it is sent.
    let err = hv.grow_disk(&handle, 1, system, 80 * MIB).unwrap_err();
    assert!(err.to_string().contains("the VM is postmigrate"), "{err}");
    assert!(hv.is_running(&handle), "QEMU survived");
    assert_eq!(len(system), 64 * MIB);
    hv.resume(&handle).unwrap();
    hv.grow_disk(&handle, 1, system, 80 * MIB)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(drive_size(&handle, "d1"), 80 * MIB);
    hv.kill(&handle, 9).unwrap();
    println!("block_resize of a paused VM took {took:?}");
}

/// Whether a QEMU whose pidfile is in this run dir is still alive.
fn hv_running_left(d: &Path) -> bool {
    fs::read_to_string(d.join("run/qemu.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .and_then(banger_vmm::process::ProcStat::read)
        .is_some_and(|s| s.is_alive())
}
