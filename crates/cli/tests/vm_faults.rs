//! What the host cannot give, and a hypervisor that dies at start: one
//! clear error each, and nothing half-made left behind (no TAP, no lease
//! held by a VM that does not exist, no process). bangerd runs in a network
//! namespace of the test's own, as in vm_e2e.rs.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use banger_model::{VmRecord, VmState};
use common::*;

#[test]
fn what_the_host_lacks_is_refused_before_anything_is_made() {
    let home = TestHome::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let too_many = (cpus + 1).to_string();
    if cpus < 64 {
        home.banger(&["vm", "create", "--vcpu", &too_many])
            .assert()
            .code(1)
            .stderr(predicates::str::contains(format!(
                "--vcpu {too_many} is more than this host's {cpus} CPUs"
            )));
    }
    home.banger(&["vm", "create", "--memory", "1T"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("this host has available"));
    // Disks are sparse, but a guest can fill them: they must fit at full
    // size (the 16G system disk and the work disk), checked before the
    // image is even looked for.
    let vms = home.state().join("vms");
    home.banger(&["vm", "create", "--name", "huge", "--disk-size", "100T"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(format!(
            "not enough space in {}: the disks need 100.0 TiB at full size, ",
            vms.display()
        )))
        .stderr(predicates::str::contains("GiB free"));
    assert!(
        !vms.join("huge").exists(),
        "no disk, folder or key left behind"
    );

    home.write_config("hypervisor = \"qemu\"\nqemu_bin = \"/nonexistent/qemu-system-x86_64\"\n");
    home.banger(&["daemon", "stop"]).assert().success();
    home.banger(&["vm", "create"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "/nonexistent/qemu-system-x86_64 is not an executable file",
        ));

    home.write_config(
        "hypervisor = \"firecracker\"\nfirecracker_bin = \"/nonexistent/firecracker\"\n",
    );
    home.banger(&["daemon", "stop"]).assert().success();
    home.banger(&["vm", "create"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "hypervisor = \"firecracker\" but",
        ));

    let out = home.banger(&["vm", "list", "--json"]).output().unwrap();
    assert_eq!(stdout(&out).trim(), "[]", "nothing was recorded");
}

#[test]
fn a_hypervisor_dying_at_start_and_an_exhausted_pool() {
    if !banger_testkit::running_as_root() {
        return banger_testkit::skip("needs root (network namespaces, TAP devices)");
    }
    if std::env::var_os("BANGER_TEST_SKIP_IMAGE_BUILD").is_some() {
        return banger_testkit::skip("BANGER_TEST_SKIP_IMAGE_BUILD is set: no image to boot");
    }
    if !banger_testkit::have_tools(&["mmdebstrap", "mkfs.ext4", "ip"]) {
        return;
    }
    let home = TestHome::new();
    share_caches(&home);
    // A "QEMU" that fails the way a real one does on a bad option.
    let fake = home.root().join("fake-qemu");
    fs::write(
        &fake,
        "#!/bin/sh\necho 'qemu-system-x86_64: boom, no such machine' >&2\nexit 1\n",
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    // A /30: the bridge takes .1, one guest can have .2, and that is all.
    home.write_config(&format!(
        "hypervisor = \"qemu\"\nqemu_bin = \"{}\"\nbridge_cidr = \"172.31.9.1/30\"\nbridge_name = \"bgrtest0\"\n",
        fake.display()
    ));
    let init = banger_testkit::static_guest_binaries().init.clone();
    let build = home
        .banger(&["image", "build"])
        .env("BANGER_INIT_BIN", &init)
        .timeout(std::time::Duration::from_secs(900))
        .output()
        .unwrap();
    assert!(build.status.success(), "image build: {}", stderr(&build));
    home.banger(&["daemon", "stop"]).assert().success();

    let Some(ns) = Netns::new("banger-faults") else {
        return;
    };
    let out = home.banger_in(&ns, &["vm", "create", "--name", "doomed"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("boom, no such machine"),
        "quotes the hypervisor: {err}"
    );
    assert_eq!(
        err.trim().lines().last().map(|l| l.starts_with("error: ")),
        Some(true),
        "{err}"
    );

    let out = home.banger_in(&ns, &["vm", "list", "--json"], &[]);
    let vms: Vec<VmRecord> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].state, VmState::Error);
    assert!(vms[0].runtime.is_none(), "no process recorded");
    assert!(vms[0].last_error.as_deref().unwrap_or("").contains("boom"));
    let tap = banger_network::tap_name("doomed");
    let link = Command::new("ip")
        .args(["netns", "exec", &ns.0, "ip", "link", "show", &tap])
        .output()
        .unwrap();
    assert!(!link.status.success(), "no TAP left behind");

    // Its lease is the pool's only address.
    let out = home.banger_in(&ns, &["vm", "create", "--name", "second"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no free guest address left in 172.31.9.1/30"),
        "{}",
        stderr(&out)
    );

    let out = home.banger_in(&ns, &["vm", "delete", "doomed"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!home.state().join("vms/doomed").exists(), "disks removed");
    let out = home.banger_in(&ns, &["vm", "list", "--json"], &[]);
    assert_eq!(stdout(&out).trim(), "[]");

    // vm run --rm does not keep a VM that failed to boot.
    let out = home.banger_in(
        &ns,
        &["vm", "run", "--rm", "--name", "gone", "--", "true"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("boom"), "{}", stderr(&out));
    let out = home.banger_in(&ns, &["vm", "list", "--json"], &[]);
    assert_eq!(stdout(&out).trim(), "[]", "the failed VM was removed");
    assert!(!home.state().join("vms/gone").exists());
    let _ = home.banger_in(&ns, &["daemon", "stop"], &[]);
}

/// The bridge and every nft rule deleted under a running daemon, after a
/// first VM made them: the next `vm run` makes them again and boots, and
/// nothing of either VM is left (counted). One guest at a time: under TCG
/// two would each take twice as long.
#[test]
fn a_bridge_removed_under_a_running_daemon_is_made_again() {
    let Some(home) = home_with_default_image(&["nft"], |home| {
        home.write_config("[vm_defaults]\nvcpu = 1\nmemory_mib = 512\n");
    }) else {
        return;
    };
    let Some(ns) = Netns::new("banger-bridge") else {
        return;
    };
    ok(
        home.banger_in(&ns, &["vm", "list"], &[]),
        "start the daemon",
    );
    let before = Census::take(&home, &ns, &[]);
    let run = |name: &str| {
        let out = home.banger_in(
            &ns,
            &["vm", "run", "--rm", "--name", name, "--", "echo", "booted"],
            &[],
        );
        assert_eq!(ok(out, name), "booted\n");
    };
    run("first");
    let bridge = banger_config::Config::default().bridge_name().to_string();
    assert!(link_exists(&ns, &bridge), "{bridge} made by the first VM");
    ok(
        ns.exec(&["ip", "link", "delete", &bridge]),
        "ip link delete",
    );
    ok(ns.exec(&["nft", "flush", "ruleset"]), "nft flush ruleset");

    run("next");
    assert!(link_exists(&ns, &bridge), "{bridge} made again");
    assert_no_leaks(&home, &ns, &[], &before, "after the bridge was made again");
    let _ = home.banger_in(&ns, &["daemon", "stop"], &[]);
}
