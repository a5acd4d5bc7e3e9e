//! What the namespace tests share: each outer test creates a network
//! namespace `banger-test-<pid>-<nonce>`, re-executes its own test binary
//! inside it (`ip netns exec`) to run one `#[ignore]`d inner test, and
//! deletes the namespace when it ends, even on failure. An inner test
//! refuses to run anywhere but the namespace its outer test made.
//!
//! Without root or `ip netns`, outer tests print `skipped: <why>` to
//! stderr and pass.
#![allow(dead_code)] // each test binary uses its part

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Names the namespace an inner test must find itself in.
pub const NETNS_ENV: &str = "BANGER_TEST_NETNS";

/// Says why a test does not run: [`banger_testkit::skip`].
pub fn skip(why: impl std::fmt::Display) {
    banger_testkit::skip(why);
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(tool("ip"))
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// Runs inner test `inner` of this binary inside a namespace of its own.
pub fn in_netns(inner: &str) {
    if !is_root() {
        skip(format!("{inner} needs root to create a network namespace"));
        return;
    }
    let Some(ip) = find_tool("ip") else {
        skip(format!("{inner} needs iproute2's ip"));
        return;
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!("banger-test-{}-{nanos:08x}", std::process::id());
    let created = Command::new(&ip).args(["netns", "add", &name]).output();
    match created {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            skip(format!(
                "{inner}: ip netns add failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return;
        }
        Err(e) => {
            skip(format!("{inner}: ip netns unavailable: {e}"));
            return;
        }
    }
    let ns = Netns(name);
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(&ip)
        .args(["netns", "exec", &ns.0])
        .arg(exe)
        .args([
            inner,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(NETNS_ENV, &ns.0)
        .output()
        .expect("running the inner test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "{inner} failed inside {}", ns.0);
    assert!(
        stdout.contains("1 passed"),
        "{inner} did not run inside {}",
        ns.0
    );
}

/// In an inner test: true when running inside the namespace the outer
/// test made; false (skip) when run without one; panics when the
/// namespace variable is set but this is not that namespace.
pub fn inside_test_netns() -> bool {
    let Ok(expected) = std::env::var(NETNS_ENV) else {
        banger_testkit::skip_beyond_ci("runs only inside the namespace its outer test creates");
        return false;
    };
    let pid = std::process::id().to_string();
    let found = text(&["ip", "netns", "identify", &pid]);
    assert_eq!(
        found.trim(),
        expected,
        "refusing to touch the network outside the test namespace"
    );
    true
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| PathBuf::from(name))
}

pub fn run_stdin(argv: &[&str], stdin: &str) {
    use std::io::Write;
    let mut child = Command::new(tool(argv[0]))
        .args(&argv[1..])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{argv:?}");
}

pub fn run(argv: &[&str]) {
    text(argv);
}

pub fn text(argv: &[&str]) -> String {
    let out = Command::new(tool(argv[0]))
        .args(&argv[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn link_exists(name: &str) -> bool {
    Command::new(tool("ip"))
        .args(["link", "show", "dev", name])
        .output()
        .unwrap()
        .status
        .success()
}

pub fn link_json(name: &str) -> Value {
    let v: Value =
        serde_json::from_str(&text(&["ip", "-d", "-j", "link", "show", "dev", name])).unwrap();
    v[0].clone()
}

pub fn flags(link: &Value) -> BTreeSet<String> {
    link["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

pub fn ipv4_addresses(name: &str) -> Vec<String> {
    let v: Value =
        serde_json::from_str(&text(&["ip", "-j", "-4", "addr", "show", "dev", name])).unwrap();
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// Rules in nft table `<family> <table>` whose comment is exactly
/// `comment`; 0 when the table does not exist.
pub fn count_rules_in(family: &str, table: &str, comment: &str) -> usize {
    let out = Command::new(tool("nft"))
        .args(["-j", "list", "table", family, table])
        .output()
        .unwrap();
    if !out.status.success() {
        return 0;
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["rule"]["comment"] == comment)
        .count()
}

/// Rules in nft table `ip <table>` whose comment is exactly `comment`.
pub fn count_rules(table: &str, comment: &str) -> usize {
    count_rules_in("ip", table, comment)
}
