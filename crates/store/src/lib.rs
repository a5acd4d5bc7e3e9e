//! banger's state store: one SQLite database in WAL mode, its schema moved
//! forward by numbered migrations, holding the VM, image and kernel records.
//!
//! The store knows rows, not files: it never touches artifacts on disk or
//! the host. Calls are blocking; the daemon runs them off its async
//! executor. Callers journal through it: a record is written before the
//! thing it describes is created, so reconcile can finish or undo it.
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use banger_model::{ImageRecord, KernelRecord, Size, VmName, VmRecord, VmState};
use rusqlite::{Connection, OptionalExtension, Row, params};
use rusqlite_migration::{M, Migrations};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "cannot migrate the state database {path}: {source} \
         (was it written by a newer banger? use that version, or move the file aside)"
    )]
    Migrate {
        path: PathBuf,
        source: rusqlite_migration::Error,
    },
    #[error("{kind} {name:?} already exists")]
    Exists { kind: &'static str, name: String },
    #[error("state database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database holds an invalid {what}: {value:?}")]
    Corrupt { what: &'static str, value: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(include_str!("migrations/0001_initial.sql"))])
}

pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to
    /// date. A database from a newer banger is refused, not downgraded.
    pub fn open(path: &Path) -> Result<Self> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        migrations()
            .to_latest(&mut conn)
            .map_err(|source| StoreError::Migrate {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (statements are atomic), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    // --- VMs ---

    pub fn insert_vm(&self, vm: &VmRecord) -> Result<()> {
        let disk = i64::try_from(vm.disk_size.bytes()).map_err(|_| StoreError::Corrupt {
            what: "disk size",
            value: vm.disk_size.to_string(),
        })?;
        let res = self.conn().execute(
            "INSERT INTO vms (name, image, state, vcpu, memory_mib, disk_size_bytes, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
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
        let mut stmt = conn.prepare(
            "SELECT name, image, state, vcpu, memory_mib, disk_size_bytes, created_at
             FROM vms ORDER BY name",
        )?;
        let rows = stmt.query_map([], vm_from_row)?;
        rows.map(|r| r.map_err(StoreError::from).and_then(|r| r))
            .collect()
    }

    pub fn get_vm(&self, name: &str) -> Result<Option<VmRecord>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT name, image, state, vcpu, memory_mib, disk_size_bytes, created_at
                 FROM vms WHERE name = ?1",
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

    // --- images ---

    pub fn insert_image(&self, image: &ImageRecord) -> Result<()> {
        let res = self.conn().execute(
            "INSERT INTO images (name, kernel, source, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![image.name, image.kernel, image.source, image.created_at],
        );
        unique_violation(res, "image", &image.name)
    }

    pub fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, kernel, source, created_at FROM images ORDER BY name")?;
        let rows = stmt.query_map([], image_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn get_image(&self, name: &str) -> Result<Option<ImageRecord>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name, kernel, source, created_at FROM images WHERE name = ?1",
                [name],
                image_from_row,
            )
            .optional()?)
    }

    // --- kernels ---

    pub fn insert_kernel(&self, kernel: &KernelRecord) -> Result<()> {
        let res = self.conn().execute(
            "INSERT INTO kernels (name, version, created_at) VALUES (?1, ?2, ?3)",
            params![kernel.name, kernel.version, kernel.created_at],
        );
        unique_violation(res, "kernel", &kernel.name)
    }

    pub fn list_kernels(&self) -> Result<Vec<KernelRecord>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, version, created_at FROM kernels ORDER BY name")?;
        let rows = stmt.query_map([], kernel_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn get_kernel(&self, name: &str) -> Result<Option<KernelRecord>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name, version, created_at FROM kernels WHERE name = ?1",
                [name],
                kernel_from_row,
            )
            .optional()?)
    }
}

fn unique_violation(res: rusqlite::Result<usize>, kind: &'static str, name: &str) -> Result<()> {
    match res {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            Err(StoreError::Exists {
                kind,
                name: name.to_string(),
            })
        }
        Err(e) => Err(e.into()),
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

fn image_from_row(row: &Row<'_>) -> rusqlite::Result<ImageRecord> {
    Ok(ImageRecord {
        name: row.get(0)?,
        kernel: row.get(1)?,
        source: row.get(2)?,
        created_at: row.get(3)?,
    })
}

fn kernel_from_row(row: &Row<'_>) -> rusqlite::Result<KernelRecord> {
    Ok(KernelRecord {
        name: row.get(0)?,
        version: row.get(1)?,
        created_at: row.get(2)?,
    })
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
    fn migrates_and_uses_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("banger.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 1);
        let mode: String = store
            .conn()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(store);
        // Reopening an up-to-date database is a no-op.
        assert_eq!(Store::open(&path).unwrap().schema_version().unwrap(), 1);
    }

    #[test]
    fn refuses_database_from_newer_banger() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("banger.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Store::open(&path).err().expect("newer schema refused");
        assert!(matches!(err, StoreError::Migrate { .. }), "{err}");
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

    #[test]
    fn images_need_their_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let image = ImageRecord {
            name: "debian-bookworm".into(),
            kernel: "6.1-cloud".into(),
            source: "recipe:abc".into(),
            created_at: 0,
        };
        assert!(store.insert_image(&image).is_err(), "foreign key enforced");
        store
            .insert_kernel(&KernelRecord {
                name: "6.1-cloud".into(),
                version: "6.1.0-37-cloud-amd64".into(),
                created_at: 0,
            })
            .unwrap();
        store.insert_image(&image).unwrap();
        assert_eq!(store.list_images().unwrap(), vec![image.clone()]);
        assert_eq!(store.get_image("debian-bookworm").unwrap(), Some(image));
        assert_eq!(store.list_kernels().unwrap().len(), 1);
        assert!(store.get_kernel("6.1-cloud").unwrap().is_some());
    }
}
