//! The Firecracker backend's process handling end to end, without
//! Firecracker: this test binary is its own fake. Started with
//! `--api-sock`, it plays a Firecracker API server that checks each
//! request's fields the way Firecracker's strict deserializer does,
//! records what it was sent, prints a console line on `InstanceStart`,
//! pauses and resumes on `PATCH /vm` (saying so in `GET /`) and exits on
//! `SendCtrlAltDel` (as `reboot=k` makes Firecracker do) unless paused,
//! when the guest cannot act on it. It keeps Firecracker's states (not
//! started, running, paused) and refuses what Firecracker refuses in
//! each: a pause or resume only after a start or load, a snapshot created
//! only when paused (it writes both files), loaded only on a fresh process
//! (a file that is not its snapshot ends it, as a failed load ends
//! Firecracker), drives repointed only after a start or load.
//! Started without, it runs the tests against itself.
//!
//! (A real Firecracker is exercised by the unit test
//! `firecracker::tests::real_firecracker_accepts_the_configuration` when
//! `BANGER_TEST_FIRECRACKER` names one.)

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_vmm::ConsoleLog;
use banger_vmm::firecracker::Firecracker;
use banger_vmm::firecracker::api::ApiClient;
use banger_vmm::{DiskSpec, Hypervisor, LaunchSpec, NetSpec, VmmError, wait_for_console};
use serde_json::{Value, json};

/// Where the fake writes the requests it accepted, one JSON line each.
const RECORD_ENV: &str = "FAKE_FIRECRACKER_RECORD";
/// A request path the fake refuses with a 400.
const REJECT_ENV: &str = "FAKE_FIRECRACKER_REJECT";
/// Makes the fake print a message and exit at once.
const DIE_ENV: &str = "FAKE_FIRECRACKER_DIE";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--api-sock") {
        fake_firecracker(Path::new(&args[i + 1]));
        return;
    }
    let tests: &[(&str, fn())] = &[
        (
            "configures_starts_watches_and_stops",
            configures_starts_watches_and_stops,
        ),
        (
            "a_refused_request_fails_start_and_leaves_nothing",
            a_refused_request_fails_start_and_leaves_nothing,
        ),
        (
            "an_exit_at_start_quotes_the_log",
            an_exit_at_start_quotes_the_log,
        ),
        (
            "pauses_resumes_and_stops_a_paused_vm",
            pauses_resumes_and_stops_a_paused_vm,
        ),
        (
            "saves_a_snapshot_and_resumes_it_elsewhere",
            saves_a_snapshot_and_resumes_it_elsewhere,
        ),
        (
            "a_save_refused_or_misdirected_leaves_no_file",
            a_save_refused_or_misdirected_leaves_no_file,
        ),
        (
            "a_bad_snapshot_fails_start_and_leaves_nothing",
            a_bad_snapshot_fails_start_and_leaves_nothing,
        ),
        (
            "grows_a_disk_and_has_firecracker_read_it_again",
            grows_a_disk_and_has_firecracker_read_it_again,
        ),
    ];
    let mut failed = 0;
    for (name, test) in tests {
        let started = Instant::now();
        match std::panic::catch_unwind(test) {
            Ok(()) => println!("test {name} ... ok ({:?})", started.elapsed()),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("{} passed, {failed} failed", tests.len() - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}

// ---- the tests ----

struct Setup {
    dir: tempfile::TempDir,
    spec: LaunchSpec,
    record: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let spec = LaunchSpec {
        name: "fake-vm".into(),
        vm_dir: d.join("vm"),
        runtime_dir: d.join("run"),
        vcpu: 2,
        memory_mib: 256,
        vmlinux: d.join("vmlinux"),
        initramfs: d.join("initramfs"),
        cmdline: "banger.base=/dev/vda banger.system=/dev/vdb".into(),
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
        net: Some(NetSpec {
            tap: "bgr-fake".into(),
            mac: "52:54:00:00:00:07".into(),
        }),
        console_log: d.join("vm/firecracker.log"),
        ..LaunchSpec::default()
    };
    let record = d.join("requests.jsonl");
    Setup { dir, spec, record }
}

fn backend() -> Firecracker {
    Firecracker::new(&std::env::current_exe().unwrap())
}

fn recorded(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn configures_starts_watches_and_stops() {
    let s = setup();
    set_env(&[(RECORD_ENV, s.record.to_str().unwrap())]);
    let fc = backend();
    let t0 = Instant::now();
    let handle = fc.start(&s.spec).unwrap_or_else(|e| panic!("{e}"));
    println!("  start returned after {:?}", t0.elapsed());
    assert!(fc.is_running(&handle));
    assert!(handle.control_socket.ends_with("run/firecracker.sock"));
    let requests = recorded(&s.record);
    let paths: Vec<&str> = requests
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/machine-config",
            "/boot-source",
            "/drives/d0",
            "/drives/d1",
            "/network-interfaces/eth0",
            "/vsock",
            "/actions"
        ]
    );
    assert_eq!(requests[5]["body"]["guest_cid"], json!(3));
    assert_eq!(requests[6]["body"], json!({"action_type": "InstanceStart"}));
    assert_eq!(
        requests[1]["body"]["boot_args"],
        json!(
            "console=ttyS0 reboot=k panic=-1 pci=off banger.base=/dev/vda banger.system=/dev/vdb"
        )
    );
    wait_for_console(
        ConsoleLog::new(&s.spec.console_log).cursor_at(handle.console_offset),
        "banger-init ready",
        &handle,
        &fc,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let t1 = Instant::now();
    fc.stop(&handle, Duration::from_secs(5)).unwrap();
    let took = t1.elapsed();
    assert!(!fc.is_running(&handle));
    // SendCtrlAltDel made it exit: no waiting out the grace.
    assert!(took < Duration::from_secs(2), "stop took {took:?}");
    let last = recorded(&s.record).pop().unwrap();
    assert_eq!(last["body"], json!({"action_type": "SendCtrlAltDel"}));
    println!("  stop (SendCtrlAltDel) took {took:?}");
    drop(s.dir);
}

fn a_refused_request_fails_start_and_leaves_nothing() {
    let s = setup();
    set_env(&[
        (RECORD_ENV, s.record.to_str().unwrap()),
        (REJECT_ENV, "/drives/d1"),
    ]);
    let err = backend().start(&s.spec).unwrap_err();
    unset_env(REJECT_ENV);
    let message = err.to_string();
    assert_eq!(
        message,
        "firecracker API PUT /drives/d1: 400: The requested operation is not supported (fake)"
    );
    let pid: u32 = std::fs::read_to_string(s.dir.path().join("fake.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || banger_vmm::process::ProcStat::read(pid).is_none_or(|st| !st.is_alive()),
        "the refused Firecracker must be gone"
    );
}

fn an_exit_at_start_quotes_the_log() {
    let s = setup();
    set_env(&[(DIE_ENV, "1")]);
    let err = backend().start(&s.spec).unwrap_err();
    unset_env(DIE_ENV);
    let message = err.to_string();
    assert!(matches!(err, VmmError::Exited { .. }), "{message}");
    assert!(
        message.contains("Failed to open the API socket: Address in use (fake)"),
        "{message}"
    );
}

fn pauses_resumes_and_stops_a_paused_vm() {
    let s = setup();
    set_env(&[(RECORD_ENV, s.record.to_str().unwrap())]);
    let fc = backend();
    let handle = fc.start(&s.spec).unwrap_or_else(|e| panic!("{e}"));
    let api = ApiClient::new(&handle.control_socket, Duration::from_secs(5));
    let state = || api.instance_info().unwrap().state;
    assert_eq!(state(), "Running");
    fc.pause(&handle).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state(), "Paused");
    // Again: already there, so no second request.
    fc.pause(&handle).unwrap();
    fc.resume(&handle).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state(), "Running");
    fc.resume(&handle).unwrap();
    let patches: Vec<Value> = recorded(&s.record)
        .into_iter()
        .filter(|r| r["path"] == "/vm")
        .map(|r| r["body"].clone())
        .collect();
    assert_eq!(
        patches,
        [json!({"state": "Paused"}), json!({"state": "Resumed"})]
    );

    // A paused guest ignores Ctrl-Alt-Del: stop resumes it first, so it
    // exits at once instead of after the grace and SIGTERM.
    fc.pause(&handle).unwrap();
    let t = Instant::now();
    fc.stop(&handle, Duration::from_secs(5)).unwrap();
    let took = t.elapsed();
    assert!(!fc.is_running(&handle));
    assert!(took < Duration::from_secs(2), "stop took {took:?}");
    let tail: Vec<Value> = recorded(&s.record)
        .into_iter()
        .rev()
        .take(2)
        .map(|r| r["body"].clone())
        .collect();
    assert_eq!(
        tail,
        [
            json!({"action_type": "SendCtrlAltDel"}),
            json!({"state": "Resumed"})
        ]
    );
    // Gone: pausing is an error that says the API cannot be reached.
    let err = fc.pause(&handle).unwrap_err().to_string();
    assert!(
        err.starts_with("firecracker API GET /: cannot connect"),
        "{err}"
    );
}

/// The requests recorded after the first `skip`, as "METHOD path".
fn methods_and_paths(requests: &[Value], skip: usize) -> Vec<String> {
    requests[skip..]
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap()
            )
        })
        .collect()
}

fn saves_a_snapshot_and_resumes_it_elsewhere() {
    let s = setup();
    set_env(&[(RECORD_ENV, s.record.to_str().unwrap())]);
    let fc = backend();
    let handle = fc.start(&s.spec).unwrap_or_else(|e| panic!("{e}"));
    let booted = recorded(&s.record).len();
    let dest = s.dir.path().join("template/state");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let saved = fc
        .save_state(&handle, &dest, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let memory = Firecracker::memory_file(&dest);
    assert_eq!(saved.files, [dest.clone(), memory.clone()]);
    assert_eq!(fc.state_files(&dest), saved.files);
    let on_disk: u64 = saved
        .files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert_eq!(saved.bytes, on_disk);
    assert!(saved.bytes > 0);
    for f in &saved.files {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", f.display());
    }
    println!("  saved {} bytes in {:?}", saved.bytes, saved.took);
    let requests = recorded(&s.record);
    assert_eq!(
        methods_and_paths(&requests, booted),
        ["PATCH /vm", "PUT /snapshot/create"]
    );
    assert_eq!(requests[booted]["body"], json!({"state": "Paused"}));
    assert_eq!(
        requests[booted + 1]["body"],
        json!({
            "snapshot_type": "Full",
            "snapshot_path": dest,
            "mem_file_path": memory,
        })
    );
    // Still there, paused: the caller decides. A resume lets it run on.
    assert!(fc.is_running(&handle));
    let api = ApiClient::new(&handle.control_socket, Duration::from_secs(5));
    assert_eq!(api.instance_info().unwrap().state, "Paused");
    fc.resume(&handle).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(api.instance_info().unwrap().state, "Running");
    fc.kill(&handle, 9).unwrap();

    // Another VM from it: its own folders, disks and TAP.
    let d = s.dir.path();
    let mut spec = s.spec.clone();
    spec.name = "fake-vm-2".into();
    spec.vm_dir = d.join("vm2");
    spec.runtime_dir = d.join("run2");
    spec.console_log = d.join("vm2/firecracker.log");
    spec.disks[1].path = d.join("system-2.ext4");
    spec.net.as_mut().unwrap().tap = "bgr-fake-2".into();
    spec.incoming = Some(dest.clone());
    let before = recorded(&s.record).len();
    let t0 = Instant::now();
    let resumed = fc.start(&spec).unwrap_or_else(|e| panic!("{e}"));
    println!("  resumed in {:?}", t0.elapsed());
    let requests = recorded(&s.record);
    assert_eq!(
        methods_and_paths(&requests, before),
        [
            "PUT /snapshot/load",
            "PATCH /drives/d0",
            "PATCH /drives/d1",
            "PATCH /vm"
        ]
    );
    assert_eq!(
        requests[before]["body"],
        json!({
            "snapshot_path": dest,
            "mem_backend": {"backend_type": "File", "backend_path": memory},
            "resume_vm": false,
            "network_overrides": [{"iface_id": "eth0", "host_dev_name": "bgr-fake-2"}],
            "vsock_override": {"uds_path": d.join("run2/vsock.sock")},
        })
    );
    assert_eq!(
        requests[before + 2]["body"],
        json!({"drive_id": "d1", "path_on_host": d.join("system-2.ext4")})
    );
    assert_eq!(requests[before + 3]["body"], json!({"state": "Resumed"}));
    wait_for_console(
        ConsoleLog::new(&spec.console_log).cursor_at(resumed.console_offset),
        "resumed from the snapshot (fake)",
        &resumed,
        &fc,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    fc.kill(&resumed, 9).unwrap();
}

fn a_save_refused_or_misdirected_leaves_no_file() {
    let s = setup();
    set_env(&[
        (RECORD_ENV, s.record.to_str().unwrap()),
        (REJECT_ENV, "/snapshot/create"),
    ]);
    let fc = backend();
    let started = fc.start(&s.spec);
    unset_env(REJECT_ENV);
    let handle = started.unwrap_or_else(|e| panic!("{e}"));
    let dest = s.dir.path().join("state");
    let err = fc
        .save_state(&handle, &dest, Duration::from_secs(10))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "firecracker API PUT /snapshot/create: 400: The requested operation is not supported (fake)"
    );
    for f in fc.state_files(&dest) {
        assert!(!f.exists(), "{} was left behind", f.display());
    }
    // A file already there is never overwritten, and nothing is asked of
    // Firecracker.
    std::fs::write(&dest, b"precious").unwrap();
    let before = recorded(&s.record).len();
    let err = fc
        .save_state(&handle, &dest, Duration::from_secs(10))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("creating the saved state "), "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"precious");
    assert!(!Firecracker::memory_file(&dest).exists());
    assert_eq!(recorded(&s.record).len(), before);
    fc.kill(&handle, 9).unwrap();
    // A VM that is gone cannot be saved.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fc.is_running(&handle) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = fc
        .save_state(
            &handle,
            &s.dir.path().join("other"),
            Duration::from_secs(10),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not running"), "{err}");
}

fn a_bad_snapshot_fails_start_and_leaves_nothing() {
    let s = setup();
    let fc = backend();
    let mut spec = s.spec.clone();
    let state = s.dir.path().join("state");
    spec.incoming = Some(state.clone());
    // Missing: refused before anything is spawned.
    let err = fc.start(&spec).unwrap_err().to_string();
    assert!(err.starts_with("opening the saved state "), "{err}");
    assert!(!s.dir.path().join("fake.pid").exists());
    // Not a snapshot: Firecracker refuses it and ends itself.
    std::fs::write(&state, b"garbage").unwrap();
    std::fs::write(Firecracker::memory_file(&state), b"").unwrap();
    let err = fc.start(&spec).unwrap_err();
    let message = err.to_string();
    println!("  {message}");
    assert!(
        message.contains("Failed to get snapshot state from file"),
        "{message}"
    );
    let pid: u32 = std::fs::read_to_string(s.dir.path().join("fake.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        banger_vmm::process::ProcStat::read(pid).is_none_or(|st| !st.is_alive()),
        "the failed Firecracker must be gone"
    );
}

fn grows_a_disk_and_has_firecracker_read_it_again() {
    let s = setup();
    set_env(&[(RECORD_ENV, s.record.to_str().unwrap())]);
    let system = s.spec.disks[1].path.clone();
    std::fs::File::create(&system)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let fc = backend();
    let handle = fc.start(&s.spec).unwrap_or_else(|e| panic!("{e}"));
    let booted = recorded(&s.record).len();
    fc.grow_disk(&handle, 1, &system, 4 << 20)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::fs::metadata(&system).unwrap().len(), 4 << 20);
    let requests = recorded(&s.record);
    assert_eq!(methods_and_paths(&requests, booted), ["PATCH /drives/d1"]);
    assert_eq!(
        requests[booted]["body"],
        json!({"drive_id": "d1", "path_on_host": system})
    );
    // Paused too; the same size again tells Firecracker again.
    fc.pause(&handle).unwrap();
    fc.grow_disk(&handle, 1, &system, 4 << 20)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        methods_and_paths(&recorded(&s.record), booted + 2),
        ["PATCH /drives/d1"]
    );
    // Smaller: refused before the file or Firecracker is touched.
    let before = recorded(&s.record).len();
    let err = fc.grow_disk(&handle, 1, &system, 2 << 20).unwrap_err();
    assert!(err.to_string().contains("never shrinks"), "{err}");
    assert_eq!(std::fs::metadata(&system).unwrap().len(), 4 << 20);
    assert_eq!(recorded(&s.record).len(), before);
    fc.kill(&handle, 9).unwrap();
    // Gone: an error that says the API cannot be reached.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fc.is_running(&handle) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = fc.grow_disk(&handle, 1, &system, 8 << 20).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("firecracker API PATCH /drives/d1: cannot connect"),
        "{err}"
    );
}

#[allow(unsafe_code)]
fn set_env(vars: &[(&str, &str)]) {
    for (k, v) in vars {
        // SAFETY: this harness runs its tests sequentially on the main
        // thread; no other thread reads the environment meanwhile.
        unsafe { std::env::set_var(k, v) };
    }
}

#[allow(unsafe_code)]
fn unset_env(k: &str) {
    // SAFETY: as in set_env.
    unsafe { std::env::remove_var(k) };
}

// ---- the fake ----

/// Required and allowed fields, as in firecracker.yaml.
fn fields(method: &str, path: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match (method, path) {
        ("PUT", "/machine-config") => (
            &["mem_size_mib", "vcpu_count"],
            &[
                "cpu_template",
                "smt",
                "mem_size_mib",
                "track_dirty_pages",
                "vcpu_count",
                "huge_pages",
            ],
        ),
        ("PUT", "/vsock") => (
            &["guest_cid", "uds_path"],
            &["guest_cid", "uds_path", "vsock_id"],
        ),
        ("PUT", "/boot-source") => (
            &["kernel_image_path"],
            &["boot_args", "initrd_path", "kernel_image_path"],
        ),
        ("PUT", p) if p.starts_with("/drives/") => (
            &["drive_id", "is_root_device"],
            &[
                "drive_id",
                "partuuid",
                "is_root_device",
                "cache_type",
                "is_read_only",
                "path_on_host",
                "rate_limiter",
                "io_engine",
                "socket",
            ],
        ),
        ("PATCH", p) if p.starts_with("/drives/") => {
            (&["drive_id"], &["drive_id", "path_on_host", "rate_limiter"])
        }
        ("PUT", p) if p.starts_with("/network-interfaces/") => (
            &["host_dev_name", "iface_id"],
            &[
                "guest_mac",
                "host_dev_name",
                "iface_id",
                "mtu",
                "rx_rate_limiter",
                "tx_rate_limiter",
            ],
        ),
        ("PUT", "/actions") => (&["action_type"], &["action_type"]),
        ("PATCH", "/vm") => (&["state"], &["state"]),
        ("PUT", "/snapshot/create") => (
            &["mem_file_path", "snapshot_path"],
            &["mem_file_path", "snapshot_path", "snapshot_type"],
        ),
        ("PUT", "/snapshot/load") => (
            &["snapshot_path"],
            &[
                "enable_diff_snapshots",
                "track_dirty_pages",
                "mem_file_path",
                "mem_backend",
                "snapshot_path",
                "resume_vm",
                "network_overrides",
                "vsock_override",
                "clock_realtime",
                "huge_pages",
            ],
        ),
        _ => (&[], &[]),
    }
}

/// Checks an object's fields against (required, allowed).
fn check_fields(
    what: &str,
    value: &Value,
    (required, allowed): (&[&str], &[&str]),
) -> Result<(), String> {
    let obj = value
        .as_object()
        .ok_or_else(|| format!("{what}: expected an object"))?;
    if let Some(k) = required.iter().find(|k| !obj.contains_key(**k)) {
        return Err(format!("{what}: missing field `{k}`"));
    }
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("{what}: unknown field `{k}`"));
    }
    Ok(())
}

/// What Firecracker checks of a body past its fields: the method, enum
/// values, nested definitions.
fn check_body(method: &str, path: &str, value: &Value) -> Result<(), String> {
    match (method, path) {
        ("PATCH", "/vm") => match value["state"].as_str() {
            Some("Paused" | "Resumed") => Ok(()),
            _ => Err(format!("unknown variant {} of state", value["state"])),
        },
        (_, "/vm") => Err(format!("Invalid request method {method} for /vm")),
        ("PUT", "/snapshot/load") => check_load(value),
        _ => Ok(()),
    }
}

/// The nested definitions of `SnapshotLoadParams`.
fn check_load(value: &Value) -> Result<(), String> {
    let both = ["backend_type", "backend_path"];
    check_fields("mem_backend", &value["mem_backend"], (&both, &both))?;
    if !matches!(
        value["mem_backend"]["backend_type"].as_str(),
        Some("File" | "Uffd")
    ) {
        return Err("unknown variant of backend_type".into());
    }
    for o in value["network_overrides"].as_array().into_iter().flatten() {
        let both = ["iface_id", "host_dev_name"];
        check_fields("network_overrides", o, (&both, &both))?;
    }
    if let Some(v) = value.get("vsock_override") {
        check_fields("vsock_override", v, (&["uds_path"], &["uds_path"]))?;
    }
    Ok(())
}

/// The first bytes of the fake's snapshot files.
const SNAPSHOT_MAGIC: &str = "fake firecracker snapshot";

/// Firecracker's states as `GET /` names them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    NotStarted,
    Running,
    Paused,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::NotStarted => "Not started",
            State::Running => "Running",
            State::Paused => "Paused",
        }
    }
}

fn fake_firecracker(socket: &Path) {
    if std::env::var_os(DIE_ENV).is_some() {
        eprintln!("Error: Failed to open the API socket: Address in use (fake)");
        std::process::exit(1);
    }
    if let Some(dir) = socket.parent().and_then(Path::parent) {
        let _ = std::fs::write(dir.join("fake.pid"), std::process::id().to_string());
    }
    let record = std::env::var_os(RECORD_ENV).map(PathBuf::from);
    let reject = std::env::var(REJECT_ENV).ok();
    let listener = UnixListener::bind(socket).expect("bind the API socket");
    println!("Running Firecracker (fake)");
    let mut state = State::NotStarted;
    let mut configured = false;
    // Paused by a load, not resumed since.
    let mut loaded = false;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            continue;
        }
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let answer = |w: &mut dyn Write, status: &str, body: &str| {
            let _ = write!(
                w,
                "HTTP/1.1 {status} \r\nServer: Firecracker API\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        };
        if method == "GET" && path == "/" {
            let info = json!({
                "id": "fake", "state": state.name(), "vmm_version": "0.0.0", "app_name": "Firecracker"
            });
            answer(&mut writer, "200", &info.to_string());
            continue;
        }
        let fault = |m: String| json!({ "fault_message": m }).to_string();
        let value: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                answer(&mut writer, "400", &fault(format!("bad JSON: {e}")));
                continue;
            }
        };
        let checked = check_fields(path, &value, fields(method, path))
            .and_then(|()| check_body(method, path, &value));
        if let Err(e) = checked {
            answer(&mut writer, "400", &fault(e));
            continue;
        }
        if reject.as_deref() == Some(path) {
            answer(
                &mut writer,
                "400",
                &fault("The requested operation is not supported (fake)".into()),
            );
            continue;
        }
        // What Firecracker refuses in each state.
        let file = |key: &str| PathBuf::from(value[key].as_str().unwrap_or_default());
        let refused = match (method, path) {
            ("PUT", "/snapshot/load") if configured || state != State::NotStarted => Some(
                "Loading a microVM snapshot not allowed after configuring boot-specific resources."
                    .to_owned(),
            ),
            ("PUT", "/snapshot/load") => {
                let snapshot = file("snapshot_path");
                let memory = PathBuf::from(
                    value["mem_backend"]["backend_path"]
                        .as_str()
                        .unwrap_or_default(),
                );
                let ok = std::fs::read_to_string(&snapshot)
                    .is_ok_and(|t| t.starts_with(SNAPSHOT_MAGIC))
                    && memory.is_file();
                if !ok {
                    // A failed load ends Firecracker.
                    let m = "Load snapshot error: Failed to restore from snapshot: Failed to get \
                             snapshot state from file: bad snapshot (fake)";
                    answer(&mut writer, "400", &fault(m.into()));
                    eprintln!("{m}");
                    std::process::exit(1);
                }
                None
            }
            ("PUT", "/snapshot/create") if state != State::Paused => {
                Some("Create snapshot error: the microVM is not paused (fake)".into())
            }
            ("PUT", "/snapshot/create") => None,
            ("PATCH", _) if state == State::NotStarted => {
                Some("The requested operation is not supported before starting the microVM.".into())
            }
            ("PUT", "/actions") if value["action_type"] == "InstanceStart" && !configured => {
                Some("Cannot start microvm without kernel configuration.".into())
            }
            ("PUT", "/actions") => None,
            ("PUT", _) if state != State::NotStarted => {
                Some("The requested operation is not supported after starting the microVM.".into())
            }
            _ => None,
        };
        if let Some(m) = refused {
            answer(&mut writer, "400", &fault(m));
            continue;
        }
        if let Some(record) = &record {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(record)
                .unwrap();
            writeln!(
                f,
                "{}",
                json!({ "method": method, "path": path, "body": value })
            )
            .unwrap();
        }
        match (method, path) {
            ("PUT", "/snapshot/create") => {
                // Firecracker truncates and fills the files it is named.
                std::fs::write(file("snapshot_path"), format!("{SNAPSHOT_MAGIC}\n")).unwrap();
                std::fs::write(file("mem_file_path"), vec![0u8; 8192]).unwrap();
            }
            ("PUT", "/snapshot/load") => {
                state = State::Paused;
                loaded = true;
            }
            ("PATCH", "/vm") => match value["state"].as_str() {
                Some("Paused") => state = State::Paused,
                Some("Resumed") => {
                    state = State::Running;
                    if std::mem::take(&mut loaded) {
                        println!("resumed from the snapshot (fake)");
                    }
                }
                _ => {}
            },
            ("PUT", "/actions") => {}
            ("PUT", _) => configured = true,
            _ => {}
        }
        answer(&mut writer, "204", "");
        match value["action_type"].as_str() {
            Some("InstanceStart") => {
                state = State::Running;
                println!("[    0.000000] Linux version (fake)");
                println!("banger-init ready in 1 ms (fake)");
            }
            // A paused guest's init never sees the key press.
            Some("SendCtrlAltDel") if state == State::Paused => {}
            Some("SendCtrlAltDel") => {
                println!("reboot: Restarting system (fake)");
                std::process::exit(0);
            }
            _ => {}
        }
    }
}
