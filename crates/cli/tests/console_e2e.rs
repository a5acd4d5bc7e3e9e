//! A guest that floods its serial console cannot fill the host's disk:
//! with `console_log_max = "1M"`, the console log is rotated and both
//! files stay near the cap while `vm logs` and `vm logs -f` go on showing
//! the output in order, once. Under QEMU/TCG with `bangerd` inside a
//! network namespace of the test's own, as in vm_e2e.rs; the image is
//! built (or taken from the test cache) before, outside it.

mod common;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use banger_model::VmRecord;
use common::*;

const CAP: u64 = 1 << 20;
/// What a guest may write past the cap before the daemon's next look
/// (twice a second): a flood measured here wrote about 200 KiB/s under
/// TCG, so this is ten times what a check interval lets through.
const SLACK: u64 = 1 << 20;
/// How many lines the flood writes, each `flood N N` with its number twice
/// and seven digits wide. A piece of output lost in the instant between a
/// rotation's copy and its truncation joins the start of one line to the
/// end of a later one; such a line either has two different numbers (and
/// is left out) or is the later line itself, so the numbers seen still
/// only go up. (With the number once, `flood 00` + `7` of a later line
/// read as line 7.)
const LINES: u32 = 300_000;

/// The numbers of the flood's whole lines in `bytes`, in order; other
/// lines (the kernel's, pieces joined by a lost instant) are left out.
fn numbers(bytes: &[u8]) -> Vec<u32> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| {
            let rest = l.trim_end_matches('\r').strip_prefix("flood ")?;
            let (first, second) = rest.split_once(' ')?;
            let whole =
                first == second && first.len() == 7 && first.bytes().all(|b| b.is_ascii_digit());
            whole.then(|| first.parse().ok()).flatten()
        })
        .collect()
}

/// Each number at most once, in order, the last one there, and not much
/// missing.
fn assert_whole(what: &str, seen: &[u32]) {
    for pair in seen.windows(2) {
        assert!(pair[0] < pair[1], "{what}: {} then {}", pair[0], pair[1]);
    }
    assert_eq!(seen.last(), Some(&LINES), "{what}: the flood's last line");
}

fn len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn a_flooded_console_stays_near_its_cap_and_vm_logs_follow_it() {
    let Some(home) = home_with_default_image(&[], |home| {
        home.write_config("hypervisor = \"qemu\"\nconsole_log_max = \"1M\"\n");
    }) else {
        return;
    };

    let Some(ns) = Netns::new("banger-console") else {
        return;
    };
    let b = |args: &[&str]| home.banger_in(&ns, args, &[]);
    ok_bytes(b(&["vm", "create", "--name", "chatty"]), "vm create");
    let dir = home.state().join("vms/chatty");
    let (log, previous) = (dir.join("console.log"), dir.join("console.log.1"));
    let boot = ok_bytes(b(&["vm", "logs", "chatty"]), "vm logs");
    assert!(
        String::from_utf8_lossy(&boot).contains("banger-init ready"),
        "the boot is in the log"
    );

    // QEMU holds the log with O_APPEND (02000 in fdinfo's octal flags), so
    // a truncation leaves no hole before its next write.
    let vms: Vec<VmRecord> =
        serde_json::from_slice(&ok_bytes(b(&["vm", "list", "--json"]), "vm list")).unwrap();
    let pid = vms[0].runtime.as_ref().unwrap()["pid"].as_u64().unwrap();
    let fd = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| fs::read_link(e.path()).is_ok_and(|t| t == log))
        .expect("QEMU has the console log open");
    let info =
        fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().display())).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .unwrap();
    assert_ne!(flags & 0o2000, 0, "O_APPEND: {info}");

    // `vm logs -f` from before the flood to after it.
    let mut follower = home
        .banger_in_command(&ns, &["vm", "logs", "-f", "chatty"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read as it comes, as a terminal would.
    let mut followed = follower.stdout.take().unwrap();
    let following = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = std::io::Read::read_to_end(&mut followed, &mut bytes);
        bytes
    });

    // The flood, watched from the host: neither file may pass the cap by
    // more than a check interval's writing.
    let flood = home
        .banger_in_command(
            &ns,
            &[
                "vm",
                "ssh",
                "chatty",
                "--",
                "sh",
                "-c",
                &format!(
                    "awk 'BEGIN {{ for (i = 1; i <= {LINES}; i++) \
                     printf \"flood %07d %07d\\n\", i, i }}' > /dev/ttyS0"
                ),
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let flooding = std::thread::spawn(move || flood.wait_with_output().unwrap());
    let (mut max_log, mut max_previous) = (0, 0);
    while !flooding.is_finished() {
        max_log = max_log.max(len(&log));
        max_previous = max_previous.max(len(&previous));
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the flood did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ok_bytes(flooding.join().unwrap(), "the flood");
    let took = started.elapsed().as_secs_f64();
    let written = u64::from(LINES) * "flood 0000000 0000000\r\n".len() as u64;
    eprintln!(
        "flooded {written} bytes in {took:.1} s ({:.0} KiB/s); largest console.log {max_log}, \
         console.log.1 {max_previous}",
        written as f64 / took / 1024.0
    );
    assert!(written > 3 * CAP, "the flood rotates the log several times");
    assert!(max_log <= CAP + SLACK, "console.log reached {max_log}");
    // The previous file holds the cap's last bytes, and what came during
    // the copy.
    assert!(
        (1..=CAP + 64 * 1024).contains(&max_previous),
        "console.log.1 reached {max_previous}"
    );

    // Plain `vm logs`: the previous file, then the current one.
    std::thread::sleep(Duration::from_secs(1));
    let logs = ok_bytes(b(&["vm", "logs", "chatty"]), "vm logs");
    let mut on_disk = fs::read(&previous).unwrap();
    on_disk.extend(fs::read(&log).unwrap());
    assert!(
        logs == on_disk,
        "vm logs prints console.log.1 then console.log ({} bytes against {})",
        logs.len(),
        on_disk.len()
    );
    let kept = numbers(&logs);
    assert_whole("vm logs", &kept);
    assert!(!kept.contains(&1), "the start was rotated away");

    // `vm logs -f` saw it all, across every rotation, once and in order.
    let _ = follower.kill();
    let _ = follower.wait();
    let seen = numbers(&following.join().unwrap());
    assert_whole("vm logs -f", &seen);
    assert!(
        seen.len() as u32 > LINES - LINES / 100,
        "vm logs -f saw {} of {LINES} lines",
        seen.len()
    );

    ok_bytes(b(&["vm", "delete", "--force", "chatty"]), "vm delete");
    assert!(!dir.exists(), "both logs go with the VM");
    let _ = b(&["daemon", "stop"]);
}
