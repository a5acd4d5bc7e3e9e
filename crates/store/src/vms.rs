//! VM rows.

use banger_model::{Size, VmName, VmRecord, VmState};
use rusqlite::{OptionalExtension, Row, params};

use crate::{Result, Store, StoreError, unique_violation};

const COLUMNS: &str = "name, image, state, vcpu, memory_mib, disk_size_bytes, created_at";

impl Store {
    pub fn insert_vm(&self, vm: &VmRecord) -> Result<()> {
        let disk = i64::try_from(vm.disk_size.bytes()).map_err(|_| StoreError::Corrupt {
            what: "disk size",
            value: vm.disk_size.to_string(),
        })?;
        let res = self.conn().execute(
            &format!("INSERT INTO vms ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                vm.name.as_str(),
                vm.image,
                vm.state.as_str(),
                vm.vcpu,
                vm.memory_mib,
                disk,
                vm.created_at
            ],
        );
        unique_violation(res, "VM", vm.name.as_str())
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
}

/// Row decoding that can find invalid data (a hand-edited database) and
/// say so, instead of panicking.
fn vm_from_row(row: &Row<'_>) -> rusqlite::Result<Result<VmRecord>> {
    let name: String = row.get(0)?;
    let state: String = row.get(2)?;
    let disk: i64 = row.get(5)?;
    let decoded = (|| {
        Ok(VmRecord {
            name: VmName::parse(&name).map_err(|_| StoreError::Corrupt {
                what: "VM name",
                value: name.clone(),
            })?,
            image: row.get(1)?,
            state: VmState::parse(&state).ok_or(StoreError::Corrupt {
                what: "VM state",
                value: state.clone(),
            })?,
            vcpu: row.get(3)?,
            memory_mib: row.get(4)?,
            disk_size: Size::from_bytes(u64::try_from(disk).map_err(|_| StoreError::Corrupt {
                what: "disk size",
                value: disk.to_string(),
            })?),
            created_at: row.get(6)?,
        })
    })();
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str) -> VmRecord {
        VmRecord {
            name: VmName::parse(name).unwrap(),
            image: "debian-bookworm".into(),
            state: VmState::Stopped,
            vcpu: 2,
            memory_mib: 2048,
            disk_size: Size::from_gib(8),
            created_at: 1_700_000_000,
        }
    }

    #[test]
    fn vm_round_trip_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.insert_vm(&vm("web")).unwrap();
        store.insert_vm(&vm("api")).unwrap();
        let names: Vec<_> = store
            .list_vms()
            .unwrap()
            .into_iter()
            .map(|v| v.name.to_string())
            .collect();
        assert_eq!(names, ["api", "web"]);
        assert_eq!(store.get_vm("web").unwrap(), Some(vm("web")));
        assert_eq!(store.get_vm("nope").unwrap(), None);
        assert!(store.vm_exists("api").unwrap());
        assert_eq!(
            store.vms_using_image("debian-bookworm").unwrap(),
            ["api", "web"]
        );
        let err = store.insert_vm(&vm("web")).unwrap_err();
        assert_eq!(err.to_string(), "VM \"web\" already exists");
    }

    #[test]
    fn corrupt_rows_are_reported_not_panicked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store
            .conn()
            .execute(
                "INSERT INTO vms VALUES ('Bad_Name', 'i', 'running', 1, 1, 1, 0)",
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
