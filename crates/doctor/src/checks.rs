use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use banger_network::dns::{HostResolver, PROBE_ADDR, PROBE_NAME};

use banger_config::install::{DAEMON_UNIT, HELPER_SOCKET, HELPER_UNIT};
use banger_config::{Config, ConfigError, Install, Paths, find_tool, probe_host};
use banger_model::{HostFacts, VmDefaults};
use banger_system::probe::{HelperProbe, SocketState};
use banger_system::systemctl::UnitState;
use banger_vmm::kvm::KvmStatus;
use banger_vmm::select::{HostHypervisors, Selection, choose};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, with a caveat (slow, or a feature unavailable).
    Warn,
    /// Blocks `banger vm run`.
    Fail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// How to fix it; set on every `warn` and `fail`.
    pub fix: Option<String>,
}

/// A host program banger runs, the Debian package that has it, and what
/// needs it.
#[derive(Clone, Copy, Debug)]
pub struct ToolSpec {
    /// Alternatives: any one is enough.
    pub programs: &'static [&'static str],
    pub package: &'static str,
    pub used_for: &'static str,
    /// Missing it blocks `vm run` (rather than one feature).
    pub required: bool,
}

pub const TOOLS: &[ToolSpec] = &[
    ToolSpec {
        programs: &["mkfs.ext4"],
        package: "e2fsprogs",
        used_for: "making images and VM disks without mounting",
        required: true,
    },
    ToolSpec {
        programs: &["resize2fs"],
        package: "e2fsprogs",
        used_for: "growing work disks",
        required: true,
    },
    ToolSpec {
        programs: &["e2fsck"],
        package: "e2fsprogs",
        used_for: "checking work disks before they grow",
        required: true,
    },
    ToolSpec {
        programs: &["unshare"],
        package: "util-linux",
        used_for: "root-owned files on VM disks when bangerd is not root",
        required: false,
    },
    ToolSpec {
        programs: &["newuidmap"],
        package: "uidmap",
        used_for: "building and pulling images when bangerd is not root (a user namespace \
                   with the owner's subordinate ids)",
        required: false,
    },
    ToolSpec {
        programs: &["mmdebstrap"],
        package: "mmdebstrap",
        used_for: "building the default Debian image",
        required: true,
    },
    ToolSpec {
        programs: &["ssh"],
        package: "openssh-client",
        used_for: "connecting to guests",
        required: true,
    },
    ToolSpec {
        programs: &["ssh-keygen"],
        package: "openssh-client",
        used_for: "making the managed key and guest host keys",
        required: true,
    },
    ToolSpec {
        programs: &["ip"],
        package: "iproute2",
        used_for: "bridge and TAP networking",
        required: true,
    },
    // Guests are untrusted: banger starts none it cannot isolate, and it
    // isolates only with nftables (bridge-family rules have no iptables
    // equivalent short of ebtables, which hosts rarely have). iptables
    // alone therefore blocks vm run; it is only read to remove NAT rules
    // an older banger made with it.
    ToolSpec {
        programs: &["nft"],
        package: "nftables",
        used_for: "isolating guests on the bridge, and NAT (--nat); iptables alone is not \
                   enough: banger starts no VM it cannot isolate",
        required: true,
    },
    ToolSpec {
        programs: &["git"],
        package: "git",
        used_for: "workspace mode (vm run ./repo)",
        required: false,
    },
    ToolSpec {
        programs: &["patchelf"],
        package: "patchelf",
        used_for: "booting OCI images (banger's sshd goes into them)",
        required: false,
    },
];

/// Everything doctor looks at, gathered from the host (or made up in tests).
#[derive(Clone, Debug)]
pub struct HostProbe {
    pub arch: String,
    pub config_file: PathBuf,
    pub config: Result<Config, String>,
    pub hypervisors: HostHypervisors,
    pub host: HostFacts,
    /// For each entry of [`TOOLS`], the path of the first program found.
    pub tools: Vec<Option<PathBuf>>,
    /// banger's static guest init, or why it is unusable.
    pub init: Result<PathBuf, String>,
    /// Whether banger runs as root (it makes the bridge and TAP devices).
    pub root: bool,
    /// The user's home, which `[[file_sync]]` host paths must stay inside.
    pub home: PathBuf,
    pub dns: DnsProbe,
    /// The TSC rate TCG guests are told (measured; only asked for when
    /// the host would use TCG).
    pub tsc: Option<banger_vmm::tsc::TscRate>,
    /// Whether the chosen QEMU runs under its seccomp sandbox, or why not
    /// (only asked for when QEMU is the backend).
    pub qemu_sandbox: Option<Result<(), String>>,
    /// The system install, when there is one (None: dev mode).
    pub install: Option<InstallProbe>,
}

/// The system install as doctor sees it.
#[derive(Clone, Debug)]
pub struct InstallProbe {
    pub install: Install,
    /// Each unit (helper first) and its state, or why it is unknown.
    pub units: Vec<(&'static str, Result<UnitState, String>)>,
    pub daemon_socket: SocketState,
    pub helper: HelperProbe,
    /// Whether the owner is in the `kvm` group; None when the host has none.
    pub owner_in_kvm: Option<bool>,
    /// `/dev/net/tun`'s permission bits, or why they are unknown: the
    /// owner's hypervisor opens the TAP the helper made for it there.
    pub tun_mode: Result<u32, String>,
}

impl InstallProbe {
    pub fn gather(install: Install) -> Self {
        let units = [HELPER_UNIT, DAEMON_UNIT]
            .into_iter()
            .map(|unit| {
                let state = if banger_system::systemctl::systemd_runs() {
                    banger_system::systemctl::show(unit).map_err(|e| e.to_string())
                } else {
                    Err("systemd is not running on this host".to_string())
                };
                (unit, state)
            })
            .collect();
        let owner_in_kvm = banger_system::accounts::kvm_group().map(|group| {
            banger_system::accounts::in_group(&install.owner, install.owner_gid, &group)
        });
        Self {
            units,
            daemon_socket: SocketState::of(&install.paths().socket()),
            helper: banger_system::probe::helper(std::path::Path::new(HELPER_SOCKET)),
            owner_in_kvm,
            tun_mode: {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata("/dev/net/tun")
                    .map(|m| m.permissions().mode() & 0o777)
                    .map_err(|e| format!("/dev/net/tun: {e}"))
            },
            install,
        }
    }
}

/// How `.vm` names fare on this host.
#[derive(Clone, Debug)]
pub struct DnsProbe {
    /// Where bangerd's DNS server should answer (`dns_listen_addr`).
    pub listen: SocketAddr,
    pub bridge: String,
    /// Whether it answered [`PROBE_NAME`] with authority, or why not.
    pub server: Result<(), String>,
    pub resolver: HostResolver,
    /// Whether the host's own resolver gave [`PROBE_ADDR`] for
    /// [`PROBE_NAME`], or what it did instead.
    pub host: Result<(), String>,
}

impl DnsProbe {
    pub fn gather(config: &Config) -> Self {
        let listen = config.dns_listen_addr();
        // Only an address of this host is asked: before the first boot
        // makes the bridge, its address would be routed off the host.
        let local = std::net::UdpSocket::bind((listen.ip(), 0)).is_ok();
        let server = if !local {
            Err(format!(
                "no interface has {} yet (the bridge is made by the first VM's boot)",
                listen.ip()
            ))
        } else {
            match banger_network::dns::probe(listen, PROBE_NAME, Duration::from_secs(2)) {
                Ok(a) if a.authoritative && a.addresses == [PROBE_ADDR] => Ok(()),
                Ok(a) => Err(format!(
                    "{listen} answered {} without banger's zone",
                    a.code
                )),
                Err(e) => Err(e),
            }
        };
        let resolver = HostResolver::detect();
        // Asked only when it can succeed, so that doctor sends no .vm name
        // to an upstream nameserver for nothing: bangerd must answer, and
        // plain glibc must list it (it has no per-domain routing).
        let listed = || {
            let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            listen.port() == 53
                && banger_network::dns::host::nameservers(&resolv).contains(&listen.ip())
        };
        let host = if server.is_err() {
            Err("not checked: bangerd's DNS server does not answer".to_string())
        } else if resolver == HostResolver::Plain && !listed() {
            Err(format!(
                "they do not resolve: /etc/resolv.conf does not list {}",
                listen.ip()
            ))
        } else {
            host_lookup(PROBE_NAME, Duration::from_secs(4))
        };
        Self {
            listen,
            bridge: config.bridge_name().to_string(),
            server,
            resolver,
            host,
        }
    }
}

/// The host's resolver (getaddrinfo, as every program on the host uses)
/// for `name`, given up on after `timeout` (a resolver may retry for
/// longer): a thread that is left behind ends with the process.
fn host_lookup(name: &str, timeout: Duration) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let (tx, rx) = std::sync::mpsc::channel();
    let target = format!("{name}:0");
    std::thread::spawn(move || {
        let _ = tx.send(
            target
                .to_socket_addrs()
                .map(|a| a.map(|s| s.ip()).collect::<Vec<_>>()),
        );
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(ips)) if ips.contains(&PROBE_ADDR.into()) => Ok(()),
        Ok(Ok(ips)) => Err(format!("{name} resolves to {ips:?}, not through bangerd")),
        Ok(Err(e)) => Err(format!("{name} does not resolve ({e})")),
        Err(_) => Err(format!(
            "no answer for {name} within {} s",
            timeout.as_secs()
        )),
    }
}

impl HostProbe {
    pub fn gather(
        paths: &Paths,
        config: Result<Config, ConfigError>,
        install: Option<Install>,
    ) -> Self {
        let config = config.map_err(|e| e.to_string());
        let hypervisors = HostHypervisors::probe(config.as_ref().unwrap_or(&Config::default()));
        let dns = DnsProbe::gather(config.as_ref().unwrap_or(&Config::default()));
        let want = config
            .as_ref()
            .map_or(banger_config::HypervisorChoice::Auto, |c| c.hypervisor());
        let chosen = choose(want, &hypervisors).ok();
        let tsc = chosen
            .as_ref()
            .is_some_and(|sel| sel.accel == banger_vmm::select::Accel::Tcg)
            .then(|| banger_vmm::tsc::host_rate().clone());
        let qemu_sandbox = chosen
            .filter(|sel| sel.backend == banger_vmm::select::Backend::Qemu)
            .map(|sel| banger_vmm::qemu::sandbox::support(&sel.binary));
        Self {
            install: install.map(InstallProbe::gather),
            dns,
            tsc,
            qemu_sandbox,
            arch: std::env::consts::ARCH.to_string(),
            config_file: paths.config_file(),
            config,
            hypervisors,
            host: probe_host(),
            tools: TOOLS
                .iter()
                .map(|t| t.programs.iter().find_map(|p| find_tool(p)))
                .collect(),
            init: banger_images::initramfs::find_init_binary(),
            home: paths.home.clone(),
            root: std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
            }),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// False when any check fails: `vm run` cannot work here.
    pub ok: bool,
    pub checks: Vec<Check>,
    pub hypervisor: Option<Selection>,
    pub kvm: KvmStatus,
    pub vm_defaults: VmDefaults,
    pub config_file: PathBuf,
}

pub fn diagnose(probe: &HostProbe) -> Report {
    let mut checks = Vec::new();
    let mut push = |name: &str, status: Status, detail: String, fix: Option<String>| {
        checks.push(Check {
            name: name.to_string(),
            status,
            detail,
            fix,
        })
    };

    if probe.arch == "x86_64" {
        push("architecture", Status::Ok, probe.arch.clone(), None);
    } else {
        push(
            "architecture",
            Status::Fail,
            format!("{} is not supported yet", probe.arch),
            Some("banger runs on x86_64 hosts only today".into()),
        );
    }

    let config_detail = if probe.config_file.exists() {
        format!("{} (loaded)", probe.config_file.display())
    } else {
        format!(
            "{} (absent: built-in defaults)",
            probe.config_file.display()
        )
    };
    let config = match &probe.config {
        Ok(c) => {
            push("config", Status::Ok, config_detail, None);
            c.clone()
        }
        Err(e) => {
            push(
                "config",
                Status::Fail,
                e.clone(),
                Some(format!("edit {}", probe.config_file.display())),
            );
            Config::default()
        }
    };

    let kvm = probe.hypervisors.kvm.clone();
    let kvm_status = if kvm.is_usable() {
        Status::Ok
    } else {
        Status::Warn
    };
    let kvm_fix = match &kvm {
        KvmStatus::Usable => None,
        KvmStatus::NoAccess { .. } => Some(
            "add your user to the 'kvm' group (usermod -aG kvm $USER), then log in again".into(),
        ),
        _ => Some(
            "none needed: QEMU's TCG emulation works without KVM, only slower; on a host \
             with VT-x/AMD-V, enable it in firmware and load kvm_intel or kvm_amd"
                .into(),
        ),
    };
    push("kvm", kvm_status, kvm.explain(), kvm_fix);

    let hypervisor = match choose(config.hypervisor(), &probe.hypervisors) {
        Ok(sel) => {
            let status = if sel.accel == banger_vmm::select::Accel::Tcg {
                Status::Warn
            } else {
                Status::Ok
            };
            let fix = (status == Status::Warn).then(|| {
                "expect slower boots and builds than with KVM; nothing to do unless this \
                 host has usable hardware virtualization"
                    .to_string()
            });
            push(
                "hypervisor",
                status,
                format!(
                    "{} ({}) at {}: {}",
                    sel.backend,
                    sel.accel,
                    sel.binary.display(),
                    sel.reason
                ),
                fix,
            );
            if sel.accel == banger_vmm::select::Accel::Tcg
                && let Some(tsc) = &probe.tsc
            {
                // Guests' clocks and timers run at this rate over the
                // host's real one: a guess runs them fast or slow.
                let (status, fix) = match &tsc.fallback {
                    None => (Status::Ok, None),
                    Some(_) => (
                        Status::Warn,
                        Some(
                            "guest clocks may run fast or slow: nothing to do on this host \
                             (its TSC cannot be measured)"
                                .to_string(),
                        ),
                    ),
                };
                push(
                    "guest clock",
                    status,
                    format!(
                        "TCG guests are told the host's TSC ticks at {}",
                        tsc.describe()
                    ),
                    fix,
                );
            }
            if let Some(sandbox) = &probe.qemu_sandbox {
                // A guest that escapes QEMU's device emulation gets what
                // QEMU's process may do; the sandbox narrows that.
                match sandbox {
                    Ok(()) => push(
                        "qemu sandbox",
                        Status::Ok,
                        "QEMU runs under its seccomp sandbox (-sandbox on, no spawn, no \
                         privilege changes)"
                            .to_string(),
                        None,
                    ),
                    Err(why) => push(
                        "qemu sandbox",
                        Status::Warn,
                        format!("QEMU runs without its seccomp sandbox: {why}"),
                        Some(
                            "use a QEMU built with seccomp (Debian's qemu-system-x86 is)"
                                .to_string(),
                        ),
                    ),
                }
            }
            Some(sel)
        }
        Err(e) => {
            push(
                "hypervisor",
                Status::Fail,
                e.reason.clone(),
                Some(e.fix.clone()),
            );
            None
        }
    };

    for (spec, found) in TOOLS.iter().zip(&probe.tools) {
        let name = spec.programs.join(" or ");
        match found {
            Some(path) => push(
                &name,
                Status::Ok,
                format!("{} ({})", path.display(), spec.used_for),
                None,
            ),
            None => push(
                &name,
                if spec.required {
                    Status::Fail
                } else {
                    Status::Warn
                },
                format!("not found: needed for {}", spec.used_for),
                Some(format!("apt-get install {}", spec.package)),
            ),
        }
    }

    match &probe.init {
        Ok(path) => push(
            "banger-init",
            Status::Ok,
            format!("{} (static; the guest's /init)", path.display()),
            None,
        ),
        Err(e) => push(
            "banger-init",
            Status::Fail,
            e.clone(),
            Some(
                "run ./scripts/setup, which builds it statically beside banger, or set \
                 BANGER_INIT_BIN"
                    .into(),
            ),
        ),
    }

    if let Some(ip) = &probe.install {
        let i = &ip.install;
        push(
            "privileges",
            Status::Ok,
            format!(
                "system install: bangerd runs as {} and its root helper makes the bridge, TAP \
                 devices, isolation and NAT rules",
                i.owner
            ),
            None,
        );
        install_checks(ip, hypervisor.as_ref(), &mut push);
    } else if probe.root {
        push(
            "privileges",
            Status::Ok,
            "root (dev mode): bangerd can make the bridge, TAP devices, isolation and NAT rules"
                .into(),
            None,
        );
    } else {
        push(
            "privileges",
            Status::Fail,
            "not root, and banger is not installed as a service: in dev mode bangerd makes the \
             bridge, TAP devices, isolation and NAT rules itself, so networking needs root"
                .into(),
            Some(
                "install the services once with 'sudo banger system install --owner \"$USER\"' \
                 (then no command needs sudo), or run banger as root"
                    .into(),
            ),
        );
    }

    for entry in &config.file_sync {
        let name = format!("file_sync {}", entry.host);
        match banger_storage::file_sync::check(entry, &probe.home) {
            Ok(true) => push(
                &name,
                Status::Ok,
                format!("copied to {} in new VMs", entry.guest),
                None,
            ),
            Ok(false) => push(
                &name,
                Status::Warn,
                format!(
                    "{} does not exist: skipped when VMs are created",
                    entry.host
                ),
                Some(format!(
                    "create it, or remove the entry from {}",
                    probe.config_file.display()
                )),
            ),
            Err(e) => push(
                &name,
                Status::Warn,
                format!("{e}: skipped when VMs are created"),
                Some(format!(
                    "fix the [[file_sync]] entry in {}",
                    probe.config_file.display()
                )),
            ),
        }
    }

    // DNS: a convenience (ssh root@NAME.vm), never a failure.
    let dns = &probe.dns;
    match &dns.server {
        Ok(()) => push(
            "dns server",
            Status::Ok,
            format!("bangerd answers the .vm zone on {}", dns.listen),
            None,
        ),
        Err(e) => push(
            "dns server",
            Status::Warn,
            format!("nothing answers the .vm zone on {}: {e}", dns.listen),
            Some(
                "start bangerd ('banger daemon status'); if it runs, its log says why it \
                 cannot listen (port 53 needs root; dns_listen_addr moves it)"
                    .into(),
            ),
        ),
    }
    match &dns.host {
        Ok(()) => push(
            "dns on the host",
            Status::Ok,
            format!(".vm names resolve on this host ({})", dns.resolver.name()),
            None,
        ),
        Err(e) => push(
            "dns on the host",
            Status::Warn,
            format!(".vm names on this host ({}): {e}", dns.resolver.name()),
            Some(dns.resolver.recipe(&dns.bridge, dns.listen)),
        ),
    }

    Report {
        ok: checks.iter().all(|c| c.status != Status::Fail),
        checks,
        hypervisor,
        kvm,
        vm_defaults: VmDefaults::resolve(&config.vm_defaults, probe.host),
        config_file: probe.config_file.clone(),
    }
}

/// The rows of a system install: both units active, both sockets taking
/// connections, and the owner in the `kvm` group where KVM is used.
fn install_checks(
    ip: &InstallProbe,
    hypervisor: Option<&Selection>,
    push: &mut impl FnMut(&str, Status, String, Option<String>),
) {
    let owner = &ip.install.owner;
    push(
        "system install",
        Status::Ok,
        format!(
            "for {owner} under {} (banger {})",
            ip.install.prefix.display(),
            ip.install.version
        ),
        None,
    );
    for (unit, state) in &ip.units {
        match state {
            Ok(s) if s.is_active() => push(unit, Status::Ok, s.describe(), None),
            Ok(s) => push(
                unit,
                Status::Fail,
                format!("{}: banger's commands cannot work without it", s.describe()),
                Some(format!(
                    "see 'systemctl status {unit}'; 'sudo banger system restart' starts it"
                )),
            ),
            Err(e) => push(
                unit,
                Status::Fail,
                e.clone(),
                Some("banger system status shows the install".into()),
            ),
        }
    }
    let socket = ip.install.paths().socket();
    match &ip.daemon_socket {
        SocketState::Connects => push(
            "daemon socket",
            Status::Ok,
            format!("{} answers", socket.display()),
            None,
        ),
        other => push(
            "daemon socket",
            Status::Fail,
            format!("{}: {}", socket.display(), other.describe()),
            Some(match other {
                SocketState::Refused(why) if why.starts_with("permission denied") => {
                    format!("only {owner} may use this install: run banger as {owner}")
                }
                _ => format!(
                    "see 'systemctl status {DAEMON_UNIT}'; 'sudo banger system restart' \
                     restarts it"
                ),
            }),
        ),
    }
    match &ip.helper.socket {
        SocketState::Connects => push(
            "helper socket",
            Status::Ok,
            match &ip.helper.version {
                Some(v) => format!("{HELPER_SOCKET} answers (helper {v})"),
                None => format!("{HELPER_SOCKET} takes connections"),
            },
            None,
        ),
        other => push(
            "helper socket",
            Status::Fail,
            format!("{HELPER_SOCKET}: {}", other.describe()),
            Some(format!(
                "see 'systemctl status {HELPER_UNIT}'; 'sudo banger system restart' restarts it"
            )),
        ),
    }
    match &ip.tun_mode {
        Ok(mode) if mode & 0o006 == 0o006 => push(
            "tun device",
            Status::Ok,
            format!("/dev/net/tun is {mode:o}: {owner}'s hypervisors open their TAPs"),
            None,
        ),
        Ok(mode) => push(
            "tun device",
            Status::Fail,
            format!(
                "/dev/net/tun is {mode:o}: {owner}'s hypervisor cannot open the TAP the helper \
                 makes for it (the kernel checks the TAP's owner once the device opens)"
            ),
            Some(
                "sudo chmod 0666 /dev/net/tun, as udev's default rules do on systemd hosts \
                 (a udev rule KERNEL==\"tun\", MODE=\"0666\" keeps it)"
                    .into(),
            ),
        ),
        Err(e) => push(
            "tun device",
            Status::Fail,
            e.clone(),
            Some("load the tun module: sudo modprobe tun".into()),
        ),
    }
    let kvm_used = hypervisor.is_some_and(|sel| sel.accel == banger_vmm::select::Accel::Kvm);
    match ip.owner_in_kvm {
        Some(false) if kvm_used => push(
            "kvm group",
            // The unit gives the daemon the group anyway
            // (SupplementaryGroups=kvm): the owner's own tools lack it.
            Status::Warn,
            format!("{owner} is not in the kvm group"),
            Some(format!(
                "sudo usermod -aG kvm {owner} ('banger system install' does it), then log in \
                 again"
            )),
        ),
        Some(true) if kvm_used => push(
            "kvm group",
            Status::Ok,
            format!("{owner} is in the kvm group"),
            None,
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(kvm: KvmStatus, qemu: bool, tools: bool) -> HostProbe {
        HostProbe {
            arch: "x86_64".into(),
            config_file: "/nonexistent/config.toml".into(),
            config: Ok(Config::default()),
            hypervisors: HostHypervisors {
                kvm,
                firecracker: Err("firecracker is not on PATH".into()),
                qemu: if qemu {
                    Ok("/usr/bin/qemu-system-x86_64".into())
                } else {
                    Err("qemu-system-x86_64 is not on PATH".into())
                },
            },
            host: HostFacts {
                cpus: Some(8),
                memory_bytes: Some(16 << 30),
            },
            tools: TOOLS
                .iter()
                .map(|t| tools.then(|| PathBuf::from("/usr/bin").join(t.programs[0])))
                .collect(),
            init: if tools {
                Ok("/usr/bin/banger-init".into())
            } else {
                Err("banger-init /usr/bin/banger-init: not found".into())
            },
            root: tools,
            home: PathBuf::from("/nonexistent-home"),
            tsc: Some(banger_vmm::tsc::TscRate {
                khz: 2_596_125,
                fallback: None,
            }),
            qemu_sandbox: qemu.then_some(Ok(())),
            install: None,
            dns: DnsProbe {
                listen: "172.16.0.1:53".parse().unwrap(),
                bridge: "banger0".into(),
                server: Ok(()),
                resolver: HostResolver::SystemdResolved,
                host: Ok(()),
            },
        }
    }

    #[test]
    fn dns_problems_warn_with_the_recipe_for_the_resolver() {
        let mut p = probe(KvmStatus::Pvm, true, true);
        let r = diagnose(&p);
        assert_eq!(check(&r, "dns server").status, Status::Ok);
        assert_eq!(check(&r, "dns on the host").status, Status::Ok);
        p.dns.server = Err("nothing listens on 172.16.0.1:53".into());
        p.dns.host = Err("probe.banger.vm does not resolve".into());
        let r = diagnose(&p);
        assert!(r.ok, "DNS never blocks vm run");
        assert_eq!(check(&r, "dns server").status, Status::Warn);
        let host = check(&r, "dns on the host");
        assert_eq!(host.status, Status::Warn);
        let fix = host.fix.as_deref().unwrap();
        assert!(fix.contains("resolvectl domain banger0 ~vm"), "{fix}");
        p.dns.resolver = HostResolver::Dnsmasq;
        let r = diagnose(&p);
        let fix = check(&r, "dns on the host").fix.clone().unwrap();
        assert!(fix.contains("server=/vm/172.16.0.1"), "{fix}");
    }

    fn check<'a>(r: &'a Report, name: &str) -> &'a Check {
        r.checks.iter().find(|c| c.name == name).expect(name)
    }

    #[test]
    fn healthy_pvm_host_passes_with_tcg_warning() {
        let r = diagnose(&probe(KvmStatus::Pvm, true, true));
        assert!(r.ok);
        assert_eq!(check(&r, "kvm").status, Status::Warn);
        let hv = check(&r, "hypervisor");
        assert_eq!(hv.status, Status::Warn);
        assert!(hv.detail.contains("qemu (tcg)"), "{}", hv.detail);
        assert!(hv.detail.contains("slower"), "{}", hv.detail);
        assert_eq!(r.vm_defaults.vcpu.value, 2);
        let clock = check(&r, "guest clock");
        assert_eq!(clock.status, Status::Ok);
        assert!(
            clock.detail.contains("2596125 kHz (measured"),
            "{}",
            clock.detail
        );
    }

    #[test]
    fn a_qemu_without_its_sandbox_is_a_warning() {
        let mut p = probe(KvmStatus::Pvm, true, true);
        assert_eq!(check(&diagnose(&p), "qemu sandbox").status, Status::Ok);
        p.qemu_sandbox = Some(Err(
            "QEMU exited (exit status: 1) with -sandbox: -sandbox is not supported by this QEMU build."
                .into(),
        ));
        let report = diagnose(&p);
        assert!(report.ok, "a missing sandbox does not block vm run");
        let row = check(&report, "qemu sandbox");
        assert_eq!(row.status, Status::Warn);
        assert!(row.detail.contains("not supported by this QEMU build"));
    }

    #[test]
    fn a_guessed_tsc_rate_is_a_warning() {
        let mut p = probe(KvmStatus::Pvm, true, true);
        p.tsc = Some(banger_vmm::tsc::TscRate {
            khz: banger_vmm::tsc::FALLBACK_KHZ,
            fallback: Some("the host CPU has no nonstop_tsc".into()),
        });
        let report = diagnose(&p);
        let clock = check(&report, "guest clock");
        assert_eq!(clock.status, Status::Warn);
        assert!(
            clock
                .detail
                .contains("a guess: the host CPU has no nonstop_tsc")
        );
    }

    #[test]
    fn missing_pieces_fail_with_packages_to_install() {
        let r = diagnose(&probe(KvmStatus::Absent, false, false));
        assert!(!r.ok);
        let hv = check(&r, "hypervisor");
        assert_eq!(hv.status, Status::Fail);
        assert!(hv.fix.as_deref().unwrap().contains("qemu-system-x86"));
        assert_eq!(check(&r, "banger-init").status, Status::Fail);
        assert_eq!(check(&r, "privileges").status, Status::Fail);
        assert!(
            check(&r, "banger-init")
                .fix
                .as_deref()
                .unwrap()
                .contains("scripts/setup")
        );
        let mm = check(&r, "mmdebstrap");
        assert_eq!(mm.status, Status::Fail);
        assert_eq!(mm.fix.as_deref(), Some("apt-get install mmdebstrap"));
        // Without nft no guest can be isolated: no VM starts.
        let nft = check(&r, "nft");
        assert_eq!(nft.status, Status::Fail);
        assert_eq!(nft.fix.as_deref(), Some("apt-get install nftables"));
        assert!(nft.detail.contains("isolating guests"), "{}", nft.detail);
        // git is a feature, not a blocker.
        assert_eq!(check(&r, "git").status, Status::Warn);
        for c in &r.checks {
            if c.status != Status::Ok {
                assert!(c.fix.is_some(), "{} has no fix", c.name);
            }
        }
    }

    #[test]
    fn bad_config_fails_but_the_rest_is_still_checked() {
        let mut p = probe(KvmStatus::Usable, true, true);
        p.config = Err("config x, line 2: unknown key `foo`".into());
        let r = diagnose(&p);
        assert!(!r.ok);
        assert_eq!(check(&r, "config").status, Status::Fail);
        assert_eq!(check(&r, "hypervisor").status, Status::Ok);
    }

    #[test]
    fn file_sync_entries_are_listed_and_bad_ones_flagged() {
        let mut p = probe(KvmStatus::Usable, true, true);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".gitconfig"), "x").unwrap();
        p.home = dir.path().to_path_buf();
        let mut config = Config::default();
        for (host, guest) in [
            ("~/.gitconfig", "~/.gitconfig"),
            ("~/absent", "~/absent"),
            ("~/.gitconfig", "/etc/gitconfig"),
        ] {
            config.file_sync.push(banger_config::FileSyncEntry {
                host: host.into(),
                guest: guest.into(),
                mode: None,
            });
        }
        p.config = Ok(config);
        let r = diagnose(&p);
        let sync: Vec<_> = r
            .checks
            .iter()
            .filter(|c| c.name.starts_with("file_sync "))
            .map(|c| c.status)
            .collect();
        assert_eq!(sync, [Status::Ok, Status::Warn, Status::Warn]);
        assert!(r.ok, "file_sync problems never block vm run");
    }

    #[test]
    fn other_architectures_are_refused() {
        let mut p = probe(KvmStatus::Usable, true, true);
        p.arch = "aarch64".into();
        let r = diagnose(&p);
        assert!(!r.ok);
        assert_eq!(check(&r, "architecture").status, Status::Fail);
    }

    fn installed(active: bool, socket: SocketState) -> InstallProbe {
        let state = |a: bool| UnitState {
            active_state: if a { "active" } else { "failed" }.into(),
            sub_state: if a { "running" } else { "failed" }.into(),
            main_pid: a.then_some(42),
        };
        InstallProbe {
            install: Install {
                version: "0.1.0".into(),
                owner: "alice".into(),
                owner_uid: 1000,
                owner_gid: 1000,
                owner_home: "/home/alice".into(),
                prefix: "/usr/local".into(),
                installed_at: 1,
            },
            units: vec![
                (HELPER_UNIT, Ok(state(true))),
                (DAEMON_UNIT, Ok(state(active))),
            ],
            daemon_socket: socket,
            helper: HelperProbe {
                socket: SocketState::Connects,
                version: None,
            },
            owner_in_kvm: Some(false),
            tun_mode: Ok(0o666),
        }
    }

    #[test]
    fn dev_mode_without_root_says_networking_needs_root_and_suggests_the_install() {
        let mut p = probe(KvmStatus::Usable, true, true);
        p.root = false;
        let r = diagnose(&p);
        let row = check(&r, "privileges");
        assert_eq!(row.status, Status::Fail);
        assert!(
            row.detail.contains("networking needs root"),
            "{}",
            row.detail
        );
        let fix = row.fix.as_deref().unwrap();
        assert!(
            fix.contains("sudo banger system install --owner \"$USER\""),
            "{fix}"
        );
        assert!(r.checks.iter().all(|c| c.name != "system install"));
    }

    #[test]
    fn an_install_needs_no_root_and_shows_its_units_sockets_and_kvm_group() {
        let mut p = probe(KvmStatus::Usable, true, true);
        p.root = false;
        p.install = Some(installed(true, SocketState::Connects));
        let r = diagnose(&p);
        assert!(r.ok, "{:?}", r.checks);
        assert_eq!(check(&r, "privileges").status, Status::Ok);
        assert_eq!(check(&r, "bangerd.service").status, Status::Ok);
        assert_eq!(check(&r, "bangerd-root.service").status, Status::Ok);
        assert_eq!(check(&r, "daemon socket").status, Status::Ok);
        assert_eq!(check(&r, "helper socket").status, Status::Ok);
        assert_eq!(check(&r, "tun device").status, Status::Ok);
        // KVM is used here, and alice is not in its group.
        let kvm = check(&r, "kvm group");
        assert_eq!(kvm.status, Status::Warn);
        assert!(
            kvm.fix
                .as_deref()
                .unwrap()
                .contains("usermod -aG kvm alice")
        );

        p.install = Some(installed(
            false,
            SocketState::Refused("permission denied: only the owner and root may connect".into()),
        ));
        let r = diagnose(&p);
        assert!(!r.ok);
        let unit = check(&r, "bangerd.service");
        assert_eq!(unit.status, Status::Fail);
        assert!(
            unit.fix
                .as_deref()
                .unwrap()
                .contains("banger system restart")
        );
        let sock = check(&r, "daemon socket");
        assert_eq!(sock.status, Status::Fail);
        assert!(sock.fix.as_deref().unwrap().contains("run banger as alice"));

        // A host without udev leaves the tun device root's alone.
        let mut ip = installed(true, SocketState::Connects);
        ip.tun_mode = Ok(0o600);
        p.install = Some(ip);
        let r = diagnose(&p);
        let tun = check(&r, "tun device");
        assert_eq!(tun.status, Status::Fail);
        assert!(tun.detail.contains("/dev/net/tun is 600"), "{}", tun.detail);
        assert!(tun.fix.as_deref().unwrap().contains("chmod 0666"));
    }

    #[test]
    fn the_kvm_group_is_not_checked_where_kvm_is_not_used() {
        let mut p = probe(KvmStatus::Pvm, true, true);
        p.install = Some(installed(true, SocketState::Connects));
        let r = diagnose(&p);
        assert!(r.checks.iter().all(|c| c.name != "kvm group"));
    }
}
