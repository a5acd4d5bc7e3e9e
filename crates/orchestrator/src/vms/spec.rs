//! What a VM will get: a create request validated (again, whatever the
//! CLI already checked: the API is open to anything that can reach the
//! socket) and filled from the resolved defaults.

use banger_api::{CreateVmRequest, VmSpec};
use banger_model::{Size, VmDefaults, VmName, generate_name};

use crate::Orchestrator;
use crate::error::Error;

const MAX_VCPU: u32 = 64;
const MIN_MEMORY_MIB: u64 = 128;

/// Validates a create request and fills it from the defaults.
pub(crate) async fn resolve_spec(d: &Orchestrator, req: CreateVmRequest) -> Result<VmSpec, Error> {
    let defaults = VmDefaults::resolve(&d.inner.config.vm_defaults, d.inner.host);
    let name = match req.name {
        Some(n) => {
            let name = VmName::parse(&n).map_err(|e| Error::invalid(e.to_string()))?;
            if n.starts_with(super::template::BUILDER_PREFIX) {
                return Err(Error::invalid(format!(
                    "--name {n:?}: names starting with {:?} are banger's own (the VMs that make \
                     templates): choose another",
                    super::template::BUILDER_PREFIX
                )));
            }
            let key = name.to_string();
            if d.with_store(move |s| s.vm_exists(&key)).await? {
                return Err(Error::conflict(format!(
                    "VM \"{name}\" already exists: choose another --name, or remove it with \
                     'banger vm delete {name}'"
                )));
            }
            name
        }
        None => {
            let names: std::collections::HashSet<String> = d
                .with_store(|s| s.list_vms())
                .await?
                .into_iter()
                .map(|v| v.name.to_string())
                .collect();
            generate_name(|n| names.contains(n))
        }
    };
    let vcpu = req.vcpu.unwrap_or(defaults.vcpu.value);
    let memory_mib = req.memory_mib.unwrap_or(defaults.memory_mib.value);
    check_sizes(vcpu, memory_mib)?;
    let disk_size: Size = req.disk_size.unwrap_or(defaults.disk_size.value);
    Ok(VmSpec {
        name: name.to_string(),
        image: req
            .image
            .unwrap_or_else(|| d.inner.config.default_image_name().to_string()),
        vcpu,
        memory_mib,
        disk_size,
        nat: req.nat,
    })
}

/// The limits on any VM, whatever the host.
pub(crate) fn check_sizes(vcpu: u32, memory_mib: u64) -> Result<(), Error> {
    if vcpu == 0 || vcpu > MAX_VCPU {
        return Err(Error::invalid(format!(
            "--vcpu {vcpu} is out of range: give 1 to {MAX_VCPU}"
        )));
    }
    if memory_mib < MIN_MEMORY_MIB {
        return Err(Error::invalid(format!(
            "--memory {memory_mib} MiB is too small: a guest needs at least {MIN_MEMORY_MIB} MiB"
        )));
    }
    Ok(())
}
