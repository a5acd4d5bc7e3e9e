//! banger's kernel command-line parameters (docs/guest-init.md): what the
//! host tells the guest's init about its disks, network and name.
//! Pure parsing; nothing here touches the system.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT_SECS: u64 = 300;
/// resolv.conf's MAXNS: the resolver reads no more than three.
const MAX_NAMESERVERS: usize = 3;

/// How a parameter names a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRef {
    /// `/dev/vda`: by kernel name (stable on Firecracker, where the drive
    /// order is the order they were added).
    Path(PathBuf),
    /// `LABEL=name`: the ext2/3/4 volume label.
    Label(String),
    /// `UUID=…`: the ext2/3/4 filesystem UUID (lowercase, dashed).
    Uuid(String),
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRef::Path(p) => write!(f, "{}", p.display()),
            DeviceRef::Label(l) => write!(f, "LABEL={l}"),
            DeviceRef::Uuid(u) => write!(f, "UUID={u}"),
        }
    }
}

/// The guest's static IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkParams {
    pub iface: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
}

/// The workspace disk (`banger.workspace`) and the folder under the
/// guest's `/root` it is mounted on (`banger.workspace_dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub device: DeviceRef,
    /// A plain folder name ([`banger_agent_proto::valid_workspace_name`]).
    pub dir: String,
}

/// Everything banger-init reads from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    pub base: DeviceRef,
    pub system: DeviceRef,
    pub work: Option<DeviceRef>,
    /// Mounted at `/root/<dir>`, after the work disk.
    pub workspace: Option<Workspace>,
    pub network: Option<NetworkParams>,
    pub dns: Vec<IpAddr>,
    pub hostname: Option<String>,
    /// What to exec in the new root.
    pub init: String,
    /// `banger.minimal=1`: the image brings no init or sshd of its own (an
    /// OCI image); banger-init stays PID 1 in the new root and runs the
    /// sshd the host put under `/.banger` (docs/guest-init.md).
    pub minimal: bool,
    /// Where the host answers the question for its time (`banger.clock`).
    pub clock: Option<SocketAddr>,
    /// How long to wait for disks and the network interface to appear.
    pub timeout: Duration,
}

/// Parses `/proc/cmdline`; parameters other than `banger.*` are ignored.
pub fn parse(cmdline: &str) -> Result<BootParams, String> {
    let mut base = None;
    let mut system = None;
    let mut work = None;
    let mut workspace = None;
    let mut workspace_dir = None;
    let mut ip = None;
    let mut gateway = None;
    let mut dns = Vec::new();
    let mut hostname = None;
    let mut iface = "eth0".to_owned();
    let mut init = "/sbin/init".to_owned();
    let mut minimal = false;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut clock = None;

    for word in split_words(cmdline) {
        let Some(rest) = word.strip_prefix("banger.") else {
            continue;
        };
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        let bad = |why: &str| format!("banger.{key}={value:?}: {why}");
        match key {
            "base" => base = Some(parse_device(value).map_err(|e| bad(&e))?),
            "system" => system = Some(parse_device(value).map_err(|e| bad(&e))?),
            "work" => work = Some(parse_device(value).map_err(|e| bad(&e))?),
            "workspace" => workspace = Some(parse_device(value).map_err(|e| bad(&e))?),
            "workspace_dir" => {
                if !banger_agent_proto::valid_workspace_name(value) {
                    return Err(bad(&format!(
                        "not a folder name: 1 to {} letters, digits, '.', '_' or '-', not \
                         starting with '.' or '-'",
                        banger_agent_proto::MAX_WORKSPACE_NAME
                    )));
                }
                workspace_dir = Some(value.to_owned());
            }
            "ip" => ip = Some(parse_cidr(value).map_err(|e| bad(&e))?),
            "gw" => {
                gateway = Some(
                    value
                        .parse::<Ipv4Addr>()
                        .map_err(|_| bad("not an IPv4 address"))?,
                )
            }
            "dns" => {
                dns = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        s.parse::<IpAddr>()
                            .map_err(|_| bad("not a comma-separated list of IP addresses"))
                    })
                    .collect::<Result<_, _>>()?;
                if dns.len() > MAX_NAMESERVERS {
                    return Err(bad("at most 3 nameservers (the resolver ignores more)"));
                }
            }
            "hostname" => {
                validate_hostname(value).map_err(|e| bad(&e))?;
                hostname = Some(value.to_owned());
            }
            "iface" => {
                if value.is_empty() || value.len() > 15 || value.contains('/') {
                    return Err(bad("not an interface name (1-15 characters, no '/')"));
                }
                iface = value.to_owned();
            }
            "init" => {
                if !value.starts_with('/') {
                    return Err(bad("must be an absolute path"));
                }
                init = value.to_owned();
            }
            "minimal" => {
                minimal = match value {
                    "1" => true,
                    "0" => false,
                    _ => return Err(bad("must be 1 or 0")),
                }
            }
            "clock" => {
                clock = Some(
                    value
                        .parse::<SocketAddrV4>()
                        .map_err(|_| bad("not an IPv4 ADDRESS:PORT"))?
                        .into(),
                )
            }
            "timeout" => {
                let secs: u64 = value
                    .parse()
                    .ok()
                    .filter(|s| (1..=MAX_TIMEOUT_SECS).contains(s))
                    .ok_or_else(|| bad("must be whole seconds from 1 to 300"))?;
                timeout = Duration::from_secs(secs);
            }
            _ => {
                return Err(format!(
                    "unknown parameter banger.{key} (see docs/guest-init.md)"
                ));
            }
        }
    }

    let base = base.ok_or("banger.base is missing: the host must name the base rootfs disk")?;
    let system =
        system.ok_or("banger.system is missing: the host must name the per-VM system disk")?;
    let workspace = match (workspace, workspace_dir) {
        (Some(device), Some(dir)) => Some(Workspace { device, dir }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(
                "banger.workspace needs banger.workspace_dir: the folder under /root to mount it on"
                    .into(),
            );
        }
        (None, Some(_)) => {
            return Err(
                "banger.workspace_dir needs banger.workspace: the disk to mount there".into(),
            );
        }
    };
    if gateway.is_some() && ip.is_none() {
        return Err("banger.gw needs banger.ip".into());
    }
    let network = ip.map(|(address, prefix)| NetworkParams {
        iface,
        address,
        prefix,
        gateway,
    });
    if let Some(NetworkParams {
        address,
        prefix,
        gateway: Some(gw),
        ..
    }) = &network
        && !same_subnet(*address, *gw, *prefix)
    {
        return Err(format!(
            "banger.gw={gw} is outside the guest's subnet {address}/{prefix}"
        ));
    }
    Ok(BootParams {
        base,
        system,
        work,
        workspace,
        network,
        dns,
        hostname,
        init,
        minimal,
        clock,
        timeout,
    })
}

/// Splits the command line into words; double quotes group words with
/// spaces (as the kernel does) and are removed.
fn split_words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

fn parse_device(value: &str) -> Result<DeviceRef, String> {
    if let Some(label) = value.strip_prefix("LABEL=") {
        if label.is_empty() || label.len() > 16 {
            return Err("an ext4 label has 1 to 16 characters".into());
        }
        return Ok(DeviceRef::Label(label.to_owned()));
    }
    if let Some(uuid) = value.strip_prefix("UUID=") {
        let uuid = uuid.to_ascii_lowercase();
        if !banger_agent_proto::valid_fs_uuid(&uuid) {
            return Err("a UUID looks like 0f8fad5b-d9cb-469f-a165-70867728950e".into());
        }
        return Ok(DeviceRef::Uuid(uuid));
    }
    match value.strip_prefix("/dev/") {
        Some(name) if !name.is_empty() && !name.contains('/') && name != "." && name != ".." => {
            Ok(DeviceRef::Path(PathBuf::from(value)))
        }
        _ => Err("expected /dev/NAME, LABEL=… or UUID=…".into()),
    }
}

fn parse_cidr(value: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, prefix) = value
        .split_once('/')
        .ok_or("expected ADDRESS/PREFIX, e.g. 172.16.0.2/24")?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| "not an IPv4 address")?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .ok_or("the prefix length must be 1 to 32")?;
    Ok((addr, prefix))
}

/// A hostname is one DNS label: 1-63 letters, digits and '-', not
/// starting or ending with '-'.
fn validate_hostname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err("a hostname is 1-63 letters, digits or '-', not starting or ending with '-'".into())
    }
}

pub fn netmask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::from(netmask(prefix));
    u32::from(a) & mask == u32::from(b) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "banger.base=/dev/vda banger.system=UUID=0F8FAD5B-D9CB-469F-A165-70867728950E";

    #[test]
    fn parses_a_full_command_line() {
        let p = parse(&format!(
            "console=ttyS0 panic=-1 {BASE} banger.work=LABEL=banger-work \
             banger.ip=172.16.0.5/24 banger.gw=172.16.0.1 banger.dns=172.16.0.1,1.1.1.1 \
             banger.hostname=web-1 banger.timeout=30 banger.init=/lib/systemd/systemd \
             banger.clock=172.16.0.1:10123"
        ))
        .unwrap();
        assert_eq!(p.clock, Some("172.16.0.1:10123".parse().unwrap()));
        assert_eq!(p.base, DeviceRef::Path("/dev/vda".into()));
        assert_eq!(
            p.system,
            DeviceRef::Uuid("0f8fad5b-d9cb-469f-a165-70867728950e".into())
        );
        assert_eq!(p.work, Some(DeviceRef::Label("banger-work".into())));
        assert_eq!(
            p.network,
            Some(NetworkParams {
                iface: "eth0".into(),
                address: Ipv4Addr::new(172, 16, 0, 5),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(172, 16, 0, 1)),
            })
        );
        assert_eq!(p.dns.len(), 2);
        assert_eq!(p.hostname.as_deref(), Some("web-1"));
        assert_eq!(p.init, "/lib/systemd/systemd");
        assert_eq!(p.timeout, Duration::from_secs(30));
        assert!(!p.minimal);
        assert!(parse(&format!("{BASE} banger.minimal=1")).unwrap().minimal);
        let err = parse(&format!("{BASE} banger.minimal=yes")).unwrap_err();
        assert!(
            err.contains("banger.minimal=\"yes\": must be 1 or 0"),
            "{err}"
        );
    }

    #[test]
    fn a_workspace_is_a_disk_and_a_folder_under_root() {
        let p = parse(&format!(
            "{BASE} banger.work=UUID=11111111-2222-3333-4444-555555555555 \
             banger.workspace=UUID=0F8FAD5B-D9CB-469F-A165-70867728950E \
             banger.workspace_dir=my-repo.v2_x"
        ))
        .unwrap();
        assert_eq!(
            p.workspace,
            Some(Workspace {
                device: DeviceRef::Uuid("0f8fad5b-d9cb-469f-a165-70867728950e".into()),
                dir: "my-repo.v2_x".into(),
            })
        );
        let longest = "a".repeat(64);
        let p = parse(&format!(
            "{BASE} banger.workspace_dir={longest} banger.workspace=LABEL=ws"
        ))
        .unwrap();
        assert_eq!(p.workspace.unwrap().dir, longest);
    }

    #[test]
    fn bad_workspaces_are_refused() {
        const DISK: &str = "banger.workspace=UUID=0f8fad5b-d9cb-469f-a165-70867728950e";
        for (params, expect) in [
            (
                DISK.to_owned(),
                "banger.workspace needs banger.workspace_dir",
            ),
            (
                "banger.workspace_dir=repo".to_owned(),
                "banger.workspace_dir needs banger.workspace",
            ),
            (
                "banger.workspace=UUID=nope banger.workspace_dir=repo".to_owned(),
                "banger.workspace=\"UUID=nope\": a UUID looks like",
            ),
            (
                "banger.workspace=vdd banger.workspace_dir=repo".to_owned(),
                "/dev/NAME",
            ),
        ] {
            let err = parse(&format!("{BASE} {params}")).unwrap_err();
            assert!(err.contains(expect), "{params}: {err}");
        }
        for dir in [
            "",
            ".",
            "..",
            ".git",
            "-rf",
            "a/b",
            "a b",
            "../etc",
            "caf\u{e9}",
            "a\\b",
            &"a".repeat(65),
        ] {
            let err = parse(&format!("{BASE} {DISK} \"banger.workspace_dir={dir}\"")).unwrap_err();
            assert_eq!(
                err,
                format!(
                    "banger.workspace_dir={dir:?}: not a folder name: 1 to 64 letters, digits, \
                     '.', '_' or '-', not starting with '.' or '-'"
                ),
                "{dir:?}"
            );
        }
    }

    #[test]
    fn defaults_when_only_the_disks_are_given() {
        let p = parse(BASE).unwrap();
        assert_eq!(p.work, None);
        assert_eq!(p.workspace, None);
        assert_eq!(p.network, None);
        assert!(p.dns.is_empty());
        assert_eq!(p.init, "/sbin/init");
        assert_eq!(p.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(
            split_words(r#"a "b c" d="e f"  g"#),
            ["a", "b c", "d=e f", "g"]
        );
    }

    #[test]
    fn bad_values_name_the_parameter_and_the_fix() {
        for (param, expect) in [
            ("banger.ip=172.16.0.5", "ADDRESS/PREFIX"),
            ("banger.ip=172.16.0.5/33", "prefix length"),
            ("banger.ip=fd00::5/64", "IPv4"),
            ("banger.gw=300.1.1.1", "IPv4"),
            ("banger.dns=1.1.1.1,x", "IP addresses"),
            ("banger.dns=1.1.1.1,1.0.0.1,8.8.8.8,9.9.9.9", "at most 3"),
            ("banger.hostname=-bad", "hostname"),
            ("banger.hostname=a_b", "hostname"),
            ("banger.work=vdc", "/dev/NAME"),
            ("banger.work=/dev/../etc", "/dev/NAME"),
            ("banger.work=UUID=nope", "UUID"),
            ("banger.work=LABEL=", "label"),
            ("banger.timeout=0", "1 to 300"),
            ("banger.clock=172.16.0.1", "ADDRESS:PORT"),
            ("banger.clock=[fd00::1]:123", "IPv4"),
            ("banger.init=sbin/init", "absolute"),
            ("banger.bogus=1", "unknown parameter banger.bogus"),
        ] {
            let err = parse(&format!("{BASE} {param}")).unwrap_err();
            assert!(err.contains(expect), "{param}: {err}");
        }
    }

    #[test]
    fn missing_disks_and_inconsistent_network_are_refused() {
        let err = parse("banger.system=/dev/vdb").unwrap_err();
        assert!(err.contains("banger.base is missing"), "{err}");
        let err = parse("banger.base=/dev/vda").unwrap_err();
        assert!(err.contains("banger.system is missing"), "{err}");
        let err = parse(&format!("{BASE} banger.gw=10.0.0.1")).unwrap_err();
        assert!(err.contains("needs banger.ip"), "{err}");
        let err = parse(&format!("{BASE} banger.ip=10.0.0.2/24 banger.gw=10.0.1.1")).unwrap_err();
        assert!(err.contains("outside the guest's subnet"), "{err}");
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(netmask(1), Ipv4Addr::new(128, 0, 0, 0));
    }
}
