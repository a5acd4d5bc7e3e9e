//! Bad input, help, doctor and completion, through the real binaries.

mod common;

use common::*;
use predicates::str::contains;

#[test]
fn bad_config_is_one_line_with_its_line_number_and_writes_nothing() {
    let home = TestHome::new();
    for (config, needle) in [
        (
            "hypervisor = \"qemu\"\nbrige_name = \"br0\"\n",
            "line 2: unknown key `brige_name`",
        ),
        ("log_level = \n", "line 1"),
        (
            "ssh_key_path = \"keys/id\"\n",
            "ssh_key_path \"keys/id\" is relative",
        ),
        ("[vm_defaults]\ndisk_size = \"8\"\n", "line 2: `disk_size`"),
    ] {
        home.write_config(config);
        let out = home.banger(&["vm", "list"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{config:?}");
        let err = stderr(&out);
        assert!(err.contains(needle), "{config:?} gave {err:?}");
        assert!(err.contains(home.config_file().to_str().unwrap()), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(!home.state().exists(), "nothing written for {config:?}");
    }
}

#[test]
fn bad_names_and_sizes_are_refused_before_anything_runs() {
    let home = TestHome::new();
    for (args, needle) in [
        (vec!["vm", "create", "--name", "Web"], "contains 'W'"),
        (
            vec!["vm", "create", "--name=-web"],
            "starts or ends with '-'",
        ),
        (vec!["vm", "show", "a_b"], "contains '_'"),
        (vec!["vm", "create", "--disk-size", "8"], "has no unit"),
        (vec!["vm", "create", "--memory", "2GB"], "unknown unit"),
        (vec!["vm", "run", "--disk-size", "1.5G"], "1536M"),
    ] {
        let out = home.banger(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    assert!(!home.state().exists(), "no daemon was started");
}

#[test]
fn help_shows_resolved_defaults_and_their_origin() {
    let home = TestHome::new();
    for sub in ["run", "create"] {
        let out = home.banger(&["vm", sub, "--help"]).output().unwrap();
        let text = squash(&stdout(&out));
        assert!(text.contains("default here:"), "{text}");
        assert!(text.contains("8G (built-in)"), "{text}");
        assert!(text.contains("(auto: host CPUs / 4"), "{text}");
    }
    home.write_config("[vm_defaults]\nvcpu = 3\ndisk_size = \"20G\"\n");
    let out = home.banger(&["vm", "create", "--help"]).output().unwrap();
    let text = squash(&stdout(&out));
    assert!(
        text.contains("default here: 3 (from [vm_defaults] in config)"),
        "{text}"
    );
    assert!(
        text.contains("default here: 20G (from [vm_defaults] in config)"),
        "{text}"
    );
}

/// Help is wrapped to the terminal; compare words, not line breaks.
fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn version_is_printed() {
    let home = TestHome::new();
    home.banger(&["--version"])
        .assert()
        .success()
        .stdout(format!("banger {}\n", env!("CARGO_PKG_VERSION")));
    home.bangerd_cmd()
        .arg("--version")
        .assert()
        .success()
        .stdout(format!("bangerd {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn doctor_json_has_the_documented_shape() {
    let home = TestHome::new();
    home.write_config("[vm_defaults]\nmemory_mib = 1024\n");
    let out = home.banger(&["doctor", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ok = report["ok"].as_bool().expect("ok is a bool");
    assert_eq!(out.status.success(), ok, "exit code follows ok");
    let checks = report["checks"].as_array().expect("checks");
    for name in [
        "architecture",
        "config",
        "kvm",
        "hypervisor",
        "mkfs.ext4",
        "resize2fs",
        "e2fsck",
        "mmdebstrap",
        "ssh",
        "ip",
        "nft",
        "git",
        "banger-init",
        "privileges",
    ] {
        let c = checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check in {report}"));
        let status = c["status"].as_str().unwrap();
        assert!(["ok", "warn", "fail"].contains(&status), "{c}");
        assert!(c["detail"].is_string());
        if status != "ok" {
            assert!(c["fix"].is_string(), "{name} says how to fix it: {c}");
        }
    }
    assert_eq!(report["vm_defaults"]["memory_mib"]["value"], 1024);
    assert_eq!(report["vm_defaults"]["memory_mib"]["provenance"], "config");
    assert_eq!(report["vm_defaults"]["disk_size"]["provenance"], "builtin");
    assert!(report["kvm"]["status"].is_string());
    assert_eq!(report["config_file"], home.config_file().to_str().unwrap());
    // Where QEMU is installed, a hypervisor is always chosen (TCG at worst).
    if which::which("qemu-system-x86_64").is_ok() {
        assert!(report["hypervisor"]["backend"].is_string(), "{report}");
    }
}

#[test]
fn doctor_fails_on_a_bad_config_and_says_where() {
    let home = TestHome::new();
    home.write_config("nope = 1\n");
    let out = home.banger(&["doctor"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("FAIL  config"), "{text}");
    assert!(text.contains("unknown key `nope`"), "{text}");
    assert!(text.contains("fix: edit"), "{text}");
}

#[test]
fn completion_scripts_for_each_shell() {
    let home = TestHome::new();
    for (shell, marker) in [
        ("bash", "complete -o nospace -o bashdefault"),
        ("zsh", "compdef"),
        ("fish", "complete --keep-order --exclusive --command banger"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = home.banger(&["completion", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = stdout(&out);
        assert!(
            script.contains(marker),
            "{shell} script lacks {marker:?}:\n{script}"
        );
        assert!(
            script.contains("COMPLETE"),
            "{shell} calls back into banger"
        );
    }
    home.banger(&["completion", "tcsh"]).assert().code(2);
    home.banger(&["completion", "--help"])
        .assert()
        .success()
        .stdout(contains("source <(banger completion bash)"));
}

#[test]
fn completion_offers_subcommands_and_live_names() {
    let home = TestHome::new();
    let complete = |words: &[&str]| {
        let mut args = vec!["--", "banger"];
        args.extend_from_slice(words);
        let out = home.banger(&args).env("COMPLETE", "fish").output().unwrap();
        assert!(out.status.success());
        // Candidates only, without the flags offered beside them.
        stdout(&out)
            .lines()
            .filter(|l| !l.starts_with('-'))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    let subs = complete(&["vm", ""]);
    for sub in ["run", "create", "list", "show", "pause", "resume"] {
        assert!(subs.lines().any(|l| l.starts_with(sub)), "{sub} in {subs}");
    }

    // Daemon down: nothing offered, no error, and the daemon is not started.
    assert_eq!(complete(&["vm", "show", ""]).trim(), "");
    assert!(home.daemon_pid().is_none());

    seed(&home);
    home.banger(&["vm", "list"]).assert().success();
    assert_eq!(complete(&["vm", "show", ""]).trim(), "web-1");
    assert_eq!(complete(&["vm", "show", "w"]).trim(), "web-1");
    assert_eq!(complete(&["vm", "show", "x"]).trim(), "");
    assert_eq!(complete(&["vm", "resume", ""]).trim(), "web-1");
    assert_eq!(complete(&["image", "show", ""]).trim(), "debian-bookworm");
    assert_eq!(complete(&["kernel", "show", ""]).trim(), "cloud-6.1");
    assert!(complete(&["vm", "create", "--image", ""]).contains("debian-bookworm"));
}

#[test]
fn pause_and_resume_of_a_stopped_vm_say_what_to_do() {
    let home = TestHome::new();
    seed(&home);
    for (verb, needle) in [
        (
            "pause",
            "only a running VM can be paused ('banger vm start web-1')",
        ),
        (
            "resume",
            "only a paused VM can be resumed; start it with 'banger vm start web-1'",
        ),
    ] {
        let out = home.banger(&["vm", verb, "web-1"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "vm {verb}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("VM web-1 is stopped") && err.contains(needle),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let out = home
        .banger(&["vm", "pause", "nope", "--json"])
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("VM \"nope\" not found"),
        "{}",
        stderr(&out)
    );
}
