//! A small blocking rtnetlink client: list links, addresses and routes;
//! create a bridge; add an address; set a link up, its controller (the
//! bridge), or delete it.
//!
//! Through the rust-netlink message crates and their blocking socket, as
//! banger-init does: typed messages, no `unsafe`, and no async runtime in
//! a library the daemon calls from `spawn_blocking`.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use std::io;

/// IFLA_TUN_TYPE inside a tun device's IFLA_INFO_DATA, and its TAP value
/// (IFF_TAP); netlink-packet-route leaves tun attributes unparsed.
const IFLA_TUN_TYPE: u16 = 3;
const IFF_TAP: u8 = 2;
const RT_TABLE_LOCAL: u32 = 255;

/// One network interface, as far as banger cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The rtnetlink kind ("bridge", "tun", "dummy", ...); `None` for
    /// physical devices and loopback.
    pub kind: Option<String>,
    /// For a tun device: whether it is a TAP (`None` when the kernel did
    /// not say).
    pub tap: Option<bool>,
    /// The bridge (or bond) this link is enslaved to.
    pub controller: Option<u32>,
    pub up: bool,
}

impl Link {
    pub fn kind_name(&self) -> String {
        self.kind.clone().unwrap_or_else(|| "device".into())
    }

    pub fn is_bridge(&self) -> bool {
        self.kind.as_deref() == Some("bridge")
    }

    pub fn is_tap(&self) -> bool {
        self.kind.as_deref() == Some("tun") && self.tap != Some(false)
    }
}

/// One IPv4 address on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub address: Ipv4Addr,
    pub prefix: u8,
}

/// One IPv4 route outside the local table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Addr,
    pub prefix: u8,
    /// The output interface; `None` for multipath, blackhole and
    /// unreachable routes.
    pub oif: Option<u32>,
}

pub struct Rtnl {
    socket: Socket,
    sequence: u32,
}

impl Rtnl {
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl {
            socket,
            sequence: 0,
        })
    }

    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let replies = self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link_from(link)),
                _ => None,
            })
            .collect())
    }

    pub fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    pub fn addresses(&mut self) -> io::Result<Vec<Address>> {
        let mut request = AddressMessage::default();
        request.header.family = AddressFamily::Inet;
        let replies = self.dump(RouteNetlinkMessage::GetAddress(request))?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(msg) = reply else {
                continue;
            };
            if msg.header.family != AddressFamily::Inet {
                continue;
            }
            // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the
            // peer on point-to-point links); fall back to IFA_ADDRESS.
            let mut local = None;
            let mut address = None;
            for attr in &msg.attributes {
                match attr {
                    AddressAttribute::Local(IpAddr::V4(a)) => local = Some(*a),
                    AddressAttribute::Address(IpAddr::V4(a)) => address = Some(*a),
                    _ => {}
                }
            }
            if let Some(a) = local.or(address) {
                out.push(Address {
                    index: msg.header.index,
                    address: a,
                    prefix: msg.header.prefix_len,
                });
            }
        }
        Ok(out)
    }

    pub fn routes(&mut self) -> io::Result<Vec<Route>> {
        let mut request = RouteMessage::default();
        request.header.address_family = AddressFamily::Inet;
        let replies = self.dump(RouteNetlinkMessage::GetRoute(request))?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewRoute(msg) = reply else {
                continue;
            };
            if msg.header.address_family != AddressFamily::Inet {
                continue;
            }
            let mut table = u32::from(msg.header.table);
            let mut destination = Ipv4Addr::UNSPECIFIED;
            let mut oif = None;
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => destination = *d,
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            // The local table mirrors the addresses (checked on their own)
            // plus broadcast entries; local/broadcast/throw routes anywhere
            // carry no traffic to a subnet.
            if table == RT_TABLE_LOCAL
                || matches!(
                    msg.header.kind,
                    RouteType::Local | RouteType::Broadcast | RouteType::Throw
                )
            {
                continue;
            }
            out.push(Route {
                destination,
                prefix: msg.header.destination_prefix_length,
                oif,
            });
        }
        Ok(out)
    }

    pub fn add_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    pub fn add_address(&mut self, index: u32, address: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(address)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(address)));
        if prefix < 31 {
            let mask = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
            let broadcast = Ipv4Addr::from(u32::from(address) | mask);
            msg.attributes.push(AddressAttribute::Broadcast(broadcast));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
    }

    pub fn set_controller(&mut self, index: u32, controller: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Controller(controller));
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
    }

    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(msg), 0)
    }

    fn send(&mut self, payload: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut msg = NetlinkMessage::from(payload);
        msg.header.flags = NLM_F_REQUEST | flags;
        msg.header.sequence_number = self.sequence;
        msg.finalize();
        let mut buf = vec![0u8; msg.header.length as usize];
        msg.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        Ok(self.sequence)
    }

    /// Reads replies to request `sequence` until `done` says to stop,
    /// handing each to `each`; netlink error payloads become io errors.
    fn receive(
        &mut self,
        sequence: u32,
        mut each: impl FnMut(NetlinkPayload<RouteNetlinkMessage>) -> io::Result<bool>,
    ) -> io::Result<()> {
        loop {
            let (buf, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset < buf.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..])
                    .map_err(|e| io::Error::other(format!("bad netlink reply: {e}")))?;
                let length = msg.header.length as usize;
                if length == 0 {
                    return Err(io::Error::other("bad netlink reply: zero length"));
                }
                offset += (length + 3) & !3;
                if msg.header.sequence_number != sequence {
                    continue;
                }
                if let NetlinkPayload::Error(e) = &msg.payload
                    && let Some(code) = e.code
                {
                    return Err(io::Error::from_raw_os_error(-code.get()));
                }
                if !each(msg.payload)? {
                    return Ok(());
                }
            }
        }
    }

    fn request(&mut self, payload: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let sequence = self.send(payload, NLM_F_ACK | flags)?;
        self.receive(sequence, |payload| match payload {
            NetlinkPayload::Error(_) => Ok(false), // an ACK (code None)
            _ => Ok(true),
        })
    }

    fn dump(&mut self, payload: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let sequence = self.send(payload, NLM_F_DUMP)?;
        let mut out = Vec::new();
        self.receive(sequence, |payload| match payload {
            NetlinkPayload::Done(_) => Ok(false),
            NetlinkPayload::InnerMessage(m) => {
                out.push(m);
                Ok(true)
            }
            _ => Ok(true),
        })?;
        Ok(out)
    }
}

fn link_from(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        tap: None,
        controller: None,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Controller(c) => link.controller = Some(c),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                        LinkInfo::Data(InfoData::Tun(nlas)) => {
                            link.tap = tun_is_tap(&nlas);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn tun_is_tap(nlas: &[netlink_packet_route::link::InfoTun]) -> Option<bool> {
    use netlink_packet_core::Nla;
    nlas.iter().find(|n| n.kind() == IFLA_TUN_TYPE).map(|n| {
        let mut value = vec![0u8; n.value_len()];
        n.emit_value(&mut value);
        value.first() == Some(&IFF_TAP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::DefaultNla;
    use netlink_packet_route::link::InfoTun;

    fn tun_link(attrs: Vec<InfoTun>) -> Link {
        let mut msg = LinkMessage::default();
        msg.header.index = 7;
        msg.header.flags = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName("bgr0".into()));
        msg.attributes.push(LinkAttribute::Controller(3));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Tun),
            LinkInfo::Data(InfoData::Tun(attrs)),
        ]));
        link_from(msg)
    }

    #[test]
    fn a_tap_is_told_from_a_tun_by_ifla_tun_type() {
        // IFLA_TUN_OWNER (1) comes first in the kernel's dump; its value
        // must not be read as the type.
        let owner = InfoTun::Other(DefaultNla::new(1, 1000u32.to_ne_bytes().to_vec()));
        let tap = tun_link(vec![
            owner.clone(),
            InfoTun::Other(DefaultNla::new(3, vec![2])),
        ]);
        assert_eq!(tap.name, "bgr0");
        assert_eq!(tap.controller, Some(3));
        assert!(tap.up);
        assert!(tap.is_tap());
        assert!(!tap.is_bridge());
        let tun = tun_link(vec![owner, InfoTun::Other(DefaultNla::new(3, vec![1]))]);
        assert!(!tun.is_tap());
        assert_eq!(tun.kind_name(), "tun");
        // An older kernel that does not say: trust the kind.
        assert!(tun_link(vec![]).is_tap());
    }
}
