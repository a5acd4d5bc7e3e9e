//! The `.vm` zone through the real binaries: bangerd's DNS server (on a
//! loopback address set by dns_listen_addr) asked by `dig`, banger's
//! ssh_config, `banger ssh-config` on a user's ~/.ssh/config, `banger dns`
//! and doctor's DNS lines. Booting a guest: dns_e2e.rs.

mod common;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

fn free_loopback() -> SocketAddr {
    let ip = Ipv4Addr::new(127, 54, (std::process::id() % 250) as u8, 1);
    let port = UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    SocketAddr::from((ip, port))
}

fn dig_status(server: SocketAddr, name: &str) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args([
            "-p",
            &server.port().to_string(),
            "+tries=2",
            "+time=2",
            name,
            "A",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| {
            l.split_once("status: ")
                .map(|(_, r)| r.split(',').next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| format!("no answer: {text}"))
}

#[test]
fn bangerd_answers_the_zone_and_writes_its_ssh_config() {
    if Command::new("dig").arg("-v").output().is_err() {
        return banger_testkit::skip("dig is not installed (apt-get install bind9-dnsutils)");
    }
    let home = TestHome::new();
    seed(&home); // web-1, stopped: it has an address but no running hypervisor
    let server = free_loopback();
    home.write_config(&format!("dns_listen_addr = \"{server}\"\n"));
    home.banger(&["vm", "list"]).assert().success();

    // The server binds (tests must see it does), and answers as documented.
    assert_eq!(dig_status(server, "probe.banger.vm"), "NOERROR");
    assert_eq!(
        dig_status(server, "web-1.vm"),
        "NXDOMAIN",
        "stopped VMs do not resolve"
    );
    assert_eq!(dig_status(server, "nope.vm"), "NXDOMAIN");
    assert_eq!(dig_status(server, "example.com"), "REFUSED");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for junk in [
        &b""[..],
        b"\x00",
        &[0xffu8; 700][..],
        b"\x12\x34\x01\x00\x00\x01",
    ] {
        sock.send_to(junk, server).unwrap();
    }
    assert_eq!(
        dig_status(server, "nope.vm"),
        "NXDOMAIN",
        "bad input survived"
    );
    let pid = home.daemon_pid().expect("bangerd runs");
    assert!(process_alive(pid));

    // Doctor sees it answering (the host's own resolver is not wired here).
    let out = home.banger(&["doctor", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let check = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {report}"))
    };
    assert_eq!(check("dns server")["status"], "ok", "{report}");
    let host = check("dns on the host");
    if host["status"] != "ok" {
        assert!(
            host["fix"]
                .as_str()
                .unwrap()
                .contains(&server.ip().to_string()),
            "{host}"
        );
    }

    // banger's ssh_config: Host *.vm with banger's key and known_hosts.
    let ssh_config = home.root().join("config/ssh_config");
    let text = fs::read_to_string(&ssh_config).unwrap();
    assert!(text.contains("Host *.vm\n"), "{text}");
    assert!(text.contains("StrictHostKeyChecking yes"), "{text}");
    assert!(text.contains(&format!(
        "UserKnownHostsFile={}",
        home.state().join("ssh/known_hosts").display()
    )));
    assert!(text.contains(&format!(
        "IdentityFile={}",
        home.state().join("ssh/id_ed25519").display()
    )));
    assert_eq!(
        fs::metadata(&ssh_config).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A daemon that cannot bind still starts (and logs why).
    home.banger(&["daemon", "stop"]).assert().success();
    let blocker = UdpSocket::bind(server).unwrap();
    home.banger(&["vm", "list"]).assert().success();
    let log = fs::read_to_string(home.log()).unwrap();
    assert!(log.contains("dns: cannot listen"), "{log}");
    drop(blocker);
}

#[test]
fn ssh_config_install_and_uninstall_round_trip_the_users_file() {
    let home = TestHome::new();
    let user_dir = home.root().join("home/.ssh");
    let user = user_dir.join("config");
    let include = format!(
        "Include {}",
        home.root().join("config/ssh_config").display()
    );

    // Printing touches nothing.
    let out = home.banger(&["ssh-config"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), include);
    assert!(!user.exists());

    // Absent: created 0600 in a 0700 ~/.ssh; the daemon wrote the target.
    home.banger(&["ssh-config", "--install"]).assert().success();
    assert_eq!(
        fs::metadata(&user).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(&user_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(fs::read_to_string(&user).unwrap().contains(&include));
    assert!(home.root().join("config/ssh_config").is_file());
    home.banger(&["ssh-config", "--uninstall"])
        .assert()
        .success();
    assert_eq!(fs::read(&user).unwrap(), b"");

    // Other content comes back byte for byte, and twice is once.
    let mine = b"Host work\r\n  HostName 10.0.0.9\n\nHost *\n\tUser me\xff".to_vec();
    fs::write(&user, &mine).unwrap();
    home.banger(&["ssh-config", "--install"]).assert().success();
    let once = fs::read(&user).unwrap();
    home.banger(&["ssh-config", "--install"]).assert().success();
    assert_eq!(fs::read(&user).unwrap(), once);
    assert!(once.ends_with(&mine));
    // ssh itself reads the result: a .vm host gets banger's settings.
    let g = Command::new("ssh")
        .args(["-G", "-F"])
        .arg(&user)
        .arg("web.vm")
        .output();
    if let Ok(g) = g {
        let text = String::from_utf8_lossy(&g.stdout);
        assert!(
            text.lines().any(|l| l == "stricthostkeychecking true"),
            "{text}"
        );
    }
    home.banger(&["ssh-config", "--uninstall"])
        .assert()
        .success();
    assert_eq!(fs::read(&user).unwrap(), mine);
    home.banger(&["ssh-config", "--uninstall"])
        .assert()
        .success();
    assert_eq!(fs::read(&user).unwrap(), mine);

    // A hand-edited block is refused, the file untouched.
    let edited =
        format!("# >>> banger ssh-config >>>\n{include}\nUser me\n# <<< banger ssh-config <<<\n");
    fs::write(&user, &edited).unwrap();
    for flag in ["--install", "--uninstall"] {
        let out = home.banger(&["ssh-config", flag]).output().unwrap();
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("edited by hand") && err.lines().count() == 1,
            "{err}"
        );
        assert_eq!(fs::read_to_string(&user).unwrap(), edited);
    }

    // A symlinked config is refused; its target is untouched.
    fs::remove_file(&user).unwrap();
    let real = home.root().join("dotfiles-ssh-config");
    fs::write(&real, &mine).unwrap();
    std::os::unix::fs::symlink(&real, &user).unwrap();
    let out = home.banger(&["ssh-config", "--install"]).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
    assert_eq!(fs::read(&real).unwrap(), mine);
}

#[test]
fn dns_install_prints_the_resolvectl_commands() {
    let home = TestHome::new();
    home.write_config("bridge_name = \"br-test\"\ndns_listen_addr = \"10.9.0.1:5353\"\n");
    let out = home
        .banger(&["dns", "install", "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "resolvectl dns br-test 10.9.0.1:5353\n\
         resolvectl domain br-test ~vm\n\
         resolvectl default-route br-test false\n"
    );
    let out = home
        .banger(&["dns", "uninstall", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "resolvectl revert br-test\n");
    // Without systemd-resolved, install says what this host needs instead.
    if !std::path::Path::new("/run/systemd/resolve/resolv.conf").exists() {
        let out = home.banger(&["dns", "install"]).output().unwrap();
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("not systemd-resolved") && err.contains("10.9.0.1"),
            "{err}"
        );
    }
}
