//! Image and kernel rows and the files (artifacts) each one pins.

use banger_model::{Artifact, ArtifactRole, ImageRecord, KernelRecord, ObjectState};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::{Result, Store, StoreError, unique_violation};

/// The two artifact tables differ only in their owner column.
#[derive(Clone, Copy)]
struct Owner {
    table: &'static str,
    column: &'static str,
}
const KERNEL: Owner = Owner {
    table: "kernel_artifacts",
    column: "kernel",
};
const IMAGE: Owner = Owner {
    table: "image_artifacts",
    column: "image",
};

impl Store {
    // --- kernels ---

    /// Records a kernel (usually `building`, before its files are made).
    pub fn insert_kernel(&self, kernel: &KernelRecord) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let res = tx.execute(
            "INSERT INTO kernels (name, version, source, state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                kernel.name,
                kernel.version,
                kernel.source,
                kernel.state.as_str(),
                kernel.created_at
            ],
        );
        unique_violation(res, "kernel", &kernel.name)?;
        write_artifacts(&tx, KERNEL, &kernel.name, &kernel.artifacts)?;
        Ok(tx.commit()?)
    }

    /// Marks a kernel ready with the files it ended up with.
    pub fn finish_kernel(&self, name: &str, artifacts: &[Artifact]) -> Result<()> {
        self.finish(KERNEL, "kernels", "kernel", name, artifacts)
    }

    pub fn list_kernels(&self) -> Result<Vec<KernelRecord>> {
        let conn = self.conn();
        let names = names(&conn, "kernels")?;
        names
            .iter()
            .filter_map(|n| kernel(&conn, n).transpose())
            .collect()
    }

    pub fn get_kernel(&self, name: &str) -> Result<Option<KernelRecord>> {
        kernel(&self.conn(), name)
    }

    /// Deletes a kernel's record. Refused while an image names it.
    pub fn delete_kernel(&self, name: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let images: Vec<String> = {
            let mut stmt = tx.prepare("SELECT name FROM images WHERE kernel = ?1 ORDER BY name")?;
            stmt.query_map([name], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        if !images.is_empty() {
            return Err(StoreError::KernelInUse {
                kernel: name.to_string(),
                images,
            });
        }
        if tx.execute("DELETE FROM kernels WHERE name = ?1", [name])? == 0 {
            return Err(StoreError::NotFound {
                kind: "kernel",
                name: name.to_string(),
            });
        }
        Ok(tx.commit()?)
    }

    // --- images ---

    pub fn insert_image(&self, image: &ImageRecord) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let res = tx.execute(
            "INSERT INTO images (name, kernel, source, state, created_at, oci, facts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                image.name,
                image.kernel,
                image.source,
                image.state.as_str(),
                image.created_at,
                to_json(image.oci.as_ref(), "OCI image config")?,
                to_json(image.facts.as_ref(), "image facts")?,
            ],
        );
        unique_violation(res, "image", &image.name)?;
        write_artifacts(&tx, IMAGE, &image.name, &image.artifacts)?;
        Ok(tx.commit()?)
    }

    pub fn finish_image(&self, name: &str, artifacts: &[Artifact]) -> Result<()> {
        self.finish(IMAGE, "images", "image", name, artifacts)
    }

    pub fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let conn = self.conn();
        let names = names(&conn, "images")?;
        names
            .iter()
            .filter_map(|n| image(&conn, n).transpose())
            .collect()
    }

    pub fn get_image(&self, name: &str) -> Result<Option<ImageRecord>> {
        image(&self.conn(), name)
    }

    pub fn delete_image(&self, name: &str) -> Result<()> {
        if self
            .conn()
            .execute("DELETE FROM images WHERE name = ?1", [name])?
            == 0
        {
            return Err(StoreError::NotFound {
                kind: "image",
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// Kernels and images left `building` by a daemon that died mid-way:
    /// reconcile removes their files and records.
    pub fn unfinished(&self) -> Result<(Vec<String>, Vec<String>)> {
        let conn = self.conn();
        let building = |table: &str| -> Result<Vec<String>> {
            let mut stmt = conn.prepare(&format!(
                "SELECT name FROM {table} WHERE state = 'building' ORDER BY name"
            ))?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        Ok((building("kernels")?, building("images")?))
    }

    fn finish(
        &self,
        owner: Owner,
        table: &str,
        kind: &'static str,
        name: &str,
        artifacts: &[Artifact],
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            &format!("UPDATE {table} SET state = 'ready' WHERE name = ?1"),
            [name],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound {
                kind,
                name: name.to_string(),
            });
        }
        tx.execute(
            &format!("DELETE FROM {} WHERE {} = ?1", owner.table, owner.column),
            [name],
        )?;
        write_artifacts(&tx, owner, name, artifacts)?;
        Ok(tx.commit()?)
    }
}

fn names(conn: &Connection, table: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("SELECT name FROM {table} ORDER BY name"))?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn parse_state(value: String) -> Result<ObjectState> {
    ObjectState::parse(&value).ok_or(StoreError::Corrupt {
        what: "state",
        value,
    })
}

fn kernel(conn: &Connection, name: &str) -> Result<Option<KernelRecord>> {
    let row = conn
        .query_row(
            "SELECT name, version, source, state, created_at FROM kernels WHERE name = ?1",
            [name],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            },
        )
        .optional()?;
    let Some((name, version, source, st, created_at)) = row else {
        return Ok(None);
    };
    Ok(Some(KernelRecord {
        artifacts: artifacts(conn, KERNEL, &name)?,
        name,
        version,
        source,
        state: parse_state(st)?,
        created_at,
    }))
}

fn image(conn: &Connection, name: &str) -> Result<Option<ImageRecord>> {
    let row = conn
        .query_row(
            "SELECT name, kernel, source, state, created_at, oci, facts FROM images WHERE name = ?1",
            [name],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            },
        )
        .optional()?;
    let Some((name, kernel, source, st, created_at, oci, facts)) = row else {
        return Ok(None);
    };
    Ok(Some(ImageRecord {
        oci: from_json(oci, "OCI image config")?,
        facts: from_json(facts, "image facts")?,
        artifacts: artifacts(conn, IMAGE, &name)?,
        name,
        kernel,
        source,
        state: parse_state(st)?,
        created_at,
    }))
}

/// A JSON column's text for `value` (`what` names it in an error).
fn to_json<T: serde::Serialize>(value: Option<&T>, what: &'static str) -> Result<Option<String>> {
    value
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt {
            what,
            value: e.to_string(),
        })
}

/// A JSON column read back; text that does not parse is named.
fn from_json<T: serde::de::DeserializeOwned>(
    text: Option<String>,
    what: &'static str,
) -> Result<Option<T>> {
    match text {
        Some(json) => serde_json::from_str(&json)
            .map(Some)
            .map_err(|_| StoreError::Corrupt { what, value: json }),
        None => Ok(None),
    }
}

fn artifacts(conn: &Connection, owner: Owner, name: &str) -> Result<Vec<Artifact>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT role, file, sha256, size FROM {} WHERE {} = ?1 ORDER BY role",
        owner.table, owner.column
    ))?;
    let rows = stmt.query_map([name], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, u64>(3)?,
        ))
    })?;
    rows.map(|row| {
        let (role, file, sha256, size) = row?;
        Ok(Artifact {
            role: ArtifactRole::parse(&role).ok_or(StoreError::Corrupt {
                what: "artifact role",
                value: role,
            })?,
            file,
            sha256,
            size,
        })
    })
    .collect()
}

fn write_artifacts(
    tx: &Transaction<'_>,
    owner: Owner,
    name: &str,
    list: &[Artifact],
) -> Result<()> {
    let mut stmt = tx.prepare(&format!(
        "INSERT INTO {} ({}, role, file, sha256, size) VALUES (?1, ?2, ?3, ?4, ?5)",
        owner.table, owner.column
    ))?;
    for a in list {
        stmt.execute(params![name, a.role.as_str(), a.file, a.sha256, a.size])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        (dir, store)
    }

    fn artifact(role: ArtifactRole, file: &str) -> Artifact {
        Artifact {
            role,
            file: file.into(),
            sha256: "ab".repeat(32),
            size: 42,
        }
    }

    fn kernel_rec(name: &str, state: ObjectState) -> KernelRecord {
        KernelRecord {
            name: name.into(),
            version: "6.1.0-37-cloud-amd64".into(),
            source: "debian".into(),
            state,
            artifacts: vec![],
            created_at: 1,
        }
    }

    fn image_rec(name: &str, kernel: &str) -> ImageRecord {
        ImageRecord {
            name: name.into(),
            kernel: kernel.into(),
            source: "recipe:abc".into(),
            state: ObjectState::Building,
            artifacts: vec![],
            created_at: 2,
            oci: None,
            facts: None,
        }
    }

    #[test]
    fn journaled_build_then_finish() {
        let (_d, s) = store();
        s.insert_kernel(&kernel_rec("k", ObjectState::Building))
            .unwrap();
        assert_eq!(s.unfinished().unwrap(), (vec!["k".to_string()], vec![]));
        let files = vec![
            artifact(ArtifactRole::Vmlinux, "vmlinux"),
            artifact(ArtifactRole::Bzimage, "vmlinuz"),
        ];
        s.finish_kernel("k", &files).unwrap();
        let k = s.get_kernel("k").unwrap().unwrap();
        assert_eq!(k.state, ObjectState::Ready);
        assert_eq!(k.artifact(ArtifactRole::Vmlinux).unwrap().file, "vmlinux");
        assert_eq!(k.artifacts.len(), 2);
        assert_eq!(s.unfinished().unwrap(), (vec![], vec![]));
        assert!(matches!(
            s.finish_kernel("nope", &files),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn images_need_their_kernel_and_pin_it() {
        let (_d, s) = store();
        assert!(
            s.insert_image(&image_rec("img", "k")).is_err(),
            "foreign key"
        );
        s.insert_kernel(&kernel_rec("k", ObjectState::Ready))
            .unwrap();
        s.insert_image(&image_rec("img", "k")).unwrap();
        s.finish_image("img", &[artifact(ArtifactRole::Rootfs, "rootfs.ext4")])
            .unwrap();
        let listed = s.list_images().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].state, ObjectState::Ready);
        assert_eq!(listed[0].artifacts.len(), 1);
        assert!(matches!(
            s.insert_image(&image_rec("img", "k")),
            Err(StoreError::Exists { .. })
        ));

        let err = s.delete_kernel("k").unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel \"k\" is used by image(s) img: delete them first"
        );
        let oci = banger_model::OciImageConfig {
            reference: "docker.io/library/busybox:latest".into(),
            manifest_digest: format!("sha256:{}", "ab".repeat(32)),
            layers: vec![banger_model::OciLayer {
                digest: format!("sha256:{}", "cd".repeat(32)),
                size: 7,
            }],
            entrypoint: vec!["/bin/sh".into()],
            cmd: vec!["-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            workdir: Some("/".into()),
            user: None,
        };
        s.insert_image(&ImageRecord {
            oci: Some(oci.clone()),
            ..image_rec("pulled", "k")
        })
        .unwrap();
        assert_eq!(s.get_image("pulled").unwrap().unwrap().oci, Some(oci));
        assert_eq!(s.get_image("img").unwrap().unwrap().oci, None);
        let facts = banger_model::ImageFacts {
            size_bytes: 3 << 30,
            disk_bytes: 1 << 30,
            used_bytes: 900 << 20,
            packages: 312,
            docker: Some("20.10.24+dfsg1-1+deb12u1+b6".into()),
            mise: Some("2026.9.15".into()),
            binaries: vec![banger_model::BinaryOrigin {
                name: "mise".into(),
                version: Some("2026.9.15".into()),
                source: "npm:@jdxcode/mise-linux-x64@2026.9.15".into(),
                sha256: "ef".repeat(32),
            }],
        };
        s.insert_image(&ImageRecord {
            facts: Some(facts.clone()),
            ..image_rec("built", "k")
        })
        .unwrap();
        assert_eq!(s.get_image("built").unwrap().unwrap().facts, Some(facts));
        assert_eq!(s.get_image("img").unwrap().unwrap().facts, None);
        s.delete_image("built").unwrap();
        s.delete_image("pulled").unwrap();
        s.delete_image("img").unwrap();
        assert!(s.list_images().unwrap().is_empty());
        s.delete_kernel("k").unwrap();
        assert!(matches!(
            s.delete_kernel("k"),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            s.delete_image("img"),
            Err(StoreError::NotFound { .. })
        ));
        // Artifact rows went with their owners.
        let n: i64 = s
            .conn()
            .query_row("SELECT count(*) FROM image_artifacts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }
}
