//! Guests isolated on the bridge (DESIGN.md, "Trust"): what a guest may
//! send, and where it may go. Per VM, every rule tagged `banger:<vm>` like
//! its NAT rule, made by [`isolate_guest`] once its TAP exists and removed
//! by [`remove_isolation`] with the TAP:
//!
//! - **On the bridge** (`table bridge banger`): a frame from the VM's TAP
//!   enters only as IPv4 from the VM's MAC and leased address, or as ARP
//!   whose sender is that MAC and address. Anything else (a forged MAC or
//!   address, IPv6, a VLAN tag, another ethertype) is dropped before the
//!   bridge forwards or delivers it; so is every frame from a `bgr*` TAP
//!   that has no rules (not yet, or not any more).
//! - **To the host** (`table ip banger`, chain `input`): the bridge's
//!   address only, for DNS (udp and tcp 53) and the clock (udp 10123),
//!   and replies to what the host opened (ssh). Nothing else of the
//!   host's, on any of its addresses.
//! - **Through the host** (chain `forward`): nothing for a VM without NAT.
//!   A NAT'd VM reaches anything but link-local addresses (169.254.0.0/16:
//!   the cloud metadata service) and the host's other bridges (docker0,
//!   virbr0, br-…: containers and VMs of other software), unless that
//!   bridge is the host's uplink (it carries a default route when the
//!   guest is isolated). From outside, only replies reach a guest.
//!
//! Guest-to-guest traffic on the bridge passes (`.vm` names are for that).
//! Because the bridge pins every IPv4 packet from a TAP to its VM's
//! address, the `ip` rules can name the VM by `ip saddr`; and because a
//! drop in any table is final, they hold whatever the host's own firewall
//! accepts.
//!
//! Only nft: rules are written as one `nft -f -` transaction of text banger
//! generates from the checked fields of a [`GuestPort`], never from a
//! name it did not validate. A host without nft cannot isolate guests, and
//! banger does not start VMs there ([`NetError::NoIsolationTool`]).

use std::net::Ipv4Addr;
use std::path::Path;

use banger_model::clock::CLOCK_PORT;

use crate::NetError;
use crate::bridge::{BridgeSpec, validate_cidr};
use crate::command::{find_tool, run};
use crate::naming::{TAP_PREFIX, mac_for, tap_name, validate_ifname};
use crate::nft::{self, Family, NFT_TABLE, delete_rule, list_rules, validate_vm, vm_tag};
use crate::rtnl::Rtnl;

/// What a guest may ask of the host on the bridge's address: DNS and
/// the boot-time clock.
pub const GUEST_UDP_PORTS: &[u16] = &[53, CLOCK_PORT];
pub const GUEST_TCP_PORTS: &[u16] = &[53];

/// Never reachable from a guest: link-local, where clouds answer with
/// the host's credentials (169.254.169.254).
pub const LINK_LOCAL: &str = "169.254.0.0/16";

/// Where the per-VM rules live: chain `guests` of the bridge table, and
/// these chains of the `ip` table (its `postrouting` is NAT's).
const BRIDGE_BASE_CHAIN: &str = "prerouting";
const BRIDGE_GUEST_CHAIN: &str = "guests";
const IP_CHAINS: [&str; 2] = ["input", "forward"];

/// The comment of the rules banger keeps for all guests (not one VM's).
const SHARED_TAG: &str = "banger";

/// One guest's place on the bridge: all that isolating it needs. Every
/// field is checked by [`isolate_guest`] before a rule is written, so a
/// privileged helper can take it from a less trusted caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPort {
    /// The VM's name, which tags its rules.
    pub vm: String,
    /// Its TAP: a name starting with [`TAP_PREFIX`].
    pub tap: String,
    /// The guest's MAC, `52:54:00:xx:xx:xx` from [`mac_for`].
    pub mac: String,
    /// Its leased address, inside `bridge.cidr` and not the bridge's.
    pub ip: Ipv4Addr,
    pub bridge: BridgeSpec,
    /// Whether it may reach beyond the host (see [`crate::enable_nat`]).
    pub nat: bool,
}

impl GuestPort {
    /// The port of VM `vm`, with the TAP name and MAC banger derives from
    /// its name.
    pub fn for_vm(vm: &str, ip: Ipv4Addr, bridge: BridgeSpec, nat: bool) -> Self {
        GuestPort {
            vm: vm.to_string(),
            tap: tap_name(vm),
            mac: mac_for(vm),
            ip,
            bridge,
            nat,
        }
    }

    /// The checked port, or why it cannot be isolated.
    fn check(&self) -> Result<Checked<'_>, NetError> {
        validate_vm(&self.vm)?;
        validate_ifname(&self.tap)?;
        validate_ifname(&self.bridge.name)?;
        validate_cidr(self.bridge.cidr)?;
        let bad = |reason: String| NetError::BadGuestPort {
            vm: self.vm.clone(),
            reason,
        };
        if !self.tap.starts_with(TAP_PREFIX) {
            return Err(bad(format!(
                "TAP {} is not one of banger's (they start with {TAP_PREFIX})",
                self.tap
            )));
        }
        let mac = parse_mac(&self.mac)
            .ok_or_else(|| bad(format!("{:?} is not a unicast MAC address", self.mac)))?;
        let net = self.bridge.cidr.trunc();
        if !net.contains(&self.ip)
            || self.ip == net.network()
            || self.ip == net.broadcast()
            || self.ip == self.bridge.cidr.addr()
        {
            return Err(bad(format!(
                "address {} is not a guest address of {}",
                self.ip, self.bridge.cidr
            )));
        }
        Ok(Checked {
            tag: vm_tag(&self.vm),
            mac,
            port: self,
        })
    }
}

/// A [`GuestPort`] whose fields passed [`GuestPort::check`]; only this
/// becomes rules.
struct Checked<'a> {
    port: &'a GuestPort,
    tag: String,
    /// Normalized: lowercase, colon-separated.
    mac: String,
}

/// `aa:bb:cc:dd:ee:ff` (either case) as lowercase, if it is a unicast,
/// non-zero MAC.
fn parse_mac(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut bytes = [0u8; 6];
    for (byte, part) in bytes.iter_mut().zip(&parts) {
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    if bytes[0] & 1 == 1 || bytes == [0; 6] {
        return None;
    }
    Some(
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// Writes the rules isolating `port`'s guest, replacing any the VM had
/// (another address, TAP or NAT choice), in one nft transaction: the
/// guest is never without rules while they change. Idempotent. Needs nft.
pub fn isolate_guest(port: &GuestPort) -> Result<(), NetError> {
    let checked = port.check()?;
    let nft = find_tool("nft").ok_or(NetError::NoIsolationTool)?;
    let uplinks = if port.nat {
        uplink_bridges(&port.bridge.name)?
    } else {
        Vec::new()
    };
    let context = |source: NetError| NetError::Isolation {
        vm: port.vm.clone(),
        source: Box::new(source),
    };
    let _guard = nft::lock();
    let stale = tagged_rules(&nft, &checked.tag).map_err(context)?;
    let script = isolation_script(&checked, &uplinks, &stale);
    run(&nft, &["-f", "-"], Some(&script))
        .map(drop)
        .map_err(context)
}

/// Removes every isolation rule tagged for `vm` (its NAT rule is
/// [`crate::disable_nat`]'s); Ok when there are none or the host has no
/// nft. The rules banger keeps for all guests stay: they drop what a TAP
/// without rules sends.
pub fn remove_isolation(vm: &str) -> Result<(), NetError> {
    validate_vm(vm)?;
    let Some(nft) = find_tool("nft") else {
        return Ok(());
    };
    let _guard = nft::lock();
    let stale = tagged_rules(&nft, &vm_tag(vm))?;
    if stale.is_empty() {
        return Ok(());
    }
    let script: String = stale
        .iter()
        .map(|(family, chain, handle)| delete_rule(*family, chain, *handle))
        .collect();
    run(&nft, &["-f", "-"], Some(&script)).map(drop)
}

/// Whether any isolation rule tagged for `vm` exists.
pub fn guest_isolated(vm: &str) -> Result<bool, NetError> {
    validate_vm(vm)?;
    let Some(nft) = find_tool("nft") else {
        return Ok(false);
    };
    Ok(!tagged_rules(&nft, &vm_tag(vm))?.is_empty())
}

/// The isolation rules carrying `tag`: (family, chain, handle).
fn tagged_rules(nft: &Path, tag: &str) -> Result<Vec<(Family, String, u64)>, NetError> {
    let mut out = Vec::new();
    for family in [Family::Bridge, Family::Ip] {
        for rule in list_rules(nft, family)? {
            let ours = rule.comment.as_deref() == Some(tag)
                && (family == Family::Bridge || IP_CHAINS.contains(&rule.chain.as_str()));
            if ours {
                out.push((family, rule.chain, rule.handle));
            }
        }
    }
    Ok(out)
}

/// The host's uplink bridges: bridges other than `own` that a default
/// route leaves through. A NAT'd guest may be forwarded into these, and
/// into no other bridge. Names that could not sit in an nft string are
/// left out (so stay closed).
fn uplink_bridges(own: &str) -> Result<Vec<String>, NetError> {
    let mut rtnl = Rtnl::open().map_err(|e| NetError::netlink("opening a netlink socket", e))?;
    let links = rtnl
        .links()
        .map_err(|e| NetError::netlink("listing network interfaces", e))?;
    let routes = rtnl
        .routes()
        .map_err(|e| NetError::netlink("listing routes", e))?;
    let mut out: Vec<String> = routes
        .iter()
        .filter(|r| r.prefix == 0)
        .filter_map(|r| r.oif)
        .filter_map(|oif| links.iter().find(|l| l.index == oif))
        .filter(|l| l.is_bridge() && l.name != own && validate_ifname(&l.name).is_ok())
        .map(|l| l.name.clone())
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The nft script isolating a checked guest: declares banger's chains,
/// rewrites the rules shared by all guests, deletes the VM's `stale`
/// rules and adds its new ones. One `nft -f` run is one transaction.
fn isolation_script(
    guest: &Checked<'_>,
    uplinks: &[String],
    stale: &[(Family, String, u64)],
) -> String {
    let GuestPort {
        tap,
        ip,
        bridge,
        nat,
        ..
    } = guest.port;
    let (tag, mac) = (&guest.tag, &guest.mac);
    let br = &bridge.name;
    let host = bridge.cidr.addr();
    let mut s = format!(
        "table bridge {NFT_TABLE} {{\n\
         \tchain {BRIDGE_BASE_CHAIN} {{\n\
         \t\ttype filter hook prerouting priority filter; policy accept;\n\
         \t}}\n\
         \tchain {BRIDGE_GUEST_CHAIN} {{\n\
         \t}}\n\
         }}\n\
         table ip {NFT_TABLE} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t}}\n\
         }}\n"
    );
    // Shared by every guest: a frame from one of banger's TAPs that its
    // VM's rules do not accept is dropped. Rewritten whole each time, so
    // it is there exactly once.
    let bridge_rule = |chain: &str, body: &str, tag: &str| {
        format!("add rule bridge {NFT_TABLE} {chain} {body} comment \"{tag}\"\n")
    };
    s.push_str(&format!(
        "flush chain bridge {NFT_TABLE} {BRIDGE_BASE_CHAIN}\n"
    ));
    let any_tap = format!("iifname \"{TAP_PREFIX}*\"");
    s.push_str(&bridge_rule(
        BRIDGE_BASE_CHAIN,
        &format!("{any_tap} jump {BRIDGE_GUEST_CHAIN}"),
        SHARED_TAG,
    ));
    s.push_str(&bridge_rule(
        BRIDGE_BASE_CHAIN,
        &format!("{any_tap} drop"),
        SHARED_TAG,
    ));
    for (family, chain, handle) in stale {
        s.push_str(&delete_rule(*family, chain, *handle));
    }

    // What the guest may send: its own MAC with its own address, as IPv4
    // or as ARP (an ARP probe's sender address is 0.0.0.0).
    let from_guest = format!("iifname \"{tap}\" ether saddr {mac}");
    s.push_str(&bridge_rule(
        BRIDGE_GUEST_CHAIN,
        &format!("{from_guest} ether type ip ip saddr {ip} accept"),
        tag,
    ));
    s.push_str(&bridge_rule(
        BRIDGE_GUEST_CHAIN,
        &format!(
            "{from_guest} ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 \
             arp saddr ether {mac} arp saddr ip {{ {ip}, 0.0.0.0 }} accept"
        ),
        tag,
    ));

    let ip_rule = |chain: &str, body: String| {
        format!("add rule ip {NFT_TABLE} {chain} {body} comment \"{tag}\"\n")
    };
    let ports = |list: &[u16]| {
        list.iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    // To the host: replies, DNS and the clock on the bridge's address.
    let guest_in = format!("iifname \"{br}\" ip saddr {ip}");
    s.push_str(&ip_rule(
        "input",
        format!("{guest_in} ct state established,related accept"),
    ));
    s.push_str(&ip_rule(
        "input",
        format!(
            "{guest_in} ip daddr {host} udp dport {{ {} }} accept",
            ports(GUEST_UDP_PORTS)
        ),
    ));
    s.push_str(&ip_rule(
        "input",
        format!(
            "{guest_in} ip daddr {host} tcp dport {{ {} }} accept",
            ports(GUEST_TCP_PORTS)
        ),
    ));
    s.push_str(&ip_rule("input", format!("{guest_in} drop")));

    // Through the host: from outside, replies only; out, per NAT.
    s.push_str(&ip_rule(
        "forward",
        format!(
            "iifname != \"{br}\" oifname \"{br}\" ip daddr {ip} ct state != {{ established, related }} drop"
        ),
    ));
    let guest_out = format!("iifname \"{br}\" oifname != \"{br}\" ip saddr {ip}");
    if *nat {
        s.push_str(&ip_rule(
            "forward",
            format!("{guest_out} ip daddr {LINK_LOCAL} drop"),
        ));
        let except = match uplinks {
            [] => String::new(),
            [one] => format!(" oifname != \"{one}\""),
            many => format!(
                " oifname != {{ {} }}",
                many.iter()
                    .map(|n| format!("\"{n}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        s.push_str(&ip_rule(
            "forward",
            format!("{guest_out} meta oifkind \"bridge\"{except} drop"),
        ));
    } else {
        s.push_str(&ip_rule("forward", format!("{guest_out} drop")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(nat: bool) -> GuestPort {
        GuestPort {
            vm: "vm1".into(),
            tap: "bgrb7ad567477c8".into(),
            mac: "52:54:00:AB:cd:01".into(),
            ip: "172.16.0.5".parse().unwrap(),
            bridge: BridgeSpec {
                name: "banger0".into(),
                cidr: "172.16.0.1/24".parse().unwrap(),
            },
            nat,
        }
    }

    #[test]
    fn the_script_pins_the_guest_and_limits_where_it_goes() {
        let p = port(false);
        let script = isolation_script(
            &p.check().unwrap(),
            &[],
            &[
                (Family::Bridge, "guests".into(), 4),
                (Family::Ip, "input".into(), 9),
            ],
        );
        assert_eq!(
            script,
            "table bridge banger {\n\
             \tchain prerouting {\n\
             \t\ttype filter hook prerouting priority filter; policy accept;\n\
             \t}\n\
             \tchain guests {\n\
             \t}\n\
             }\n\
             table ip banger {\n\
             \tchain input {\n\
             \t\ttype filter hook input priority filter; policy accept;\n\
             \t}\n\
             \tchain forward {\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t}\n\
             }\n\
             flush chain bridge banger prerouting\n\
             add rule bridge banger prerouting iifname \"bgr*\" jump guests comment \"banger\"\n\
             add rule bridge banger prerouting iifname \"bgr*\" drop comment \"banger\"\n\
             delete rule bridge banger guests handle 4\n\
             delete rule ip banger input handle 9\n\
             add rule bridge banger guests iifname \"bgrb7ad567477c8\" ether saddr 52:54:00:ab:cd:01 ether type ip ip saddr 172.16.0.5 accept comment \"banger:vm1\"\n\
             add rule bridge banger guests iifname \"bgrb7ad567477c8\" ether saddr 52:54:00:ab:cd:01 ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether 52:54:00:ab:cd:01 arp saddr ip { 172.16.0.5, 0.0.0.0 } accept comment \"banger:vm1\"\n\
             add rule ip banger input iifname \"banger0\" ip saddr 172.16.0.5 ct state established,related accept comment \"banger:vm1\"\n\
             add rule ip banger input iifname \"banger0\" ip saddr 172.16.0.5 ip daddr 172.16.0.1 udp dport { 53, 10123 } accept comment \"banger:vm1\"\n\
             add rule ip banger input iifname \"banger0\" ip saddr 172.16.0.5 ip daddr 172.16.0.1 tcp dport { 53 } accept comment \"banger:vm1\"\n\
             add rule ip banger input iifname \"banger0\" ip saddr 172.16.0.5 drop comment \"banger:vm1\"\n\
             add rule ip banger forward iifname != \"banger0\" oifname \"banger0\" ip daddr 172.16.0.5 ct state != { established, related } drop comment \"banger:vm1\"\n\
             add rule ip banger forward iifname \"banger0\" oifname != \"banger0\" ip saddr 172.16.0.5 drop comment \"banger:vm1\"\n"
        );
    }

    #[test]
    fn a_natd_guest_is_kept_from_link_local_and_the_hosts_other_bridges() {
        let p = port(true);
        let checked = p.check().unwrap();
        let script = isolation_script(&checked, &[], &[]);
        assert!(
            !script.contains("oifname != \"banger0\" ip saddr 172.16.0.5 drop"),
            "{script}"
        );
        assert!(
            script.contains(
                "add rule ip banger forward iifname \"banger0\" oifname != \"banger0\" ip saddr 172.16.0.5 ip daddr 169.254.0.0/16 drop comment \"banger:vm1\"\n"
            ),
            "{script}"
        );
        assert!(
            script.contains("ip saddr 172.16.0.5 meta oifkind \"bridge\" drop comment"),
            "{script}"
        );
        let one = isolation_script(&checked, &["br0".into()], &[]);
        assert!(
            one.contains("meta oifkind \"bridge\" oifname != \"br0\" drop"),
            "{one}"
        );
        let two = isolation_script(&checked, &["br0".into(), "vmbr0".into()], &[]);
        assert!(
            two.contains("meta oifkind \"bridge\" oifname != { \"br0\", \"vmbr0\" } drop"),
            "{two}"
        );
    }

    #[test]
    fn ports_are_checked_before_any_rule_is_written() {
        type Change = fn(&mut GuestPort);
        port(false).check().unwrap();
        let cases: [(&str, Change); 13] = [
            ("vm name", |p| p.vm = "a\"b".into()),
            ("tap outside the prefix", |p| p.tap = "eth0".into()),
            ("tap wildcard", |p| p.tap = "bgr*".into()),
            ("bridge name", |p| p.bridge.name = "br\"0".into()),
            ("multicast mac", |p| p.mac = "53:54:00:00:00:01".into()),
            ("zero mac", |p| p.mac = "00:00:00:00:00:00".into()),
            ("short mac", |p| p.mac = "52:54:00:00:01".into()),
            ("mac text", |p| p.mac = "52:54:00:00:01:0x".into()),
            ("mac injection", |p| {
                p.mac = "52:54:00:00:01:02 accept".into()
            }),
            ("ip outside", |p| p.ip = "10.0.0.5".parse().unwrap()),
            ("ip of the bridge", |p| p.ip = "172.16.0.1".parse().unwrap()),
            ("network", |p| p.ip = "172.16.0.0".parse().unwrap()),
            ("broadcast", |p| p.ip = "172.16.0.255".parse().unwrap()),
        ];
        for (what, change) in cases {
            let mut p = port(false);
            change(&mut p);
            assert!(p.check().is_err(), "{what}: {p:?}");
        }
        let err = {
            let mut p = port(false);
            p.tap = "eth0".into();
            p.check().err().unwrap().to_string()
        };
        assert_eq!(
            err,
            "cannot isolate VM vm1: TAP eth0 is not one of banger's (they start with bgr)"
        );
    }

    #[test]
    fn ports_for_a_vm_use_its_tap_and_mac() {
        let bridge = BridgeSpec {
            name: "banger0".into(),
            cidr: "172.16.0.1/24".parse().unwrap(),
        };
        let p = GuestPort::for_vm("sandbox", "172.16.0.2".parse().unwrap(), bridge, true);
        assert_eq!(p.tap, tap_name("sandbox"));
        assert_eq!(p.mac, mac_for("sandbox"));
        p.check().unwrap();
    }

    #[test]
    fn the_clock_port_is_open_to_guests() {
        assert!(GUEST_UDP_PORTS.contains(&CLOCK_PORT));
        assert!(GUEST_UDP_PORTS.contains(&53) && GUEST_TCP_PORTS.contains(&53));
    }
}
