//! Sessions to one VM through the system `ssh`, multiplexed over one
//! ControlMaster connection per VM.

use std::ffi::OsString;
use std::fs::{DirBuilder, Permissions};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::openssh::{self, Failure, SSH};
use crate::{SshError, host_key_alias};

/// How long a connection attempt may take to reach the guest's SSH banner.
const CONNECT_TIMEOUT_SECS: u64 = 10;
/// Keepalives: a guest that stops answering is given up on after
/// interval × count (30 s), and with it its ControlMaster.
const SERVER_ALIVE_INTERVAL_SECS: u64 = 10;
const SERVER_ALIVE_COUNT_MAX: u64 = 3;
/// How long the ControlMaster outlives its last session.
const CONTROL_PERSIST_SECS: u64 = 300;
/// The longest ControlPath that works: a Unix socket path holds 107 bytes,
/// and ssh first binds the path plus a 17-byte random suffix.
const MAX_CONTROL_PATH: usize = 107 - 17;
/// The pause between readiness attempts.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The longest one readiness attempt may take (handshake included).
const ATTEMPT_LIMIT: Duration = Duration::from_secs(20);

/// How to reach one VM. `known_hosts` is banger's, with the VM's host key
/// pinned under [`host_key_alias`]`(vm)`; `control_dir` is a short
/// directory (Unix socket paths are limited to 108 bytes) holding the
/// ControlMaster sockets, e.g. `$XDG_RUNTIME_DIR/banger/ssh`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SshTarget {
    pub vm: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identity: PathBuf,
    pub known_hosts: PathBuf,
    pub control_dir: PathBuf,
}

impl SshTarget {
    /// The ControlMaster socket of this VM and user: `<control_dir>/USER@VM`,
    /// or, where that would not fit in a socket path, a 16-digit hash of it.
    pub fn control_path(&self) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let name = format!("{}@{}", self.user, self.vm);
        let path = self.control_dir.join(&name);
        if path.as_os_str().as_bytes().len() <= MAX_CONTROL_PATH {
            return path;
        }
        // FNV-1a: stable across builds, so every banger process agrees.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        self.control_dir.join(format!("{hash:016x}"))
    }

    /// `ssh` with banger's options, then `--`, the host and the remote
    /// command, each word quoted for the guest's shell. The command runs as
    /// a child of that shell (followed by `; exit $?`), so a command killed
    /// by signal N exits 128+N: OpenSSH's client drops the protocol's
    /// exit-signal and would report 255. `interactive`: a terminal is
    /// requested for a command (`-t`) and ssh may prompt (no BatchMode);
    /// otherwise `-T` and `BatchMode=yes`. No remote words: a login shell.
    ///
    /// The ControlMaster socket is created in `control_dir`, which must
    /// exist ([`SshTarget::wait_ready`] makes it).
    pub fn command(&self, remote: &[String], interactive: bool) -> Command {
        let mut cmd = Command::new(SSH);
        cmd.args(self.args(remote, interactive, CONNECT_TIMEOUT_SECS));
        cmd
    }

    fn args(&self, remote: &[String], interactive: bool, connect_timeout: u64) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::with_capacity(48);
        let mut push = |a: OsString| args.push(a);
        // No user or system ssh_config: every option is banger's.
        push("-F".into());
        push("/dev/null".into());
        push("-p".into());
        push(self.port.to_string().into());
        push("-l".into());
        push(self.user.clone().into());
        let options: [(&str, String); 17] = [
            ("IdentitiesOnly", "yes".into()),
            ("PreferredAuthentications", "publickey".into()),
            ("GlobalKnownHostsFile", "/dev/null".into()),
            ("StrictHostKeyChecking", "yes".into()),
            // The guest must never add keys to banger's known_hosts.
            ("UpdateHostKeys", "no".into()),
            ("CheckHostIP", "no".into()),
            ("HostKeyAlias", host_key_alias(&self.vm)),
            ("BatchMode", if interactive { "no" } else { "yes" }.into()),
            ("ConnectTimeout", connect_timeout.to_string()),
            (
                "ServerAliveInterval",
                SERVER_ALIVE_INTERVAL_SECS.to_string(),
            ),
            ("ServerAliveCountMax", SERVER_ALIVE_COUNT_MAX.to_string()),
            ("ControlMaster", "auto".into()),
            ("ControlPersist", CONTROL_PERSIST_SECS.to_string()),
            ("ForwardAgent", "no".into()),
            ("ForwardX11", "no".into()),
            ("ClearAllForwardings", "yes".into()),
            ("LogLevel", "ERROR".into()),
        ];
        for (name, value) in options {
            push("-o".into());
            push(format!("{name}={value}").into());
        }
        for (name, path) in [
            ("IdentityFile", &self.identity),
            ("UserKnownHostsFile", &self.known_hosts),
            ("ControlPath", &self.control_path()),
        ] {
            push("-o".into());
            push(openssh::config_path(name, path));
        }
        if interactive && !remote.is_empty() {
            push("-t".into());
        } else if !interactive {
            push("-T".into());
        }
        push("--".into());
        push(self.host.clone().into());
        if !remote.is_empty() {
            push(remote_command(remote).into());
        }
        args
    }

    /// Polls `ssh … true` until it succeeds (leaving the ControlMaster
    /// running for the commands that follow) or `timeout` passes; returns
    /// how long it took. A host key other than the pinned one, or none
    /// pinned, ends the wait at once.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Duration, SshError> {
        let start = Instant::now();
        let deadline = start + timeout;
        self.check_control_path()?;
        if let Err(e) = std::fs::metadata(&self.identity) {
            return Err(SshError::io(
                format!("reading ssh key {}", self.identity.display()),
                e,
            ));
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.control_dir)
            .and_then(|()| {
                std::fs::set_permissions(&self.control_dir, Permissions::from_mode(0o700))
            })
            .map_err(|e| SshError::io(format!("creating {}", self.control_dir.display()), e))?;

        let mut last_error: Option<String> = None;
        loop {
            let now = Instant::now();
            let remaining = deadline.saturating_duration_since(now);
            let connect_timeout = remaining.as_secs().clamp(1, CONNECT_TIMEOUT_SECS);
            let child = Command::new(SSH)
                .args(self.args(&["true".to_string()], false, connect_timeout))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| openssh::spawn_error(SSH, e))?;
            let attempt_deadline = deadline.min(now + ATTEMPT_LIMIT);
            let (status, stderr) = openssh::wait_until(child, attempt_deadline)
                .map_err(|e| SshError::io(format!("waiting for ssh to VM {}", self.vm), e))?;
            let error = match status {
                Some(status) if status.success() => return Ok(start.elapsed()),
                Some(status) => match openssh::classify(&stderr) {
                    Failure::HostKeyChanged(_) => {
                        return Err(SshError::HostKeyChanged {
                            vm: self.vm.clone(),
                        });
                    }
                    Failure::HostKeyNotPinned(_) => {
                        return Err(SshError::HostKeyNotPinned {
                            vm: self.vm.clone(),
                        });
                    }
                    Failure::Ssh(line) => line,
                    Failure::NotSsh => {
                        let line = openssh::last_line(&stderr);
                        if line.is_empty() {
                            format!("ssh ended with {}", openssh::describe_status(status))
                        } else {
                            line
                        }
                    }
                },
                // Cut short by the deadline: worth reporting only if it ran
                // long enough to say something (a stuck handshake).
                None => {
                    let ran = Instant::now() - now;
                    match last_error.take() {
                        Some(previous) if ran < Duration::from_secs(1) => previous,
                        _ => format!(
                            "an attempt was still running after {:.1} s",
                            ran.as_secs_f64()
                        ),
                    }
                }
            };
            last_error = Some(error);
            let now = Instant::now();
            if now + POLL_INTERVAL >= deadline {
                return Err(SshError::Timeout {
                    vm: self.vm.clone(),
                    waited: now - start,
                    last_error: last_error.unwrap_or_default(),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Refuses a ControlPath ssh could not bind: it would fail every
    /// attempt until the timeout with nothing the guest could fix.
    fn check_control_path(&self) -> Result<(), SshError> {
        use std::os::unix::ffi::OsStrExt;
        let path = self.control_path();
        if path.as_os_str().as_bytes().len() > MAX_CONTROL_PATH {
            return Err(SshError::Invalid {
                what: "ControlMaster socket path",
                value: path.display().to_string(),
                why: "longer than 90 bytes, more than a Unix socket address holds: use a shorter control_dir",
            });
        }
        Ok(())
    }

    /// Closes the VM's ControlMaster (`ssh -O exit`) and waits briefly for
    /// its socket to go, so that the next connection makes a fresh,
    /// verified handshake; no master running is fine. Call it when the VM
    /// stops or is deleted, and after re-pinning its key.
    pub fn close(&self) {
        let control_path = self.control_path();
        if !control_path.exists() {
            return;
        }
        let child = Command::new(SSH)
            .arg("-F")
            .arg("/dev/null")
            .arg("-o")
            .arg(openssh::config_path("ControlPath", &control_path))
            .args(["-o", "LogLevel=QUIET", "-O", "exit", "--"])
            .arg(&self.host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(child) = child {
            let _ = openssh::wait_until(child, Instant::now() + Duration::from_secs(5));
        }
        // The master removes its socket as it exits, just after answering.
        let deadline = Instant::now() + Duration::from_secs(2);
        while control_path.exists() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The remote command line: each word quoted for a POSIX shell, then
/// `; exit $?` so the shell waits for it instead of exec'ing it.
fn remote_command(words: &[String]) -> String {
    // A NUL cannot be quoted; it is let through and makes spawning fail.
    let quoter = shlex::Quoter::new().allow_nul(true);
    let quoted: Vec<String> = words
        .iter()
        .map(|w| quoter.quote(w).map(|q| q.into_owned()).unwrap_or_default())
        .collect();
    format!("{}; exit $?", quoted.join(" "))
}

/// The VM a HostKeyAlias ssh named belongs to.
fn vm_of(alias: Option<String>) -> String {
    match alias {
        Some(alias) => alias
            .strip_suffix(".vm")
            .map(str::to_string)
            .unwrap_or(alias),
        None => "?".into(),
    }
}

/// The exit status of a finished remote command as banger's own: its code,
/// or 128+N for a signal. ssh exits 255 for its own failures as well as for
/// a remote `exit 255`: when `stderr_tail` (the last lines ssh's stderr
/// carried) shows ssh's own error, that is an error, not a status.
pub fn exit_code(status: ExitStatus, stderr_tail: &str) -> Result<i32, SshError> {
    if let Some(signal) = status.signal() {
        return Ok(128 + signal);
    }
    let code = status.code().unwrap_or(255);
    if code != 255 {
        return Ok(code);
    }
    match openssh::classify(stderr_tail) {
        Failure::NotSsh => Ok(code),
        Failure::HostKeyChanged(alias) => Err(SshError::HostKeyChanged { vm: vm_of(alias) }),
        Failure::HostKeyNotPinned(alias) => Err(SshError::HostKeyNotPinned { vm: vm_of(alias) }),
        Failure::Ssh(line) => Err(SshError::Connection { detail: line }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn target() -> SshTarget {
        SshTarget {
            vm: "web".into(),
            host: "172.16.0.5".into(),
            port: 22,
            user: "root".into(),
            identity: "/state/ssh/id_ed25519".into(),
            known_hosts: "/state/ssh/known_hosts".into(),
            control_dir: "/run/banger/ssh".into(),
        }
    }

    fn args(t: &SshTarget, remote: &[&str], interactive: bool) -> Vec<String> {
        let remote: Vec<String> = remote.iter().map(|s| s.to_string()).collect();
        t.command(&remote, interactive)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
        let prefix = format!("{name}=");
        args.windows(2)
            .find(|w| w[0] == "-o" && w[1].starts_with(&prefix))
            .map(|w| &w[1][prefix.len()..])
    }

    #[test]
    fn command_carries_banger_options_and_reads_no_user_config() {
        let a = args(&target(), &["true"], false);
        assert_eq!(&a[..2], ["-F", "/dev/null"]);
        for (name, value) in [
            ("IdentityFile", "/state/ssh/id_ed25519"),
            ("IdentitiesOnly", "yes"),
            ("UserKnownHostsFile", "/state/ssh/known_hosts"),
            ("GlobalKnownHostsFile", "/dev/null"),
            ("StrictHostKeyChecking", "yes"),
            ("UpdateHostKeys", "no"),
            ("HostKeyAlias", "web.vm"),
            ("BatchMode", "yes"),
            ("ConnectTimeout", "10"),
            ("ServerAliveInterval", "10"),
            ("ControlMaster", "auto"),
            ("ControlPath", "/run/banger/ssh/root@web"),
            ("ControlPersist", "300"),
            ("LogLevel", "ERROR"),
        ] {
            assert_eq!(option(&a, name), Some(value), "{name}");
        }
        let dashdash = a.iter().position(|x| x == "--").unwrap();
        assert_eq!(&a[dashdash + 1..], ["172.16.0.5", "true; exit $?"]);
        assert!(a[..dashdash].contains(&"-T".to_string()));
        assert!(a.windows(2).any(|w| w == ["-p", "22"]));
        assert!(a.windows(2).any(|w| w == ["-l", "root"]));
    }

    #[test]
    fn interactive_asks_for_a_terminal_only_with_a_command() {
        let with = args(&target(), &["top"], true);
        assert_eq!(option(&with, "BatchMode"), Some("no"));
        assert!(with.contains(&"-t".to_string()));
        let shell = args(&target(), &[], true);
        assert!(!shell.contains(&"-t".to_string()) && !shell.contains(&"-T".to_string()));
        assert_eq!(shell.last().map(String::as_str), Some("172.16.0.5"));
    }

    #[test]
    fn remote_words_are_quoted_for_the_guest_shell() {
        let words = ["echo", "it's", "$HOME", "a b", ";rm -rf /", "`id`", "", "*"];
        let a = args(&target(), &words, false);
        let line = a.last().unwrap();
        assert_eq!(
            line,
            r#"echo "it's" '$HOME' 'a b' ';rm -rf /' '`id`' '' '*'; exit $?"#
        );
        // A POSIX shell splits it back into exactly the words given.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "for w in {}; do printf '[%s]' \"$w\"; done",
                &line[..line.len() - "; exit $?".len()]
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "[echo][it's][$HOME][a b][;rm -rf /][`id`][][*]"
        );
    }

    /// `ssh -G` prints the configuration ssh would use without connecting:
    /// the proof that it parses banger's options as meant.
    #[test]
    fn ssh_parses_the_options_as_meant() {
        let mut t = target();
        t.identity = "/tmp/a dir/100%/id".into();
        t.known_hosts = "/tmp/\"q\"/known_hosts".into();
        let cmd = t.command(&["true".into()], false);
        let args: Vec<OsString> = cmd.get_args().map(OsString::from).collect();
        let mut g = Command::new("ssh");
        g.arg("-G").args(&args).env("HOME", "/nonexistent");
        let out = match g.output() {
            Ok(out) => out,
            Err(e) => {
                banger_testkit::skip(format!("ssh is not installed ({e})"));
                return;
            }
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = String::from_utf8_lossy(&out.stdout);
        let value = |key: &str| {
            config
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} ")))
                .map(str::to_string)
        };
        // Printed before ssh expands `%` tokens (the doubled `%` becomes one
        // when the key is loaded: the integration tests use such a path).
        assert_eq!(
            value("identityfile").as_deref(),
            Some("/tmp/a dir/100%%/id")
        );
        assert_eq!(
            value("userknownhostsfile").as_deref(),
            Some("/tmp/\"q\"/known_hosts")
        );
        assert_eq!(value("globalknownhostsfile").as_deref(), Some("/dev/null"));
        assert_eq!(value("stricthostkeychecking").as_deref(), Some("true"));
        assert_eq!(value("hostkeyalias").as_deref(), Some("web.vm"));
        assert_eq!(
            value("controlpath").as_deref(),
            Some("/run/banger/ssh/root@web")
        );
        assert_eq!(value("port").as_deref(), Some("22"));
        assert_eq!(value("user").as_deref(), Some("root"));
        assert_eq!(value("hostname").as_deref(), Some("172.16.0.5"));
    }

    #[test]
    fn control_paths_fit_in_a_socket_address() {
        let mut t = target();
        t.control_dir = "/run/user/1000/banger/ssh".into();
        t.vm = "v".repeat(40);
        assert_eq!(
            t.control_path(),
            Path::new("/run/user/1000/banger/ssh").join(format!("root@{}", t.vm))
        );
        // A long name gets a short, stable, distinct socket name.
        t.vm = "v".repeat(63);
        let hashed = t.control_path();
        assert!(t.check_control_path().is_ok());
        assert_eq!(hashed.file_name().unwrap().len(), 16);
        assert_eq!(t.control_path(), hashed);
        t.vm = "w".repeat(63);
        assert_ne!(t.control_path(), hashed);
        // A directory too long for any socket is refused before connecting.
        t.control_dir = PathBuf::from(format!("/{}", "d".repeat(80)));
        assert!(matches!(
            t.wait_ready(Duration::from_secs(5)),
            Err(SshError::Invalid { .. })
        ));
    }

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn exit_codes_map_to_banger_statuses() {
        assert_eq!(exit_code(exited(0), "").unwrap(), 0);
        assert_eq!(exit_code(exited(7), "").unwrap(), 7);
        assert_eq!(exit_code(exited(143), "").unwrap(), 143);
        // ssh itself killed by SIGINT.
        assert_eq!(exit_code(ExitStatus::from_raw(2), "").unwrap(), 130);
        // The remote command's own 255, with its own output.
        assert_eq!(
            exit_code(exited(255), "fatal: custom tool failure\n").unwrap(),
            255
        );
        assert_eq!(exit_code(exited(255), "").unwrap(), 255);
        // ssh's own failures.
        let refused = "ssh: connect to host 172.16.0.5 port 22: Connection refused\r\n";
        match exit_code(exited(255), refused) {
            Err(SshError::Connection { detail }) => assert!(detail.contains("Connection refused")),
            other => panic!("{other:?}"),
        }
        let changed = "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
                       Host key for web.vm has changed and you have requested strict checking.\n\
                       Host key verification failed.\n";
        match exit_code(exited(255), changed) {
            Err(e @ SshError::HostKeyChanged { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with("host key changed for VM web: possible MITM"),
                    "{msg}"
                );
                assert!(!msg.contains('\n'));
            }
            other => panic!("{other:?}"),
        }
        // A 255 that is not an ssh error is not misread because the remote
        // printed something before.
        assert_eq!(exit_code(exited(3), refused).unwrap(), 3);
    }
}
