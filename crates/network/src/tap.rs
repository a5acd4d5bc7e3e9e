//! One TAP per VM, attached to the bridge.

use crate::NetError;
use crate::command::{require_tool, run};
use crate::naming::validate_ifname;
use crate::rtnl::Rtnl;

/// Creates TAP `name` (persistent), attaches it to `bridge` and sets it up.
/// Without an owner only a process with CAP_NET_ADMIN can open it: right
/// while `bangerd` runs as root and spawns the hypervisor itself. An
/// existing TAP is (re)attached and set up, so a half-made one left by a
/// crash is finished. See [`create_tap_owned`].
pub fn create_tap(name: &str, bridge: &str) -> Result<(), NetError> {
    create_tap_owned(name, bridge, None)
}

/// [`create_tap`], letting user `owner` open the TAP without privileges
/// (for a hypervisor that runs as the owner user while root makes the
/// devices). An existing TAP keeps the owner it was made with.
pub fn create_tap_owned(name: &str, bridge: &str, owner: Option<u32>) -> Result<(), NetError> {
    validate_ifname(name)?;
    validate_ifname(bridge)?;
    let mut rtnl = open()?;
    let links = rtnl
        .links()
        .map_err(|e| NetError::netlink("listing network interfaces", e))?;
    let bridge_link = links
        .iter()
        .find(|l| l.name == bridge && l.is_bridge())
        .ok_or_else(|| NetError::BridgeMissing {
            name: bridge.to_string(),
        })?
        .clone();
    let tap = match links.iter().find(|l| l.name == name) {
        Some(link) if !link.is_tap() => {
            return Err(NetError::NotATap {
                name: name.to_string(),
                kind: link.kind_name(),
            });
        }
        Some(link) => link.clone(),
        None => {
            add_tap(name, owner)?;
            rtnl.link(name)
                .map_err(|e| NetError::netlink("listing network interfaces", e))?
                .ok_or_else(|| {
                    NetError::netlink(
                        format!("finding TAP {name} after creating it"),
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    )
                })?
        }
    };
    if tap.controller != Some(bridge_link.index) {
        rtnl.set_controller(tap.index, bridge_link.index)
            .map_err(|e| NetError::netlink(format!("attaching TAP {name} to {bridge}"), e))?;
    }
    if !tap.up {
        rtnl.set_up(tap.index)
            .map_err(|e| NetError::netlink(format!("bringing up TAP {name}"), e))?;
    }
    Ok(())
}

/// Persistent TAPs are made by `ip tuntap`: the kernel refuses to create
/// tun/tap devices over rtnetlink ("not supported"), and the alternative,
/// TUNSETIFF and TUNSETPERSIST ioctls on /dev/net/tun, needs `unsafe`
/// this crate denies.
fn add_tap(name: &str, owner: Option<u32>) -> Result<(), NetError> {
    let ip = require_tool("ip", "iproute2")?;
    let owner = owner.map(|uid| uid.to_string());
    let mut args = vec!["tuntap", "add", "dev", name, "mode", "tap"];
    if let Some(uid) = &owner {
        args.extend(["user", uid.as_str()]);
    }
    run(&ip, &args, None).map(drop)
}

/// Deletes TAP `name`; Ok when there is none. Refuses to delete an
/// interface of that name that is not a TAP.
pub fn delete_tap(name: &str) -> Result<(), NetError> {
    validate_ifname(name)?;
    let mut rtnl = open()?;
    let Some(link) = rtnl
        .link(name)
        .map_err(|e| NetError::netlink("listing network interfaces", e))?
    else {
        return Ok(());
    };
    if !link.is_tap() {
        return Err(NetError::NotATap {
            name: name.to_string(),
            kind: link.kind_name(),
        });
    }
    match rtnl.delete_link(link.index) {
        Ok(()) => Ok(()),
        // Gone in between (another teardown): what we wanted.
        Err(e) if e.raw_os_error() == Some(19) => Ok(()), // ENODEV
        Err(e) => Err(NetError::netlink(format!("deleting TAP {name}"), e)),
    }
}

/// Whether a TAP called `name` exists. False also when the interfaces
/// cannot be listed or the name belongs to something else.
pub fn tap_exists(name: &str) -> bool {
    Rtnl::open()
        .and_then(|mut r| r.link(name))
        .ok()
        .flatten()
        .is_some_and(|l| l.is_tap())
}

fn open() -> Result<Rtnl, NetError> {
    Rtnl::open().map_err(|e| NetError::netlink("opening a netlink socket", e))
}
