//! End to end under QEMU/TCG: one guest under bangerd in a network
//! namespace whose resolver is bangerd's `.vm` zone (as `banger dns
//! install` makes the host's), reached as `root@NAME.vm` by plain OpenSSH
//! through banger's ssh_config with strict host key checking; the guest
//! resolves `.vm` names too, and the name goes away when the VM stops.

mod common;

use std::path::PathBuf;

use banger_model::{VmRecord, VmState};
use common::*;

/// `/etc/netns/<ns>/resolv.conf`: `ip netns exec` bind-mounts it over
/// /etc/resolv.conf, so glibc in the namespace (bangerd, ssh, getent) asks
/// bangerd's zone. Removed on drop, whatever happened.
struct NetnsResolver(PathBuf);

impl NetnsResolver {
    fn new(ns: &Netns, nameserver: &str) -> Self {
        let dir = PathBuf::from("/etc/netns").join(&ns.0);
        std::fs::create_dir_all(&dir).unwrap();
        let guard = NetnsResolver(dir);
        std::fs::write(
            guard.0.join("resolv.conf"),
            format!("nameserver {nameserver}\n"),
        )
        .unwrap();
        guard
    }
}

impl Drop for NetnsResolver {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn ssh_root_at_name_vm_with_strict_checking_and_guests_resolve_names() {
    let Some(home) = home_with_default_image(&["dig", "getent"], |_| {}) else {
        return;
    };

    let Some(ns) = Netns::new("banger-dns") else {
        return;
    };
    // The default config: the zone on the bridge address, port 53.
    let bridge_ip = "172.16.0.1";
    let _resolver = NetnsResolver::new(&ns, bridge_ip);
    let b = |args: &[&str]| home.banger_in(&ns, args, &[]);

    ok(b(&["vm", "create", "--name", "dnsbox"]), "vm create");
    let vms: Vec<VmRecord> =
        serde_json::from_str(&ok(b(&["vm", "list", "--json"]), "vm list")).unwrap();
    let vm = vms.iter().find(|v| v.name.as_str() == "dnsbox").unwrap();
    assert_eq!(vm.state, VmState::Running);
    let ip = vm.ip.clone().unwrap();

    // The host side (the namespace): glibc resolves NAME.vm through bangerd.
    let hosts = ok(
        ns.exec(&["getent", "hosts", "dnsbox.vm"]),
        "getent on the host",
    );
    assert_eq!(
        hosts.split_whitespace().next(),
        Some(ip.as_str()),
        "{hosts}"
    );

    // Plain OpenSSH with banger's ssh_config: strict checking against the
    // key pinned before the first boot, found under the name typed.
    let ssh_config = home.root().join("config/ssh_config");
    let ssh_config = ssh_config.to_str().unwrap();
    let ssh = |options: &[&str], command: &str| {
        let mut argv = vec!["ssh", "-F", ssh_config, "-o", "BatchMode=yes"];
        argv.extend_from_slice(options);
        argv.extend(["root@dnsbox.vm", command]);
        ns.exec(&argv)
    };
    let out = ssh(
        &[],
        "cat /etc/resolv.conf; getent hosts dnsbox.vm probe.banger.vm",
    );
    let seen = ok(out, "ssh root@dnsbox.vm");
    // The guest's resolver: the zone first (the namespace has no other
    // upstream to offer), and it resolves .vm names through it.
    let first = seen.lines().find(|l| l.starts_with("nameserver"));
    let want = format!("nameserver {bridge_ip}");
    assert_eq!(first, Some(want.as_str()), "{seen}");
    assert!(
        seen.contains(&format!("{ip} ")) && seen.contains("dnsbox.vm"),
        "{seen}"
    );
    assert!(seen.contains("192.0.2.53"), "the probe name: {seen}");
    // The same ssh with a known_hosts that pins the key under the
    // address only is refused: the key is looked up by the name typed,
    // strictly.
    let known = home.state().join("ssh/known_hosts");
    let pinned = std::fs::read_to_string(&known).unwrap();
    let stripped = home.root().join("known_hosts.stripped");
    std::fs::write(&stripped, pinned.replace("dnsbox.vm,", "")).unwrap();
    let other_known = format!("UserKnownHostsFile={}", stripped.display());
    let out = ssh(
        &[
            "-o",
            "ControlMaster=no",
            "-o",
            "ControlPath=none",
            "-o",
            &other_known,
        ],
        "true",
    );
    assert!(!out.status.success(), "an unpinned name is refused");
    assert!(
        stderr(&out).contains("Host key verification failed"),
        "{}",
        stderr(&out)
    );

    // The ControlMaster that ssh opened (ControlPath <run>/ssh/%C, a
    // 40-digit hash) is ended when the VM stops.
    let masters = || {
        std::fs::read_dir(home.root().join("run/ssh"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().len() == 40)
            .count()
    };
    assert_eq!(masters(), 1, "ssh root@dnsbox.vm left its master");

    // Stopped: the name is gone (NXDOMAIN from the zone).
    ok(b(&["vm", "stop", "dnsbox"]), "vm stop");
    assert_eq!(masters(), 0, "the master is closed on stop");
    let dig = ns.exec(&[
        "dig",
        &format!("@{bridge_ip}"),
        "+tries=2",
        "+time=2",
        "dnsbox.vm",
    ]);
    assert!(
        stdout(&dig).contains("status: NXDOMAIN"),
        "{}",
        stdout(&dig)
    );
    let gone = ns.exec(&["getent", "hosts", "dnsbox.vm"]);
    assert!(!gone.status.success(), "{}", stdout(&gone));
    ok(b(&["vm", "delete", "dnsbox"]), "vm delete");
}
