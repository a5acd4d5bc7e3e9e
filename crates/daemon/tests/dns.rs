//! bangerd's `.vm` DNS server, in-process on a loopback address, asked by
//! a real client: `dig` (Debian's bind9-dnsutils), as a user would.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_daemon::dns::{DnsRecords, bind, serve};
use banger_network::dns::RecordType;

fn have_dig() -> bool {
    let ok = Command::new("dig").arg("-v").output().is_ok();
    if !ok {
        banger_testkit::skip("dig is not installed (apt-get install bind9-dnsutils)");
    }
    ok
}

/// A server on a loopback address of this test's own (127.0.0.0/8 is all
/// loopback) and a free port.
fn start(rt: &tokio::runtime::Runtime, records: Arc<DnsRecords>) -> SocketAddr {
    let ip = Ipv4Addr::new(127, 53, (std::process::id() % 250) as u8, 1);
    let port = UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from((ip, port));
    let socket = rt
        .block_on(async { bind(addr) })
        .expect("the DNS server binds");
    rt.spawn(serve(socket, records));
    addr
}

/// A server whose table holds `web` → 172.16.0.5, with the runtime that
/// runs it (dropping the runtime stops it).
fn start_with_web() -> (tokio::runtime::Runtime, Arc<DnsRecords>, SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let records = Arc::new(DnsRecords::default());
    records.replace(HashMap::from([(
        "web".to_string(),
        Ipv4Addr::new(172, 16, 0, 5),
    )]));
    let server = start(&rt, records.clone());
    (rt, records, server)
}

/// `dig` against the server: its status line and answer section.
fn dig(server: SocketAddr, args: &[&str]) -> (String, Vec<String>) {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+tries=1", "+time=2", "+noall", "+comments", "+answer"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .lines()
        .find_map(|l| {
            l.split_once("status: ")
                .map(|(_, r)| r.split(',').next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| format!("no answer: {text}"));
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    (status, answers)
}

#[test]
fn dig_gets_a_nxdomain_refused_and_the_server_survives_bad_input() {
    if !have_dig() {
        return;
    }
    let (_rt, records, server) = start_with_web();

    let (status, answers) = dig(server, &["web.vm", "A"]);
    assert_eq!(status, "NOERROR");
    assert_eq!(answers, ["web.vm. 5 IN A 172.16.0.5"]);
    let (status, answers) = dig(server, &["WEB.VM", "A"]);
    assert_eq!(status, "NOERROR", "case-insensitive");
    assert_eq!(answers.len(), 1);
    let (status, answers) = dig(server, &["web.vm", "AAAA"]);
    assert_eq!((status.as_str(), answers.len()), ("NOERROR", 0), "NODATA");
    assert_eq!(dig(server, &["db.vm", "A"]).0, "NXDOMAIN");
    assert_eq!(dig(server, &["example.com", "A"]).0, "REFUSED");
    assert_eq!(dig(server, &["web.vm.example.com", "A"]).0, "REFUSED");
    // TCP is not served: UDP answers are never truncated.

    // Records follow the table.
    records.replace(HashMap::new());
    assert_eq!(dig(server, &["web.vm", "A"]).0, "NXDOMAIN");
    records.replace(HashMap::from([(
        "db".to_string(),
        Ipv4Addr::new(172, 16, 0, 6),
    )]));
    assert_eq!(dig(server, &["db.vm", "A"]).1, ["db.vm. 5 IN A 172.16.0.6"]);

    // Malformed, truncated, oversized and response packets: answered with
    // FORMERR or dropped, and the server keeps answering.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let good = banger_network::dns::query_bytes(77, "db.vm.", RecordType::A).unwrap();
    let mut bad: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff],
        vec![0; 11],
        good[..good.len() - 2].to_vec(),
        vec![0x41; 4000],
        vec![0xff; 65000 / 2],
    ];
    let mut looping = good.clone();
    looping[2] |= 0x80;
    bad.push(looping);
    let mut pointer_loop = good[..12].to_vec();
    pointer_loop.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    bad.push(pointer_loop);
    for packet in &bad {
        let _ = sock.send_to(packet, server);
    }
    let mut buf = [0u8; 512];
    let mut formerr = 0;
    while let Ok(n) = sock.recv(&mut buf) {
        assert!(n >= 12);
        if buf[3] & 0x0f == 1 {
            formerr += 1;
        }
    }
    assert!(formerr >= 1, "a cut query gets FORMERR");
    assert_eq!(dig(server, &["db.vm", "A"]).0, "NOERROR", "still answering");
}

#[test]
fn a_flood_from_one_sender_is_bounded_and_others_still_get_answers() {
    if !have_dig() {
        return;
    }
    let (_rt, _records, server) = start_with_web();
    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    flood
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let query = banger_network::dns::query_bytes(1, "web.vm.", RecordType::A).unwrap();
    let sent = 3000;
    let started = Instant::now();
    for _ in 0..sent {
        let _ = flood.send_to(&query, server);
    }
    let mut answered = 0u32;
    let mut buf = [0u8; 512];
    while flood.recv(&mut buf).is_ok() {
        answered += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed =
        banger_network::dns::limit::BURST + banger_network::dns::limit::RATE_PER_SEC * elapsed;
    eprintln!("flood: {sent} sent, {answered} answered in {elapsed:.2} s (bound {allowed:.0})");
    assert!(answered >= 50, "the first queries are answered: {answered}");
    assert!(
        f64::from(answered) <= allowed + 1.0,
        "{answered} answers exceed the bound {allowed:.0}"
    );
    // Another source (dig) is not starved by the flood.
    let (status, answers) = dig(server, &["web.vm", "A"]);
    assert_eq!(status, "NOERROR");
    assert_eq!(answers.len(), 1);
}
