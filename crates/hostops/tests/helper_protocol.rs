//! The root helper's protocol end to end over a real Unix socket, with a
//! recording `HostOps` behind it, so the peer check, the request checks
//! and the replies are tested without root. What the real operations do
//! is tested in crates/network and by the unprivileged end-to-end test.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use banger_hostops::{
    BridgeSpec, GuestPort, HelperClient, HostOps, HostOpsError, Request, serve_on,
};

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

impl Recorder {
    fn record(&self, call: String) -> Result<(), HostOpsError> {
        let fail = call.contains("fail");
        self.calls.lock().unwrap().push(call);
        if fail {
            Err(HostOpsError::Failed("nft said no".into()))
        } else {
            Ok(())
        }
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl HostOps for Recorder {
    fn ensure_bridge(&self, b: &BridgeSpec) -> Result<(), HostOpsError> {
        self.record(format!("ensure_bridge {} {}", b.name, b.cidr))
    }
    fn create_tap(&self, tap: &str, b: &BridgeSpec) -> Result<(), HostOpsError> {
        self.record(format!("create_tap {tap} {}", b.name))
    }
    fn delete_tap(&self, tap: &str) -> Result<(), HostOpsError> {
        self.record(format!("delete_tap {tap}"))
    }
    fn isolate_guest(&self, p: &GuestPort) -> Result<(), HostOpsError> {
        self.record(format!("isolate_guest {} {}", p.vm, p.ip))
    }
    fn remove_isolation(&self, vm: &str) -> Result<(), HostOpsError> {
        self.record(format!("remove_isolation {vm}"))
    }
    fn enable_nat(&self, p: &GuestPort) -> Result<(), HostOpsError> {
        self.record(format!("enable_nat {} {}", p.vm, p.ip))
    }
    fn disable_nat(&self, vm: &str) -> Result<(), HostOpsError> {
        self.record(format!("disable_nat {vm}"))
    }
    fn bind_dns(&self, b: &BridgeSpec) -> Result<OwnedFd, HostOpsError> {
        self.record(format!("bind_dns {}", b.name))?;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        Ok(socket.into())
    }
    fn map_ids(&self, pid: u32) -> Result<(), HostOpsError> {
        self.record(format!("map_ids {pid}"))
    }
    fn describe(&self) -> String {
        "a recorder".into()
    }
}

struct Helper {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    ops: Arc<Recorder>,
}

/// A helper serving `owner_uid` on a socket of its own.
fn helper(owner_uid: u32) -> Helper {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("helper.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let ops = Arc::new(Recorder::default());
    let served: Arc<dyn HostOps> = ops.clone();
    std::thread::spawn(move || serve_on(listener, owner_uid, served));
    Helper {
        _dir: dir,
        socket,
        ops,
    }
}

fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn bridge(name: &str) -> BridgeSpec {
    BridgeSpec {
        name: name.into(),
        cidr: "172.16.0.1/24".parse().unwrap(),
    }
}

fn raw(socket: &PathBuf, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(bytes).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn the_owner_gets_each_operation_carried_out() {
    let h = helper(me());
    let client = HelperClient::new(&h.socket);
    assert_eq!(client.ping().unwrap(), env!("CARGO_PKG_VERSION"));
    let port = GuestPort::for_vm(
        "dev",
        "172.16.0.9".parse().unwrap(),
        bridge("banger0"),
        true,
    );
    client.ensure_bridge(&bridge("banger0")).unwrap();
    client.create_tap(&port.tap, &port.bridge).unwrap();
    client.isolate_guest(&port).unwrap();
    client.enable_nat(&port).unwrap();
    client.disable_nat("dev").unwrap();
    client.remove_isolation("dev").unwrap();
    client.delete_tap(&port.tap).unwrap();
    client.map_ids(4242).unwrap();
    assert!(
        client.map_ids(1).unwrap_err().is_invalid(),
        "init is no build"
    );
    let tap = &port.tap;
    assert_eq!(
        h.ops.calls(),
        [
            "ensure_bridge banger0 172.16.0.1/24".to_string(),
            format!("create_tap {tap} banger0"),
            "isolate_guest dev 172.16.0.9".into(),
            "enable_nat dev 172.16.0.9".into(),
            "disable_nat dev".into(),
            "remove_isolation dev".into(),
            format!("delete_tap {tap}"),
            "map_ids 4242".into(),
        ]
    );
}

#[test]
fn bind_dns_passes_a_working_socket_back() {
    let h = helper(me());
    let fd = HelperClient::new(&h.socket)
        .bind_dns(&bridge("banger0"))
        .unwrap();
    let socket = std::net::UdpSocket::from(fd);
    let addr = socket.local_addr().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    // It is a live socket: a datagram sent to it arrives.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    probe.send_to(b"hello", addr).unwrap();
    let mut buf = [0u8; 8];
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
}

#[test]
fn another_uid_is_refused_before_its_request_is_read() {
    let h = helper(me().wrapping_add(4242));
    let e = HelperClient::new(&h.socket)
        .ensure_bridge(&bridge("banger0"))
        .unwrap_err();
    assert!(matches!(e, HostOpsError::Refused(_)), "{e:?}");
    assert!(e.to_string().contains("is not banger's owner"), "{e}");
    assert!(h.ops.calls().is_empty());
}

#[test]
fn names_outside_bangers_never_reach_the_operations() {
    let h = helper(me());
    let client = HelperClient::new(&h.socket);
    let e = client.ensure_bridge(&bridge("docker0")).unwrap_err();
    assert!(
        e.is_invalid() && e.to_string().contains("not one of banger's"),
        "{e}"
    );
    let e = client.delete_tap("eth0").unwrap_err();
    assert!(
        e.to_string().contains("not one of banger's TAP names"),
        "{e}"
    );
    let e = client.disable_nat("a;b").unwrap_err();
    assert!(e.is_invalid(), "{e}");
    let mut port = GuestPort::for_vm(
        "dev",
        "172.16.0.9".parse().unwrap(),
        bridge("banger0"),
        true,
    );
    port.tap = banger_network::tap_name("someone-else");
    assert!(client.isolate_guest(&port).unwrap_err().is_invalid());
    assert!(h.ops.calls().is_empty(), "{:?}", h.ops.calls());
}

#[test]
fn malformed_and_oversized_requests_get_one_line_refusals() {
    let h = helper(me());
    for (bytes, expect) in [
        (&b"not json\n"[..], "malformed request"),
        (
            &br#"{"op":"run","argv":["/bin/sh"]}"#[..],
            "ended before its newline",
        ),
        (
            &b"{\"op\":\"run\",\"argv\":[\"/bin/sh\"]}\n"[..],
            "malformed request",
        ),
        (
            &b"{\"op\":\"delete_tap\",\"tap\":\"bgr0123456789ab\",\"owner\":0}\n"[..],
            "malformed request",
        ),
    ] {
        let reply = raw(&h.socket, bytes);
        assert_eq!(reply.lines().count(), 1, "{reply}");
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(expect), "{bytes:?}: {reply}");
        assert_eq!(v["error"]["invalid"], true);
    }
    let mut huge = vec![b' '; 64 * 1024];
    huge.push(b'\n');
    let reply = raw(&h.socket, &huge);
    assert!(reply.contains("longer than 4096 bytes"), "{reply}");
    assert!(h.ops.calls().is_empty());
}

#[test]
fn a_failed_operation_is_reported_as_the_hosts_fault() {
    let h = helper(me());
    let e = HelperClient::new(&h.socket)
        .disable_nat("fail")
        .unwrap_err();
    assert!(
        matches!(e, HostOpsError::Failed(ref m) if m == "nft said no"),
        "{e:?}"
    );
    assert!(!e.is_invalid());
    // Requests are still served after a failure.
    HelperClient::new(&h.socket).disable_nat("dev").unwrap();
}

#[test]
fn a_helper_that_is_not_there_names_its_unit() {
    let dir = tempfile::tempdir().unwrap();
    let e = HelperClient::new(dir.path().join("absent.sock"))
        .ping()
        .unwrap_err();
    assert!(e.to_string().contains("bangerd-root.service"), "{e}");
}

#[test]
fn the_request_names_match_the_wire() {
    // Logged names and the wire's tags agree, so a log line can be
    // grepped for what the daemon sent.
    for r in [
        Request::Ping,
        Request::DeleteTap {
            tap: "bgr0123456789ab".into(),
        },
        Request::DisableNat { vm: "x".into() },
    ] {
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["op"], r.name());
    }
}
