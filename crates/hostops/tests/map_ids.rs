//! `map_ids` as the root helper carries it out, on real processes: the
//! owner's child in a user namespace of its own is mapped (0 the owner,
//! 1.. its subordinate range, from the files the helper reads), and
//! everything else is refused before any map is written. Needs root (the
//! helper's privilege); the owner is `nobody`.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use banger_hostops::{HostOps, HostOpsError, Local, Owner};

const NOBODY: u32 = 65534;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sleep` as `uid:gid`, in a new user namespace when `userns`; returned
/// once it is there.
fn sleeper(uid: u32, gid: u32, userns: bool) -> Killed {
    let mut cmd = if userns {
        let mut c = Command::new("unshare");
        c.args(["--user", "--", "sleep", "60"]);
        c
    } else {
        let mut c = Command::new("sleep");
        c.arg("60");
        c
    };
    let child = cmd
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    let pid = child.id();
    let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
    let started = Instant::now();
    loop {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
        if comm.trim() == "sleep" && (!userns || ns.is_some_and(|n| n != ours)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "sleep did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Killed(child)
}

fn owner(dir: &std::path::Path, ranges: &str) -> Owner {
    let subuid = dir.join("subuid");
    let subgid = dir.join("subgid");
    std::fs::write(&subuid, ranges).unwrap();
    std::fs::write(&subgid, ranges).unwrap();
    Owner {
        subuid,
        subgid,
        ..Owner::new(NOBODY, NOBODY)
    }
}

fn refusal(e: HostOpsError) -> String {
    assert!(matches!(e, HostOpsError::Refused(_)), "{e:?}");
    e.to_string()
}

#[test]
fn the_owners_build_is_mapped_and_nothing_else() {
    if !banger_testkit::running_as_root() {
        banger_testkit::skip("map_ids writes another user's id maps: needs root");
        return;
    }
    if !banger_testkit::have_tools(&["unshare", "sleep"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let helper = Local::for_owner(owner(dir.path(), "nobody:200000:65536\n"));

    let build = sleeper(NOBODY, NOBODY, true);
    let pid = build.0.id();
    helper.map_ids(pid).expect("the owner's build is mapped");
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    let lines: Vec<Vec<&str>> = uid_map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [vec!["0", "65534", "1"], vec!["1", "200000", "65536"]]
    );
    let gid_map = std::fs::read_to_string(format!("/proc/{pid}/gid_map")).unwrap();
    assert!(gid_map.contains("200000"), "{gid_map}");
    let e = refusal(helper.map_ids(pid).unwrap_err());
    assert!(e.contains("mapped already"), "{e}");

    let roots = sleeper(0, 0, true);
    let e = refusal(helper.map_ids(roots.0.id()).unwrap_err());
    assert!(e.contains("is not the owner's"), "{e}");
    assert!(
        std::fs::read_to_string(format!("/proc/{}/uid_map", roots.0.id()))
            .unwrap()
            .trim()
            .is_empty(),
        "nothing was written for root's process"
    );

    let plain = sleeper(NOBODY, NOBODY, false);
    let e = refusal(helper.map_ids(plain.0.id()).unwrap_err());
    assert!(e.contains("has not made a user namespace"), "{e}");

    let e = refusal(helper.map_ids(u32::MAX - 1).unwrap_err());
    assert!(e.contains("process"), "{e}");

    let without = Local::for_owner(owner(dir.path(), "someone:100000:65536\n"));
    let build = sleeper(NOBODY, NOBODY, true);
    let e = refusal(without.map_ids(build.0.id()).unwrap_err());
    assert!(e.contains("system install --owner nobody"), "{e}");
}
