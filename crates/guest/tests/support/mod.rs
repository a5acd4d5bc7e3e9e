//! What the guest crate's integration tests share: tool checks, and a real
//! sshd on 127.0.0.1 that stands in for a guest.
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use banger_guest::{HOST_KEY_FILE, ensure_user_key, generate_host_key};

pub const SSHD: &str = "/usr/sbin/sshd";

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// Says why a test does not run: [`banger_testkit::skip`].
pub fn skip(why: impl std::fmt::Display) {
    banger_testkit::skip(why);
}

/// True (after printing why) when a tool the test needs is missing.
pub fn missing(tools: &[&str]) -> bool {
    for tool in tools {
        let found = if tool.starts_with('/') {
            Path::new(tool).is_file()
        } else {
            have(tool)
        };
        if !found {
            skip(format!(
                "{tool} is not installed (scripts/install-deps installs OpenSSH)"
            ));
            return true;
        }
    }
    false
}

/// The current user's name, which sshd will let in with the test key.
pub fn user_name() -> String {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .expect("running id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The current user's home as OpenSSH finds it (the passwd entry, not
/// `$HOME`).
pub fn passwd_home() -> Option<PathBuf> {
    let uid = String::from_utf8(Command::new("id").arg("-u").output().ok()?.stdout).ok()?;
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 6 && fields[2] == uid.trim()).then(|| PathBuf::from(fields[5]))
    })
}

/// A real sshd for one test, on a free port of 127.0.0.1, with a host key
/// from `generate_host_key` and the test's user key authorized. Stopped on
/// drop.
pub struct Sshd {
    child: Child,
    pub port: u16,
    pub host_public_key: String,
    pub user_key: PathBuf,
    pub log: PathBuf,
}

impl Sshd {
    /// `dir` holds everything: `vm/` (host key), the user key under a path
    /// with a space and a `%` (ssh must get both right), the config, the
    /// log. None (after printing why) when sshd cannot run here.
    pub fn start(dir: &Path) -> Option<Sshd> {
        if missing(&[SSHD, "ssh", "ssh-keygen"]) {
            return None;
        }
        // sshd insists on its privilege separation directory when root.
        if !Path::new("/run/sshd").is_dir() && fs::create_dir_all("/run/sshd").is_err() {
            skip("sshd needs /run/sshd and it cannot be created (not root?)");
            return None;
        }
        let vm_dir = dir.join("vm");
        let host_public_key = generate_host_key(&vm_dir, "banger test").expect("host key");
        let user_key = dir.join("state 100%/ssh/id_ed25519");
        let user_public = ensure_user_key(&user_key, true).expect("user key");
        let authorized = dir.join("authorized_keys");
        fs::write(&authorized, format!("{user_public}\n")).unwrap();
        let config = dir.join("sshd_config");
        fs::write(
            &config,
            format!(
                "HostKey {}\n\
                 AuthorizedKeysFile {}\n\
                 PidFile none\n\
                 ListenAddress 127.0.0.1\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n\
                 PrintMotd no\n\
                 PrintLastLog no\n\
                 UseDNS no\n",
                vm_dir.join(HOST_KEY_FILE).display(),
                authorized.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = dir.join("sshd.log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting sshd");
        Some(Sshd {
            child,
            port,
            host_public_key,
            user_key,
            log,
        })
    }

    /// How many logins sshd accepted: one per real (non-multiplexed)
    /// connection.
    pub fn logins(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("Accepted publickey for")
            .count()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// Closes the ControlMasters of these targets when dropped, a failing test
/// included, so no ssh master outlives the test.
pub struct Closer(pub Vec<banger_guest::SshTarget>);

impl Drop for Closer {
    fn drop(&mut self) {
        for target in &self.0 {
            target.close();
        }
    }
}
