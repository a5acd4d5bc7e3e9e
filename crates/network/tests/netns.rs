//! Host networking against the real kernel, never in the host's network
//! namespace: each outer test creates `banger-test-<random>`, re-executes
//! this test binary inside it (`ip netns exec`) to run one `#[ignore]`d
//! inner test, and deletes the namespace when it ends, even on failure.
//! The inner tests send no packets at all.
//!
//! Needs root and `ip netns`; without them the outer tests print
//! `skipped: <why>` and pass. Run by hand inside a namespace only:
//! an inner test refuses to run anywhere else. The harness is in
//! `common/`.

mod common;

use std::net::Ipv4Addr;

use banger_network::{
    BridgeSpec, NatBackend, NetError, check_bridge, create_tap, create_tap_owned, delete_tap,
    disable_nat, enable_nat_with, ensure_bridge, nat_enabled, tap_exists, tap_name,
};
use common::*;

// ---- outer tests: create a namespace, run the inner test in it ----

#[test]
fn bridge_in_netns() {
    in_netns("inner_bridge");
}

#[test]
fn tap_in_netns() {
    in_netns("inner_tap");
}

#[test]
fn nat_nft_in_netns() {
    in_netns("inner_nat_nft");
}

#[test]
fn nat_iptables_in_netns() {
    in_netns("inner_nat_iptables");
}

// ---- inner tests ----

#[test]
#[ignore = "run inside a network namespace by bridge_in_netns"]
fn inner_bridge() {
    if !inside_test_netns() {
        return;
    }
    let spec = BridgeSpec {
        name: "banger0".into(),
        cidr: "172.16.0.1/24".parse().unwrap(),
    };
    check_bridge(&spec).unwrap();
    assert!(!link_exists("banger0"), "check_bridge changes nothing");
    ensure_bridge(&spec).unwrap();
    ensure_bridge(&spec).unwrap();
    check_bridge(&spec).unwrap();
    let link = link_json("banger0");
    assert_eq!(link["linkinfo"]["info_kind"], "bridge");
    assert!(flags(&link).contains("UP"), "{link}");
    assert_eq!(ipv4_addresses("banger0"), ["172.16.0.1/24"]);

    // The same bridge asked for with another address.
    let other = BridgeSpec {
        name: "banger0".into(),
        cidr: "172.16.5.1/24".parse().unwrap(),
    };
    let err = ensure_bridge(&other).unwrap_err();
    assert!(
        matches!(err, NetError::BridgeAddressMismatch { .. }),
        "{err}"
    );
    assert_eq!(ipv4_addresses("banger0"), ["172.16.0.1/24"]);

    // An address of another interface inside the wanted subnet.
    // A veth: this kernel may lack the dummy module.
    run(&[
        "ip", "link", "add", "veth-t", "type", "veth", "peer", "name", "veth-p",
    ]);
    run(&["ip", "addr", "add", "10.20.0.5/16", "dev", "veth-t"]);
    run(&["ip", "link", "set", "veth-t", "up"]);
    let clash = BridgeSpec {
        name: "banger1".into(),
        cidr: "10.20.3.1/24".parse().unwrap(),
    };
    let err = check_bridge(&clash).unwrap_err();
    assert!(matches!(err, NetError::Overlap { .. }), "{err}");
    let err = ensure_bridge(&clash).unwrap_err();
    assert!(matches!(err, NetError::Overlap { .. }), "{err}");
    assert!(
        err.to_string().contains("address 10.20.0.5/16 on veth-t"),
        "{err}"
    );
    assert!(!link_exists("banger1"), "a refused bridge must not be made");

    // A route (not an address) covering the wanted subnet.
    run(&["ip", "route", "add", "192.168.128.0/17", "dev", "veth-t"]);
    let clash = BridgeSpec {
        name: "banger1".into(),
        cidr: "192.168.200.1/24".parse().unwrap(),
    };
    let err = ensure_bridge(&clash).unwrap_err();
    assert!(
        err.to_string().contains("route 192.168.128.0/17 on veth-t"),
        "{err}"
    );
    assert!(!link_exists("banger1"));

    // A name taken by something that is not a bridge.
    let taken = BridgeSpec {
        name: "veth-t".into(),
        cidr: "172.31.0.1/24".parse().unwrap(),
    };
    let err = ensure_bridge(&taken).unwrap_err();
    assert!(matches!(err, NetError::NotABridge { .. }), "{err}");

    // A bridge half-made by a crash (no address, down) is finished.
    run(&["ip", "link", "add", "banger2", "type", "bridge"]);
    let half = BridgeSpec {
        name: "banger2".into(),
        cidr: "172.30.0.1/24".parse().unwrap(),
    };
    ensure_bridge(&half).unwrap();
    assert_eq!(ipv4_addresses("banger2"), ["172.30.0.1/24"]);
    assert!(flags(&link_json("banger2")).contains("UP"));

    // Several VMs starting at once all ensure the same new bridge.
    let racing = BridgeSpec {
        name: "banger3".into(),
        cidr: "172.29.0.1/24".parse().unwrap(),
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| ensure_bridge(&racing))).collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    });
    assert_eq!(ipv4_addresses("banger3"), ["172.29.0.1/24"]);
}

#[test]
#[ignore = "run inside a network namespace by tap_in_netns"]
fn inner_tap() {
    if !inside_test_netns() {
        return;
    }
    let tap = tap_name("vm1");
    let err = create_tap(&tap, "banger0").unwrap_err();
    assert!(matches!(err, NetError::BridgeMissing { .. }), "{err}");
    assert!(!link_exists(&tap), "nothing made without a bridge");

    ensure_bridge(&BridgeSpec {
        name: "banger0".into(),
        cidr: "172.16.0.1/24".parse().unwrap(),
    })
    .unwrap();
    create_tap(&tap, "banger0").unwrap();
    create_tap(&tap, "banger0").unwrap();
    assert!(tap_exists(&tap));
    let link = link_json(&tap);
    assert_eq!(link["master"], "banger0", "{link}");
    assert_eq!(link["linkinfo"]["info_kind"], "tun");
    assert_eq!(link["linkinfo"]["info_data"]["type"], "tap");
    assert_eq!(link["linkinfo"]["info_data"]["persist"], true);
    assert!(link["linkinfo"]["info_data"].get("user").is_none());
    assert!(flags(&link).contains("UP"), "{link}");

    // Detached by hand (or a crash between create and attach): reattached.
    run(&["ip", "link", "set", &tap, "nomaster"]);
    run(&["ip", "link", "set", &tap, "down"]);
    create_tap(&tap, "banger0").unwrap();
    let link = link_json(&tap);
    assert_eq!(link["master"], "banger0", "{link}");
    assert!(flags(&link).contains("UP"), "{link}");

    // Owned by a user, so an unprivileged hypervisor can open it.
    let owned = tap_name("vm2");
    create_tap_owned(&owned, "banger0", Some(4242)).unwrap();
    let link = link_json(&owned);
    assert!(
        link["linkinfo"]["info_data"].get("user").is_some(),
        "{link}"
    );
    assert_eq!(link["master"], "banger0");

    delete_tap(&tap).unwrap();
    assert!(!tap_exists(&tap));
    assert!(!link_exists(&tap));
    delete_tap(&tap).unwrap();
    delete_tap(&owned).unwrap();

    // Something else under that kind of name is left alone.
    run(&[
        "ip",
        "link",
        "add",
        "bgrnotatap",
        "type",
        "veth",
        "peer",
        "name",
        "bgrpeer",
    ]);
    assert!(!tap_exists("bgrnotatap"));
    let err = delete_tap("bgrnotatap").unwrap_err();
    assert!(matches!(err, NetError::NotATap { .. }), "{err}");
    assert!(link_exists("bgrnotatap"));
    let err = create_tap("bgrnotatap", "banger0").unwrap_err();
    assert!(matches!(err, NetError::NotATap { .. }), "{err}");
}

#[test]
#[ignore = "run inside a network namespace by nat_nft_in_netns"]
fn inner_nat_nft() {
    if !inside_test_netns() {
        return;
    }
    if find_tool("nft").is_none() {
        skip("nft is not installed");
        // The outer test still wants "1 passed".
        return;
    }
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "0\n").unwrap();
    // A user's table, holding even a rule with banger's tag: not ours.
    run_stdin(
        &["nft", "-f", "-"],
        "table ip usertable {\n chain post {\n  type nat hook postrouting priority 110; policy accept;\n  ip saddr 172.16.0.2 counter masquerade comment \"banger:vm1\"\n }\n}\n",
    );
    let guest: Ipv4Addr = "172.16.0.2".parse().unwrap();
    assert!(!nat_enabled("vm1").unwrap(), "the user's rule is not ours");
    disable_nat("vm1").unwrap();
    assert_eq!(count_rules("usertable", "banger:vm1"), 1);

    enable_nat_with(NatBackend::Nft, "vm1", guest, "banger0").unwrap();
    enable_nat_with(NatBackend::Nft, "vm1", guest, "banger0").unwrap();
    enable_nat_with(
        NatBackend::Nft,
        "vm10",
        "172.16.0.3".parse().unwrap(),
        "banger0",
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );
    assert!(nat_enabled("vm1").unwrap());
    assert_eq!(count_rules("banger", "banger:vm1"), 1);
    let listing = text(&["nft", "list", "table", "ip", "banger"]);
    assert!(
        listing.contains("ip saddr 172.16.0.2 oifname != \"banger0\""),
        "{listing}"
    );
    assert!(listing.contains("masquerade"), "{listing}");

    // The VM re-leased to another address: its one rule follows.
    enable_nat_with(
        NatBackend::Nft,
        "vm1",
        "172.16.0.9".parse().unwrap(),
        "banger0",
    )
    .unwrap();
    assert_eq!(count_rules("banger", "banger:vm1"), 1);
    let listing = text(&["nft", "list", "table", "ip", "banger"]);
    assert!(listing.contains("ip saddr 172.16.0.9 "), "{listing}");
    assert!(!listing.contains("ip saddr 172.16.0.2 "), "{listing}");

    disable_nat("vm1").unwrap();
    assert!(!nat_enabled("vm1").unwrap());
    assert_eq!(count_rules("banger", "banger:vm1"), 0);
    assert_eq!(count_rules("banger", "banger:vm10"), 1, "another VM's rule");
    assert_eq!(count_rules("usertable", "banger:vm1"), 1, "the user's rule");
    disable_nat("vm1").unwrap();
    disable_nat("vm10").unwrap();
    assert!(!nat_enabled("vm10").unwrap());
}

#[test]
#[ignore = "run inside a network namespace by nat_iptables_in_netns"]
fn inner_nat_iptables() {
    if !inside_test_netns() {
        return;
    }
    if find_tool("iptables").is_none() {
        skip("iptables is not installed (apt-get install iptables)");
        return;
    }
    let user_rule = [
        "iptables",
        "-w",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.0.0.0/8",
        "-m",
        "comment",
        "--comment",
        "user rule",
        "-j",
        "MASQUERADE",
    ];
    run(&user_rule);
    let guest: Ipv4Addr = "172.16.0.2".parse().unwrap();
    enable_nat_with(NatBackend::Iptables, "vm1", guest, "banger0").unwrap();
    enable_nat_with(NatBackend::Iptables, "vm1", guest, "banger0").unwrap();
    enable_nat_with(
        NatBackend::Iptables,
        "vm10",
        "172.16.0.3".parse().unwrap(),
        "banger0",
    )
    .unwrap();
    let rules = iptables_lines();
    let ours: Vec<&String> = rules
        .iter()
        .filter(|l| l.contains("\"banger:vm1\""))
        .collect();
    assert_eq!(
        ours,
        [&"-A POSTROUTING -s 172.16.0.2/32 ! -o banger0 -m comment --comment \"banger:vm1\" -j MASQUERADE".to_string()],
        "{rules:?}"
    );
    assert!(nat_enabled("vm1").unwrap());

    disable_nat("vm1").unwrap();
    assert!(!nat_enabled("vm1").unwrap());
    let rules = iptables_lines();
    assert!(
        !rules.iter().any(|l| l.contains("\"banger:vm1\"")),
        "{rules:?}"
    );
    assert!(
        rules.iter().any(|l| l.contains("\"banger:vm10\"")),
        "{rules:?}"
    );
    assert!(
        rules.iter().any(|l| l.contains("\"user rule\"")),
        "{rules:?}"
    );
    disable_nat("vm1").unwrap();
    disable_nat("vm10").unwrap();
    let rules = iptables_lines();
    assert_eq!(rules.iter().filter(|l| l.contains("banger:")).count(), 0);
    assert!(
        rules.iter().any(|l| l.contains("\"user rule\"")),
        "{rules:?}"
    );
}

// ---- helpers ----

fn iptables_lines() -> Vec<String> {
    text(&["iptables", "-w", "-t", "nat", "-S", "POSTROUTING"])
        .lines()
        .map(String::from)
        .collect()
}
