//! The host's side of `.vm` names: which resolver the host runs, how to
//! route the zone to bangerd through it (`resolvectl` argument vectors,
//! recipes for the others), which upstream nameservers a guest can use,
//! and a one-shot probe of a DNS server. See docs/dns-routing.md.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use super::zone::{ZONE, query_bytes};

/// Which stub resolver answers the host's lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostResolver {
    /// systemd-resolved (127.0.0.53): per-link DNS servers and routing
    /// domains, set with `resolvectl`.
    SystemdResolved,
    /// NetworkManager running dnsmasq as its resolver (`dns=dnsmasq`).
    NetworkManagerDnsmasq,
    /// A local dnsmasq (127.0.0.1).
    Dnsmasq,
    /// glibc talking straight to the nameservers of /etc/resolv.conf.
    Plain,
}

impl HostResolver {
    /// Reads the host: /etc/resolv.conf, systemd-resolved's runtime
    /// directory, NetworkManager's configuration.
    pub fn detect() -> Self {
        let resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let nm_dnsmasq = fs::read_dir("/etc/NetworkManager/conf.d")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .chain([Path::new("/etc/NetworkManager/NetworkManager.conf").to_path_buf()])
            .filter_map(|p| fs::read_to_string(p).ok())
            .any(|text| {
                text.lines()
                    .any(|l| l.trim().replace(' ', "") == "dns=dnsmasq")
            });
        Self::from_facts(
            &resolv,
            Path::new("/run/systemd/resolve/resolv.conf").exists(),
            nm_dnsmasq,
        )
    }

    /// The decision, with the facts injected.
    pub fn from_facts(resolv_conf: &str, resolved_running: bool, nm_dnsmasq: bool) -> Self {
        let servers = nameservers(resolv_conf);
        let stub: IpAddr = Ipv4Addr::new(127, 0, 0, 53).into();
        if resolved_running && servers.contains(&stub) {
            HostResolver::SystemdResolved
        } else if nm_dnsmasq {
            HostResolver::NetworkManagerDnsmasq
        } else if servers.first().is_some_and(|s| s.is_loopback()) {
            HostResolver::Dnsmasq
        } else {
            HostResolver::Plain
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HostResolver::SystemdResolved => "systemd-resolved",
            HostResolver::NetworkManagerDnsmasq => "NetworkManager with dnsmasq",
            HostResolver::Dnsmasq => "a local resolver (dnsmasq?)",
            HostResolver::Plain => "glibc with /etc/resolv.conf",
        }
    }

    /// How to send `.vm` lookups to `server` on this host, in one line.
    pub fn recipe(self, bridge: &str, server: SocketAddr) -> String {
        let ip = server.ip();
        let dnsmasq_server = if server.port() == 53 {
            format!("server=/{ZONE}/{ip}")
        } else {
            format!("server=/{ZONE}/{ip}#{}", server.port())
        };
        match self {
            HostResolver::SystemdResolved => format!(
                "run 'sudo banger dns install' (= {}) after the first VM has made {bridge}",
                resolvectl_install(bridge, server)
                    .iter()
                    .map(|argv| argv.join(" "))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            HostResolver::NetworkManagerDnsmasq => format!(
                "write '{dnsmasq_server}' to /etc/NetworkManager/dnsmasq.d/banger.conf, then \
                 'sudo systemctl reload NetworkManager' (docs/dns-routing.md)"
            ),
            HostResolver::Dnsmasq => format!(
                "write '{dnsmasq_server}' to /etc/dnsmasq.d/banger.conf, then \
                 'sudo systemctl restart dnsmasq' (docs/dns-routing.md)"
            ),
            HostResolver::Plain => format!(
                "glibc cannot route one domain: run a local dnsmasq with '{dnsmasq_server}', \
                 or put 'nameserver {ip}' first in /etc/resolv.conf (bangerd refuses other \
                 names, so glibc asks the next nameserver; docs/dns-routing.md)"
            ),
        }
    }
}

/// The `resolvectl` commands that route `.vm` to `server` on the bridge
/// link: its DNS server, `~vm` as a routing-only domain (so only `.vm`
/// names go there), and not a default route for other names. Runtime
/// settings: systemd-resolved forgets them when the link goes away.
pub fn resolvectl_install(bridge: &str, server: SocketAddr) -> Vec<Vec<String>> {
    let address = if server.port() == 53 {
        server.ip().to_string()
    } else {
        server.to_string()
    };
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        s(&["resolvectl", "dns", bridge, &address]),
        s(&["resolvectl", "domain", bridge, &format!("~{ZONE}")]),
        s(&["resolvectl", "default-route", bridge, "false"]),
    ]
}

/// Undoes [`resolvectl_install`]: the link's settings back to none.
pub fn resolvectl_uninstall(bridge: &str) -> Vec<Vec<String>> {
    vec![vec!["resolvectl".into(), "revert".into(), bridge.into()]]
}

/// The `nameserver` lines of a resolv.conf, in order.
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|w| w.parse().ok())
        })
        .collect()
}

/// The nameservers a guest is given: bangerd's zone first (`bridge`, the
/// guest's gateway), then up to two of the host's upstream IPv4
/// nameservers for every other name (bangerd refuses them, and glibc
/// moves to the next server on REFUSED). Loopback upstreams are skipped:
/// 127.0.0.53 inside a guest is the guest itself; so are link-local ones
/// (a cloud's 169.254.169.253), which guests may never reach (see
/// `isolate_guest`). On systemd-resolved hosts the real upstreams are in
/// /run/systemd/resolve/resolv.conf.
pub fn guest_nameservers(bridge: Ipv4Addr, host_resolv_confs: &[String]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = vec![bridge.into()];
    for text in host_resolv_confs {
        for ip in nameservers(text) {
            if out.len() == 3 {
                return out;
            }
            let IpAddr::V4(v4) = ip else { continue };
            if !v4.is_loopback()
                && !v4.is_unspecified()
                && !v4.is_link_local()
                && !out.contains(&ip)
            {
                out.push(ip);
            }
        }
    }
    out
}

/// The host's resolv.conf files, systemd-resolved's upstream list first.
pub fn host_resolv_confs() -> Vec<String> {
    ["/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .collect()
}

/// What a DNS server said to one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswer {
    pub code: ResponseCode,
    pub authoritative: bool,
    pub addresses: Vec<Ipv4Addr>,
}

/// Asks `server` for the A record of `name` over UDP, once.
pub fn probe(server: SocketAddr, name: &str, timeout: Duration) -> Result<ProbeAnswer, String> {
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let query = query_bytes(id, name, RecordType::A).ok_or_else(|| format!("bad name {name:?}"))?;
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    socket.connect(server).map_err(|e| e.to_string())?;
    socket.send(&query).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1500];
    loop {
        let n = socket.recv(&mut buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("no answer from {server} within {} ms", timeout.as_millis())
            }
            std::io::ErrorKind::ConnectionRefused => format!("nothing listens on {server}"),
            _ => format!("{server}: {e}"),
        })?;
        let Ok(m) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if m.id() != id {
            continue;
        }
        return Ok(ProbeAnswer {
            code: m.response_code(),
            authoritative: m.authoritative(),
            addresses: m
                .answers()
                .iter()
                .filter_map(|r| match r.data() {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolvectl_argv_routes_only_the_zone() {
        let server: SocketAddr = "172.16.0.1:53".parse().unwrap();
        assert_eq!(
            resolvectl_install("banger0", server),
            [
                ["resolvectl", "dns", "banger0", "172.16.0.1"],
                ["resolvectl", "domain", "banger0", "~vm"],
                ["resolvectl", "default-route", "banger0", "false"],
            ]
        );
        let other: SocketAddr = "172.16.0.1:5353".parse().unwrap();
        assert_eq!(resolvectl_install("br1", other)[0][3], "172.16.0.1:5353");
        assert_eq!(
            resolvectl_uninstall("banger0"),
            [["resolvectl", "revert", "banger0"]]
        );
    }

    #[test]
    fn the_resolver_is_recognised() {
        let stub = "# managed by resolved\nnameserver 127.0.0.53\noptions edns0\n";
        assert_eq!(
            HostResolver::from_facts(stub, true, false),
            HostResolver::SystemdResolved
        );
        assert_eq!(
            HostResolver::from_facts("nameserver 127.0.0.1\n", false, false),
            HostResolver::Dnsmasq
        );
        assert_eq!(
            HostResolver::from_facts("nameserver 127.0.0.1\n", false, true),
            HostResolver::NetworkManagerDnsmasq
        );
        assert_eq!(
            HostResolver::from_facts("nameserver 10.0.0.2\n", false, false),
            HostResolver::Plain
        );
        let server: SocketAddr = "172.16.0.1:53".parse().unwrap();
        assert!(
            HostResolver::Dnsmasq
                .recipe("banger0", server)
                .contains("server=/vm/172.16.0.1")
        );
        assert!(
            HostResolver::SystemdResolved
                .recipe("banger0", server)
                .contains("resolvectl domain banger0 ~vm")
        );
        let odd: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        assert!(
            HostResolver::NetworkManagerDnsmasq
                .recipe("banger0", odd)
                .contains("server=/vm/127.0.0.1#5353")
        );
    }

    #[test]
    fn guests_get_the_zone_first_then_usable_upstreams() {
        let gw = Ipv4Addr::new(172, 16, 0, 1);
        let resolved =
            "nameserver 10.0.0.2\nnameserver fd00::1\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n"
                .to_string();
        let stub = "nameserver 127.0.0.53\n".to_string();
        let got = guest_nameservers(gw, &[resolved, stub.clone()]);
        let want: Vec<IpAddr> = ["172.16.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want, "IPv6 skipped, at most three");
        assert_eq!(guest_nameservers(gw, &[stub]), [IpAddr::from(gw)]);
        assert_eq!(guest_nameservers(gw, &[]), [IpAddr::from(gw)]);
        let dup =
            "nameserver 172.16.0.1\nnameserver 0.0.0.0\n# nameserver 9.9.9.9\nnameserver 1.1.1.1\n"
                .to_string();
        let got = guest_nameservers(gw, &[dup]);
        assert_eq!(got.len(), 2, "{got:?}");
        let cloud = "nameserver 169.254.169.253\nnameserver 10.0.0.2\n".to_string();
        let got = guest_nameservers(gw, &[cloud]);
        assert_eq!(
            got,
            [IpAddr::from(gw), "10.0.0.2".parse().unwrap()],
            "link-local is unreachable from guests"
        );
    }
}
