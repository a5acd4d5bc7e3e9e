//! A stand-in for an image's `/sbin/init` in banger's boot test
//! (crates/images/tests/boot.rs): reports on the console what the guest
//! sees after banger-init's switch_root, then powers off (or, with
//! `probe.stay` on the kernel command line, keeps running; with
//! `probe.tick` as well, printing `PROBE tick: N` every second).
//! Lines start with `PROBE ` so the test can pick them out.

use std::fs;
use std::os::unix::fs::PermissionsExt;

fn main() {
    report("pid", std::process::id().to_string());
    report(
        "hostname",
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|e| format!("error {e}")),
    );
    report("etc-hostname", read("/etc/hostname"));
    report("resolv", read("/etc/resolv.conf").replace('\n', ";"));
    report(
        "hosts-line",
        read("/etc/hosts")
            .lines()
            .filter(|l| l.starts_with("127.0.1.1"))
            .collect(),
    );
    // Mounts of / and /root, from the kernel's view.
    for line in read("/proc/self/mountinfo").lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let (Some(target), Some(dash)) = (fields.get(4), fields.iter().position(|f| *f == "-"))
            && (*target == "/" || *target == "/root")
        {
            let fstype = fields.get(dash + 1).unwrap_or(&"?");
            let source = fields.get(dash + 2).unwrap_or(&"?");
            report(&format!("mount {target}"), format!("{fstype} {source}"));
        }
    }
    report("work-marker", read("/root/work-marker"));
    let key = "/etc/banger-test/secret";
    let mode = fs::metadata(key)
        .map(|m| format!("{:o}", m.permissions().mode() & 0o7777))
        .unwrap_or_else(|e| format!("error {e}"));
    report("per-vm-file", format!("{} mode={mode}", read(key)));
    report(
        "root-writable",
        match fs::write("/probe-was-here", b"x") {
            Ok(()) => "yes".into(),
            Err(e) => format!("no {e}"),
        },
    );
    // Addresses: /proc/net/fib_trie lists local ones; routes in hex.
    let local: Vec<String> = fib_local_addresses(&read("/proc/net/fib_trie"));
    report("addresses", local.join(","));
    let gateway = read("/proc/net/route")
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"00000000")).then(|| format!("{} via {}", f[0], hex_ip(f[2])))
        })
        .collect::<Vec<_>>()
        .join(",");
    report("default-route", gateway);
    // `probe.stay` on the kernel command line (banger-init ignores words
    // not starting with `banger.`): keep running like a real image's init,
    // for tests of stopping a VM from the host. With `probe.tick` too, a
    // numbered line every second, for tests of saving and resuming a
    // guest: a resumed one goes on counting.
    let cmdline = read("/proc/cmdline");
    let word = |w: &str| cmdline.split_whitespace().any(|x| x == w);
    if word("probe.stay") {
        report("done", "staying up".into());
        let tick = word("probe.tick");
        for n in 1u64.. {
            if tick {
                report("tick", n.to_string());
            }
            std::thread::sleep(std::time::Duration::from_secs(if tick { 1 } else { 3600 }));
        }
    }
    report("done", "powering off".into());
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
}

fn report(key: &str, value: String) {
    println!("PROBE {key}: {}", value.trim());
}

fn read(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| format!("error {e}"))
}

/// The `/32 host LOCAL` entries of /proc/net/fib_trie, without 127.*.
fn fib_local_addresses(trie: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut last_leaf = None;
    for line in trie.lines() {
        if let Some((_, addr)) = line.split_once("|-- ") {
            last_leaf = Some(addr.trim().to_owned());
        }
        if line.contains("/32 host LOCAL")
            && let Some(addr) = &last_leaf
            && !addr.starts_with("127.")
            && !out.contains(addr)
        {
            out.push(addr.clone());
        }
    }
    out
}

fn hex_ip(hex: &str) -> String {
    let n = u32::from_str_radix(hex, 16).unwrap_or(0);
    std::net::Ipv4Addr::from(n.swap_bytes()).to_string()
}
