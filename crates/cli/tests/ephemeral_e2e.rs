//! `vm run --rm` is the daemon's promise: the VM goes when its client's
//! lease ends, however the client ended; across a bangerd restart the
//! client takes the lease again, and a VM nobody claims goes. The daemon
//! runs in a network namespace this test creates, as in vm_e2e.rs; one
//! guest boot in all.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use banger_model::{Size, VmName, VmRecord, VmState};
use common::*;

/// Polls `probe` until it gives a value.
fn wait_until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(started.elapsed() < limit, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_killed_vm_run_rm_leaves_no_vm() {
    let Some(home) = home_with_default_image(&[], |_| {}) else {
        return;
    };
    let Some(ns) = Netns::new("banger-eph") else {
        return;
    };

    let mut run = home.banger_in_command(
        &ns,
        &["vm", "run", "--rm", "--name", "tmp", "--", "sleep", "600"],
    );
    let mut child = run
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vm run --rm");
    let vm = wait_until("the --rm VM runs", Duration::from_secs(600), || {
        vm_list(&home, &ns)
            .into_iter()
            .find(|v| v.name.as_str() == "tmp" && v.state == VmState::Running)
    });
    assert!(vm.ephemeral, "vm run --rm makes an ephemeral VM: {vm:?}");
    let listing = ok(home.banger_in(&ns, &["vm", "list"], &[]), "vm list");
    assert!(listing.contains("running (--rm)"), "{listing}");
    let shown = ok(home.banger_in(&ns, &["vm", "show", "tmp"], &[]), "vm show");
    assert!(shown.contains("lease:   ephemeral"), "{shown}");
    let tap = banger_network::tap_name("tmp");
    assert!(link_exists(&ns, &tap));

    // A bangerd restart does not end the session: the running client takes
    // the lease again from the new daemon, which kept the VM for it.
    let taken = |home: &TestHome| {
        std::fs::read_to_string(home.log())
            .unwrap_or_default()
            .matches("lease taken")
            .count()
    };
    assert_eq!(taken(&home), 1);
    ok(home.banger_in(&ns, &["daemon", "stop"], &[]), "daemon stop");
    let again = vm_list(&home, &ns);
    assert_eq!(
        again.len(),
        1,
        "the restarted daemon keeps the VM: {again:?}"
    );
    wait_until(
        "the client takes the lease again",
        Duration::from_secs(30),
        || (taken(&home) == 2).then_some(()),
    );
    assert_eq!(vm_list(&home, &ns)[0].state, VmState::Running);

    // `ip netns exec` execs banger: the child's pid is banger's. Wait for
    // the exec (it is long done by now), then kill -9 it: no CLI code runs.
    let pid = child.id();
    wait_until(
        "ip netns exec becomes banger",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .ok()
                .filter(|c| c.trim() == "banger")
        },
    );
    child.kill().expect("kill -9 banger");
    let status = child.wait().expect("reap banger");
    assert!(!status.success(), "banger was killed: {status}");

    wait_until("the daemon deletes the VM", Duration::from_secs(60), || {
        vm_list(&home, &ns).is_empty().then_some(())
    });
    assert!(!link_exists(&ns, &tap), "its TAP is gone");
    assert_eq!(rules_of(&ns, "tmp"), 0, "its nft rules are gone");
    assert!(!home.state().join("vms/tmp").exists(), "its disks are gone");
    let log = std::fs::read_to_string(home.log()).unwrap_or_default();
    assert!(log.contains("its client's lease ended"), "{log}");
    let _ = home.banger_in(&ns, &["daemon", "stop"], &[]);
}

/// An ephemeral VM whose hypervisor is gone when bangerd starts serves
/// nobody: it is deleted at once (and logged); durable ones stay. No guest boots: the
/// records are written into the store as `vm run --rm` writes them.
#[test]
fn a_restarted_daemon_deletes_ephemeral_vms() {
    if !banger_testkit::running_as_root() {
        return banger_testkit::skip(
            "needs root (network namespaces; the daemon touches the network)",
        );
    }
    let home = TestHome::new();
    seed(&home);
    {
        let store = banger_store::Store::open(&home.state().join("banger.db")).unwrap();
        store
            .insert_vm(&VmRecord {
                name: VmName::parse("gone-1").unwrap(),
                image: "debian-bookworm".into(),
                kernel: "cloud-6.1".into(),
                state: VmState::Running,
                vcpu: 1,
                memory_mib: 512,
                disk_size: Size::from_gib(1),
                nat: false,
                ip: Some("172.16.0.9".into()),
                mac: "52:54:00:00:00:09".into(),
                tap: banger_network::tap_name("gone-1"),
                system_uuid: String::new(),
                work_uuid: String::new(),
                runtime: None,
                last_error: None,
                created_at: 1_700_000_000,
                ephemeral: true,
                boot_path: None,
                template_build: None,
                workspace: None,
            })
            .unwrap();
    }
    let Some(ns) = Netns::new("banger-eph-restart") else {
        return;
    };
    let names: Vec<String> = vm_list(&home, &ns)
        .into_iter()
        .map(|v| v.name.to_string())
        .collect();
    assert_eq!(names, ["web-1"], "only the durable VM is left");
    let log = std::fs::read_to_string(home.log()).unwrap_or_default();
    assert!(
        log.contains("deleting an ephemeral VM") && log.contains("gone-1"),
        "{log}"
    );
    let _ = home.banger_in(&ns, &["daemon", "stop"], &[]);
}
