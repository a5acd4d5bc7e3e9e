//! `POST /v1/identity`: a guest resumed from a template becomes the VM
//! it now is. The request is checked whole first (a malformed part
//! refuses it, nothing applied); then each part present is applied in
//! [`IdentityPart`]'s order, a failure reported and the next part tried,
//! since a guest with the right address but the template's hostname is
//! more use to the host than one with neither. One identity is applied
//! at a time.

use std::net::Ipv4Addr;
use std::path::Path;

use banger_agent_proto::{
    ClockRequest, ENTROPY_BYTES, GrowFilesystem, HostKey, IdentityPart, IdentityReply,
    IdentityRequest, LinkRef, MAX_HOST_KEYS, MAX_KEY_TEXT, MAX_NAMESERVERS, NetworkIdentity,
    PartFailure, WorkspaceMount, guest_paths,
};
use http::StatusCode;

use crate::net::Rtnl;
use crate::server::{Reply, error, json};
use crate::{Agent, etc, filesystem, random, sshd, system, workspace};

/// Linux's IFNAMSIZ less the NUL.
const MAX_IFNAME: usize = 15;
/// The mode of a new /etc/machine-id (systemd's).
const MACHINE_ID_MODE: u32 = 0o444;

pub async fn identity(agent: &Agent, req: IdentityRequest) -> Reply {
    let plan = match Plan::check(req) {
        Ok(plan) => plan,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let agent = agent.clone();
    let applied = tokio::task::spawn_blocking(move || {
        // A poisoned lock only means an earlier identity panicked; the
        // files it guards are replaced whole either way.
        let _one_at_a_time = agent
            .identity
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        plan.apply(&agent.root)
    })
    .await;
    match applied {
        Ok(reply) => json(StatusCode::OK, &reply),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A checked request: every value the host sent is within its bounds.
#[derive(Debug, Default)]
struct Plan {
    entropy: Option<Vec<u8>>,
    clock: Option<ClockRequest>,
    machine_id: Option<String>,
    hostname: Option<String>,
    network: Option<Network>,
    host_keys: Option<Vec<HostKey>>,
    filesystems: Option<Vec<GrowFilesystem>>,
    workspace: Option<WorkspaceMount>,
}

#[derive(Debug)]
struct Network {
    link: LinkRef,
    mac: [u8; 6],
    address: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    dns: Vec<std::net::IpAddr>,
}

impl Plan {
    fn check(req: IdentityRequest) -> Result<Self, String> {
        let part = |p: IdentityPart, e: String| format!("{p}: {e}");
        Ok(Plan {
            entropy: req
                .entropy
                .map(|hex| check_entropy(&hex))
                .transpose()
                .map_err(|e| part(IdentityPart::Entropy, e))?,
            clock: req.clock,
            machine_id: req
                .machine_id
                .map(|id| check_machine_id(&id).map(|()| id))
                .transpose()
                .map_err(|e| part(IdentityPart::MachineId, e))?,
            hostname: req
                .hostname
                .map(|name| system::check_hostname(&name).map(|()| name))
                .transpose()
                .map_err(|e| part(IdentityPart::Hostname, e))?,
            network: req
                .network
                .map(check_network)
                .transpose()
                .map_err(|e| part(IdentityPart::Network, e))?,
            host_keys: req
                .host_keys
                .map(|keys| check_host_keys(&keys).map(|()| keys))
                .transpose()
                .map_err(|e| part(IdentityPart::HostKeys, e))?,
            filesystems: req
                .filesystems
                .map(|list| filesystem::check(&list).map(|()| list))
                .transpose()
                .map_err(|e| part(IdentityPart::Filesystems, e))?,
            workspace: req
                .workspace
                .map(|ws| workspace::check(&ws).map(|()| ws))
                .transpose()
                .map_err(|e| part(IdentityPart::Workspace, e))?,
        })
    }

    /// Applies every part present, in order; the files under `root`.
    fn apply(self, root: &Path) -> IdentityReply {
        let mut reply = IdentityReply::default();
        let mut outcome = |part: IdentityPart, result: Result<(), String>| match result {
            Ok(()) => reply.applied.push(part),
            Err(error) => reply.failed.push(PartFailure { part, error }),
        };
        if let Some(bytes) = &self.entropy {
            outcome(
                IdentityPart::Entropy,
                random::mix_and_reseed(bytes)
                    .map_err(|e| format!("adding to the kernel's random pool: {e}")),
            );
        }
        if let Some(clock) = &self.clock {
            outcome(IdentityPart::Clock, system::set_clock(clock));
        }
        if let Some(id) = &self.machine_id {
            outcome(IdentityPart::MachineId, write_machine_id(root, id));
        }
        if let Some(name) = &self.hostname {
            outcome(IdentityPart::Hostname, system::set_hostname(root, name));
        }
        if let Some(net) = &self.network {
            outcome(IdentityPart::Network, configure_network(root, net));
        }
        let mut sshd = None;
        if let Some(keys) = &self.host_keys {
            let result = write_host_keys(root, keys).and_then(|()| {
                sshd::restart(root)
                    .map(|restarted| sshd = Some(restarted))
                    .map_err(|e| {
                        format!("the keys are written, but sshd may serve the old ones: {e}")
                    })
            });
            outcome(IdentityPart::HostKeys, result);
        }
        reply.sshd = sshd;
        if let Some(list) = &self.filesystems {
            outcome(IdentityPart::Filesystems, grow_filesystems(list));
        }
        if let Some(ws) = &self.workspace {
            outcome(IdentityPart::Workspace, workspace::mount(root, ws));
        }
        reply
    }
}

/// Lowercase hex of [`ENTROPY_BYTES`] bytes.
fn check_entropy(hex: &str) -> Result<Vec<u8>, String> {
    let bytes = decode_hex(hex).ok_or("not lowercase hex digits in pairs")?;
    if !ENTROPY_BYTES.contains(&bytes.len()) {
        return Err(format!(
            "{} bytes: send {} to {}",
            bytes.len(),
            ENTROPY_BYTES.start(),
            ENTROPY_BYTES.end()
        ));
    }
    Ok(bytes)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// 32 lowercase hex digits, not all zero: what systemd accepts in
/// /etc/machine-id (sd_id128_from_string, then it refuses the null ID).
fn check_machine_id(id: &str) -> Result<(), String> {
    let hex = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex || id.bytes().all(|b| b == b'0') {
        return Err(format!(
            "{:?} is not a machine ID: send 32 lowercase hex digits, not all zero",
            cut(id)
        ));
    }
    Ok(())
}

fn write_machine_id(root: &Path, id: &str) -> Result<(), String> {
    let path = root.join("etc/machine-id");
    etc::replace_file(
        &path,
        format!("{id}\n").as_bytes(),
        etc::mode_or(&path, MACHINE_ID_MODE),
    )
    .map_err(|e| format!("writing {}: {e}", path.display()))
}

fn check_network(net: NetworkIdentity) -> Result<Network, String> {
    match &net.link {
        LinkRef::Name(name) if !valid_ifname(name) => {
            return Err(format!(
                "{:?} is not an interface name: 1 to {MAX_IFNAME} letters, digits, '-', '_' and '.'",
                cut(name)
            ));
        }
        LinkRef::Mac(mac) if parse_mac(mac).is_none() => {
            return Err(format!("{:?} is not a MAC address", cut(mac)));
        }
        _ => {}
    }
    let mac = parse_mac(&net.mac)
        .filter(|m| m[0] & 1 == 0 && *m != [0; 6])
        .ok_or_else(|| {
            format!(
                "{:?} is not a unicast MAC address (six pairs of hex digits with ':')",
                cut(&net.mac)
            )
        })?;
    if !(1..=32).contains(&net.prefix) {
        return Err(format!("prefix /{} is not 1 to 32", net.prefix));
    }
    let bad = |a: Ipv4Addr| a.is_unspecified() || a.is_multicast() || a.is_broadcast();
    if bad(net.address) {
        return Err(format!(
            "{} is not an address for an interface",
            net.address
        ));
    }
    if let Some(gw) = net.gateway
        && bad(gw)
    {
        return Err(format!("{gw} is not a gateway"));
    }
    if net.dns.len() > MAX_NAMESERVERS {
        return Err(format!(
            "{} nameservers: at most {MAX_NAMESERVERS} (the resolver ignores more)",
            net.dns.len()
        ));
    }
    Ok(Network {
        link: net.link,
        mac,
        address: net.address,
        prefix: net.prefix,
        gateway: net.gateway,
        dns: net.dns,
    })
}

/// An interface name the kernel takes, kept to characters that need no
/// quoting anywhere: letters, digits, `-`, `_`, `.`; not `.` or `..`.
fn valid_ifname(name: &str) -> bool {
    (1..=MAX_IFNAME).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `52:54:00:12:34:56` (either case).
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        // from_str_radix would take a sign ("+1").
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The link down, its new MAC, its IPv4 addresses and the default route
/// flushed, the new address, the link up, the new default route; then
/// resolv.conf as banger-init writes it.
fn configure_network(root: &Path, net: &Network) -> Result<(), String> {
    let mut rtnl = Rtnl::open().map_err(|e| format!("opening a netlink socket: {e}"))?;
    let links = rtnl
        .links()
        .map_err(|e| format!("listing the interfaces: {e}"))?;
    let link = match &net.link {
        LinkRef::Name(name) => links.iter().find(|l| &l.name == name),
        LinkRef::Mac(text) => {
            let mac = parse_mac(text).unwrap_or_default();
            let mut found = links.iter().filter(|l| l.mac.as_deref() == Some(&mac[..]));
            let first = found.next();
            if first.is_some() && found.next().is_some() {
                return Err(format!(
                    "more than one interface has MAC {}",
                    format_mac(&mac)
                ));
            }
            first
        }
    };
    let Some(link) = link else {
        let names: Vec<String> = links
            .iter()
            .map(|l| match &l.mac {
                Some(mac) => format!("{} ({})", l.name, format_mac(mac)),
                None => l.name.clone(),
            })
            .collect();
        let wanted = match &net.link {
            LinkRef::Name(name) => format!("no interface {name}"),
            LinkRef::Mac(mac) => format!("no interface with MAC {}", mac.to_ascii_lowercase()),
        };
        return Err(format!("{wanted} (there are: {})", names.join(", ")));
    };
    let (index, name) = (link.index, link.name.as_str());
    let step = |what: String| move |e: std::io::Error| format!("{what}: {e}");
    rtnl.set_down(index)
        .map_err(step(format!("taking {name} down")))?;
    rtnl.set_mac(index, net.mac).map_err(step(format!(
        "setting {name}'s MAC to {}",
        format_mac(&net.mac)
    )))?;
    rtnl.flush_addresses(index)
        .map_err(step(format!("removing {name}'s IPv4 addresses")))?;
    rtnl.flush_default_routes()
        .map_err(step("removing the default route".into()))?;
    rtnl.add_address(index, net.address, net.prefix)
        .map_err(step(format!(
            "adding {}/{} to {name}",
            net.address, net.prefix
        )))?;
    rtnl.set_up(index)
        .map_err(step(format!("bringing {name} up")))?;
    if let Some(gw) = net.gateway {
        rtnl.add_default_route(index, gw)
            .map_err(step(format!("adding the default route via {gw}")))?;
    }
    if !net.dns.is_empty() {
        let path = root.join("etc/resolv.conf");
        let text = etc::resolv_conf(&net.dns, "the banger agent for the host");
        etc::replace_file(&path, text.as_bytes(), 0o644)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// At most [`MAX_HOST_KEYS`], each named `ssh_host_<type>_key` once,
/// with texts of 1 to [`MAX_KEY_TEXT`] bytes without NUL, the public
/// one a single line.
fn check_host_keys(keys: &[HostKey]) -> Result<(), String> {
    if keys.len() > MAX_HOST_KEYS {
        return Err(format!("{} keys: at most {MAX_HOST_KEYS}", keys.len()));
    }
    for (i, key) in keys.iter().enumerate() {
        if !valid_key_name(&key.name) {
            return Err(format!(
                "{:?} is not a host key's file name: ssh_host_<type>_key, the type 1 to 16 lowercase letters and digits",
                cut(&key.name)
            ));
        }
        if keys[..i].iter().any(|k| k.name == key.name) {
            return Err(format!("{} comes twice", key.name));
        }
        for (what, text) in [("private", &key.private_key), ("public", &key.public_key)] {
            if text.trim().is_empty() || text.len() > MAX_KEY_TEXT || text.contains('\0') {
                return Err(format!(
                    "{}'s {what} key: 1 to {MAX_KEY_TEXT} bytes of text without NUL",
                    key.name
                ));
            }
        }
        if key.public_key.trim_end_matches('\n').contains(['\n', '\r']) {
            return Err(format!("{}'s public key is more than one line", key.name));
        }
    }
    Ok(())
}

/// `ssh_host_<type>_key`: what sshd's HostKey lines name, and never a
/// path.
fn valid_key_name(name: &str) -> bool {
    name.strip_prefix("ssh_host_")
        .and_then(|rest| rest.strip_suffix("_key"))
        .is_some_and(|kind| {
            (1..=16).contains(&kind.len())
                && kind
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Writes the keys into the root's /etc/ssh, and into the system disk's
/// per-VM files when banger-init bind-mounted them
/// ([`guest_paths::PER_VM_FILES`]) and they hold an `etc/ssh`: banger-init
/// copies those into the root at every boot, and a cold boot must not
/// bring back the keys of the template this guest was resumed from.
fn write_host_keys(root: &Path, keys: &[HostKey]) -> Result<(), String> {
    let dir = root.join("etc/ssh");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    write_keys_into(&dir, keys)?;
    let files = root.join(guest_paths::PER_VM_FILES.trim_start_matches('/'));
    if let Some(kept) = real_dir(root, &files.join("etc/ssh")) {
        write_keys_into(&kept, keys).map_err(|e| {
            format!(
                "the keys are in {}, but not on the system disk, so a cold boot would bring \
                 back the old ones: {e}",
                dir.display()
            )
        })?;
    }
    Ok(())
}

/// `path` if it and every folder between `root` and it is a directory,
/// none a symlink (the per-VM files' tree is the guest's to change).
fn real_dir(root: &Path, path: &Path) -> Option<std::path::PathBuf> {
    let rel = path.strip_prefix(root).ok()?;
    let mut at = root.to_path_buf();
    for part in rel.components() {
        at.push(part);
        if !std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
            return None;
        }
    }
    Some(at)
}

fn write_keys_into(dir: &Path, keys: &[HostKey]) -> Result<(), String> {
    for key in keys {
        for (name, text, mode) in [
            (key.name.clone(), &key.private_key, 0o600),
            (format!("{}.pub", key.name), &key.public_key, 0o644),
        ] {
            let path = dir.join(name);
            let mut text = text.clone();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            etc::replace_file(&path, text.as_bytes(), mode)
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Grows each filesystem, all of them tried; the failures, one line.
fn grow_filesystems(list: &[GrowFilesystem]) -> Result<(), String> {
    let failures: Vec<String> = list
        .iter()
        .filter_map(|fs| filesystem::grow(Path::new(&fs.mount), fs.bytes).err())
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// The first 64 characters of a value the host sent, for a message.
fn cut(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key(name: &str) -> HostKey {
        HostKey {
            name: name.into(),
            private_key:
                "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"
                    .into(),
            public_key: "ssh-ed25519 AAAAC3Nza test".into(),
        }
    }

    fn network() -> NetworkIdentity {
        NetworkIdentity {
            link: LinkRef::Name("eth0".into()),
            mac: "52:54:00:AB:cd:01".into(),
            address: Ipv4Addr::new(172, 16, 0, 7),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(172, 16, 0, 1)),
            dns: vec!["172.16.0.1".parse().unwrap()],
        }
    }

    #[test]
    fn machine_ids_are_32_lowercase_hex_digits() {
        assert!(check_machine_id("0123456789abcdef0123456789abcdef").is_ok());
        for bad in [
            "",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdef-123456789abcdef",
            "01234567-89ab-cdef-0123-456789abcdef",
            "00000000000000000000000000000000",
            "0123456789abcdef0123456789abcde\n",
            "../../../../etc/shadow",
        ] {
            assert!(check_machine_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_key_names_are_never_paths() {
        for good in [
            "ssh_host_ed25519_key",
            "ssh_host_rsa_key",
            "ssh_host_ecdsa_key",
        ] {
            assert!(valid_key_name(good), "{good}");
        }
        for bad in [
            "",
            "ssh_host__key",
            "ssh_host_ed25519_key.pub",
            "../ssh_host_rsa_key",
            "ssh_host_../../x_key",
            "ssh_host_a/b_key",
            "ssh_host_ED25519_key",
            "ssh_host_ed25519-cert_key",
            "authorized_keys",
            "ssh_host_aaaaaaaaaaaaaaaaa_key",
        ] {
            assert!(!valid_key_name(bad), "{bad}");
        }
    }

    #[test]
    fn host_keys_are_bounded() {
        assert!(check_host_keys(&[key("ssh_host_ed25519_key"), key("ssh_host_rsa_key")]).is_ok());
        assert!(check_host_keys(&[]).is_ok());
        let e = check_host_keys(&[key("ssh_host_rsa_key"), key("ssh_host_rsa_key")]).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let many: Vec<_> = (0..=MAX_HOST_KEYS)
            .map(|i| key(&format!("ssh_host_k{i}_key")))
            .collect();
        assert!(check_host_keys(&many).is_err());
        let mut big = key("ssh_host_rsa_key");
        big.private_key = "a".repeat(MAX_KEY_TEXT + 1);
        assert!(check_host_keys(&[big]).is_err());
        let mut exact = key("ssh_host_rsa_key");
        exact.private_key = "a".repeat(MAX_KEY_TEXT);
        assert!(check_host_keys(&[exact]).is_ok());
        let mut empty = key("ssh_host_rsa_key");
        empty.public_key = "\n".into();
        assert!(check_host_keys(&[empty]).is_err());
        let mut two_lines = key("ssh_host_rsa_key");
        two_lines.public_key = "ssh-rsa AAAA\nssh-rsa BBBB\n".into();
        assert!(check_host_keys(&[two_lines]).is_err());
        let mut nul = key("ssh_host_rsa_key");
        nul.private_key = "a\0b".into();
        assert!(check_host_keys(&[nul]).is_err());
    }

    #[test]
    fn entropy_is_bounded_lowercase_hex() {
        assert_eq!(check_entropy(&"ab".repeat(32)).unwrap(), vec![0xab; 32]);
        assert_eq!(check_entropy(&"0f".repeat(512)).unwrap().len(), 512);
        for bad in [
            String::new(),
            "ab".repeat(31),
            "ab".repeat(513),
            "AB".repeat(32),
            format!("{}a", "ab".repeat(32)),
            "zz".repeat(32),
        ] {
            assert!(check_entropy(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn networks_are_checked() {
        let net = check_network(network()).unwrap();
        assert_eq!(net.mac, [0x52, 0x54, 0, 0xab, 0xcd, 1]);
        let bad = |f: fn(&mut NetworkIdentity)| {
            let mut n = network();
            f(&mut n);
            check_network(n).unwrap_err()
        };
        bad(|n| n.link = LinkRef::Name("eth0/../x".into()));
        bad(|n| n.link = LinkRef::Name("..".into()));
        bad(|n| n.link = LinkRef::Name("a".repeat(16)));
        bad(|n| n.link = LinkRef::Mac("52:54:00:00:00".into()));
        bad(|n| n.mac = "01:00:5e:00:00:01".into());
        bad(|n| n.mac = "00:00:00:00:00:00".into());
        bad(|n| n.mac = "52:54:00:00:00:01:02".into());
        bad(|n| n.mac = "52-54-00-00-00-01".into());
        bad(|n| n.mac = "52:54:00:00:00:+1".into());
        bad(|n| n.prefix = 0);
        bad(|n| n.prefix = 33);
        bad(|n| n.address = Ipv4Addr::UNSPECIFIED);
        bad(|n| n.gateway = Some(Ipv4Addr::BROADCAST));
        let e = bad(|n| n.dns = vec!["1.1.1.1".parse().unwrap(); 4]);
        assert!(e.contains("at most 3"), "{e}");
        assert_eq!(
            format_mac(&[0x52, 0x54, 0, 0xab, 0xcd, 1]),
            "52:54:00:ab:cd:01"
        );
    }

    #[test]
    fn a_malformed_part_refuses_the_whole_request() {
        let e = Plan::check(IdentityRequest {
            hostname: Some("ok".into()),
            machine_id: Some("nope".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.starts_with("machine_id: "), "{e}");
        let e = Plan::check(IdentityRequest {
            host_keys: Some(vec![key("../../etc/shadow")]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.starts_with("host_keys: "), "{e}");
        let e = Plan::check(IdentityRequest {
            filesystems: Some(vec![GrowFilesystem {
                mount: "root".into(),
                bytes: 1 << 30,
            }]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.starts_with("filesystems: "), "{e}");
        let e = Plan::check(IdentityRequest {
            hostname: Some("ok".into()),
            workspace: Some(WorkspaceMount {
                uuid: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
                dir: "/root/../etc".into(),
                bytes: 1 << 30,
            }),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.starts_with("workspace: "), "{e}");
        assert!(Plan::check(IdentityRequest::default()).is_ok());
    }

    #[test]
    fn host_keys_reach_the_system_disks_files_too_never_through_a_link() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let kept = root.join("run/banger-agent/files/etc/ssh");
        std::fs::create_dir_all(&kept).unwrap();
        // The template's keys, and a link where a key goes.
        std::fs::write(kept.join("ssh_host_ed25519_key"), "old\n").unwrap();
        let outside = root.join("outside");
        std::fs::write(&outside, "not a key").unwrap();
        std::os::unix::fs::symlink(&outside, kept.join("ssh_host_rsa_key.pub")).unwrap();
        write_host_keys(
            root,
            &[key("ssh_host_ed25519_key"), key("ssh_host_rsa_key")],
        )
        .unwrap();
        for dir in [root.join("etc/ssh"), kept.clone()] {
            for (name, mode) in [
                ("ssh_host_ed25519_key", 0o600),
                ("ssh_host_ed25519_key.pub", 0o644),
                ("ssh_host_rsa_key", 0o600),
                ("ssh_host_rsa_key.pub", 0o644),
            ] {
                let path = dir.join(name);
                assert!(
                    std::fs::symlink_metadata(&path).unwrap().is_file(),
                    "{}",
                    path.display()
                );
                assert_eq!(etc::mode_or(&path, 0), mode, "{}", path.display());
            }
            assert_eq!(
                std::fs::read_to_string(dir.join("ssh_host_ed25519_key.pub")).unwrap(),
                "ssh-ed25519 AAAAC3Nza test\n"
            );
        }
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "not a key");

        // No per-VM files there (an older banger-init, or no keys on the
        // system disk): /etc/ssh only.
        let bare = tempfile::tempdir().unwrap();
        write_host_keys(bare.path(), &[key("ssh_host_ed25519_key")]).unwrap();
        assert!(bare.path().join("etc/ssh/ssh_host_ed25519_key").is_file());
        assert!(!bare.path().join("run").exists());
        // A link on the way there is not followed.
        let linked = tempfile::tempdir().unwrap();
        let elsewhere = linked.path().join("elsewhere");
        std::fs::create_dir_all(elsewhere.join("ssh")).unwrap();
        let files = linked.path().join("run/banger-agent/files");
        std::fs::create_dir_all(&files).unwrap();
        std::os::unix::fs::symlink(&elsewhere, files.join("etc")).unwrap();
        write_host_keys(linked.path(), &[key("ssh_host_ed25519_key")]).unwrap();
        assert_eq!(std::fs::read_dir(elsewhere.join("ssh")).unwrap().count(), 0);

        // A per-VM tree the keys cannot be written into fails the part,
        // saying what that means.
        let stuck = tempfile::tempdir().unwrap();
        let kept = stuck.path().join("run/banger-agent/files/etc/ssh");
        std::fs::create_dir_all(kept.join("ssh_host_ed25519_key")).unwrap();
        std::fs::write(kept.join("ssh_host_ed25519_key/x"), "").unwrap();
        let err = write_host_keys(stuck.path(), &[key("ssh_host_ed25519_key")]).unwrap_err();
        assert!(
            err.contains("a cold boot would bring back the old ones"),
            "{err}"
        );
    }

    #[test]
    fn files_go_under_the_root_with_their_modes_and_failures_do_not_stop_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("machine-id"), "old\n").unwrap();
        std::fs::set_permissions(
            etc.join("machine-id"),
            std::fs::Permissions::from_mode(0o440),
        )
        .unwrap();
        // /etc/ssh is a file: the keys cannot be written; the machine ID
        // still is.
        std::fs::write(etc.join("ssh"), "").unwrap();
        let plan = Plan {
            machine_id: Some("0123456789abcdef0123456789abcdef".into()),
            host_keys: Some(vec![key("ssh_host_ed25519_key")]),
            ..Default::default()
        };
        let reply = plan.apply(root.path());
        assert_eq!(reply.applied, [IdentityPart::MachineId]);
        assert_eq!(reply.failed.len(), 1);
        assert_eq!(reply.failed[0].part, IdentityPart::HostKeys);
        assert!(reply.failed[0].error.contains("etc/ssh"), "{reply:?}");
        assert_eq!(reply.sshd, None);
        assert_eq!(
            std::fs::read_to_string(etc.join("machine-id")).unwrap(),
            "0123456789abcdef0123456789abcdef\n"
        );
        assert_eq!(etc::mode_or(&etc.join("machine-id"), 0), 0o440);

        std::fs::remove_file(etc.join("ssh")).unwrap();
        let plan = Plan {
            host_keys: Some(vec![key("ssh_host_ed25519_key")]),
            ..Default::default()
        };
        let reply = plan.apply(root.path());
        assert_eq!(reply.applied, [IdentityPart::HostKeys], "{reply:?}");
        let private = etc.join("ssh/ssh_host_ed25519_key");
        assert_eq!(etc::mode_or(&private, 0), 0o600);
        assert!(
            std::fs::read_to_string(&private)
                .unwrap()
                .ends_with("-----\n")
        );
        assert_eq!(
            etc::mode_or(&etc.join("ssh/ssh_host_ed25519_key.pub"), 0),
            0o644
        );
        // No systemd and no supervisor's pid file under this root.
        assert!(matches!(
            reply.sshd,
            Some(banger_agent_proto::SshdRestart::NotRestarted { .. })
        ));
    }
}
