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

use rusqlite::{Connection, OpenFlags};
use rusqlite_migration::{M, Migrations};

mod objects;
mod templates;
mod vms;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{path} is a symbolic link, and banger never opens its database through one: \
         remove the link (the file it points to was not touched)"
    )]
    Symlink { path: PathBuf },
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
        M::up(include_str!("migrations/0005_vm_ephemeral.sql")),
        M::up(include_str!("migrations/0006_templates.sql")),
        M::up(include_str!("migrations/0007_image_facts.sql")),
        M::up(include_str!("migrations/0008_vm_workspace.sql")),
    ])
}

pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to
    /// date. A database from a newer banger is refused, not downgraded.
    ///
    /// Never through a symbolic link: SQLite would otherwise write (and
    /// create) whatever a link planted as the database or one of its
    /// companion files points at. `SQLITE_OPEN_NOFOLLOW` covers the
    /// database itself; SQLite opens the `-wal`, `-shm` and `-journal`
    /// files by name, so those are looked at first (the caller's directory
    /// is one only its user can write, so what is seen stays true).
    pub fn open(path: &Path) -> Result<Self> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        refuse_links(path)?;
        let flags = OpenFlags::default() | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let mut conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
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

fn refuse_links(path: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        if std::fs::symlink_metadata(&file).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(StoreError::Symlink { path: file });
        }
    }
    Ok(())
}

pub(crate) use objects::parse_state;

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
        assert_eq!(store.schema_version().unwrap(), 8);
        let mode: String = store
            .conn()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(store);
        // Reopening an up-to-date database is a no-op.
        assert_eq!(Store::open(&path).unwrap().schema_version().unwrap(), 8);
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
        assert_eq!(store.schema_version().unwrap(), 8);
        let k = store.get_kernel("k").unwrap().unwrap();
        assert_eq!(k.state, banger_model::ObjectState::Ready);
        assert!(k.artifacts.is_empty());
    }

    #[test]
    fn migrates_a_version_4_database_to_durable_vms() {
        // VMs made before `--rm` was the daemon's are nobody's lease: they
        // must come out durable, or the next restart would delete them.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("banger.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            Migrations::new(vec![
                M::up(include_str!("migrations/0001_initial.sql")),
                M::up(include_str!("migrations/0002_artifacts.sql")),
                M::up(include_str!("migrations/0003_vm_runtime.sql")),
                M::up(include_str!("migrations/0004_image_oci.sql")),
            ])
            .to_latest(&mut conn)
            .unwrap();
            conn.execute(
                "INSERT INTO vms (name, image, state, vcpu, memory_mib, disk_size_bytes, created_at) \
                 VALUES ('old', 'i', 'stopped', 1, 512, 1, 0)",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 8);
        assert!(!store.get_vm("old").unwrap().unwrap().ephemeral);
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
    fn never_opens_through_a_link() {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("precious");
            std::fs::write(&target, b"keep me").unwrap();
            let path = dir.path().join("banger.db");
            let mut link = path.as_os_str().to_owned();
            link.push(suffix);
            std::os::unix::fs::symlink(&target, &link).unwrap();
            let err = Store::open(&path).err().expect("a link is refused");
            assert!(matches!(err, StoreError::Symlink { .. }), "{suffix}: {err}");
            assert!(err.to_string().contains("symbolic link"), "{err}");
            assert_eq!(std::fs::read(&target).unwrap(), b"keep me", "{suffix}");
        }
    }

    #[test]
    fn sqlite_itself_refuses_a_linked_database() {
        // The flag behind the look-first check, for a link that appears
        // after it.
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, b"").unwrap();
        let link = dir.path().join("banger.db");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let flags = OpenFlags::default() | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        assert!(Connection::open_with_flags(&link, flags).is_err());
    }
}
