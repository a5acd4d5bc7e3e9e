//! A throwaway banger home per test: its own config, state, socket and
//! daemon, so tests never touch the real user's files or each other.

#![allow(dead_code)] // each test binary uses a different part

pub mod registry;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use banger_model::{
    Artifact, ArtifactRole, ImageRecord, KernelRecord, ObjectState, Size, VmName, VmRecord, VmState,
};

pub struct TestHome {
    dir: tempfile::TempDir,
}

impl TestHome {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bgr")
            .tempdir_in("/tmp")
            .expect("temp dir");
        std::fs::create_dir(dir.path().join("home")).expect("home dir");
        let home = Self { dir };
        assert!(
            home.bangerd().is_file(),
            "bangerd is not built next to banger ({}): run `cargo build --workspace` first",
            home.bangerd().display()
        );
        home
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    pub fn state(&self) -> PathBuf {
        self.root().join("state")
    }
    pub fn socket(&self) -> PathBuf {
        self.root().join("run/bangerd.sock")
    }
    pub fn config_file(&self) -> PathBuf {
        self.root().join("config/config.toml")
    }
    pub fn log(&self) -> PathBuf {
        self.state().join("bangerd.log")
    }

    pub fn write_config(&self, text: &str) {
        std::fs::create_dir_all(self.root().join("config")).unwrap();
        std::fs::write(self.config_file(), text).unwrap();
    }

    pub fn banger_bin() -> PathBuf {
        assert_cmd::cargo::cargo_bin("banger")
    }

    pub fn bangerd(&self) -> PathBuf {
        Self::banger_bin().with_file_name("bangerd")
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root().join("home"))
            .env("BANGER_HOME", self.root())
            // No VMs of the daemon's own in the background (templates).
            .env("BANGER_VM_TEMPLATES", "0")
            .timeout(Duration::from_secs(60));
    }

    /// `banger ARGS` in this home.
    pub fn banger(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(Self::banger_bin());
        self.env(&mut cmd);
        cmd.args(args);
        cmd
    }

    /// `bangerd` in this home, run directly.
    pub fn bangerd_cmd(&self) -> Command {
        let mut cmd = Command::new(self.bangerd());
        self.env(&mut cmd);
        cmd
    }

    pub fn status_json(&self) -> serde_json::Value {
        let out = self
            .banger(&["daemon", "status", "--json"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
    }

    /// The pid in the daemon's lock file, if it is running.
    pub fn daemon_pid(&self) -> Option<u32> {
        let v = self.status_json();
        v["running"]
            .as_bool()?
            .then(|| v["pid"].as_u64())?
            .map(|p| p as u32)
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        // Never leave a daemon or a VM behind, even when the test failed:
        // hypervisors are detached and would outlive the test.
        let _ = self.banger(&["daemon", "stop"]).output();
        if let Ok(store) = banger_store::Store::open(&self.state().join("banger.db"))
            && let Ok(vms) = store.list_vms()
        {
            for vm in vms {
                if let Some(pid) = vm.runtime.as_ref().and_then(|r| r.get("pid")?.as_u64()) {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status();
                }
            }
        }
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs git in `repo` as a fixture's author, with no user configuration;
/// a failure fails the test.
pub fn git_in(repo: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "-C",
        ])
        .arg(repo)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
}

/// Records written straight into the real SQLite store before the daemon
/// starts, as the image and VM commands will write them.
pub fn seed(home: &TestHome) {
    std::fs::create_dir_all(home.state()).unwrap();
    let store = banger_store::Store::open(&home.state().join("banger.db")).unwrap();
    store
        .insert_kernel(&KernelRecord {
            name: "cloud-6.1".into(),
            version: "6.1.0-37-cloud-amd64".into(),
            source: "debian".into(),
            state: ObjectState::Ready,
            artifacts: vec![Artifact {
                role: ArtifactRole::Vmlinux,
                file: "vmlinux".into(),
                sha256: "0".repeat(64),
                size: 1,
            }],
            created_at: 1_700_000_000,
        })
        .unwrap();
    store
        .insert_image(&ImageRecord {
            name: "debian-bookworm".into(),
            kernel: "cloud-6.1".into(),
            source: "recipe".into(),
            state: ObjectState::Ready,
            artifacts: vec![],
            created_at: 1_700_000_000,
            oci: None,
            facts: None,
        })
        .unwrap();
    store
        .insert_vm(&VmRecord {
            name: VmName::parse("web-1").unwrap(),
            image: "debian-bookworm".into(),
            kernel: "cloud-6.1".into(),
            state: VmState::Stopped,
            vcpu: 2,
            memory_mib: 2048,
            disk_size: Size::from_gib(8),
            nat: false,
            ip: Some("172.16.0.2".into()),
            mac: "52:54:00:00:00:02".into(),
            tap: "bgrweb1".into(),
            system_uuid: String::new(),
            work_uuid: String::new(),
            runtime: None,
            last_error: None,
            created_at: 1_700_000_000,
            ephemeral: false,
            boot_path: None,
            template_build: None,
            workspace: None,
        })
        .unwrap();
    // A stopped VM has its folder and disks: without them, reconcile
    // takes it for a delete a crash cut short, and finishes it.
    let vm_dir = home.state().join("vms/web-1");
    std::fs::create_dir_all(&vm_dir).unwrap();
    for disk in ["system.ext4", "work.ext4"] {
        std::fs::write(vm_dir.join(disk), b"").unwrap();
    }
}

/// The shared caches (apt packages, built images by recipe hash) of the
/// test cache, seen from this banger home.
pub fn share_caches(home: &TestHome) {
    let cache = banger_testkit::test_cache();
    let own = home.root().join("cache");
    std::fs::create_dir_all(&own).unwrap();
    for (mine, shared) in [
        ("images", "images"),
        ("apt", "apt-archives"),
        ("downloads", "downloads"),
    ] {
        std::fs::create_dir_all(cache.join(shared)).unwrap();
        std::os::unix::fs::symlink(cache.join(shared), own.join(mine)).unwrap();
    }
}

/// A network namespace for a daemon of a test's own, deleted on drop (the
/// bridge, TAPs and NAT rules made in it go with it).
pub struct Netns(pub String);

impl Netns {
    pub fn new(prefix: &str) -> Option<Self> {
        let name = format!("{prefix}-{}", std::process::id());
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            banger_testkit::skip("cannot create a network namespace (ip netns add)");
            return None;
        }
        let ns = Netns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        Some(ns)
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        std::process::Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .expect("ip netns exec")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

impl TestHome {
    /// `banger ARGS` inside `ns` (so the daemon it starts lives there),
    /// with banger's static guest init and `extra` environment.
    pub fn banger_in(&self, ns: &Netns, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut cmd = self.banger_in_command(ns, args);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.output().expect("run banger in the namespace")
    }

    /// The command [`Self::banger_in`] runs, to spawn it instead.
    pub fn banger_in_command(&self, ns: &Netns, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &ns.0])
            .arg(Self::banger_bin())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root().join("home"))
            .env("BANGER_HOME", self.root())
            // No VMs of the daemon's own in the background (templates).
            .env("BANGER_VM_TEMPLATES", "0")
            .env(
                "BANGER_INIT_BIN",
                &banger_testkit::static_guest_binaries().init,
            );
        cmd
    }
}

/// stdout of a command that must have succeeded; a failure names `what`
/// and shows both streams.
pub fn ok(out: Output, what: &str) -> String {
    String::from_utf8_lossy(&ok_bytes(out, what)).into_owned()
}

/// As [`ok`], the bytes as written.
pub fn ok_bytes(out: Output, what: &str) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out.stdout
}

/// `vm list --json` of the daemon in `ns`.
pub fn vm_list(home: &TestHome, ns: &Netns) -> Vec<VmRecord> {
    let out = home.banger_in(ns, &["vm", "list", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("vm list --json")
}

/// Whether network interface `name` exists in `ns`.
pub fn link_exists(ns: &Netns, name: &str) -> bool {
    ns.exec(&["ip", "link", "show", name]).status.success()
}

/// nft rules in the namespace tagged for `vm` (isolation and NAT).
pub fn rules_of(ns: &Netns, vm: &str) -> usize {
    let out = ns.exec(&["nft", "-j", "list", "ruleset"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft -j");
    let tag = format!("banger:{vm}");
    v["nftables"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|i| i["rule"]["comment"] == tag.as_str())
                .count()
        })
        .unwrap_or(0)
}

/// The start of every test that boots the default image: a home whose
/// `setup` ran (config, files), with the image built there (or taken from
/// the test cache) outside any namespace, since the mirror is reachable
/// only outside, and its daemon stopped again. `None`, after saying why,
/// where the host cannot boot guests or lacks one of `tools`.
pub fn home_with_default_image(tools: &[&str], setup: impl FnOnce(&TestHome)) -> Option<TestHome> {
    if !banger_testkit::running_as_root() {
        banger_testkit::skip("needs root (network namespaces, TAP devices)");
        return None;
    }
    if std::env::var_os("BANGER_TEST_SKIP_IMAGE_BUILD").is_some() {
        banger_testkit::skip("BANGER_TEST_SKIP_IMAGE_BUILD is set: no image to boot");
        return None;
    }
    let mut needed = vec!["qemu-system-x86_64", "mmdebstrap", "mkfs.ext4", "ssh", "ip"];
    needed.extend_from_slice(tools);
    if !banger_testkit::have_tools(&needed) {
        return None;
    }
    let home = TestHome::new();
    share_caches(&home);
    setup(&home);
    let init = banger_testkit::static_guest_binaries().init.clone();
    let build = home
        .banger(&["image", "build"])
        .env("BANGER_INIT_BIN", &init)
        .timeout(Duration::from_secs(900))
        .output()
        .expect("run banger image build");
    ok(build, "image build");
    home.banger(&["daemon", "stop"]).assert().success();
    Some(home)
}

/// An HTTP answer as curl saw it.
pub struct HttpAnswer {
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<String>,
    pub body: String,
}

/// `curl ARGS` (inside `ns` when given, where the daemon's loopback is):
/// the real HTTP client, one request, no redirects followed.
pub fn curl(ns: Option<&Netns>, args: &[&str]) -> HttpAnswer {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = std::process::Command::new("ip");
            c.args(["netns", "exec", &ns.0, "curl"]);
            c
        }
        None => std::process::Command::new("curl"),
    };
    let out = cmd
        .args(["-sS", "-i", "--max-time", "20"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {args:?}: {}", stderr(&out));
    let text = stdout(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status line");
    HttpAnswer {
        status,
        headers: lines.map(|l| l.to_ascii_lowercase()).collect(),
        body: body.to_string(),
    }
}

/// Headless Chromium (Debian's `chromium`), driven over the DevTools
/// protocol on a pipe (`--remote-debugging-pipe`: JSON messages ended by
/// NUL on fds 3 and 4), which passes through `ip netns exec` where a
/// debugging port on the namespace's loopback would not. Killed on drop.
pub struct Browser {
    child: std::process::Child,
    to: std::fs::File,
    from: std::io::BufReader<std::fs::File>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A browser with one page on `url`, inside `ns` when given; `None`,
    /// after saying why, where Chromium is missing.
    pub fn open(ns: Option<&Netns>, url: &str) -> Option<Self> {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let Some(bin) = ["chromium", "chromium-browser"]
            .into_iter()
            .find_map(banger_config::find_tool)
        else {
            banger_testkit::skip("chromium is not installed (apt-get install chromium)");
            return None;
        };
        let profile = tempfile::tempdir().expect("a profile dir");
        let (child_in, to) = nix::unistd::pipe().expect("pipe");
        let (from, child_out) = nix::unistd::pipe().expect("pipe");
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", &ns.0]).arg(&bin);
                c
            }
            None => std::process::Command::new(&bin),
        };
        // As root Chromium refuses its sandbox; the page is our own.
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-pipe",
            "--window-size=1200,700",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        let (rin, rout) = (child_in.as_raw_fd(), child_out.as_raw_fd());
        // SAFETY: between fork and exec only async-signal-safe calls
        // (dup2, fcntl) on descriptors this process owns.
        unsafe {
            cmd.pre_exec(move || {
                for (fd, target) in [(rin, 3), (rout, 4)] {
                    if fd == target {
                        libc::fcntl(fd, libc::F_SETFD, 0);
                    } else if libc::dup2(fd, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("run chromium");
        drop((child_in, child_out));
        let mut browser = Browser {
            child,
            to: std::fs::File::from(to),
            from: std::io::BufReader::new(std::fs::File::from(from)),
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = browser.send("Target.createTarget", serde_json::json!({ "url": url }));
        let attached = browser.send(
            "Target.attachToTarget",
            serde_json::json!({ "targetId": target["targetId"], "flatten": true }),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session")
            .to_string();
        Some(browser)
    }

    /// One command (to the page once attached); its result.
    pub fn send(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use std::io::{BufRead, Write};
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = serde_json::json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = self.session.clone().into();
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        loop {
            let mut buf = Vec::new();
            let n = self
                .from
                .read_until(0, &mut buf)
                .expect("read from chromium");
            assert!(n > 0, "chromium went away during {method}");
            buf.pop();
            let answer: serde_json::Value = serde_json::from_slice(&buf).expect("DevTools JSON");
            if answer["id"] == id {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// The value of a script expression in the page.
    pub fn eval(&mut self, expression: &str) -> serde_json::Value {
        let r = self.send(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page; fails after `timeout`
    /// with the page's text.
    pub fn wait_for(&mut self, what: &str, expression: &str, timeout: Duration) {
        let started = Instant::now();
        while self.eval(expression) != serde_json::Value::Bool(true) {
            if started.elapsed() > timeout {
                let text = self.eval("document.body.innerText");
                panic!(
                    "timed out waiting for {what}; the page:\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the page, written to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.send(
            "Page.captureScreenshot",
            serde_json::json!({ "format": "png" }),
        );
        let data = r["data"].as_str().expect("screenshot data");
        let out = std::process::Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(data.as_bytes())?;
                c.wait_with_output()
            })
            .expect("base64 -d");
        std::fs::write(path, out.stdout).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closed politely first, so that its helper processes go with it.
        use std::io::Write;
        let _ = self
            .to
            .write_all(b"{\"id\":999999,\"method\":\"Browser.close\"}\0");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What VMs leave on the host, counted as `scripts/smoke`'s census counts
/// it: TAP devices in `ns`, VM rows and leased addresses in the store,
/// processes in `ns` other than bangerd and `also` (a registry...), per-VM
/// folders (state and runtime), nft rules tagged for a VM, and sockets in
/// the runtime folder other than bangerd's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Census {
    pub taps: Vec<String>,
    pub vms: usize,
    pub leases: usize,
    pub processes: Vec<String>,
    pub vm_dirs: Vec<String>,
    pub run_dirs: Vec<String>,
    pub nft_rules: usize,
    pub sockets: Vec<String>,
}

impl Census {
    pub fn take(home: &TestHome, ns: &Netns, also: &[u32]) -> Self {
        let names = |dir: PathBuf, dirs_only: bool| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|e| !dirs_only || e.path().is_dir())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        let taps = ns.exec(&["ip", "-o", "link", "show", "type", "tun"]);
        let taps = stdout(&taps)
            .lines()
            .filter_map(|l| Some(l.split(':').nth(1)?.trim().to_string()))
            .collect();
        let (vms, leases) = match banger_store::Store::open(&home.state().join("banger.db")) {
            Ok(store) => {
                let vms = store.list_vms().unwrap_or_default();
                (vms.len(), vms.iter().filter(|v| v.ip.is_some()).count())
            }
            Err(_) => (0, 0),
        };
        let daemon = std::fs::read_to_string(home.state().join("bangerd.lock"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        let pids = std::process::Command::new("ip")
            .args(["netns", "pids", &ns.0])
            .output()
            .expect("ip netns pids");
        let processes = stdout(&pids)
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .filter(|p| !also.contains(p))
            .filter_map(|p| {
                let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                let is_daemon =
                    Some(p) == daemon || cmdline.split(' ').next()?.ends_with("/bangerd");
                (!is_daemon).then(|| format!("{p} {}", cmdline.trim()))
            })
            .collect();
        let rules = ns.exec(&["nft", "-j", "list", "ruleset"]);
        let nft_rules = serde_json::from_slice::<serde_json::Value>(&rules.stdout)
            .ok()
            .and_then(|v| {
                Some(
                    v["nftables"]
                        .as_array()?
                        .iter()
                        .filter(|i| {
                            i["rule"]["comment"]
                                .as_str()
                                .is_some_and(|c| c.starts_with("banger:"))
                        })
                        .count(),
                )
            })
            .unwrap_or(0);
        let run = home.root().join("run");
        let sockets = walk_sockets(&run)
            .into_iter()
            .filter(|s| !s.starts_with("bangerd"))
            .collect();
        Self {
            taps,
            vms,
            leases,
            processes,
            vm_dirs: names(home.state().join("vms"), false),
            run_dirs: names(run, true),
            nft_rules,
            sockets,
        }
    }

    /// The counts of anything VMs left: all zero when nothing is.
    fn counts(&self) -> [usize; 8] {
        [
            self.taps.len(),
            self.vms,
            self.leases,
            self.processes.len(),
            self.vm_dirs.len(),
            self.run_dirs.len(),
            self.nft_rules,
            self.sockets.len(),
        ]
    }
}

/// The sockets below `dir`, by file name.
fn walk_sockets(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::FileTypeExt;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            found.extend(walk_sockets(&entry.path()));
        } else if kind.is_socket() {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

/// Waits (up to 10 s: `--rm` deletes finish in the daemon) until the
/// census counts nothing more than `before` did, else fails naming what
/// is left. A count that went down is no leak.
pub fn assert_no_leaks(home: &TestHome, ns: &Netns, also: &[u32], before: &Census, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = Census::take(home, ns, also);
        let grew = now
            .counts()
            .iter()
            .zip(before.counts())
            .any(|(n, b)| *n > b);
        if !grew {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: something leaked:\nbefore {before:#?}\nafter {now:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
