//! bangerd's `.vm` DNS server: a UDP socket, the table of names to
//! addresses, and the loop between them. The zone's answers come from
//! `banger_network::dns`; this module owns the socket and the table.
//!
//! The table is derived from the store, never patched by hand: every VM
//! state change (and reconcile at start) rebuilds it from the VM records,
//! so a VM resolves exactly while its hypervisor runs ([`records_of`]).
//! UDP only: answers are a few dozen bytes, never truncated, so no client
//! has a reason to retry over TCP.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use banger_model::VmRecord;
use banger_network::dns::{self, RateLimit, Reply};
use tokio::net::UdpSocket;

/// Names (lowercase VM names, without `.vm`) to addresses.
#[derive(Debug, Default)]
pub struct DnsRecords {
    table: RwLock<HashMap<String, Ipv4Addr>>,
}

impl DnsRecords {
    pub fn replace(&self, table: HashMap<String, Ipv4Addr>) {
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = table;
    }

    pub fn get(&self, name: &str) -> Option<Ipv4Addr> {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
    }
}

/// The names that resolve: VMs whose hypervisor runs (a handle is
/// recorded from the moment it starts until it is gone: starting,
/// running, stopping, or left running after a failed boot).
pub fn records_of(vms: &[VmRecord]) -> HashMap<String, Ipv4Addr> {
    vms.iter()
        .filter(|vm| vm.runtime.is_some())
        .filter_map(|vm| {
            let ip = vm.ip.as_deref()?.parse().ok()?;
            Some((vm.name.to_string(), ip))
        })
        .collect()
}

/// Binds the server's socket. `IP_FREEBIND`: the bridge address exists
/// only once the first VM has made the bridge, and the server must be
/// listening by then without a restart.
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_freebind_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Answers queries on `socket` from `records` until the task is dropped.
/// Nothing a sender does ends it: malformed, oversized and flooding
/// queries are answered with an error or dropped.
pub async fn serve(socket: UdpSocket, records: Arc<DnsRecords>) {
    let mut limit = RateLimit::default();
    // Larger than any query answered, so an oversized one is seen whole
    // (and dropped) rather than cut to a plausible prefix.
    let mut buf = vec![0u8; 4096];
    let mut dropped: u64 = 0;
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                // ICMP errors from earlier replies surface here on Linux;
                // they concern one peer, not the socket.
                tracing::debug!(error = %e, "dns: receive error");
                continue;
            }
        };
        if !limit.allow(peer.ip(), Instant::now()) {
            dropped += 1;
            if dropped.is_power_of_two() {
                tracing::warn!(peer = %peer, dropped, "dns: rate limit exceeded, dropping queries");
            }
            continue;
        }
        match dns::answer(&buf[..n], |name| records.get(name)) {
            Reply::Send(bytes) => {
                if let Err(e) = socket.send_to(&bytes, peer).await {
                    tracing::debug!(peer = %peer, error = %e, "dns: cannot answer");
                }
            }
            Reply::Drop(why) => tracing::debug!(peer = %peer, why, "dns: dropped a datagram"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_model::{Size, VmName, VmState};

    fn vm(name: &str, ip: Option<&str>, running: bool) -> VmRecord {
        VmRecord {
            name: VmName::parse(name).unwrap(),
            image: "i".into(),
            kernel: "k".into(),
            state: if running {
                VmState::Running
            } else {
                VmState::Stopped
            },
            vcpu: 1,
            memory_mib: 512,
            disk_size: Size::from_gib(1),
            nat: false,
            ip: ip.map(str::to_string),
            mac: String::new(),
            tap: String::new(),
            system_uuid: String::new(),
            work_uuid: String::new(),
            runtime: running.then(|| serde_json::json!({"pid": 1})),
            last_error: None,
            created_at: 0,
            ephemeral: false,
        }
    }

    #[test]
    fn only_vms_whose_hypervisor_runs_resolve() {
        let table = records_of(&[
            vm("web", Some("172.16.0.5"), true),
            vm("db", Some("172.16.0.6"), false),
            vm("odd", Some("not-an-ip"), true),
            vm("none", None, true),
        ]);
        assert_eq!(table.len(), 1);
        assert_eq!(table["web"], Ipv4Addr::new(172, 16, 0, 5));
        let records = DnsRecords::default();
        records.replace(table);
        assert_eq!(records.get("web"), Some(Ipv4Addr::new(172, 16, 0, 5)));
        assert_eq!(records.get("db"), None);
    }
}
