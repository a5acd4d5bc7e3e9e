//! Template rows (`banger_model::TemplateRecord`): recorded `building`
//! before the template's files are made, `ready` with their pins once
//! every file is written and hashed.

use banger_model::{ObjectState, TemplateFile, TemplateRecord};
use rusqlite::{OptionalExtension, Row, params};

use crate::{Result, Store, StoreError, parse_state, unique_violation};

const COLUMNS: &str = "id, image, kernel, vcpu, memory_mib, backend, key, state, system_uuid, \
                       work_uuid, mac, work_bytes, files, bytes, created_at";

impl Store {
    /// Journals a template about to be made. A template of the same id
    /// is refused: delete the old one first.
    pub fn insert_template(&self, t: &TemplateRecord) -> Result<()> {
        let files = serde_json::to_string(&t.files).map_err(|e| StoreError::Corrupt {
            what: "template files",
            value: e.to_string(),
        })?;
        let res = self.conn().execute(
            &format!(
                "INSERT INTO templates ({COLUMNS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
            ),
            params![
                t.id,
                t.image,
                t.kernel,
                t.vcpu,
                t.memory_mib,
                t.backend,
                t.key,
                t.state.as_str(),
                t.system_uuid,
                t.work_uuid,
                t.mac,
                to_i64(t.work_bytes)?,
                files,
                to_i64(t.bytes)?,
                t.created_at
            ],
        );
        unique_violation(res, "template", &t.id)
    }

    /// Marks a template ready, with its files' pins and their size.
    pub fn set_template_ready(&self, id: &str, files: &[TemplateFile], bytes: u64) -> Result<()> {
        let files = serde_json::to_string(files).map_err(|e| StoreError::Corrupt {
            what: "template files",
            value: e.to_string(),
        })?;
        let n = self.conn().execute(
            "UPDATE templates SET state = ?2, files = ?3, bytes = ?4 WHERE id = ?1",
            params![id, ObjectState::Ready.as_str(), files, to_i64(bytes)?],
        )?;
        found(n, id)
    }

    pub fn get_template(&self, id: &str) -> Result<Option<TemplateRecord>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM templates WHERE id = ?1"),
                [id],
                template_from_row,
            )
            .optional()?;
        row.transpose()
    }

    pub fn list_templates(&self) -> Result<Vec<TemplateRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM templates ORDER BY image, vcpu, memory_mib, id"
        ))?;
        let rows = stmt.query_map([], template_from_row)?;
        rows.map(|r| r.map_err(StoreError::from).and_then(|r| r))
            .collect()
    }

    /// Forgets a template (its files are the caller's to remove).
    pub fn delete_template(&self, id: &str) -> Result<()> {
        let n = self
            .conn()
            .execute("DELETE FROM templates WHERE id = ?1", [id])?;
        found(n, id)
    }
}

fn found(changed: usize, id: &str) -> Result<()> {
    if changed == 0 {
        return Err(StoreError::NotFound {
            kind: "template",
            name: id.to_string(),
        });
    }
    Ok(())
}

fn to_i64(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| StoreError::Corrupt {
        what: "size",
        value: n.to_string(),
    })
}

fn to_u64(n: i64, what: &'static str) -> Result<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt {
        what,
        value: n.to_string(),
    })
}

fn template_from_row(row: &Row<'_>) -> rusqlite::Result<Result<TemplateRecord>> {
    let state: String = row.get(7)?;
    let files: String = row.get(12)?;
    let work_bytes: i64 = row.get(11)?;
    let bytes: i64 = row.get(13)?;
    let (id, image, kernel): (String, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
    let (vcpu, memory_mib, backend, key): (u32, u64, String, String) =
        (row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?);
    let (system_uuid, work_uuid, mac, created_at): (String, String, String, i64) =
        (row.get(8)?, row.get(9)?, row.get(10)?, row.get(14)?);
    Ok((|| {
        Ok(TemplateRecord {
            id,
            image,
            kernel,
            vcpu,
            memory_mib,
            backend,
            key,
            state: parse_state(state)?,
            system_uuid,
            work_uuid,
            mac,
            work_bytes: to_u64(work_bytes, "template work size")?,
            files: serde_json::from_str(&files).map_err(|_| StoreError::Corrupt {
                what: "template files",
                value: files.clone(),
            })?,
            bytes: to_u64(bytes, "template size")?,
            created_at,
        })
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(id: &str) -> TemplateRecord {
        TemplateRecord {
            id: id.into(),
            image: "debian-bookworm".into(),
            kernel: "k".into(),
            vcpu: 2,
            memory_mib: 2048,
            backend: "qemu".into(),
            key: "abc".into(),
            state: ObjectState::Building,
            system_uuid: "s".into(),
            work_uuid: "w".into(),
            mac: "52:54:00:00:00:09".into(),
            work_bytes: 1 << 30,
            files: vec![],
            bytes: 0,
            created_at: 1_700_000_000,
        }
    }

    #[test]
    fn templates_are_journaled_then_made_ready_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.insert_template(&template("t1")).unwrap();
        assert!(matches!(
            store.insert_template(&template("t1")),
            Err(StoreError::Exists { .. })
        ));
        let files = vec![TemplateFile {
            file: "state".into(),
            digest: "d".into(),
            stamp: "1:2".into(),
        }];
        store.set_template_ready("t1", &files, 42).unwrap();
        let t = store.get_template("t1").unwrap().unwrap();
        assert_eq!(t.state, ObjectState::Ready);
        assert_eq!((t.files, t.bytes), (files, 42));
        assert_eq!(store.list_templates().unwrap().len(), 1);
        store.delete_template("t1").unwrap();
        assert!(store.get_template("t1").unwrap().is_none());
        assert!(matches!(
            store.delete_template("t1"),
            Err(StoreError::NotFound { .. })
        ));
    }
}
