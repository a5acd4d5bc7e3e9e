//! Staged workspaces (`POST /v1/workspaces`): the files of `vm run PATH`,
//! unpacked on the host before the VM exists, so that create makes them
//! the VM's workspace disk (docs/workspace.md). A staged workspace lives
//! in `state/workspaces/ID/` until a create takes it, for [`KEEP`] at
//! most, or until bangerd stops (reconcile removes what a crash left).

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use banger_api::{StageWorkspaceQuery, StagedWorkspace};
use banger_model::{Size, VmDefaults};
use banger_storage::workspace::{self, Limits, WorkspaceError};

use crate::Orchestrator;
use crate::error::Error;
use crate::images::blocking;

/// How long a staged workspace waits for its create.
const KEEP: Duration = Duration::from_secs(600);

/// The share of the VM's disk a workspace's files may take: the rest is
/// for the filesystem's own metadata and what the command writes.
fn limit_for(disk: Size) -> u64 {
    disk.bytes() / 10 * 9
}

/// The staged workspaces, by id.
#[derive(Default)]
pub(crate) struct Staged {
    map: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    staged: StagedWorkspace,
    at: Instant,
}

/// A staged workspace a create took: its tree, removed when dropped.
pub(crate) struct Taken {
    pub staged: StagedWorkspace,
    pub tree: PathBuf,
    folder: PathBuf,
}

impl Drop for Taken {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.folder);
    }
}

fn root(d: &Orchestrator) -> PathBuf {
    d.inner.paths.state_dir.join("workspaces")
}

/// Unpacks `body` (a tar stream of `DIR/...`) into a new staged
/// workspace. Blocking on `body`: run from a blocking thread.
pub(crate) async fn stage(
    d: &Orchestrator,
    query: StageWorkspaceQuery,
    body: impl Read + Send + 'static,
) -> Result<StagedWorkspace, Error> {
    if !workspace::valid_dir_name(&query.dir) {
        return Err(Error::invalid(format!(
            "workspace name {:?} is not valid: 1 to 64 letters, digits, '.', '_' or '-', not \
             starting with '.' or '-'",
            query.dir
        )));
    }
    let disk = query.disk_size.unwrap_or_else(|| {
        VmDefaults::resolve(&d.inner.config.vm_defaults, d.inner.host)
            .disk_size
            .value
    });
    let limit = limit_for(disk);
    if let Some(bytes) = query.bytes
        && bytes > limit
    {
        return Err(too_large(bytes, disk));
    }
    expire(d);
    let id = hex::encode(rand::random::<[u8; 8]>());
    let folder = root(d).join(&id);
    let tree = folder.join("tree");
    let dir = query.dir.clone();
    let (f2, t2) = (folder.clone(), tree.clone());
    let unpacked = blocking(move || {
        fs::create_dir_all(&f2)
            .map_err(|e| Error::internal(format!("cannot create {}: {e}", f2.display())))?;
        workspace::unpack(
            body,
            &dir,
            &t2,
            Limits {
                max_bytes: limit,
                max_entries: workspace::MAX_ENTRIES,
            },
        )
        .map_err(|e| match e {
            WorkspaceError::TooLarge { .. } => too_large(query.bytes.unwrap_or(limit), disk),
            WorkspaceError::Disk(banger_storage::DiskError::Full { .. }) => {
                Error::invalid(format!("cannot stage the workspace: {e}"))
            }
            WorkspaceError::Disk(e) => Error::internal(format!("cannot stage the workspace: {e}")),
            e => Error::invalid(e.to_string()),
        })
    })
    .await;
    let unpacked = match unpacked {
        Ok(u) => u,
        Err(e) => {
            let _ = fs::remove_dir_all(&folder);
            return Err(e);
        }
    };
    let staged = StagedWorkspace {
        id: id.clone(),
        dir: query.dir,
        files: unpacked.files,
        bytes: unpacked.bytes,
    };
    if let Ok(mut m) = d.inner.workspaces.map.lock() {
        m.insert(
            id,
            Entry {
                staged: staged.clone(),
                at: Instant::now(),
            },
        );
    }
    Ok(staged)
}

fn too_large(bytes: u64, disk: Size) -> Error {
    let gib = (bytes.saturating_mul(10) / 9 + 1).div_ceil(1 << 30);
    Error::invalid(format!(
        "the workspace's files come to {}, more than the {} they may take of the VM's {} disk: \
         give --disk-size {gib}G or more, or select fewer files",
        Size::from_bytes(bytes).human(),
        Size::from_bytes(limit_for(disk)).human(),
        disk.human(),
    ))
}

/// Takes the staged workspace `id` for a new VM of `disk` bytes.
pub(crate) fn take(d: &Orchestrator, id: &str, disk: Size) -> Result<Taken, Error> {
    let entry = d
        .inner
        .workspaces
        .map
        .lock()
        .ok()
        .and_then(|mut m| m.remove(id))
        .ok_or_else(|| {
            Error::not_found(format!(
                "no staged workspace {id:?}: it was used, expired or bangerd restarted; run \
                 the command again"
            ))
        })?;
    let folder = root(d).join(id);
    let taken = Taken {
        tree: folder.join("tree"),
        folder,
        staged: entry.staged,
    };
    if taken.staged.bytes > limit_for(disk) {
        return Err(too_large(taken.staged.bytes, disk));
    }
    Ok(taken)
}

/// Removes staged workspaces older than [`KEEP`].
fn expire(d: &Orchestrator) {
    let old: Vec<String> = match d.inner.workspaces.map.lock() {
        Ok(mut m) => {
            let old: Vec<String> = m
                .iter()
                .filter(|(_, e)| e.at.elapsed() > KEEP)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &old {
                m.remove(id);
            }
            old
        }
        Err(_) => return,
    };
    for id in old {
        let _ = fs::remove_dir_all(root(d).join(id));
    }
}

/// At bangerd's start: nothing staged survives a restart.
pub(crate) fn reconcile(d: &Orchestrator) {
    let dir = root(d);
    if dir.exists()
        && let Err(e) = fs::remove_dir_all(&dir)
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove staged workspaces");
    }
}
