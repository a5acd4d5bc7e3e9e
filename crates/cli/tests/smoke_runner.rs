//! `scripts/smoke` reports what happened: `--list` needs neither root nor
//! a built image, an unknown scenario or a bad option is a usage error
//! (exit 2), a failing scenario gives exit 1 with its log printed, and a
//! run where everything was skipped gives 77 (a failure under
//! `BANGER_TEST_REQUIRE=1`). The scenarios used here are the runner's own
//! (`BANGER_SMOKE_SELFTEST=1`): they start no daemon and boot nothing.

use std::path::PathBuf;
use std::process::{Command, Output};

fn script() -> PathBuf {
    banger_testkit::workspace().join("scripts/smoke")
}

/// `scripts/smoke ARGS` with a clean environment: no BANGER_HOME, no
/// image, nothing built on PATH; as `nobody` when this test runs as root
/// (so `--list` is shown to need no privilege).
fn smoke(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = if banger_testkit::running_as_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.arg(script());
        c
    } else {
        Command::new(script())
    };
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/nonexistent")
        .env("BANGER_BIN_DIR", "/nonexistent");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run scripts/smoke")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn list_needs_neither_root_nor_an_image_and_names_every_class() {
    let out = smoke(&["--list"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    for (name, class) in [
        ("lifecycle", "independent"),
        ("repo-tree", "fixture"),
        ("parallel-run", "host"),
        ("crash-journaled", "host"),
    ] {
        assert!(
            listed
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([name, class])),
            "{name} ({class}) is not listed:\n{listed}"
        );
    }
    assert!(
        !listed.contains("selftest"),
        "the runner's own scenarios are hidden"
    );
    let help = smoke(&["-h"], &[]);
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help).contains("Usage: scripts/smoke"));
}

#[test]
fn an_unknown_scenario_or_option_is_a_usage_error() {
    for args in [
        &["--scenario", "no-such-scenario"][..],
        &["--scenario", "lifecycle,no-such-scenario"],
        &["--frobnicate"],
        &["--jobs", "0"],
        &["--jobs"],
    ] {
        let out = smoke(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("smoke: "),
            "{args:?}: {}",
            text(&out)
        );
    }
}

#[test]
fn a_failing_scenario_gives_exit_1_and_its_log() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let env = [("BANGER_SMOKE_SELFTEST", "1"), ("BANGER_SMOKE_DIR", d)];
    let out = smoke(
        &[
            "--scenario",
            "selftest-pass,selftest-fail,selftest-skip",
            "--jobs",
            "2",
        ],
        &env,
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("PASS selftest-pass"), "{all}");
    assert!(all.contains("FAIL selftest-fail"), "{all}");
    assert!(
        all.contains("| this line is in the failing scenario's log"),
        "the failure's log is printed: {all}"
    );
    assert!(
        !all.contains("not reached"),
        "set -e stops a scenario: {all}"
    );
    assert!(
        all.contains("SKIP selftest-skip") && all.contains("a requirement this host lacks"),
        "{all}"
    );
    assert!(all.contains("1 passed, 1 failed, 1 skipped"), "{all}");

    let out = smoke(&["--scenario", "selftest-skip"], &env);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out));
    let out = smoke(&["--scenario", "selftest-pass"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let mut required = env.to_vec();
    required.push(("BANGER_TEST_REQUIRE", "1"));
    let out = smoke(&["--scenario", "selftest-skip,selftest-pass"], &required);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("BANGER_TEST_REQUIRE=1 makes a skip a failure"),
        "{all}"
    );
}
