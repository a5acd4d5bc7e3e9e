//! The helper's wire protocol: one JSON [`Request`] on one line per
//! connection, one JSON [`Reply`] line back (with a file descriptor beside
//! it for [`Request::BindDns`]). Every request is checked by
//! [`Request::check`] before anything is done: names must be banger's own,
//! addresses inside the bridge's subnet.

use std::net::Ipv4Addr;

use banger_network::{BridgeSpec, GuestPort, Ipv4Net, TAP_PREFIX, validate_cidr};
use serde::{Deserialize, Serialize};

/// Bumped when a request or reply changes shape; [`Request::Ping`] reports
/// it so a daemon and a helper of different builds refuse each other
/// clearly instead of misreading.
pub const PROTOCOL: u32 = 1;

/// Under the root helper, bridges banger may make or attach to start with
/// this (the default is `banger0`): a `bridge_name` naming another
/// interface (`docker0`, `br0`) must not reach root.
pub const BRIDGE_PREFIX: &str = "banger";

/// The only privileged port the helper binds for the daemon.
pub const DNS_PORT: u16 = 53;

/// The longest request line the helper reads.
pub const MAX_REQUEST: usize = 4096;

/// A bridge as it travels: name and address with prefix (`172.16.0.1/24`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    pub name: String,
    pub cidr: Ipv4Net,
}

impl From<&BridgeSpec> for Bridge {
    fn from(b: &BridgeSpec) -> Self {
        Bridge {
            name: b.name.clone(),
            cidr: b.cidr,
        }
    }
}

impl From<&Bridge> for BridgeSpec {
    fn from(b: &Bridge) -> Self {
        BridgeSpec {
            name: b.name.clone(),
            cidr: b.cidr,
        }
    }
}

/// A guest's place on the bridge, as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub vm: String,
    pub tap: String,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub bridge: Bridge,
    pub nat: bool,
}

impl From<&GuestPort> for Port {
    fn from(p: &GuestPort) -> Self {
        Port {
            vm: p.vm.clone(),
            tap: p.tap.clone(),
            mac: p.mac.clone(),
            ip: p.ip,
            bridge: Bridge::from(&p.bridge),
            nat: p.nat,
        }
    }
}

impl From<&Port> for GuestPort {
    fn from(p: &Port) -> Self {
        GuestPort {
            vm: p.vm.clone(),
            tap: p.tap.clone(),
            mac: p.mac.clone(),
            ip: p.ip,
            bridge: BridgeSpec::from(&p.bridge),
            nat: p.nat,
        }
    }
}

/// One operation. Nothing here is a path, a command or a free-form name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The helper's version and protocol; changes nothing.
    Ping,
    EnsureBridge {
        bridge: Bridge,
    },
    /// The TAP is made for the owner's uid, which the helper takes from
    /// the install record, never from the request.
    CreateTap {
        tap: String,
        bridge: Bridge,
    },
    DeleteTap {
        tap: String,
    },
    IsolateGuest {
        port: Port,
    },
    RemoveIsolation {
        vm: String,
    },
    /// Also enables IPv4 forwarding.
    EnableNat {
        port: Port,
    },
    DisableNat {
        vm: String,
    },
    /// A UDP socket on the bridge's address, port [`DNS_PORT`], passed
    /// back with `SCM_RIGHTS`.
    BindDns {
        bridge: Bridge,
    },
    /// The id maps of the owner's process `pid` in its new user namespace;
    /// the map itself is the helper's to compute.
    MapIds {
        pid: u32,
    },
}

/// The answer: `{"ok": {...}}` or `{"error": "...", "invalid": bool}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    Ok {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        protocol: Option<u32>,
    },
    Error {
        message: String,
        /// The request's fault (refused), not the host's.
        invalid: bool,
    },
}

impl Reply {
    pub fn done() -> Self {
        Reply::Ok {
            version: None,
            protocol: None,
        }
    }
}

impl Request {
    /// Its name in logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::EnsureBridge { .. } => "ensure_bridge",
            Request::CreateTap { .. } => "create_tap",
            Request::DeleteTap { .. } => "delete_tap",
            Request::IsolateGuest { .. } => "isolate_guest",
            Request::RemoveIsolation { .. } => "remove_isolation",
            Request::EnableNat { .. } => "enable_nat",
            Request::DisableNat { .. } => "disable_nat",
            Request::BindDns { .. } => "bind_dns",
            Request::MapIds { .. } => "map_ids",
        }
    }

    /// Refuses anything that is not banger's: see the module docs. The
    /// network crate checks again as it acts; this is the helper's own
    /// line, so it does not depend on those checks staying as they are.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Request::Ping => Ok(()),
            Request::EnsureBridge { bridge } | Request::BindDns { bridge } => check_bridge(bridge),
            Request::CreateTap { tap, bridge } => {
                check_tap(tap)?;
                check_bridge(bridge)
            }
            Request::DeleteTap { tap } => check_tap(tap),
            Request::RemoveIsolation { vm } | Request::DisableNat { vm } => check_vm(vm),
            Request::IsolateGuest { port } | Request::EnableNat { port } => check_port(port),
            Request::MapIds { pid } if *pid > 1 => Ok(()),
            Request::MapIds { pid } => Err(format!("{pid} is not a build's process")),
        }
    }
}

fn check_bridge(bridge: &Bridge) -> Result<(), String> {
    let name = &bridge.name;
    banger_network::validate_ifname(name).map_err(|e| e.to_string())?;
    if !name.starts_with(BRIDGE_PREFIX) {
        return Err(format!(
            "bridge {name:?} is not one of banger's: under the system install bridge_name \
             must start with {BRIDGE_PREFIX:?} (the default is banger0)"
        ));
    }
    validate_cidr(bridge.cidr).map_err(|e| e.to_string())
}

/// banger's TAP names are exactly [`TAP_PREFIX`] and 12 lowercase hex
/// digits (`banger_network::tap_name`).
fn check_tap(tap: &str) -> Result<(), String> {
    let ok = tap.strip_prefix(TAP_PREFIX).is_some_and(|hex| {
        hex.len() == 12 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{tap:?} is not one of banger's TAP names ({TAP_PREFIX} and 12 hex digits)"
        ))
    }
}

fn check_vm(vm: &str) -> Result<(), String> {
    banger_model::VmName::parse(vm)
        .map(drop)
        .map_err(|e| format!("VM name {vm:?}: {e}"))
}

fn check_port(port: &Port) -> Result<(), String> {
    check_vm(&port.vm)?;
    check_tap(&port.tap)?;
    check_bridge(&port.bridge)?;
    if port.tap != banger_network::tap_name(&port.vm) {
        return Err(format!(
            "TAP {} is not VM {}'s ({})",
            port.tap,
            port.vm,
            banger_network::tap_name(&port.vm)
        ));
    }
    let net = port.bridge.cidr.trunc();
    if !net.contains(&port.ip)
        || port.ip == net.network()
        || port.ip == net.broadcast()
        || port.ip == port.bridge.cidr.addr()
    {
        return Err(format!(
            "address {} is not a guest address of {}",
            port.ip, port.bridge.cidr
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge() -> Bridge {
        Bridge {
            name: "banger0".into(),
            cidr: "172.16.0.1/24".parse().unwrap(),
        }
    }

    fn port(vm: &str) -> Port {
        Port {
            vm: vm.into(),
            tap: banger_network::tap_name(vm),
            mac: banger_network::mac_for(vm),
            ip: "172.16.0.7".parse().unwrap(),
            bridge: bridge(),
            nat: true,
        }
    }

    #[test]
    fn requests_travel_as_tagged_json() {
        let r = Request::CreateTap {
            tap: "bgr0123456789ab".into(),
            bridge: bridge(),
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"op":"create_tap","tap":"bgr0123456789ab","bridge":{"name":"banger0","cidr":"172.16.0.1/24"}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        // Nothing rides along unnoticed.
        assert!(
            serde_json::from_str::<Request>(
                r#"{"op":"delete_tap","tap":"bgr0123456789ab","owner":0}"#
            )
            .is_err()
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"run","argv":["sh"]}"#).is_err());
        let ok = serde_json::to_string(&Reply::done()).unwrap();
        assert_eq!(ok, r#"{"ok":{}}"#);
    }

    #[test]
    fn banger_names_pass() {
        for r in [
            Request::Ping,
            Request::EnsureBridge { bridge: bridge() },
            Request::BindDns { bridge: bridge() },
            Request::CreateTap {
                tap: banger_network::tap_name("dev"),
                bridge: bridge(),
            },
            Request::DeleteTap {
                tap: banger_network::tap_name("dev"),
            },
            Request::IsolateGuest { port: port("dev") },
            Request::EnableNat { port: port("dev") },
            Request::RemoveIsolation { vm: "dev".into() },
            Request::DisableNat { vm: "dev".into() },
        ] {
            assert_eq!(r.check(), Ok(()), "{r:?}");
        }
    }

    #[test]
    fn names_outside_bangers_are_refused() {
        let other_bridge = |name: &str| Request::EnsureBridge {
            bridge: Bridge {
                name: name.into(),
                cidr: "172.16.0.1/24".parse().unwrap(),
            },
        };
        for name in [
            "docker0",
            "eth0",
            "br0",
            "",
            "banger0;x",
            "banger/0",
            "bangerxxxxxxxxxxx",
        ] {
            assert!(other_bridge(name).check().is_err(), "{name:?}");
        }
        for tap in [
            "eth0",
            "bgr",
            "bgr0123456789",
            "bgr0123456789AB",
            "bgr0123456789abc",
            "lo",
        ] {
            let r = Request::DeleteTap { tap: tap.into() };
            let e = r.check().unwrap_err();
            assert!(e.contains("not one of banger's"), "{tap}: {e}");
        }
        for vm in ["", "-x", "a b", "a;b", &"x".repeat(64)] {
            assert!(
                Request::DisableNat { vm: vm.into() }.check().is_err(),
                "{vm:?}"
            );
        }
    }

    #[test]
    fn a_port_must_be_its_vms_and_inside_the_bridge() {
        let mut p = port("dev");
        p.tap = banger_network::tap_name("other");
        assert!(
            Request::IsolateGuest { port: p }
                .check()
                .unwrap_err()
                .contains("not VM dev's")
        );
        for ip in ["172.16.0.0", "172.16.0.1", "172.16.0.255", "10.0.0.5"] {
            let mut p = port("dev");
            p.ip = ip.parse().unwrap();
            let e = Request::EnableNat { port: p }.check().unwrap_err();
            assert!(e.contains("not a guest address"), "{ip}: {e}");
        }
    }
}
