//! The `.vm` names the DNS server answers, derived from the store, never
//! patched by hand: every VM state change (and reconcile at start)
//! rebuilds the table from the VM records, so a VM resolves exactly while
//! its hypervisor runs ([`records_of`]). The daemon owns the server's
//! socket and its loop.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::RwLock;

use banger_model::VmRecord;

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
            boot_path: None,
            template_build: None,
            workspace: None,
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
