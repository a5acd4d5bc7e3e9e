//! The resume half of a boot (DESIGN.md, "Boot path: warm"): a guest
//! started from a saved state (a template's, a forked VM's) is given the
//! VM's identity through its agent, and a resume that failed gives way to
//! a cold boot.

use std::fs;
use std::sync::Arc;

use banger_api::ReadyWait;
use banger_model::{VmRecord, VmState};
use banger_vmm::{Hypervisor, VmHandle};

use super::{
    Disks, Timer, WorkspaceDisk, boot, fail_boot, get, paths, prepare, set_state, template,
};
use crate::Orchestrator;
use crate::error::Error;
use crate::images::blocking;
use crate::progress::Progress;

/// A guest just resumed, still the one that was saved.
pub(super) struct ResumedGuest<'a> {
    pub vm: &'a VmRecord,
    pub from: &'a template::Resume,
    pub hv: &'a Arc<dyn Hypervisor>,
    pub handle: &'a VmHandle,
    pub ip: std::net::Ipv4Addr,
    pub dns: &'a [std::net::IpAddr],
}

/// Gives a resumed guest the VM's identity through its agent: its work
/// disk grown to the VM's size first, `[[file_sync]]`'s files last. Any
/// failure stops the hypervisor and frees the network (`fail_boot`).
pub(super) async fn resume_guest(
    d: &Orchestrator,
    g: ResumedGuest<'_>,
    progress: &Progress,
    timer: &mut Timer,
    runtime: Option<serde_json::Value>,
) -> Result<VmRecord, Error> {
    let name = g.vm.name.to_string();
    progress.phase("identity", "giving the resumed guest its identity");
    let p = paths(d, g.vm);
    let Some(channel) = g.hv.agent_channel(&p.runtime) else {
        let msg = "this hypervisor gives no channel to the guest agent".to_string();
        return Err(fail_boot(d, g.vm, g.hv, g.handle, msg).await);
    };
    d.inner.agents.close(&name);
    let host_key = {
        let dir = p.host_keys.clone();
        blocking(move || {
            let read = |f: &str| {
                fs::read_to_string(dir.join(f))
                    .map_err(|e| Error::internal(format!("cannot read the VM's host key: {e}")))
            };
            Ok((
                read("ssh_host_ed25519_key")?,
                read("ssh_host_ed25519_key.pub")?,
            ))
        })
        .await?
    };
    let req = template::identity_request(
        g.vm,
        g.from,
        g.ip,
        d.inner.config.bridge_cidr(),
        g.dns,
        host_key,
    );
    let (d2, vm, h, hv) = (d.clone(), g.vm.clone(), g.handle.clone(), g.hv.clone());
    let (progress2, grow, sync) = (
        progress.clone(),
        g.vm.disk_size.bytes() > g.from.work_bytes,
        g.from.sync,
    );
    let run = move || -> Result<(), String> {
        let probe = d2.inner.guests.clone();
        let socket =
            d2.inner
                .agents
                .open(vm.name.as_str(), &p.runtime, &channel, &h, probe.as_ref())?;
        if grow {
            hv.grow_disk(&h, 2, &p.work, vm.disk_size.bytes())
                .map_err(|e| format!("cannot grow the work disk: {e}"))?;
            // The workspace disk is as large as the work disk; the guest
            // saw the template's empty placeholder in its slot.
            if vm.workspace.is_some() {
                hv.grow_disk(&h, 3, &p.workspace, vm.disk_size.bytes())
                    .map_err(|e| format!("cannot size the workspace disk: {e}"))?;
            }
        }
        let reply = probe.set_identity(&socket, &req, template::IDENTITY_TIMEOUT)?;
        template::check_identity(&reply)?;
        let archive = if sync {
            template::file_sync_archive(&d2, &p.dir, &progress2).map_err(|e| e.message)?
        } else {
            None
        };
        if let Some(tar) = archive {
            probe.tar_in(&socket, "/root", tar.path(), template::IDENTITY_TIMEOUT)?;
        }
        Ok(())
    };
    let done = blocking(move || Ok(run())).await;
    let failed = match done {
        Ok(Ok(())) => None,
        Ok(Err(msg)) => Some(msg),
        Err(e) => Some(e.message),
    };
    if let Some(msg) = failed {
        return Err(fail_boot(d, g.vm, g.hv, g.handle, msg).await);
    }
    timer.mark("identity");
    // Restarted by the identity's host keys: not yet seen answering.
    d.inner.agents.sshd_unconfirmed(&name);
    set_state(d, &name, VmState::Running, runtime, None).await?;
    note_boot_path(d, &name, &format!("resumed from {}", g.from.label)).await;
    get(d, &name).await
}

/// After a failed resume: the VM's disks made afresh, and a cold boot.
pub(super) async fn cold_again(
    d: &Orchestrator,
    vm: &VmRecord,
    progress: &Progress,
    timer: &mut Timer,
    wait: ReadyWait,
    why: template::ColdWhy,
) -> Result<VmRecord, Error> {
    let p = paths(d, vm);
    // A workspace disk is kept (it was made for this VM, not copied); a
    // placeholder goes with the template's copies.
    let keep_workspace = vm.workspace.is_some();
    blocking(move || {
        let placeholder = (!keep_workspace).then_some(&p.workspace);
        for disk in [&p.system, &p.work].into_iter().chain(placeholder) {
            if let Err(e) = fs::remove_file(disk)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(Error::internal(format!(
                    "cannot remove {}: {e}",
                    disk.display()
                )));
            }
        }
        Ok(())
    })
    .await?;
    prepare(
        d,
        vm,
        progress,
        Disks::Fresh { sync: true },
        WorkspaceDisk::None,
    )
    .await?;
    set_state(d, vm.name.as_str(), VmState::Stopped, None, None).await?;
    let booted = boot(d, vm.name.as_str(), progress, timer, wait).await?;
    note_boot_path(d, vm.name.as_str(), &why.describe()).await;
    if why.wants_template() {
        template::warm_in_background(d, vm.image.clone(), vm.vcpu, vm.memory_mib);
    }
    Ok(booted)
}

/// Records how the VM started (`vm show`).
pub(super) async fn note_boot_path(d: &Orchestrator, name: &str, path: &str) {
    let (key, path) = (name.to_string(), path.to_string());
    if let Err(e) = d.with_store(move |s| s.set_vm_boot_path(&key, &path)).await {
        tracing::warn!(vm = name, error = %e.message, "cannot record how the VM started");
    }
}
