//! Templates end to end, under QEMU/TCG (docs/templates.md): `banger
//! image warm` saves a booted default-image guest; two VMs resumed from
//! it are each themselves (name, address, MAC, host keys, machine-id,
//! random bytes, clock, disk size, file_sync's files), survive a cold
//! restart, and a template whose file changed is refused, deleted and
//! made again in the background. `bangerd` runs inside a network
//! namespace this test creates.

mod common;

use std::time::{Duration, Instant};

use banger_model::{TemplateRecord, VmRecord};
use common::*;

/// This test's daemon makes and uses templates (the harness turns them
/// off for every other test).
const TEMPLATES: &[(&str, &str)] = &[("BANGER_VM_TEMPLATES", "1")];
const SHAPE: &[&str] = &["--vcpu", "2", "--memory", "2G"];

fn json<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// What a guest says of itself, one `key=value` a line.
const PROBE: &str = "echo host=$(hostname); echo mid=$(cat /etc/machine-id); \
    echo ip=$(ip -4 -o addr show scope global | awk '{print $4}'); \
    echo mac=$(cat /sys/class/net/$(ip -o -4 route show default | awk '{print $5}')/address); \
    echo key=$(cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub); \
    echo rand=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'); \
    echo now=$(date +%s.%N); \
    echo root=$(df -B1 --output=size /root | tail -1 | tr -d ' '); \
    echo synced=$(cat /root/.template-e2e 2>&1)";

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

#[test]
fn resumed_vms_are_each_themselves() {
    let Some(home) = home_with_default_image(&["od", "awk"], |home| {
        std::fs::create_dir_all(home.root().join("home")).unwrap();
        std::fs::write(home.root().join("home/.template-e2e"), "from the host\n").unwrap();
        // Templates are made at the default disk size: 2G here, so that
        // one VM below grows its copy and the other does not.
        home.write_config(
            "[vm_defaults]\ndisk_size = \"2G\"\n\n[[file_sync]]\nhost = \"~/.template-e2e\"\n\
             guest = \"~/.template-e2e\"\n",
        );
    }) else {
        return;
    };
    let Some(ns) = Netns::new("banger-tpl") else {
        return;
    };
    let b = |args: &[&str]| home.banger_in(&ns, args, TEMPLATES);

    // Made ahead of time, then listed with its size.
    let mut warm = vec!["image", "warm", "debian-bookworm"];
    warm.extend_from_slice(SHAPE);
    ok(b(&warm), "image warm");
    let list: Vec<TemplateRecord> = json(&ok(b(&["template", "list", "--json"]), "list"));
    assert_eq!(list.len(), 1, "{list:?}");
    let template = list[0].clone();
    assert_eq!(template.state.as_str(), "ready");
    assert!(template.bytes > 50 << 20, "{template:?}");
    // Warming again keeps it.
    ok(b(&warm), "image warm again");
    let again: Vec<TemplateRecord> = json(&ok(b(&["template", "list", "--json"]), "list"));
    assert_eq!(again[0].created_at, template.created_at);

    // Two VMs resume it, each with its own identity.
    let mut probes = Vec::new();
    // tpl-a at the default size (the template's), tpl-b grown.
    for (name, disk, bytes) in [
        ("tpl-a", "2G", 1_900_000_000u64..2_200_000_000),
        ("tpl-b", "3G", 2_900_000_000..3_300_000_000),
    ] {
        let mut create = vec![
            "vm",
            "create",
            "--name",
            name,
            "--disk-size",
            disk,
            "--timings",
        ];
        create.extend_from_slice(SHAPE);
        let out = b(&create);
        let err = stderr(&out);
        ok(out, "vm create from the template");
        assert!(
            err.contains(&format!("resumed from template {}", template.id)),
            "{err}"
        );
        let vm: VmRecord = json(&ok(b(&["vm", "show", name, "--json"]), "vm show"));
        let host_now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        };
        let before = host_now();
        let probe = ok(b(&["vm", "ssh", name, "--", "sh", "-c", PROBE]), "probe");
        let after = host_now();
        assert_eq!(field(&probe, "host"), name, "{probe}");
        assert_eq!(
            field(&probe, "ip"),
            format!("{}/24", vm.ip.clone().unwrap()),
            "{probe}"
        );
        assert_eq!(field(&probe, "mac"), vm.mac, "{probe}");
        let guest_now: f64 = field(&probe, "now").parse().unwrap();
        // Within a second of the host's, which read its clock before and
        // after asking.
        assert!(
            guest_now > before - 1.0 && guest_now < after + 1.0,
            "guest clock {guest_now}, host {before}..{after}"
        );
        let root: u64 = field(&probe, "root").parse().unwrap();
        assert!(bytes.contains(&root), "{probe}");
        assert_eq!(field(&probe, "synced"), "from the host", "{probe}");
        // The pinned host key is the one sshd serves: OpenSSH with strict
        // checking against banger's known_hosts.
        let via_ssh = ok(
            b(&["vm", "ssh", "--ssh", name, "--", "hostname"]),
            "ssh with the pinned key",
        );
        assert_eq!(via_ssh.trim(), name);
        probes.push(probe);
    }
    for key in ["mid", "key", "rand", "ip", "mac"] {
        assert_ne!(
            field(&probes[0], key),
            field(&probes[1], key),
            "{key} must differ between siblings"
        );
    }

    // A cold restart boots the copied disks, with the same identity.
    ok(b(&["vm", "stop", "tpl-a"]), "vm stop");
    ok(b(&["vm", "start", "tpl-a"]), "vm start");
    let probe = ok(b(&["vm", "ssh", "tpl-a", "--", "sh", "-c", PROBE]), "probe");
    for key in ["host", "mid", "key", "ip", "mac", "synced"] {
        assert_eq!(
            field(&probe, key),
            field(&probes[0], key),
            "{key} after restart"
        );
    }
    ok(
        b(&["vm", "ssh", "--ssh", "tpl-a", "--", "true"]),
        "ssh after a cold restart",
    );

    // A template file changed since it was made: refused, deleted, and made
    // again in the background after the cold boot.
    let state = home
        .state()
        .join("templates")
        .join(&template.id)
        .join("state");
    let mut bytes = std::fs::read(&state).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&state, bytes).unwrap();
    let mut create = vec!["vm", "create", "--name", "tpl-c", "--timings"];
    create.extend_from_slice(SHAPE);
    let out = b(&create);
    let err = stderr(&out);
    ok(out, "vm create with a changed template");
    assert!(err.contains("template invalid"), "{err}");
    let started = Instant::now();
    let remade = loop {
        let list: Vec<TemplateRecord> = json(&ok(b(&["template", "list", "--json"]), "list"));
        if let Some(t) = list.iter().find(|t| t.state.as_str() == "ready") {
            break t.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no template made again in the background: {list:?}"
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_ne!(remade.created_at, 0);
    let vms: Vec<VmRecord> = json(&ok(b(&["vm", "list", "--json"]), "vm list"));
    assert!(
        vms.iter()
            .all(|v| !v.name.as_str().starts_with("banger-tpl-")),
        "the template's VM is hidden and gone: {vms:?}"
    );

    // A fork has its VM's processes and files, and its own identity; the
    // forked VM runs on.
    ok(
        b(&[
            "vm",
            "ssh",
            "tpl-b",
            "--",
            "sh",
            "-c",
            "echo before-fork > /root/forked && systemd-run --unit=forkmark sleep 1000",
        ]),
        "a process and a file to fork",
    );
    let out = b(&["vm", "fork", "tpl-b", "--name", "tpl-e", "--timings"]);
    let err = stderr(&out);
    ok(out, "vm fork");
    assert!(err.contains("resumed from a fork of tpl-b"), "{err}");
    let forked = ok(
        b(&["vm", "ssh", "tpl-e", "--", "sh", "-c", PROBE]),
        "probe the fork",
    );
    assert_eq!(field(&forked, "host"), "tpl-e", "{forked}");
    for key in ["mid", "key", "rand", "ip", "mac"] {
        assert_ne!(
            field(&forked, key),
            field(&probes[1], key),
            "{key} of the fork"
        );
    }
    let state = ok(
        b(&[
            "vm",
            "ssh",
            "tpl-e",
            "--",
            "sh",
            "-c",
            "cat /root/forked; systemctl is-active forkmark",
        ]),
        "the fork's file and process",
    );
    assert_eq!(state, "before-fork\nactive\n");
    let vm: VmRecord = json(&ok(b(&["vm", "show", "tpl-b", "--json"]), "vm show"));
    assert_eq!(vm.state.to_string(), "running");
    assert_eq!(
        ok(
            b(&["vm", "ssh", "tpl-b", "--", "hostname"]),
            "the forked VM runs on"
        )
        .trim(),
        "tpl-b"
    );
    ok(
        b(&["vm", "ssh", "--ssh", "tpl-e", "--", "true"]),
        "ssh to the fork with its pinned key",
    );

    // --cold boots even with a template ready.
    let mut create = vec!["vm", "create", "--name", "tpl-d", "--cold", "--timings"];
    create.extend_from_slice(SHAPE);
    let out = b(&create);
    let err = stderr(&out);
    ok(out, "vm create --cold");
    assert!(err.contains("cold boot (--cold)"), "{err}");

    for name in ["tpl-a", "tpl-b", "tpl-c", "tpl-d", "tpl-e"] {
        ok(b(&["vm", "delete", "--force", name]), "vm delete");
    }
    ok(b(&["template", "delete", "--all"]), "template delete");
    let list: Vec<TemplateRecord> = json(&ok(b(&["template", "list", "--json"]), "list"));
    assert!(list.is_empty(), "{list:?}");
    assert!(
        std::fs::read_dir(home.state().join("templates"))
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "template files left"
    );
    ok(b(&["daemon", "stop"]), "daemon stop");
}
