//! The guest address pool. Pure: the leases themselves live in the store;
//! this only picks the next free address given the ones in use.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The first free host address in `cidr` (the bridge's address and
/// prefix), in ascending order, skipping the network and broadcast
/// addresses, the bridge's own address and everything in `used`. `None`
/// when the pool is exhausted.
///
/// A /31 or /32 has no room for a bridge and a guest with a broadcast
/// domain, so it yields nothing (ensure_bridge refuses them too).
pub fn next_free_ip(cidr: Ipv4Net, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    if cidr.prefix_len() > 30 {
        return None;
    }
    let bridge = cidr.addr();
    // hosts() already leaves out the network and broadcast addresses.
    cidr.hosts().find(|ip| *ip != bridge && !used.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ips(list: &[&str]) -> BTreeSet<Ipv4Addr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn first_address_after_the_bridge() {
        assert_eq!(
            next_free_ip(net("172.16.0.1/24"), &ips(&[])),
            Some("172.16.0.2".parse().unwrap())
        );
    }

    #[test]
    fn skips_used_addresses_and_fills_holes() {
        let used = ips(&["172.16.0.2", "172.16.0.3", "172.16.0.5"]);
        assert_eq!(
            next_free_ip(net("172.16.0.1/24"), &used),
            Some("172.16.0.4".parse().unwrap())
        );
    }

    #[test]
    fn bridge_in_the_middle_is_skipped_and_network_is_never_given() {
        // Bridge at .2: .1 is free and handed out, .2 is skipped, .0 never.
        assert_eq!(
            next_free_ip(net("10.0.0.2/29"), &ips(&[])),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            next_free_ip(net("10.0.0.2/29"), &ips(&["10.0.0.1"])),
            Some("10.0.0.3".parse().unwrap())
        );
    }

    #[test]
    fn never_the_broadcast_and_none_when_exhausted() {
        // /29: .1-.6 are hosts, .1 is the bridge, .7 is the broadcast.
        let used = ips(&["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]);
        assert_eq!(
            next_free_ip(net("10.0.0.1/29"), &used),
            Some("10.0.0.6".parse().unwrap())
        );
        let full = ips(&["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        assert_eq!(next_free_ip(net("10.0.0.1/29"), &full), None);
    }

    #[test]
    fn addresses_outside_the_pool_in_used_do_not_matter() {
        let used = ips(&["192.168.1.2"]);
        assert_eq!(
            next_free_ip(net("172.16.0.1/30"), &used),
            Some("172.16.0.2".parse().unwrap())
        );
        assert_eq!(
            next_free_ip(net("172.16.0.1/30"), &ips(&["172.16.0.2"])),
            None
        );
    }

    #[test]
    fn tiny_prefixes_have_no_pool() {
        assert_eq!(next_free_ip(net("10.0.0.1/31"), &ips(&[])), None);
        assert_eq!(next_free_ip(net("10.0.0.1/32"), &ips(&[])), None);
    }

    #[test]
    fn a_large_pool_is_walked_lazily() {
        let used: BTreeSet<Ipv4Addr> = (2..=255u8).map(|d| Ipv4Addr::new(10, 1, 0, d)).collect();
        assert_eq!(
            next_free_ip(net("10.1.0.1/16"), &used),
            Some("10.1.1.0".parse().unwrap())
        );
    }
}
