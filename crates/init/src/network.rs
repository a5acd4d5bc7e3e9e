//! The guest's network from the command line: links up, the address, the
//! default route, over rtnetlink; then `/etc/resolv.conf`, `/etc/hostname`
//! and the kernel hostname.
//!
//! rtnetlink through the rust-netlink message crates with their blocking
//! socket: typed messages and no `unsafe` here, unlike the SIOCSIF* ioctls,
//! and no async runtime in PID 1, unlike the `rtnetlink` crate.

use std::fs;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::cmdline::{NetworkParams, broadcast};
use crate::failure::{Context, Failure};

const POLL: Duration = Duration::from_millis(10);

/// Brings up `lo` and configures `net`'s interface, waiting up to
/// `timeout` for the interface to appear.
pub fn configure(net: &NetworkParams, timeout: Duration) -> Result<(), Failure> {
    let iface = wait_for_interface(&net.iface, timeout)?;
    let rtnl = Rtnl::open().context(|| "opening a netlink socket".into())?;
    let lo = interface_index("lo").context(|| "finding the loopback interface".into())?;
    rtnl.set_up(lo)
        .context(|| "bringing up the loopback interface".into())?;
    rtnl.set_up(iface)
        .context(|| format!("bringing up {}", net.iface))?;
    rtnl.add_address(iface, net.address, net.prefix)
        .context(|| format!("adding {}/{} to {}", net.address, net.prefix, net.iface))?;
    if let Some(gw) = net.gateway {
        rtnl.add_default_route(iface, gw)
            .context(|| format!("adding the default route via {gw}"))?;
    }
    Ok(())
}

fn wait_for_interface(name: &str, timeout: Duration) -> Result<u32, Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        match interface_index(name) {
            Ok(index) => return Ok(index),
            Err(e) if e.kind() == ErrorKind::NotFound && Instant::now() < deadline => sleep(POLL),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let present: Vec<String> = fs::read_dir("/sys/class/net")
                    .map(|d| {
                        d.filter_map(Result::ok)
                            .filter_map(|e| e.file_name().into_string().ok())
                            .collect()
                    })
                    .unwrap_or_default();
                return Err(Failure::new(
                    format!("waiting for network interface {name}"),
                    format!(
                        "not there after {:.1}s (interfaces: {})",
                        timeout.as_secs_f64(),
                        present.join(" ")
                    ),
                ));
            }
            Err(e) => return Err(Failure::new(format!("finding interface {name}"), e)),
        }
    }
}

fn interface_index(name: &str) -> std::io::Result<u32> {
    let text = fs::read_to_string(Path::new("/sys/class/net").join(name).join("ifindex"))?;
    text.trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("bad ifindex {text:?}")))
}

/// A blocking rtnetlink socket that sends one request at a time and waits
/// for its acknowledgement.
struct Rtnl {
    socket: Socket,
}

impl Rtnl {
    fn open() -> std::io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { socket })
    }

    fn set_up(&self, index: u32) -> std::io::Result<()> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(link), 0)
    }

    fn add_address(&self, index: u32, address: Ipv4Addr, prefix: u8) -> std::io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(address)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(address)));
        if prefix < 31 {
            msg.attributes
                .push(AddressAttribute::Broadcast(broadcast(address, prefix)));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    fn add_default_route(&self, index: u32, gateway: Ipv4Addr) -> std::io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        msg.attributes.push(RouteAttribute::Oif(index));
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    fn request(&self, payload: RouteNetlinkMessage, flags: u16) -> std::io::Result<()> {
        let mut msg = NetlinkMessage::from(payload);
        msg.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        msg.header.sequence_number = 1;
        msg.finalize();
        let mut buf = vec![0u8; msg.header.length as usize];
        msg.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut reply = vec![0u8; 8192];
        let n = self.socket.recv(&mut &mut reply[..], 0)?;
        let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[..n])
            .map_err(|e| std::io::Error::other(format!("bad netlink reply: {e}")))?;
        match reply.payload {
            NetlinkPayload::Error(e) => match e.code {
                None => Ok(()),
                Some(code) => Err(std::io::Error::from_raw_os_error(-code.get())),
            },
            other => Err(std::io::Error::other(format!(
                "unexpected netlink reply {other:?}"
            ))),
        }
    }
}

/// `/etc/resolv.conf` for the given nameservers.
pub fn resolv_conf(dns: &[IpAddr]) -> String {
    let mut text = String::from("# written by banger-init from the kernel command line\n");
    for server in dns {
        text.push_str(&format!("nameserver {server}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lists_nameservers_in_order() {
        let text = resolv_conf(&["172.16.0.1".parse().unwrap(), "1.1.1.1".parse().unwrap()]);
        assert!(
            text.ends_with("nameserver 172.16.0.1\nnameserver 1.1.1.1\n"),
            "{text}"
        );
    }
}
