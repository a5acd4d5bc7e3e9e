//! VM rows: the spec, the lease, the disks' UUIDs, and the runtime handle
//! of a running VM.

use banger_model::{Size, VmName, VmRecord, VmState};
use rusqlite::{OptionalExtension, Row, params};

use crate::{Result, Store, StoreError, unique_violation};

const COLUMNS: &str = "name, image, kernel, state, vcpu, memory_mib, disk_size_bytes, nat, ip, \
                       mac, tap, system_uuid, work_uuid, runtime, last_error, created_at, \
                       ephemeral, boot_path, template_build, workspace";

impl Store {
    /// Records a VM (and so leases its address). A taken name or address
    /// is refused.
    pub fn insert_vm(&self, vm: &VmRecord) -> Result<()> {
        let res = self.conn().execute(
            &format!(
                "INSERT INTO vms ({COLUMNS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"
            ),
            params![
                vm.name.as_str(),
                vm.image,
                vm.kernel,
                vm.state.as_str(),
                vm.vcpu,
                vm.memory_mib,
                disk_bytes(vm.disk_size)?,
                vm.nat,
                vm.ip,
                vm.mac,
                vm.tap,
                vm.system_uuid,
                vm.work_uuid,
                runtime_json(&vm.runtime),
                vm.last_error,
                vm.created_at,
                vm.ephemeral,
                vm.boot_path,
                vm.template_build,
                vm.workspace
                    .as_ref()
                    .and_then(|w| serde_json::to_string(w).ok())
            ],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    && msg.contains("vms.ip") =>
            {
                Err(StoreError::IpTaken {
                    ip: vm.ip.clone().unwrap_or_default(),
                })
            }
            other => unique_violation(other, "VM", vm.name.as_str()),
        }
    }

    pub fn list_vms(&self) -> Result<Vec<VmRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM vms ORDER BY name"))?;
        let rows = stmt.query_map([], vm_from_row)?;
        rows.map(|r| r.map_err(StoreError::from).and_then(|r| r))
            .collect()
    }

    pub fn get_vm(&self, name: &str) -> Result<Option<VmRecord>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM vms WHERE name = ?1"),
                [name],
                vm_from_row,
            )
            .optional()?;
        row.transpose()
    }

    pub fn vm_exists(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM vms WHERE name = ?1", [name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Names of the VMs booting from `image`.
    pub fn vms_using_image(&self, image: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name FROM vms WHERE image = ?1 ORDER BY name")?;
        let rows = stmt.query_map([image], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every leased guest address.
    pub fn leased_ips(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT ip FROM vms WHERE ip IS NOT NULL")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records a state change, the runtime handle (set while running,
    /// cleared when stopped) and the last error.
    pub fn set_vm_state(
        &self,
        name: &str,
        state: VmState,
        runtime: &Option<serde_json::Value>,
        last_error: Option<&str>,
    ) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE vms SET state = ?2, runtime = ?3, last_error = ?4 WHERE name = ?1",
            params![name, state.as_str(), runtime_json(runtime), last_error],
        )?;
        found(n, name)
    }

    /// Changes the spec of a (stopped) VM.
    pub fn set_vm_spec(
        &self,
        name: &str,
        vcpu: u32,
        memory_mib: u64,
        disk_size: Size,
        nat: bool,
    ) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE vms SET vcpu = ?2, memory_mib = ?3, disk_size_bytes = ?4, nat = ?5 \
             WHERE name = ?1",
            params![name, vcpu, memory_mib, disk_bytes(disk_size)?, nat],
        )?;
        found(n, name)
    }

    /// Records how the VM last started (`VmRecord::boot_path`).
    pub fn set_vm_boot_path(&self, name: &str, path: &str) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE vms SET boot_path = ?2 WHERE name = ?1",
            params![name, path],
        )?;
        found(n, name)
    }

    /// Makes a VM durable (or ephemeral again): `vm run --rm` keeps a VM
    /// whose first boot wedged for `vm logs`, and then it is no longer
    /// its client's to delete.
    pub fn set_vm_ephemeral(&self, name: &str, ephemeral: bool) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE vms SET ephemeral = ?2 WHERE name = ?1",
            params![name, ephemeral],
        )?;
        found(n, name)
    }

    /// Deletes a VM's row, releasing its address.
    pub fn delete_vm(&self, name: &str) -> Result<()> {
        let n = self
            .conn()
            .execute("DELETE FROM vms WHERE name = ?1", [name])?;
        found(n, name)
    }
}

fn found(changed: usize, name: &str) -> Result<()> {
    if changed == 0 {
        Err(StoreError::NotFound {
            kind: "VM",
            name: name.to_string(),
        })
    } else {
        Ok(())
    }
}

fn disk_bytes(size: Size) -> Result<i64> {
    i64::try_from(size.bytes()).map_err(|_| StoreError::Corrupt {
        what: "disk size",
        value: size.to_string(),
    })
}

fn runtime_json(runtime: &Option<serde_json::Value>) -> Option<String> {
    runtime.as_ref().map(|v| v.to_string())
}

/// Row decoding that can find invalid data (a hand-edited database) and
/// say so, instead of panicking.
fn vm_from_row(row: &Row<'_>) -> rusqlite::Result<Result<VmRecord>> {
    let name: String = row.get(0)?;
    let state: String = row.get(3)?;
    let disk: i64 = row.get(6)?;
    let runtime: Option<String> = row.get(13)?;
    let workspace: Option<String> = row.get(19)?;
    let decoded = (|| {
        Ok(VmRecord {
            name: VmName::parse(&name).map_err(|_| StoreError::Corrupt {
                what: "VM name",
                value: name.clone(),
            })?,
            image: row.get(1)?,
            kernel: row.get(2)?,
            state: VmState::parse(&state).ok_or(StoreError::Corrupt {
                what: "VM state",
                value: state.clone(),
            })?,
            vcpu: row.get(4)?,
            memory_mib: row.get(5)?,
            disk_size: Size::from_bytes(u64::try_from(disk).map_err(|_| StoreError::Corrupt {
                what: "disk size",
                value: disk.to_string(),
            })?),
            nat: row.get(7)?,
            ip: row.get(8)?,
            mac: row.get(9)?,
            tap: row.get(10)?,
            system_uuid: row.get(11)?,
            work_uuid: row.get(12)?,
            runtime: match runtime {
                Some(text) => {
                    Some(
                        serde_json::from_str(&text).map_err(|_| StoreError::Corrupt {
                            what: "VM runtime",
                            value: text.clone(),
                        })?,
                    )
                }
                None => None,
            },
            last_error: row.get(14)?,
            created_at: row.get(15)?,
            ephemeral: row.get(16)?,
            boot_path: row.get(17)?,
            template_build: row.get(18)?,
            workspace: match workspace {
                Some(text) => {
                    Some(
                        serde_json::from_str(&text).map_err(|_| StoreError::Corrupt {
                            what: "VM workspace",
                            value: text.clone(),
                        })?,
                    )
                }
                None => None,
            },
        })
    })();
    Ok(decoded)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn vm(name: &str, ip: &str) -> VmRecord {
        VmRecord {
            name: VmName::parse(name).unwrap(),
            image: "debian-bookworm".into(),
            kernel: "6.1.0-56-cloud-amd64".into(),
            state: VmState::Stopped,
            vcpu: 2,
            memory_mib: 2048,
            disk_size: Size::from_gib(8),
            nat: false,
            ip: Some(ip.into()),
            mac: "52:54:00:00:00:01".into(),
            tap: format!("bgr{name}"),
            system_uuid: "s".into(),
            work_uuid: "w".into(),
            runtime: None,
            last_error: None,
            created_at: 1_700_000_000,
            ephemeral: false,
            boot_path: None,
            template_build: None,
            workspace: None,
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        (dir, store)
    }

    #[test]
    fn vm_round_trip_and_duplicates() {
        let (_d, store) = store();
        store.insert_vm(&vm("web", "172.16.0.2")).unwrap();
        store.insert_vm(&vm("api", "172.16.0.3")).unwrap();
        let names: Vec<_> = store
            .list_vms()
            .unwrap()
            .into_iter()
            .map(|v| v.name.to_string())
            .collect();
        assert_eq!(names, ["api", "web"]);
        assert_eq!(store.get_vm("web").unwrap(), Some(vm("web", "172.16.0.2")));
        assert_eq!(store.get_vm("nope").unwrap(), None);
        assert!(store.vm_exists("api").unwrap());
        assert_eq!(
            store.vms_using_image("debian-bookworm").unwrap(),
            ["api", "web"]
        );
        let err = store.insert_vm(&vm("web", "172.16.0.9")).unwrap_err();
        assert_eq!(err.to_string(), "VM \"web\" already exists");
        // A workspace disk's record round-trips.
        let mut ws = vm("ws", "172.16.0.4");
        ws.workspace = Some(banger_model::VmWorkspace {
            dir: "repo".into(),
            uuid: "u".into(),
            files: 3,
            bytes: 42,
        });
        store.insert_vm(&ws).unwrap();
        assert_eq!(store.get_vm("ws").unwrap(), Some(ws));
    }

    #[test]
    fn an_address_is_leased_once_and_released_with_its_vm() {
        let (_d, store) = store();
        store.insert_vm(&vm("a", "172.16.0.2")).unwrap();
        let err = store.insert_vm(&vm("b", "172.16.0.2")).unwrap_err();
        assert!(matches!(err, StoreError::IpTaken { .. }), "{err}");
        assert_eq!(store.leased_ips().unwrap(), ["172.16.0.2"]);
        store.delete_vm("a").unwrap();
        assert!(store.leased_ips().unwrap().is_empty());
        store.insert_vm(&vm("b", "172.16.0.2")).unwrap();
        assert!(matches!(
            store.delete_vm("zzz"),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn state_runtime_and_spec_updates() {
        let (_d, store) = store();
        store.insert_vm(&vm("a", "172.16.0.2")).unwrap();
        let handle = serde_json::json!({"backend": "qemu", "pid": 42});
        store
            .set_vm_state("a", VmState::Running, &Some(handle.clone()), None)
            .unwrap();
        let got = store.get_vm("a").unwrap().unwrap();
        assert_eq!(
            (got.state, got.runtime),
            (VmState::Running, Some(handle.clone()))
        );
        // Paused keeps its handle: the process lives on.
        store
            .set_vm_state("a", VmState::Paused, &Some(handle.clone()), None)
            .unwrap();
        let got = store.get_vm("a").unwrap().unwrap();
        assert_eq!((got.state, got.runtime), (VmState::Paused, Some(handle)));
        store
            .set_vm_state("a", VmState::Error, &None, Some("qemu exited"))
            .unwrap();
        let got = store.get_vm("a").unwrap().unwrap();
        assert_eq!(got.last_error.as_deref(), Some("qemu exited"));
        assert_eq!(got.runtime, None);
        store
            .set_vm_spec("a", 4, 4096, Size::from_gib(20), true)
            .unwrap();
        let got = store.get_vm("a").unwrap().unwrap();
        assert_eq!((got.vcpu, got.memory_mib, got.nat), (4, 4096, true));
        assert_eq!(got.disk_size, Size::from_gib(20));
    }

    #[test]
    fn ephemeral_is_kept_and_can_be_cleared() {
        let (_d, store) = store();
        let mut v = vm("tmp", "172.16.0.4");
        v.ephemeral = true;
        store.insert_vm(&v).unwrap();
        store.insert_vm(&vm("keep", "172.16.0.5")).unwrap();
        assert_eq!(store.get_vm("tmp").unwrap(), Some(v));
        assert!(!store.get_vm("keep").unwrap().unwrap().ephemeral);
        store.set_vm_ephemeral("tmp", false).unwrap();
        assert!(!store.get_vm("tmp").unwrap().unwrap().ephemeral);
        assert!(matches!(
            store.set_vm_ephemeral("zzz", true),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn corrupt_rows_are_reported_not_panicked() {
        let (_d, store) = store();
        store
            .conn()
            .execute(
                "INSERT INTO vms (name, image, state, vcpu, memory_mib, disk_size_bytes, created_at) \
                 VALUES ('Bad_Name', 'i', 'running', 1, 1, 1, 0)",
                [],
            )
            .unwrap();
        let err = store.list_vms().unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Corrupt {
                    what: "VM name",
                    ..
                }
            ),
            "{err}"
        );
    }
}
