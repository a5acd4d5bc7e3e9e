//! `vm fork NAME [--name NEW]`: NAME is paused for as short a time as its
//! state takes to save and its disks to copy, then runs on; NEW resumes
//! that state on the copies, with its own identity (docs/templates.md).
//! NEW has NAME's processes and files as they were at that moment.
//!
//! Journaled as a pause and a create are: NAME is recorded `paused`
//! before it is frozen (so a crash leaves it paused, which `vm resume`
//! ends), NEW is recorded `created` before its folder is made (so
//! reconcile removes it, the saved state with it).

use std::fs;

use banger_api::{CreateVmRequest, ReadyWait, VmStarted};
use banger_model::VmState;

use super::{
    Disks, NewVm, Timer, WorkspaceDisk, boot_from, destroy, get, live_hypervisor, paths, prepare,
    record_vm, set_state, template,
};
use crate::Orchestrator;
use crate::error::Error;
use crate::images::{self, blocking};
use crate::progress::Progress;

/// The saved state, in the new VM's folder until it has resumed.
const FORK_STATE: &str = "fork.state";

pub(crate) async fn fork(
    d: &Orchestrator,
    name: &str,
    new_name: Option<String>,
    progress: &Progress,
) -> Result<VmStarted, Error> {
    let mut timer = Timer::new();
    let src = get(d, name).await?;
    let spec = super::spec::resolve_spec(
        d,
        CreateVmRequest {
            name: new_name,
            image: Some(src.image.clone()),
            vcpu: Some(src.vcpu),
            memory_mib: Some(src.memory_mib),
            disk_size: Some(src.disk_size),
            nat: src.nat,
            start: true,
            remove_on_failure: true,
            ephemeral: false,
            wait: None,
            cold: false,
            workspace: None,
        },
    )
    .await?;
    super::fits_host(d, src.vcpu, src.memory_mib)?;
    super::fits_disks(
        d,
        "the fork's disks need",
        super::disks_at_full_size(src.disk_size, src.workspace.as_ref().map_or(0, |w| w.bytes)),
    )
    .await?;
    let image = images::get_image(d, &src.image).await?;

    let lock = d.inner.vms.of(name);
    let guard = lock.lock().await;
    let src = get(d, name).await?;
    let was_paused = match src.state {
        VmState::Running => false,
        VmState::Paused => true,
        other => {
            return Err(Error::conflict(format!(
                "VM {name} is {other}: only a running (or paused) VM can be forked"
            )));
        }
    };
    let (hv, handle) = live_hypervisor(d, &src)?;
    let record = record_vm(
        d,
        NewVm {
            name: &spec.name,
            image: &image,
            vcpu: src.vcpu,
            memory_mib: src.memory_mib,
            disk_size: src.disk_size,
            nat: src.nat,
            ephemeral: false,
            uuids: Some((src.system_uuid.clone(), src.work_uuid.clone())),
            template_build: None,
            // The same files (a copy of its disk), mounted where they are.
            workspace: src.workspace.clone(),
        },
    )
    .await?;
    d.journaled("fork:recorded").await;
    let new_lock = d.inner.vms.of(record.name.as_str());
    let _new_guard = new_lock.lock().await;
    let src_paths = paths(d, &src);
    let new_paths = paths(d, &record);
    let state = new_paths.dir.join(FORK_STATE);

    // Frozen from here: recorded first, as `vm pause` does.
    progress.phase("save", format!("saving {name}'s memory and disks"));
    set_state(d, name, VmState::Paused, src.runtime.clone(), None).await?;
    d.journaled("fork:paused").await;
    let (d2, h, hv2, st) = (d.clone(), handle.clone(), hv.clone(), state.clone());
    let runtime = src_paths.runtime.clone();
    let src_name = name.to_string();
    let saved = blocking(move || {
        // NAME's commands through the agent end here (its proxy goes);
        // its ssh sessions do not.
        template::save_guest(
            &d2,
            &src_name,
            &runtime,
            hv2.as_ref(),
            &h,
            &st,
            &format!("VM {src_name}"),
        )
    })
    .await;
    let copied = match &saved {
        Ok(_) => {
            prepare(
                d,
                &record,
                progress,
                Disks::Copies((src_paths.system.clone(), src_paths.work.clone())),
                // Its fourth disk, workspace or placeholder, if its guest
                // has one.
                if src_paths.workspace.exists() {
                    WorkspaceDisk::Copy(src_paths.workspace.clone())
                } else {
                    WorkspaceDisk::None
                },
            )
            .await
        }
        Err(_) => Ok(()),
    };
    // NAME runs on (or stays paused, if it was), whatever happened.
    let (hv3, h3) = (hv.clone(), handle.clone());
    let resumed = blocking(move || Ok(if was_paused { Ok(()) } else { hv3.resume(&h3) })).await?;
    let src_state = if was_paused || resumed.is_err() {
        VmState::Paused
    } else {
        VmState::Running
    };
    set_state(d, name, src_state, src.runtime.clone(), None).await?;
    reopen_agent(d, &src, &handle).await;
    drop(guard);
    timer.mark("save");
    if let Err(e) = resumed {
        progress.warn(format!(
            "VM {name} did not run again after the save: {e}; it is left paused: \
             'banger vm resume {name}'"
        ));
    }
    if let Err(e) = saved.and(copied) {
        destroy(d, &record).await;
        return Err(e);
    }
    set_state(d, record.name.as_str(), VmState::Stopped, None, None).await?;
    let from = template::Resume {
        state: state.clone(),
        mac: src.mac.clone(),
        work_bytes: src.disk_size.bytes(),
        label: format!("a fork of {name}"),
        sync: false,
    };
    let booted = boot_from(
        d,
        record.name.as_str(),
        progress,
        &mut timer,
        ReadyWait::Sysinit,
        Some(&from),
    )
    .await;
    // Read whole by the new hypervisor (QEMU), or mapped (Firecracker,
    // which keeps its mapping of a removed file): not needed any more.
    let files = hv.state_files(&state);
    let _ = blocking(move || {
        for f in files {
            let _ = fs::remove_file(f);
        }
        Ok(())
    })
    .await;
    if let Err(e) = booted {
        destroy(d, &get(d, record.name.as_str()).await.unwrap_or(record)).await;
        return Err(e);
    }
    Ok(VmStarted {
        vm: get(d, &spec.name).await?,
        timings: timer.phases,
    })
}

/// Removes what a fork interrupted by a crash left in the new VM's
/// folder: the saved state (and the files a backend writes beside it,
/// `FORK_STATE.*`). Blocking; called by reconcile, when nothing is in
/// progress.
pub(crate) fn remove_saved_state(vm_dir: &std::path::Path) {
    let Ok(entries) = fs::read_dir(vm_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(FORK_STATE) {
            tracing::warn!(file = %entry.path().display(), "removing a fork's saved state left by a crash");
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// NAME's agent proxy again, after the fork ended it.
async fn reopen_agent(
    d: &Orchestrator,
    vm: &banger_model::VmRecord,
    handle: &banger_vmm::VmHandle,
) {
    let hv = d.inner.hypervisors.for_handle(handle);
    let runtime = paths(d, vm).runtime;
    let Some(channel) = hv.agent_channel(&runtime) else {
        return;
    };
    let (d2, name, h) = (d.clone(), vm.name.to_string(), handle.clone());
    let opened = blocking(move || {
        let probe = d2.inner.guests.clone();
        Ok(d2
            .inner
            .agents
            .open(&name, &runtime, &channel, &h, probe.as_ref()))
    })
    .await;
    let failed = match opened {
        Ok(Ok(_)) => return,
        Ok(Err(e)) => e,
        Err(e) => e.message,
    };
    tracing::warn!(vm = %vm.name, error = %failed, "cannot reopen the agent's proxy after a fork");
}
