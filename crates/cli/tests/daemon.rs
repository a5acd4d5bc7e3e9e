//! The real `banger` driving a real `bangerd` on a temporary socket.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use banger_model::{ImageRecord, Size, VmRecord};
use common::*;
use predicates::prelude::*;
use predicates::str::contains;

#[test]
fn auto_start_status_and_stop() {
    let home = TestHome::new();

    // Status never starts the daemon, and says so with exit 1.
    home.banger(&["daemon", "status"])
        .assert()
        .code(1)
        .stdout(contains("bangerd is not running"));
    assert!(!home.socket().exists());

    // A command that needs the daemon starts it.
    home.banger(&["vm", "list"])
        .assert()
        .success()
        .stdout(contains("no VMs"));
    let status = home.status_json();
    assert_eq!(status["running"], true, "{status}");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["schema_version"], 8);
    assert_eq!(status["socket"], home.socket().to_str().unwrap());
    let pid = status["pid"].as_u64().unwrap() as u32;
    assert!(process_alive(pid));

    let human = home.banger(&["daemon", "status"]).assert().success();
    let text = stdout(human.get_output());
    assert!(text.contains(&format!("pid:      {pid}")), "{text}");
    assert!(text.contains(home.log().to_str().unwrap()), "{text}");

    // The socket is private to its user.
    let meta = std::fs::metadata(home.socket()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // The log is structured JSON, one object per line.
    let log = std::fs::read_to_string(home.log()).unwrap();
    let first: serde_json::Value =
        serde_json::from_str(log.lines().next().unwrap()).expect("JSON log line");
    assert_eq!(first["fields"]["message"], "bangerd ready");

    // The same daemon serves the next command.
    home.banger(&["image", "list"]).assert().success();
    assert_eq!(home.daemon_pid(), Some(pid));

    home.banger(&["daemon", "socket"])
        .assert()
        .success()
        .stdout(format!("{}\n", home.socket().display()));

    home.banger(&["daemon", "stop"])
        .assert()
        .success()
        .stdout(contains("bangerd stopped"));
    // `daemon stop` returns once the daemon's lock is free, which the
    // kernel frees as the process exits: its /proc entry may outlive that
    // by a moment.
    wait_for(
        "the daemon process to be gone",
        Duration::from_secs(5),
        || !process_alive(pid),
    );
    assert!(!home.socket().exists(), "socket removed on stop");
    home.banger(&["daemon", "status"]).assert().code(1);
    // Stopping again is not an error.
    home.banger(&["daemon", "stop"])
        .assert()
        .success()
        .stdout(contains("not running"));
}

#[test]
fn stale_socket_from_a_dead_daemon_is_replaced() {
    let home = TestHome::new();
    std::fs::create_dir_all(home.socket().parent().unwrap()).unwrap();
    // A socket file nobody listens on, as a killed daemon leaves behind.
    drop(UnixListener::bind(home.socket()).unwrap());
    assert!(home.socket().exists());
    assert!(UnixStream::connect(home.socket()).is_err());

    home.banger(&["vm", "list"]).assert().success();
    assert!(home.daemon_pid().is_some());
    assert!(UnixStream::connect(home.socket()).is_ok());
}

#[test]
fn killed_daemon_is_restarted_on_next_command() {
    let home = TestHome::new();
    home.banger(&["vm", "list"]).assert().success();
    let pid = home.daemon_pid().unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    wait_for("daemon to die", Duration::from_secs(10), || {
        !process_alive(pid)
    });
    // SIGKILL leaves the socket file behind; the lock dies with the process.
    assert!(home.socket().exists());
    home.banger(&["vm", "list"]).assert().success();
    let new_pid = home.daemon_pid().unwrap();
    assert_ne!(new_pid, pid);
}

#[test]
fn second_daemon_on_the_same_state_dir_is_refused() {
    let home = TestHome::new();
    home.banger(&["vm", "list"]).assert().success();
    let pid = home.daemon_pid().unwrap();

    let out = home.bangerd_cmd().output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("another bangerd") && err.contains(&format!("pid {pid}")),
        "{err}"
    );
    assert!(err.contains("banger daemon stop"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // The first daemon is untouched and still serving.
    assert_eq!(home.daemon_pid(), Some(pid));
}

#[test]
fn daemon_start_failure_is_reported_with_the_log_path() {
    let home = TestHome::new();
    let out = home
        .banger(&["vm", "list"])
        .env("BANGER_LOG_LEVEL", "loud")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("bangerd failed to start"), "{err}");
    assert!(err.contains("BANGER_LOG_LEVEL"), "{err}");
    assert!(err.contains(home.log().to_str().unwrap()), "{err}");
}

#[test]
fn malformed_api_requests_get_one_line_errors() {
    let home = TestHome::new();
    home.banger(&["vm", "list"]).assert().success();

    let (status, body) = raw_request(&home, "POST", "/v1/vms", "{\"name\": 5");
    assert_eq!(status, 400, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "bad_request");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("malformed request body"), "{msg}");
    assert!(!msg.contains('\n'));

    let (status, body) = raw_request(&home, "POST", "/v1/vms", "{\"bogus\": 1}");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown field"), "{body}");

    // The daemon validates names again, whatever the client checked.
    let (status, body) = raw_request(&home, "POST", "/v1/vms", "{\"name\": \"Bad_Name\"}");
    assert_eq!(status, 200, "streamed operation");
    let last: serde_json::Value =
        serde_json::from_str(body.trim().lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "failed");
    assert_eq!(last["error"]["code"], "bad_request");

    let (status, body) = raw_request(&home, "GET", "/v9/nothing", "");
    assert_eq!(status, 404);
    assert!(body.contains("no API GET /v9/nothing"), "{body}");

    // Still healthy afterwards.
    home.banger(&["vm", "list"]).assert().success();
}

#[test]
fn lists_and_shows_what_the_store_holds() {
    let home = TestHome::new();
    seed(&home);
    home.banger(&["vm", "list"]).assert().success().stdout(
        contains("web-1")
            .and(contains("stopped"))
            .and(contains("2048 MiB")),
    );
    let out = home.banger(&["vm", "list", "--json"]).output().unwrap();
    let vms: Vec<VmRecord> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].name.as_str(), "web-1");

    let out = home
        .banger(&["vm", "show", "web-1", "--json"])
        .output()
        .unwrap();
    let vm: VmRecord = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(vm.disk_size, Size::from_gib(8));
    home.banger(&["vm", "show", "nope"])
        .assert()
        .code(1)
        .stderr("error: VM \"nope\" not found: see 'banger vm list'\n");

    let out = home.banger(&["image", "list", "--json"]).output().unwrap();
    let images: Vec<ImageRecord> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(images[0].kernel, "cloud-6.1");
    home.banger(&["image", "show", "debian-bookworm"])
        .assert()
        .success()
        .stdout(contains("kernel:  cloud-6.1"));
    home.banger(&["kernel", "list"])
        .assert()
        .success()
        .stdout(contains("6.1.0-37-cloud-amd64"));
    home.banger(&["kernel", "show", "cloud-6.1", "--json"])
        .assert()
        .success()
        .stdout(contains("\"version\": \"6.1.0-37-cloud-amd64\""));
}

#[test]
fn vm_create_checks_everything_before_creating() {
    let home = TestHome::new();
    seed(&home);
    // Name taken: refused by the daemon.
    home.banger(&["vm", "create", "--name", "web-1"])
        .assert()
        .code(1)
        .stderr(contains("VM \"web-1\" already exists"));
    // No such image: the spec line comes first, then the error.
    let out = home
        .banger(&[
            "vm", "create", "--image", "nope", "--vcpu", "2", "--memory", "1G",
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(err.contains("spec: 2 vcpu · 1024 MiB · 8G disk"), "{err}");
    assert!(
        err.contains("error: image \"nope\" not found: run 'banger image build'"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(1));
    home.banger(&["vm", "create", "--vcpu", "0"])
        .assert()
        .code(1)
        .stderr(contains("--vcpu 0 is out of range"));
    // Nothing was recorded.
    let out = home.banger(&["vm", "list", "--json"]).output().unwrap();
    let vms: Vec<VmRecord> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(vms.len(), 1);
}

/// One HTTP/1.1 request over the socket, by hand, to send what the real
/// client never would.
fn raw_request(home: &TestHome, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(home.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status: u16 = resp[9..12].parse().unwrap();
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, dechunk(body))
}

/// Streamed answers are chunked; tests want the payload.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_string();
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_string();
        };
        if n == 0 {
            return out;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
}
