//! The host bridge every VM's TAP is attached to.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::NetError;
use crate::naming::validate_ifname;
use crate::rtnl::{Address, Link, Route, Rtnl};

const EEXIST: i32 = 17;

/// The bridge: its name and its own address with the prefix of the guest
/// subnet, e.g. `banger0` with `172.16.0.1/24`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    pub name: String,
    pub cidr: Ipv4Net,
}

/// What [`inspect`] found: the bridge, if it exists, and whether it
/// already carries its address.
struct Found {
    index: Option<u32>,
    has_address: bool,
}

/// The checks of [`ensure_bridge`] without creating or changing anything:
/// Ok when ensure_bridge would succeed (barring permissions), for `banger
/// doctor` and for validating `bridge_cidr` before a VM is journaled.
pub fn check_bridge(spec: &BridgeSpec) -> Result<(), NetError> {
    let mut rtnl = Rtnl::open().map_err(|e| NetError::netlink("opening a netlink socket", e))?;
    inspect(&mut rtnl, spec).map(drop)
}

/// Creates the bridge if absent (address `cidr.addr()`, up), or checks that
/// an existing one carries that address. Refuses when the CIDR overlaps an
/// address or route of another interface, before creating anything.
/// Idempotent: it also finishes a bridge left half-made (no address, or
/// down) by a crash.
pub fn ensure_bridge(spec: &BridgeSpec) -> Result<(), NetError> {
    let mut rtnl = Rtnl::open().map_err(|e| NetError::netlink("opening a netlink socket", e))?;
    let Found { index, has_address } = inspect(&mut rtnl, spec)?;
    let index = match index {
        Some(index) => index,
        None => {
            match rtnl.add_bridge(&spec.name) {
                // Made meanwhile by a concurrent ensure_bridge: use it.
                Err(e) if e.raw_os_error() != Some(EEXIST) => {
                    return Err(NetError::netlink(
                        format!("creating bridge {}", spec.name),
                        e,
                    ));
                }
                _ => {}
            }
            rtnl.link(&spec.name)
                .map_err(|e| NetError::netlink("listing network interfaces", e))?
                .ok_or_else(|| {
                    NetError::netlink(
                        format!("finding bridge {} after creating it", spec.name),
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    )
                })?
                .index
        }
    };
    if !has_address {
        match rtnl.add_address(index, spec.cidr.addr(), spec.cidr.prefix_len()) {
            Err(e) if e.raw_os_error() != Some(EEXIST) => {
                return Err(NetError::netlink(
                    format!("adding {} to bridge {}", spec.cidr, spec.name),
                    e,
                ));
            }
            _ => {}
        }
    }
    rtnl.set_up(index)
        .map_err(|e| NetError::netlink(format!("bringing up bridge {}", spec.name), e))?;
    Ok(())
}

/// Validates `spec` against the host: the name is free or a bridge with
/// (at most) our address, and nothing else uses the CIDR.
fn inspect(rtnl: &mut Rtnl, spec: &BridgeSpec) -> Result<Found, NetError> {
    validate_ifname(&spec.name)?;
    validate_cidr(spec.cidr)?;
    // Addresses and routes before links: a bridge a concurrent caller
    // makes in between is then seen as ours without its address (which
    // we add, tolerating EEXIST), never as a stranger whose address
    // overlaps.
    let addresses = rtnl
        .addresses()
        .map_err(|e| NetError::netlink("listing IPv4 addresses", e))?;
    let routes = rtnl
        .routes()
        .map_err(|e| NetError::netlink("listing IPv4 routes", e))?;
    let links = rtnl
        .links()
        .map_err(|e| NetError::netlink("listing network interfaces", e))?;
    let existing = links.iter().find(|l| l.name == spec.name).cloned();
    if let Some(link) = &existing
        && !link.is_bridge()
    {
        return Err(NetError::NotABridge {
            name: spec.name.clone(),
            kind: link.kind_name(),
        });
    }

    let own_index = existing.as_ref().map(|l| l.index);
    let own: Vec<Ipv4Net> = addresses
        .iter()
        .filter(|a| Some(a.index) == own_index)
        .filter_map(|a| Ipv4Net::new(a.address, a.prefix).ok())
        .collect();
    if !own.is_empty() && !own.contains(&spec.cidr) {
        return Err(NetError::BridgeAddressMismatch {
            name: spec.name.clone(),
            found: own
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            want: spec.cidr.to_string(),
        });
    }
    let conflicts = find_overlaps(
        spec.cidr,
        &host_networks(&links, &addresses, &routes, own_index),
    );
    if !conflicts.is_empty() {
        return Err(NetError::Overlap {
            cidr: spec.cidr.to_string(),
            conflicts: conflicts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(Found {
        index: own_index,
        has_address: !own.is_empty(),
    })
}

/// The bridge needs a host address that is neither the network nor the
/// broadcast address, and room for at least one guest.
pub fn validate_cidr(cidr: Ipv4Net) -> Result<(), NetError> {
    let reason = if cidr.prefix_len() > 30 {
        "the prefix leaves no room for guests (use /30 or shorter)"
    } else if cidr.prefix_len() < 8 {
        "the prefix is shorter than /8"
    } else if cidr.addr() == cidr.network() {
        "the address is the network address"
    } else if cidr.addr() == cidr.broadcast() {
        "the address is the broadcast address"
    } else if cidr.addr().is_loopback()
        || cidr.addr().is_multicast()
        || cidr.addr().is_unspecified()
        || cidr.addr() == Ipv4Addr::BROADCAST
    {
        "it is a loopback, multicast or reserved address"
    } else {
        return Ok(());
    };
    Err(NetError::BadCidr {
        cidr: cidr.to_string(),
        reason,
    })
}

/// Where a network on the host comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Address,
    Route,
}

/// A network the host already uses: an interface's address or a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNet {
    pub net: Ipv4Net,
    /// The interface it is on; `None` for routes without one (blackhole,
    /// unreachable, multipath).
    pub interface: Option<String>,
    pub origin: Origin,
}

impl fmt::Display for HostNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.origin {
            Origin::Address => "address",
            Origin::Route => "route",
        };
        match &self.interface {
            Some(name) => write!(f, "{what} {} on {name}", self.net),
            None => write!(f, "{what} {}", self.net),
        }
    }
}

/// The host's networks other than the bridge's own (`bridge`: its index
/// when it exists). Default routes are left out: they overlap everything
/// and a more specific bridge route wins over them.
fn host_networks(
    links: &[Link],
    addresses: &[Address],
    routes: &[Route],
    bridge: Option<u32>,
) -> Vec<HostNet> {
    let name = |index: u32| {
        links
            .iter()
            .find(|l| l.index == index)
            .map(|l| l.name.clone())
            .unwrap_or_else(|| format!("interface #{index}"))
    };
    let mut out = Vec::new();
    for a in addresses.iter().filter(|a| Some(a.index) != bridge) {
        if let Ok(net) = Ipv4Net::new(a.address, a.prefix) {
            out.push(HostNet {
                net,
                interface: Some(name(a.index)),
                origin: Origin::Address,
            });
        }
    }
    for r in routes {
        if r.prefix == 0 || (r.oif.is_some() && r.oif == bridge) {
            continue;
        }
        if let Ok(net) = Ipv4Net::new(r.destination, r.prefix) {
            out.push(HostNet {
                net: net.trunc(),
                interface: r.oif.map(name),
                origin: Origin::Route,
            });
        }
    }
    out
}

/// The host networks that share addresses with `cidr`; each listed once.
pub fn find_overlaps(cidr: Ipv4Net, host: &[HostNet]) -> Vec<HostNet> {
    let ours = cidr.trunc();
    let mut out: Vec<HostNet> = Vec::new();
    for h in host {
        if h.net.prefix_len() == 0 {
            continue;
        }
        let theirs = h.net.trunc();
        let overlaps = ours.contains(&theirs) || theirs.contains(&ours);
        // An address's own subnet route duplicates the address: report the
        // address only.
        let duplicate = out
            .iter()
            .any(|o| o.net.trunc() == theirs && o.interface == h.interface);
        if overlaps && !duplicate {
            out.push(h.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn host(s: &str, iface: Option<&str>, origin: Origin) -> HostNet {
        HostNet {
            net: net(s),
            interface: iface.map(String::from),
            origin,
        }
    }

    #[test]
    fn disjoint_networks_do_not_overlap() {
        let hostnets = [
            host("10.0.2.15/24", Some("eth0"), Origin::Address),
            host("10.0.2.0/24", Some("eth0"), Origin::Route),
            host("127.0.0.1/8", Some("lo"), Origin::Address),
            host("172.17.0.1/16", Some("docker0"), Origin::Address),
        ];
        assert!(find_overlaps(net("172.16.0.1/24"), &hostnets).is_empty());
    }

    #[test]
    fn a_wider_route_contains_the_bridge_subnet() {
        let hostnets = [host("172.16.0.0/12", Some("wg0"), Origin::Route)];
        let found = find_overlaps(net("172.16.0.1/24"), &hostnets);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].to_string(), "route 172.16.0.0/12 on wg0");
    }

    #[test]
    fn a_narrower_address_inside_the_bridge_subnet_overlaps() {
        let hostnets = [
            host("172.16.0.200/28", Some("dummy0"), Origin::Address),
            host("172.16.0.192/28", Some("dummy0"), Origin::Route),
        ];
        let found = find_overlaps(net("172.16.0.1/24"), &hostnets);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].to_string(), "address 172.16.0.200/28 on dummy0");
    }

    #[test]
    fn routes_without_interface_and_default_routes() {
        let hostnets = [
            host("0.0.0.0/0", Some("eth0"), Origin::Route),
            host("172.16.0.0/16", None, Origin::Route),
        ];
        let found = find_overlaps(net("172.16.0.1/24"), &hostnets);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].to_string(), "route 172.16.0.0/16");
    }

    #[test]
    fn bridge_own_networks_are_excluded() {
        let links = vec![
            Link {
                index: 2,
                name: "eth0".into(),
                kind: None,
                tap: None,
                controller: None,
                up: true,
            },
            Link {
                index: 3,
                name: "banger0".into(),
                kind: Some("bridge".into()),
                tap: None,
                controller: None,
                up: true,
            },
        ];
        let addresses = vec![
            Address {
                index: 2,
                address: "10.0.2.15".parse().unwrap(),
                prefix: 24,
            },
            Address {
                index: 3,
                address: "172.16.0.1".parse().unwrap(),
                prefix: 24,
            },
        ];
        let routes = vec![
            Route {
                destination: "0.0.0.0".parse().unwrap(),
                prefix: 0,
                oif: Some(2),
            },
            Route {
                destination: "172.16.0.0".parse().unwrap(),
                prefix: 24,
                oif: Some(3),
            },
            Route {
                destination: "172.16.0.0".parse().unwrap(),
                prefix: 12,
                oif: Some(9),
            },
        ];
        let nets = host_networks(&links, &addresses, &routes, Some(3));
        let found = find_overlaps(net("172.16.0.1/24"), &nets);
        assert_eq!(
            found.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["route 172.16.0.0/12 on interface #9"]
        );
    }

    #[test]
    fn cidrs_are_validated() {
        validate_cidr(net("172.16.0.1/24")).unwrap();
        validate_cidr(net("10.0.0.1/30")).unwrap();
        for bad in [
            "172.16.0.0/24",
            "172.16.0.255/24",
            "10.0.0.1/31",
            "10.0.0.1/32",
            "127.0.0.1/24",
            "10.0.0.1/7",
            "224.0.0.1/24",
        ] {
            assert!(validate_cidr(net(bad)).is_err(), "{bad}");
        }
    }
}
