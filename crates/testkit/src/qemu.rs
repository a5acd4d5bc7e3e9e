//! Booting a guest under QEMU the way banger does (microvm, TCG, virtio-mmio
//! disks, serial console on stdout), and reading its console line by line
//! with a hard timeout that reports the console's tail.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The start of every test guest's command line: the QEMU backend's own
/// (the console, panic, and under TCG the host's TSC rate), so the tests
/// boot guests exactly as banger does.
pub fn tcg_cmdline() -> String {
    use banger_vmm::{qemu::BASE_CMDLINE, tsc};
    format!("{BASE_CMDLINE} {}", tsc::tcg_cmdline(tsc::host_rate().khz))
}

pub struct Microvm {
    vmlinux: PathBuf,
    initramfs: PathBuf,
    append: String,
    memory_mib: u32,
    drives: Vec<(PathBuf, bool)>,
    ssh_port: Option<u16>,
    qmp: Option<PathBuf>,
    agent: Option<PathBuf>,
}

/// What the guest printed, and when (seconds from QEMU's start).
pub struct Console {
    pub lines: Vec<String>,
    pub at: Vec<f64>,
    pub total: Duration,
    /// QEMU's exit status; `None` when the test stopped it.
    pub status: Option<ExitStatus>,
}

impl Microvm {
    pub fn new(vmlinux: &Path, initramfs: &Path, append: &str) -> Self {
        Self {
            vmlinux: vmlinux.to_path_buf(),
            initramfs: initramfs.to_path_buf(),
            append: format!("{} {append}", tcg_cmdline()),
            memory_mib: 512,
            drives: Vec::new(),
            ssh_port: None,
            qmp: None,
            agent: None,
        }
    }

    /// QEMU's user-mode network instead of the isolated hub: the guest is
    /// 10.0.2.15/24 behind 10.0.2.2, `127.0.0.1:port` on the host reaches
    /// its port 22, and nothing else leaves (`restrict=on`).
    pub fn forward_ssh(mut self, port: u16) -> Self {
        self.ssh_port = Some(port);
        self
    }

    /// A QMP socket at `socket` (for `system_powerdown`, see [`qmp`]).
    pub fn qmp(mut self, socket: &Path) -> Self {
        self.qmp = Some(socket.to_path_buf());
        self
    }

    /// The guest agent's virtio-serial port on a Unix socket at
    /// `socket`, as the QEMU backend makes it.
    pub fn agent(mut self, socket: &Path) -> Self {
        self.agent = Some(socket.to_path_buf());
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// A virtio-blk disk, in the order given (vda, vdb, ...).
    pub fn drive(mut self, file: &Path, read_only: bool) -> Self {
        self.drives.push((file.to_path_buf(), read_only));
        self
    }

    /// Boots and reads the console until QEMU exits or `stop` returns true
    /// for a line (QEMU is then killed). Panics with the console's tail
    /// when neither happens within `timeout`.
    pub fn run(&self, timeout: Duration, mut stop: impl FnMut(&str) -> bool) -> Console {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-M", "microvm,pit=on,pic=on,rtc=on,isa-serial=on"])
            .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
            .args(["-accel", "tcg", "-cpu", "max", "-smp", "1"])
            .args(["-m", &self.memory_mib.to_string()])
            .arg("-kernel")
            .arg(&self.vmlinux)
            .arg("-initrd")
            .arg(&self.initramfs)
            .arg("-append")
            .arg(&self.append);
        for (i, (file, ro)) in self.drives.iter().enumerate() {
            cmd.args([
                "-drive",
                &format!(
                    "id=d{i},file={},format=raw,if=none{}",
                    file.display(),
                    if *ro { ",readonly=on" } else { "" }
                ),
            ])
            .args(["-device", &format!("virtio-blk-device,drive=d{i}")]);
        }
        match self.ssh_port {
            Some(port) => cmd.args([
                "-netdev",
                &format!(
                    "user,id=net0,net=10.0.2.0/24,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22"
                ),
            ]),
            // A NIC on a hub with nothing else on it: eth0 exists, and no
            // packet leaves the VM.
            None => cmd.args(["-netdev", "hubport,id=net0,hubid=0"]),
        };
        if let Some(socket) = &self.qmp {
            cmd.args([
                "-qmp",
                &format!("unix:{},server=on,wait=off", socket.display()),
            ]);
        }
        cmd.args(["-device", "virtio-net-device,netdev=net0"]);
        if let Some(socket) = &self.agent {
            cmd.args([
                "-chardev",
                &format!(
                    "socket,id=agent,path={},server=on,wait=off",
                    socket.display()
                ),
            ])
            .args(["-device", "virtio-serial-device"])
            .args([
                "-device",
                &format!(
                    "virtserialport,chardev=agent,name={}",
                    banger_agent_proto::PORT_NAME
                ),
            ]);
        }
        cmd.args(["-serial", "stdio"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("start qemu-system-x86_64");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((started.elapsed().as_secs_f64(), line)).is_err() {
                    break;
                }
            }
        });
        let mut console = Console {
            lines: Vec::new(),
            at: Vec::new(),
            total: Duration::ZERO,
            status: None,
        };
        loop {
            while let Ok((at, line)) = rx.try_recv() {
                let line = line.trim_end_matches('\r').to_owned();
                let done = stop(&line);
                console.at.push(at);
                console.lines.push(line);
                if done {
                    let _ = child.kill();
                    let _ = child.wait();
                    console.total = started.elapsed();
                    return console;
                }
            }
            if let Some(status) = child.try_wait().expect("wait for qemu") {
                console.total = started.elapsed();
                // Drain what the reader still holds.
                while let Ok((at, line)) = rx.recv_timeout(Duration::from_millis(200)) {
                    console.at.push(at);
                    console.lines.push(line.trim_end_matches('\r').to_owned());
                }
                console.status = Some(status);
                return console;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the guest neither finished nor showed what was awaited within {timeout:?}; \
                     console tail:\n{}",
                    console.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Console {
    /// The last 40 lines, for failure messages.
    pub fn tail(&self) -> String {
        let start = self.lines.len().saturating_sub(40);
        self.lines[start..].join("\n")
    }

    /// When the first line starting with `prefix` appeared.
    pub fn when(&self, prefix: &str) -> Option<f64> {
        self.lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .map(|i| self.at[i])
    }

    /// When the first line containing `needle` appeared.
    pub fn when_contains(&self, needle: &str) -> Option<f64> {
        self.lines
            .iter()
            .position(|l| l.contains(needle))
            .map(|i| self.at[i])
    }
}

/// Runs one QMP command (after the capabilities handshake) on the socket
/// a [`Microvm::qmp`] guest listens on; QEMU's answer lines.
pub fn qmp(socket: &Path, command: &str) -> std::io::Result<String> {
    use std::io::Write;
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer)?; // the greeting
    writeln!(writer, r#"{{"execute":"qmp_capabilities"}}"#)?;
    reader.read_line(&mut answer)?;
    writeln!(writer, r#"{{"execute":"{command}"}}"#)?;
    reader.read_line(&mut answer)?;
    Ok(answer)
}
