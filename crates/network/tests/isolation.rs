//! Guest isolation against the real kernel, inside a network namespace of
//! its own (see `common/`): a bridge and two TAPs made by this crate, and
//! the test playing both guests through the TAPs' file descriptors
//! (TUNSETIFF on /dev/net/tun): what it writes to a TAP is what a guest
//! sends, what it reads is what reaches that guest. The "outside" is a TAP
//! off the bridge with the default route through it, and a second bridge
//! `docker0` stands for another program's network; each is also read
//! through its TAP's descriptor. Nothing leaves the namespace.
//!
//! Each refused frame is checked where it would show: at the other
//! guest's TAP, on a host socket, at the outside TAP. Writes to a TAP are
//! handled in the writing thread (bridge, routing, delivery), so a frame
//! that was not dropped is already there when the next one is sent; a
//! frame that must arrive, sent after the refused ones, closes each check.

mod common;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use banger_network::{
    BridgeSpec, GuestPort, NatBackend, create_tap, delete_tap, disable_nat, enable_nat_with,
    ensure_bridge, guest_isolated, isolate_guest, mac_for, nat_enabled, remove_isolation,
};
use common::*;

#[test]
fn isolation_in_netns() {
    in_netns("inner_isolation");
}

const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
const VM1_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);
const VM2_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 3);
const OUT_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x99, 0x02];
const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const DOCKER_IP: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
const BROADCAST: [u8; 6] = [0xff; 6];

#[test]
#[ignore = "run inside a network namespace by isolation_in_netns"]
fn inner_isolation() {
    if !inside_test_netns() {
        return;
    }
    if find_tool("nft").is_none() {
        skip("nft is not installed (apt-get install nftables)");
        return;
    }
    run(&["ip", "link", "set", "lo", "up"]);
    let bridge = BridgeSpec {
        name: "banger0".into(),
        cidr: "172.16.0.1/24".parse().unwrap(),
    };
    ensure_bridge(&bridge).unwrap();
    let vm1 = GuestPort::for_vm("vm1", VM1_IP, bridge.clone(), false);
    let vm2 = GuestPort::for_vm("vm2", VM2_IP, bridge.clone(), true);
    for vm in [&vm1, &vm2] {
        create_tap(&vm.tap, &bridge.name).unwrap();
        isolate_guest(vm).unwrap();
    }
    // The host knows its guests (they would answer its ARP). Only now: a
    // port joining the bridge may change its MAC, which flushes them.
    for vm in [&vm1, &vm2] {
        neighbor(&vm.ip.to_string(), &vm.mac, "banger0");
    }
    isolate_guest(&vm1).unwrap();
    enable_nat_with(NatBackend::Nft, "vm2", VM2_IP, "banger0").unwrap();
    assert!(guest_isolated("vm1").unwrap() && guest_isolated("vm2").unwrap());
    assert_eq!(
        count_rules_in("bridge", "banger", "banger"),
        2,
        "the rules shared by all guests are there once"
    );
    let vm1_rules = count_all("banger:vm1");
    isolate_guest(&vm1).unwrap();
    assert_eq!(
        count_all("banger:vm1"),
        vm1_rules,
        "isolating is idempotent"
    );

    // The outside: the default route leaves through out0, a TAP off the
    // bridge; 10.99.0.2 and 169.254.169.254 are behind it.
    run(&["ip", "tuntap", "add", "dev", "out0", "mode", "tap"]);
    run(&["ip", "addr", "add", "10.99.0.1/24", "dev", "out0"]);
    run(&["ip", "link", "set", "out0", "up"]);
    run(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        "10.99.0.2",
        "dev",
        "out0",
    ]);
    run(&["ip", "route", "add", "169.254.0.0/16", "dev", "out0"]);
    for ip in ["10.99.0.2", "169.254.169.254"] {
        neighbor(ip, "02:00:00:00:99:02", "out0");
    }
    // Another program's bridge (Docker's), with a container behind dk0.
    run(&["ip", "link", "add", "docker0", "type", "bridge"]);
    run(&["ip", "addr", "add", "172.17.0.1/16", "dev", "docker0"]);
    run(&["ip", "tuntap", "add", "dev", "dk0", "mode", "tap"]);
    run(&["ip", "link", "set", "dk0", "master", "docker0"]);
    run(&["ip", "link", "set", "dk0", "up"]);
    run(&["ip", "link", "set", "docker0", "up"]);
    neighbor("172.17.0.2", "02:00:00:00:17:02", "docker0");

    let g1 = Tap::open(&vm1.tap);
    let g2 = Tap::open(&vm2.tap);
    let out = Tap::open("out0");
    let dk = Tap::open("dk0");
    let mac1 = mac(&vm1.mac);
    let mac2 = mac(&vm2.mac);
    let host_mac = mac(text(&["cat", "/sys/class/net/banger0/address"]).trim());
    let out_mac = mac(text(&["cat", "/sys/class/net/out0/address"]).trim());

    // Guest to guest: a broadcast and a unicast frame arrive. The first
    // waits for the ports to come up.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        g1.send(&udp_frame(BROADCAST, mac1, VM1_IP, bcast(), 9, b"warm-up"));
        if g2.saw(b"warm-up", Duration::from_millis(100)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "vm1's broadcast never reached vm2"
        );
    }
    g1.send(&udp_frame(mac2, mac1, VM1_IP, VM2_IP, 9, b"guest-to-guest"));
    assert!(g2.saw(b"guest-to-guest", Duration::from_secs(1)));

    // Forged frames from vm1 never leave the bridge: vm2 sees none.
    let forged_mac = [0x52, 0x54, 0x00, 0x66, 0x66, 0x66];
    let arp_forged_ip = arp_frame(mac1, mac1, BRIDGE_IP, VM2_IP);
    let arp_forged_mac = arp_frame(mac1, forged_mac, VM1_IP, VM2_IP);
    let forged: Vec<(&str, Vec<u8>)> = vec![
        (
            "a forged source MAC",
            udp_frame(BROADCAST, forged_mac, VM1_IP, bcast(), 9, b"forged-mac"),
        ),
        (
            "a forged source address",
            udp_frame(
                BROADCAST,
                mac1,
                "172.16.0.66".parse().unwrap(),
                bcast(),
                9,
                b"forged-ip",
            ),
        ),
        (
            "another guest's address",
            udp_frame(mac2, mac1, VM2_IP, VM2_IP, 9, b"stolen-ip"),
        ),
        (
            "another guest's MAC and address",
            udp_frame(BROADCAST, mac2, VM2_IP, bcast(), 9, b"stolen-both"),
        ),
        ("ARP claiming the gateway's address", arp_forged_ip.clone()),
        ("ARP with a forged sender MAC", arp_forged_mac.clone()),
        (
            "IPv6",
            ether(BROADCAST, mac1, 0x86dd, &ipv6_udp(b"ipv6-frame")),
        ),
        (
            "a VLAN tag",
            vlan_frame(
                BROADCAST,
                mac1,
                5,
                &ipv4_udp(VM1_IP, bcast(), 9, b"vlan-frame"),
            ),
        ),
    ];
    for (_, frame) in &forged {
        g1.send(frame);
    }
    let arp_ok = arp_frame(mac1, mac1, VM1_IP, VM2_IP);
    g1.send(&arp_ok);
    g1.send(&udp_frame(
        BROADCAST,
        mac1,
        VM1_IP,
        bcast(),
        9,
        b"after-forged",
    ));
    let seen = g2.collect_until(b"after-forged", Duration::from_secs(2));
    assert!(
        contains(&seen, b"after-forged"),
        "vm1's own broadcast must pass"
    );
    assert!(seen.iter().any(|f| f == &arp_ok), "vm1's own ARP must pass");
    for (what, frame) in &forged {
        assert!(
            !seen
                .iter()
                .any(|f| f == frame || marker_of(frame).is_some_and(|m| find(f, m))),
            "{what} from vm1 reached vm2"
        );
    }

    // To the host: DNS and the clock on the bridge's address; nothing
    // else, on no address of the host's.
    let dns = UdpSocket::bind((BRIDGE_IP, 53)).unwrap();
    let clock = UdpSocket::bind((BRIDGE_IP, 10123)).unwrap();
    let other = UdpSocket::bind((BRIDGE_IP, 9999)).unwrap();
    let elsewhere = UdpSocket::bind((OUT_IP, 9998)).unwrap();
    for s in [&dns, &clock, &other, &elsewhere] {
        s.set_nonblocking(true).unwrap();
    }
    g1.send(&udp_frame(
        host_mac,
        mac1,
        VM1_IP,
        BRIDGE_IP,
        9999,
        b"to-other-port",
    ));
    g1.send(&udp_frame(
        host_mac,
        mac1,
        VM1_IP,
        OUT_IP,
        9998,
        b"to-other-address",
    ));
    g1.send(&udp_frame(
        host_mac,
        mac1,
        VM1_IP,
        BRIDGE_IP,
        10123,
        b"to-clock",
    ));
    g1.send(&udp_frame(host_mac, mac1, VM1_IP, BRIDGE_IP, 53, b"to-dns"));
    assert_eq!(
        recv(&dns, Duration::from_secs(2)).as_deref(),
        Some(&b"to-dns"[..])
    );
    assert_eq!(
        recv(&clock, Duration::ZERO).as_deref(),
        Some(&b"to-clock"[..])
    );
    assert_eq!(
        recv(&other, Duration::ZERO),
        None,
        "another port of the bridge address"
    );
    assert_eq!(
        recv(&elsewhere, Duration::ZERO),
        None,
        "another address of the host"
    );

    // TCP: port 53 answers a SYN, another port does not (not even a RST).
    let tcp_dns = TcpListener::bind((BRIDGE_IP, 53)).unwrap();
    let tcp_other = TcpListener::bind((BRIDGE_IP, 2222)).unwrap();
    g1.send(&tcp_syn_frame(
        host_mac, mac1, VM1_IP, BRIDGE_IP, 40001, 2222,
    ));
    g1.send(&tcp_syn_frame(host_mac, mac1, VM1_IP, BRIDGE_IP, 40000, 53));
    let replies = g1.collect_for(Duration::from_millis(500));
    let tcp_from = |port: u16| {
        replies
            .iter()
            .filter_map(|f| tcp_of(f))
            .filter(|(src, _, _)| *src == port)
            .count()
    };
    assert_eq!(tcp_from(53), 1, "a SYN-ACK from port 53");
    assert_eq!(tcp_from(2222), 0, "nothing from port 2222");
    drop((tcp_dns, tcp_other));

    // What the host opened (ssh, here UDP) gets its replies.
    let opener = UdpSocket::bind((BRIDGE_IP, 5000)).unwrap();
    opener.set_nonblocking(true).unwrap();
    opener.send_to(b"host-opens", (VM1_IP, 7000)).unwrap();
    assert!(g1.saw(b"host-opens", Duration::from_secs(1)));
    g1.send(&udp_frame_ports(
        host_mac, mac1, VM1_IP, BRIDGE_IP, 7000, 5000, b"reply",
    ));
    assert_eq!(
        recv(&opener, Duration::from_secs(1)).as_deref(),
        Some(&b"reply"[..])
    );

    // Beyond the bridge: vm1 (no NAT) reaches nothing, not even with vm2's
    // address; vm2 (NAT) reaches the outside masqueraded, but neither
    // link-local nor another bridge of the host.
    g1.send(&udp_frame(
        host_mac,
        mac1,
        VM1_IP,
        PEER_IP,
        4000,
        b"plain-out",
    ));
    g1.send(&udp_frame(
        host_mac,
        mac1,
        VM2_IP,
        PEER_IP,
        4000,
        b"plain-stolen",
    ));
    g1.send(&udp_frame(
        host_mac,
        mac1,
        VM1_IP,
        METADATA_IP,
        80,
        b"plain-metadata",
    ));
    g2.send(&udp_frame(
        host_mac,
        mac2,
        VM2_IP,
        METADATA_IP,
        80,
        b"nat-metadata",
    ));
    g2.send(&udp_frame(
        host_mac,
        mac2,
        VM2_IP,
        DOCKER_IP,
        4000,
        b"nat-docker",
    ));
    g2.send(&udp_frame(
        host_mac, mac2, VM2_IP, PEER_IP, 4000, b"nat-out",
    ));
    let outside = out.collect_until(b"nat-out", Duration::from_secs(2));
    let nat_out = outside
        .iter()
        .find(|f| find(f, b"nat-out"))
        .expect("vm2's packet to the outside");
    assert_eq!(ipv4_src(nat_out), Some(OUT_IP), "masqueraded");
    // Its reply comes back to vm2.
    let port = udp_src_port(nat_out).unwrap();
    out.send(&udp_frame_ports(
        out_mac,
        PEER_MAC,
        PEER_IP,
        OUT_IP,
        4000,
        port,
        b"nat-reply",
    ));
    assert!(
        g2.saw(b"nat-reply", Duration::from_secs(1)),
        "the reply to vm2"
    );
    for m in [
        &b"plain-out"[..],
        b"plain-stolen",
        b"plain-metadata",
        b"nat-metadata",
    ] {
        assert!(
            !contains(&outside, m),
            "{} left the host",
            String::from_utf8_lossy(m)
        );
    }
    assert!(
        !contains(&dk.collect_for(Duration::from_millis(200)), b"nat-docker"),
        "vm2 reached the docker0 network"
    );

    // From outside, only replies reach a guest.
    out.send(&udp_frame(
        out_mac, PEER_MAC, PEER_IP, VM2_IP, 22, b"inbound",
    ));
    assert!(
        !g2.saw(b"inbound", Duration::from_millis(300)),
        "a new connection from outside reached vm2"
    );

    // NAT off: vm2 stays isolated (its NAT rule was NAT's own).
    disable_nat("vm2").unwrap();
    assert!(!nat_enabled("vm2").unwrap());
    assert!(guest_isolated("vm2").unwrap());

    // Removing vm1's rules leaves none with its tag, vm2's in place, and
    // its TAP (until deleted) cut off by the shared rules.
    remove_isolation("vm1").unwrap();
    remove_isolation("vm1").unwrap();
    assert!(!guest_isolated("vm1").unwrap());
    assert_eq!(count_all("banger:vm1"), 0);
    assert!(count_all("banger:vm2") > 0);
    g1.send(&udp_frame(
        BROADCAST,
        mac1,
        VM1_IP,
        bcast(),
        9,
        b"after-removal",
    ));
    assert!(!g2.saw(b"after-removal", Duration::from_millis(300)));
    drop(g1);
    delete_tap(&vm1.tap).unwrap();
    remove_isolation("vm2").unwrap();
    assert_eq!(count_all("banger:vm2"), 0);
    assert_eq!(mac_for("vm1"), vm1.mac);
}

// ---- helpers ----

/// A permanent neighbor entry: `ip` is at `mac` on `dev`.
fn neighbor(ip: &str, mac: &str, dev: &str) {
    run(&[
        "ip",
        "neigh",
        "replace",
        ip,
        "lladdr",
        mac,
        "dev",
        dev,
        "nud",
        "permanent",
    ]);
}

/// Rules tagged `comment` in both of banger's tables.
fn count_all(comment: &str) -> usize {
    count_rules_in("bridge", "banger", comment) + count_rules_in("ip", "banger", comment)
}

fn bcast() -> Ipv4Addr {
    Ipv4Addr::new(172, 16, 0, 255)
}

fn mac(text: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (b, part) in out.iter_mut().zip(text.split(':')) {
        *b = u8::from_str_radix(part, 16).unwrap();
    }
    out
}

/// A TAP's queue, opened as its guest's hypervisor would.
struct Tap(File);

impl Tap {
    fn open(name: &str) -> Tap {
        const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
        const IFF_TAP: libc::c_short = 0x0002;
        const IFF_NO_PI: libc::c_short = 0x1000;
        #[repr(C)]
        struct IfReq {
            name: [u8; libc::IFNAMSIZ],
            flags: libc::c_short,
            _pad: [u8; 22],
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .expect("/dev/net/tun");
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads (and may write back) one struct ifreq,
        // which IfReq lays out (name, flags, padding to 40 bytes); the
        // descriptor is open and both outlive the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
        assert_eq!(
            rc,
            0,
            "TUNSETIFF {name}: {}",
            std::io::Error::last_os_error()
        );
        Tap(file)
    }

    /// What the guest sends.
    fn send(&self, frame: &[u8]) {
        let n = (&self.0).write(frame).expect("writing a frame");
        assert_eq!(n, frame.len());
    }

    /// Frames that reach the guest until `stop` returns true or `wait`
    /// passes.
    fn collect(&self, wait: Duration, stop: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut frames = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            match (&self.0).read(&mut buf) {
                Ok(n) => {
                    frames.push(buf[..n].to_vec());
                    if stop(&buf[..n]) {
                        return frames;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return frames;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("reading a TAP: {e}"),
            }
        }
    }

    fn collect_for(&self, wait: Duration) -> Vec<Vec<u8>> {
        self.collect(wait, |_| false)
    }

    fn collect_until(&self, marker: &[u8], wait: Duration) -> Vec<Vec<u8>> {
        self.collect(wait, |f| find(f, marker))
    }

    fn saw(&self, marker: &[u8], wait: Duration) -> bool {
        contains(&self.collect_until(marker, wait), marker)
    }
}

fn recv(socket: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 512];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => return Some(buf[..n].to_vec()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn contains(frames: &[Vec<u8>], marker: &[u8]) -> bool {
    frames.iter().any(|f| find(f, marker))
}

/// The text marker a test frame carries at its end (none for ARP).
fn marker_of(frame: &[u8]) -> Option<&[u8]> {
    let start = frame.iter().rposition(|b| !b.is_ascii_graphic())? + 1;
    (frame.len() - start >= 6).then(|| &frame[start..])
}

// ---- frames ----

fn ether(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn vlan_frame(dst: [u8; 6], src: [u8; 6], vid: u16, ipv4: &[u8]) -> Vec<u8> {
    let mut inner = vid.to_be_bytes().to_vec();
    inner.extend_from_slice(&0x0800u16.to_be_bytes());
    inner.extend_from_slice(ipv4);
    ether(dst, src, 0x8100, &inner)
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn ipv4_udp_ports(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]); // no checksum: allowed over IPv4
    u.extend_from_slice(data);
    ipv4(src, dst, 17, &u)
}

fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, dport: u16, data: &[u8]) -> Vec<u8> {
    ipv4_udp_ports(src, dst, 33333, dport, data)
}

fn udp_frame(
    dst: [u8; 6],
    src: [u8; 6],
    ip_src: Ipv4Addr,
    ip_dst: Ipv4Addr,
    dport: u16,
    data: &[u8],
) -> Vec<u8> {
    ether(dst, src, 0x0800, &ipv4_udp(ip_src, ip_dst, dport, data))
}

fn udp_frame_ports(
    dst: [u8; 6],
    src: [u8; 6],
    ip_src: Ipv4Addr,
    ip_dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    data: &[u8],
) -> Vec<u8> {
    ether(
        dst,
        src,
        0x0800,
        &ipv4_udp_ports(ip_src, ip_dst, sport, dport, data),
    )
}

fn tcp_syn_frame(
    dst: [u8; 6],
    src: [u8; 6],
    ip_src: Ipv4Addr,
    ip_dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let mut t = sport.to_be_bytes().to_vec();
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&0x1000_0000u32.to_be_bytes()); // sequence
    t.extend_from_slice(&0u32.to_be_bytes()); // ack
    t.extend_from_slice(&[0x50, 0x02]); // 20-byte header, SYN
    t.extend_from_slice(&64240u16.to_be_bytes()); // window
    t.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
    let mut pseudo = ip_src.octets().to_vec();
    pseudo.extend_from_slice(&ip_dst.octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&t);
    let sum = checksum(&pseudo);
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    ether(dst, src, 0x0800, &ipv4(ip_src, ip_dst, 6, &t))
}

/// An ARP request from `sha`/`spa` for `tpa`, in a frame from `src`.
fn arp_frame(src: [u8; 6], sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&tpa.octets());
    ether(BROADCAST, src, 0x0806, &a)
}

/// A UDP datagram from fe80::1 to all nodes.
fn ipv6_udp(data: &[u8]) -> Vec<u8> {
    let mut u = 33333u16.to_be_bytes().to_vec();
    u.extend_from_slice(&9u16.to_be_bytes());
    u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(u.len() as u16).to_be_bytes());
    h.extend_from_slice(&[17, 64]);
    h.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    h.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    h.extend_from_slice(&u);
    h
}

/// The IPv4 source of an IPv4 frame.
fn ipv4_src(frame: &[u8]) -> Option<Ipv4Addr> {
    (frame.len() >= 34 && frame[12..14] == [0x08, 0x00])
        .then(|| Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]))
}

/// The UDP source port of a UDP-over-IPv4 frame.
fn udp_src_port(frame: &[u8]) -> Option<u16> {
    if frame.len() < 42 || frame[12..14] != [0x08, 0x00] || frame[23] != 17 {
        return None;
    }
    let u = 14 + usize::from(frame[14] & 0x0f) * 4;
    Some(u16::from_be_bytes([frame[u], frame[u + 1]]))
}

/// (source port, destination port, flags) of a TCP-over-IPv4 frame.
fn tcp_of(frame: &[u8]) -> Option<(u16, u16, u8)> {
    if frame.len() < 54 || frame[12..14] != [0x08, 0x00] || frame[23] != 6 {
        return None;
    }
    let t = 14 + usize::from(frame[14] & 0x0f) * 4;
    let port = |i: usize| u16::from_be_bytes([frame[t + i], frame[t + i + 1]]);
    Some((port(0), port(2), *frame.get(t + 13)?))
}
