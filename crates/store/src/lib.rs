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

use rusqlite::Connection;
use rusqlite_migration::{M, Migrations};

mod objects;
mod vms;

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
    #[error("address {ip} is already leased to another VM")]
    IpTaken { ip: String },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("kernel {kernel:?} is used by image(s) {}: delete them first", images.join(", "))]
    KernelInUse { kernel: String, images: Vec<String> },
    #[error("state database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database holds an invalid {what}: {value:?}")]
    Corrupt { what: &'static str, value: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("migrations/0001_initial.sql")),
        M::up(include_str!("migrations/0002_artifacts.sql")),
        M::up(include_str!("migrations/0003_vm_runtime.sql")),
        M::up(include_str!("migrations/0004_image_oci.sql")),
    ])
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

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (statements are atomic), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }
}

/// Maps a primary-key violation to [`StoreError::Exists`].
pub(crate) fn unique_violation(
    res: rusqlite::Result<usize>,
    kind: &'static str,
    name: &str,
) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_and_uses_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("banger.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 4);
        let mode: String = store
            .conn()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(store);
        // Reopening an up-to-date database is a no-op.
        assert_eq!(Store::open(&path).unwrap().schema_version().unwrap(), 4);
    }

    #[test]
    fn migrates_a_version_1_database_keeping_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("banger.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            Migrations::new(vec![M::up(include_str!("migrations/0001_initial.sql"))])
                .to_latest(&mut conn)
                .unwrap();
            conn.execute(
                "INSERT INTO kernels (name, version, created_at) VALUES ('k', '6.1', 1)",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 4);
        let k = store.get_kernel("k").unwrap().unwrap();
        assert_eq!(k.state, banger_model::ObjectState::Ready);
        assert!(k.artifacts.is_empty());
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
}
