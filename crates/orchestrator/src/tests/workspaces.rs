//! Workspace disks (`vm run PATH`): a staged tar stream becomes the VM's
//! fourth disk, named on the kernel command line; what is refused is
//! refused before the VM is made, and nothing staged outlives its use.

use std::io::Read as _;
use std::path::Path;
use std::process::Command;

use banger_api::{CreateVmRequest, StageWorkspaceQuery};
use banger_model::Size;

use super::fakes::Guest;
use super::lifecycle::{Fixture, VM, request, within};
use crate::{ErrorKind, Progress};

/// A tar stream of `repo/` holding a script, a nested file and a link.
fn archive() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |kind: tar::EntryType, path: &str, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    };
    add(tar::EntryType::Directory, "repo/", 0o755, b"");
    add(
        tar::EntryType::Regular,
        "repo/run.sh",
        0o755,
        b"#!/bin/sh\necho hi\n",
    );
    add(
        tar::EntryType::Regular,
        "repo/src/lib.rs",
        0o644,
        b"fn main() {}\n",
    );
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "repo/lib", "src/lib.rs").unwrap();
    b.into_inner().unwrap()
}

fn query(bytes: Option<u64>) -> StageWorkspaceQuery {
    StageWorkspaceQuery {
        dir: "repo".into(),
        disk_size: Some(Size::from_mib(64)),
        bytes,
    }
}

fn with_workspace(id: &str) -> CreateVmRequest {
    CreateVmRequest {
        workspace: Some(id.into()),
        ..request(true)
    }
}

/// What debugfs reads at `path` in the ext4 image `disk`.
fn debugfs(disk: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(disk)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_workspace_becomes_the_vms_fourth_disk() {
    let Some(f) = Fixture::new(Guest::InitReady) else {
        return;
    };
    let o = f.orchestrator();
    let staged = o
        .stage_workspace(query(Some(31)), std::io::Cursor::new(archive()))
        .await
        .unwrap();
    assert_eq!(
        (staged.dir.as_str(), staged.files, staged.bytes),
        ("repo", 2, 31)
    );
    let staging = f.paths().state_dir.join("workspaces").join(&staged.id);
    assert!(staging.is_dir());

    within(
        "create",
        o.create_vm(with_workspace(&staged.id), &Progress::discard()),
    )
    .await
    .unwrap();
    assert!(!staging.exists(), "the staged files outlive the create");
    let vm = f.vm().unwrap();
    let ws = vm
        .workspace
        .clone()
        .expect("the record names its workspace");
    assert_eq!((ws.dir.as_str(), ws.files, ws.bytes), ("repo", 2, 31));
    let disk = f.vm_dir().join("workspace.ext4");
    assert_eq!(banger_storage::read_ext4_uuid(&disk).unwrap(), ws.uuid);
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 64 << 20);
    assert_eq!(debugfs(&disk, "cat /src/lib.rs"), "fn main() {}\n");
    assert!(!debugfs(&disk, "ls /").contains("lost+found"));
    let stat = debugfs(&disk, "stat /run.sh");
    assert!(
        stat.contains("Mode:  0755") && stat.contains("User:     0"),
        "{stat}"
    );
    assert!(debugfs(&disk, "stat /lib").contains("Fast link dest: \"src/lib.rs\""));

    let spec = f.hv.specs.lock().unwrap().last().cloned().unwrap();
    assert_eq!(spec.disks.len(), 4);
    assert_eq!(spec.disks[3].path, disk);
    assert!(!spec.disks[3].read_only);
    assert!(
        spec.cmdline.contains(&format!(
            "banger.workspace=UUID={} banger.workspace_dir=repo",
            ws.uuid
        )),
        "{}",
        spec.cmdline
    );
    // Kept across stop and start, attached again.
    o.stop_vm(VM).await.unwrap();
    within("start", o.start_vm(VM, &Progress::discard()))
        .await
        .unwrap();
    let spec = f.hv.specs.lock().unwrap().last().cloned().unwrap();
    assert_eq!(spec.disks.len(), 4);
    assert_eq!(
        banger_storage::read_ext4_uuid(&disk).unwrap(),
        ws.uuid,
        "the disk was made again"
    );
    o.delete_vm(VM, true).await.unwrap();
    f.assert_nothing_left("after delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_too_large_or_unknown_is_refused_before_the_vm_is_made() {
    let Some(f) = Fixture::new(Guest::InitReady) else {
        return;
    };
    let o = f.orchestrator();
    // Announced too large: refused before a byte is read.
    let e = o
        .stage_workspace(query(Some(1 << 30)), std::io::Cursor::new(archive()))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(
        e.message.contains("1.0 GiB") && e.message.contains("--disk-size 2G"),
        "{e}"
    );
    // Larger than announced: refused while read, nothing kept.
    let big = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(60 << 20);
        h.set_mode(0o644);
        b.append_data(&mut h, "repo/big", std::io::repeat(0).take(60 << 20))
            .unwrap();
        b.into_inner().unwrap()
    };
    let e = o
        .stage_workspace(query(Some(10)), std::io::Cursor::new(big))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    let staged = f.paths().state_dir.join("workspaces");
    assert_eq!(
        std::fs::read_dir(&staged).map_or(0, |d| d.count()),
        0,
        "a refused workspace left files"
    );
    // A bad name.
    let e = o
        .stage_workspace(
            StageWorkspaceQuery {
                dir: "../etc".into(),
                ..query(None)
            },
            std::io::Cursor::new(archive()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    // Unknown (or already used): no VM is recorded.
    let e = o
        .create_vm(with_workspace("0123456789abcdef"), &Progress::discard())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    f.assert_nothing_left("after an unknown workspace");
    // Staged for a disk it does not fit: refused at create.
    let ok = o
        .stage_workspace(
            StageWorkspaceQuery {
                disk_size: None,
                ..query(None)
            },
            std::io::Cursor::new(archive()),
        )
        .await
        .unwrap();
    let tiny = CreateVmRequest {
        disk_size: Some(Size::from_bytes(16)),
        ..with_workspace(&ok.id)
    };
    let e = o.create_vm(tiny, &Progress::discard()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    f.assert_nothing_left("after a workspace too large for the disk");
    assert_eq!(std::fs::read_dir(&staged).map_or(0, |d| d.count()), 0);
}
