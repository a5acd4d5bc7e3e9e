//! The hypervisor for a new boot, or for a running VM's handle.

use std::path::PathBuf;
use std::sync::Arc;

use banger_vmm::select::{Accel, HostHypervisors, Selection, choose};
use banger_vmm::{Hypervisor, VmHandle};

use crate::error::Failure;
use crate::server::Daemon;

/// The hypervisor `hypervisor = …` picks on this host now.
pub(super) fn hypervisor(d: &Daemon) -> Result<Arc<dyn Hypervisor>, Failure> {
    let config = &d.inner.config;
    let selection = choose(config.hypervisor(), &HostHypervisors::probe(config))
        .map_err(|e| Failure::bad_request(e.to_string()))?;
    Ok(banger_vmm::hypervisor_for(&selection))
}

/// The backend that started `handle`, whatever the config says today.
/// Stopping, killing and watching need no binary or accelerator.
pub(super) fn for_handle(handle: &VmHandle) -> Arc<dyn Hypervisor> {
    banger_vmm::hypervisor_for(&Selection {
        backend: handle.backend,
        accel: Accel::Tcg,
        binary: PathBuf::new(),
        reason: String::new(),
    })
}
