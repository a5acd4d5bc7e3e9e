//! The guest's interfaces over rtnetlink, shared by banger-init (the
//! network from the kernel command line at boot) and the agent (a
//! resumed guest's new MAC, address and route): list links and
//! addresses, set a link up or down or its MAC, add and flush IPv4
//! addresses and default routes.
//!
//! Through the rust-netlink message crates with their blocking socket:
//! typed messages and no `unsafe`, unlike the SIOCSIF* ioctls, and no
//! async runtime, which PID 1 has none of, unlike the `rtnetlink` crate.
//! The socket acts in the network namespace of the thread that opened
//! it. Replies come from the kernel; they are still parsed, never
//! trusted to be well formed.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// One interface, as far as the guest's identity cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Its hardware address (six bytes for Ethernet; none for some
    /// virtual devices).
    pub mac: Option<Vec<u8>>,
    pub up: bool,
}

/// The subnet's broadcast address.
pub fn broadcast(address: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(u32::from(address) | host_bits)
}

/// A blocking rtnetlink socket that sends one request at a time and
/// waits for its acknowledgement (or the end of its dump).
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

    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        self.set_flags(index, LinkFlags::Up)
    }

    pub fn set_down(&mut self, index: u32) -> io::Result<()> {
        self.set_flags(index, LinkFlags::empty())
    }

    fn set_flags(&mut self, index: u32, flags: LinkFlags) -> io::Result<()> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = flags;
        link.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(link), 0)
    }

    /// Sets the link's hardware address (most drivers want the link down
    /// for it).
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> io::Result<()> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.request(RouteNetlinkMessage::SetLink(link), 0)
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
            msg.attributes
                .push(AddressAttribute::Broadcast(broadcast(address, prefix)));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Removes every IPv4 address of the link; how many there were.
    pub fn flush_addresses(&mut self, index: u32) -> io::Result<usize> {
        let mut request = AddressMessage::default();
        request.header.family = AddressFamily::Inet;
        let mut flushed = 0;
        for reply in self.dump(RouteNetlinkMessage::GetAddress(request))? {
            let RouteNetlinkMessage::NewAddress(msg) = reply else {
                continue;
            };
            if msg.header.family != AddressFamily::Inet || msg.header.index != index {
                continue;
            }
            // The dumped message names the address exactly. Removing a
            // primary address takes its secondaries with it: those are
            // already gone when their turn comes.
            match self.request(RouteNetlinkMessage::DelAddress(msg), 0) {
                Ok(()) => flushed += 1,
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(flushed)
    }

    /// Removes every IPv4 default route of the main table, through any
    /// link (a new default route at the same metric would be refused
    /// while one is left); how many there were.
    pub fn flush_default_routes(&mut self) -> io::Result<usize> {
        let mut request = RouteMessage::default();
        request.header.address_family = AddressFamily::Inet;
        let mut flushed = 0;
        for reply in self.dump(RouteNetlinkMessage::GetRoute(request))? {
            let RouteNetlinkMessage::NewRoute(msg) = reply else {
                continue;
            };
            if !is_main_default(&msg) {
                continue;
            }
            // Taking a link down already removes the IPv4 routes through
            // it: those are gone by now.
            match self.request(RouteNetlinkMessage::DelRoute(msg), 0) {
                Ok(()) => flushed += 1,
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(flushed)
    }

    pub fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
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

    /// Reads the replies to request `sequence`, handing each to `each`
    /// until it says to stop; a netlink error becomes the io error of its
    /// errno.
    fn receive(
        &mut self,
        sequence: u32,
        mut each: impl FnMut(NetlinkPayload<RouteNetlinkMessage>) -> bool,
    ) -> io::Result<()> {
        loop {
            let (buf, _) = self.socket.recv_from_full()?;
            if buf.is_empty() {
                return Err(io::Error::other("the netlink socket was closed"));
            }
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
                if !each(msg.payload) {
                    return Ok(());
                }
            }
        }
    }

    fn request(&mut self, payload: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let sequence = self.send(payload, NLM_F_ACK | flags)?;
        // An ACK is an error payload without a code.
        self.receive(sequence, |payload| {
            !matches!(payload, NetlinkPayload::Error(_))
        })
    }

    fn dump(&mut self, payload: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let sequence = self.send(payload, NLM_F_DUMP)?;
        let mut out = Vec::new();
        self.receive(sequence, |payload| match payload {
            NetlinkPayload::Done(_) => false,
            NetlinkPayload::InnerMessage(m) => {
                out.push(m);
                true
            }
            _ => true,
        })?;
        Ok(out)
    }
}

fn link_from(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Address(mac) => link.mac = Some(mac),
            _ => {}
        }
    }
    link
}

/// An IPv4 unicast route to 0.0.0.0/0 in the main table.
fn is_main_default(msg: &RouteMessage) -> bool {
    let mut table = u32::from(msg.header.table);
    for attr in &msg.attributes {
        if let RouteAttribute::Table(t) = attr {
            table = *t;
        }
    }
    msg.header.address_family == AddressFamily::Inet
        && msg.header.destination_prefix_length == 0
        && msg.header.kind == RouteType::Unicast
        && table == u32::from(RouteHeader::RT_TABLE_MAIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_of_a_subnet() {
        assert_eq!(
            broadcast(Ipv4Addr::new(172, 16, 0, 5), 24),
            Ipv4Addr::new(172, 16, 0, 255)
        );
        assert_eq!(
            broadcast(Ipv4Addr::new(10, 1, 2, 3), 8),
            Ipv4Addr::new(10, 255, 255, 255)
        );
        assert_eq!(
            broadcast(Ipv4Addr::new(10, 1, 2, 3), 32),
            Ipv4Addr::new(10, 1, 2, 3)
        );
        assert_eq!(
            broadcast(Ipv4Addr::new(10, 1, 2, 3), 0),
            Ipv4Addr::BROADCAST
        );
    }

    #[test]
    fn only_main_table_ipv4_defaults_are_flushed() {
        let route = |prefix: u8, table: u8, kind: RouteType| {
            let mut msg = RouteMessage::default();
            msg.header.address_family = AddressFamily::Inet;
            msg.header.destination_prefix_length = prefix;
            msg.header.table = table;
            msg.header.kind = kind;
            msg
        };
        assert!(is_main_default(&route(
            0,
            RouteHeader::RT_TABLE_MAIN,
            RouteType::Unicast
        )));
        assert!(!is_main_default(&route(
            24,
            RouteHeader::RT_TABLE_MAIN,
            RouteType::Unicast
        )));
        assert!(!is_main_default(&route(0, 255, RouteType::Unicast)));
        assert!(!is_main_default(&route(
            0,
            RouteHeader::RT_TABLE_MAIN,
            RouteType::Unreachable
        )));
        // A table above 255 is only in the attribute.
        let mut high = route(0, RouteHeader::RT_TABLE_MAIN, RouteType::Unicast);
        high.attributes.push(RouteAttribute::Table(1000));
        assert!(!is_main_default(&high));
    }
}
