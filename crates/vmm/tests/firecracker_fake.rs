//! The Firecracker backend's process handling end to end, without
//! Firecracker: this test binary is its own fake. Started with
//! `--api-sock`, it plays a Firecracker API server that checks each
//! request's fields the way Firecracker's strict deserializer does,
//! records what it was sent, prints a console line on `InstanceStart`,
//! pauses and resumes on `PATCH /vm` (saying so in `GET /`) and exits on
//! `SendCtrlAltDel` (as `reboot=k` makes Firecracker do) unless paused,
//! when the guest cannot act on it.
//! Started without, it runs the tests against itself.
//!
//! (A real Firecracker is exercised by the unit test
//! `firecracker::tests::real_firecracker_accepts_the_configuration` when
//! `BANGER_TEST_FIRECRACKER` names one.)

use std::io::{BufRead, BufReader, Read, Write};
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
fn fields(path: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match path {
        "/machine-config" => (
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
        "/vsock" => (
            &["guest_cid", "uds_path"],
            &["guest_cid", "uds_path", "vsock_id"],
        ),
        "/boot-source" => (
            &["kernel_image_path"],
            &["boot_args", "initrd_path", "kernel_image_path"],
        ),
        p if p.starts_with("/drives/") => (
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
        p if p.starts_with("/network-interfaces/") => (
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
        "/actions" => (&["action_type"], &["action_type"]),
        "/vm" => (&["state"], &["state"]),
        _ => (&[], &[]),
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
    // As `GET /` says it: "Not started", "Running" or "Paused".
    let mut state = "Not started";
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
                "id": "fake",
                "state": state,
                "vmm_version": "0.0.0",
                "app_name": "Firecracker"
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
        let (required, allowed) = fields(path);
        let obj = value.as_object().cloned().unwrap_or_default();
        if let Some(k) = required.iter().find(|k| !obj.contains_key(**k)) {
            answer(&mut writer, "400", &fault(format!("missing field `{k}`")));
            continue;
        }
        if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            answer(&mut writer, "400", &fault(format!("unknown field `{k}`")));
            continue;
        }
        if path == "/vm" {
            let refusal = match (method, value["state"].as_str(), state) {
                ("PATCH", Some("Paused" | "Resumed"), "Not started") => Some(
                    "The requested operation is not supported before starting the microVM."
                        .to_owned(),
                ),
                ("PATCH", Some("Paused" | "Resumed"), _) => None,
                ("PATCH", other, _) => Some(format!("unknown variant `{other:?}`")),
                (other, _, _) => Some(format!("Invalid request method {other} for /vm")),
            };
            if let Some(why) = refusal {
                answer(&mut writer, "400", &fault(why));
                continue;
            }
        }
        if reject.as_deref() == Some(path) {
            answer(
                &mut writer,
                "400",
                &fault("The requested operation is not supported (fake)".into()),
            );
            continue;
        }
        if let Some(record) = &record {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(record)
                .unwrap();
            writeln!(f, "{}", json!({ "path": path, "body": value })).unwrap();
        }
        answer(&mut writer, "204", "");
        match (value["action_type"].as_str(), value["state"].as_str()) {
            (Some("InstanceStart"), _) => {
                state = "Running";
                println!("[    0.000000] Linux version (fake)");
                println!("banger-init ready in 1 ms (fake)");
            }
            // A paused guest's init never sees the key press.
            (Some("SendCtrlAltDel"), _) if state == "Paused" => {}
            (Some("SendCtrlAltDel"), _) => {
                println!("reboot: Restarting system (fake)");
                std::process::exit(0);
            }
            (_, Some("Paused")) => state = "Paused",
            (_, Some("Resumed")) => state = "Running",
            _ => {}
        }
    }
}
