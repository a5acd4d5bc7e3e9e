//! Multi-step operations on VMs, images and kernels. Every input is
//! validated here again, whatever the CLI already checked: the API is
//! public to anything that can open the socket.

use banger_api::{CreateVmRequest, VmSpec};
use banger_model::{Size, VmDefaults, VmName, generate_name};

use crate::error::Failure;
use crate::progress::Progress;
use crate::server::Daemon;

const MAX_VCPU: u32 = 64;
const MIN_MEMORY_MIB: u64 = 128;

/// Validates a create request and fills it from the defaults.
pub(crate) async fn resolve_spec(d: &Daemon, req: CreateVmRequest) -> Result<VmSpec, Failure> {
    let defaults = VmDefaults::resolve(&d.inner.config.vm_defaults, d.inner.host);
    let name = match req.name {
        Some(n) => {
            let name = VmName::parse(&n).map_err(|e| Failure::bad_request(e.to_string()))?;
            let key = name.to_string();
            if d.with_store(move |s| s.vm_exists(&key)).await? {
                return Err(Failure::conflict(format!(
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
    if vcpu == 0 || vcpu > MAX_VCPU {
        return Err(Failure::bad_request(format!(
            "--vcpu {vcpu} is out of range: give 1 to {MAX_VCPU}"
        )));
    }
    let memory_mib = req.memory_mib.unwrap_or(defaults.memory_mib.value);
    if memory_mib < MIN_MEMORY_MIB {
        return Err(Failure::bad_request(format!(
            "--memory {memory_mib} MiB is too small: a guest needs at least {MIN_MEMORY_MIB} MiB"
        )));
    }
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

/// `vm create`: resolves the spec, reports it, and checks the image.
///
/// Booting arrives with the VM lifecycle (hypervisor backends, disks,
/// network); until then a request that passes every check is refused with
/// that reason rather than recorded as a VM that can never run.
pub(crate) async fn create_vm(
    d: &Daemon,
    req: CreateVmRequest,
    progress: &Progress,
) -> Result<banger_model::VmRecord, Failure> {
    let spec = resolve_spec(d, req).await?;
    progress.info(format!("spec: {}", spec.summary()));
    let image = spec.image.clone();
    if d.with_store(move |s| s.get_image(&image)).await?.is_none() {
        return Err(Failure::not_found(format!(
            "image {:?} not found: run 'banger image build' or 'banger image list'",
            spec.image
        )));
    }
    Err(Failure::unsupported(
        "this bangerd cannot boot VMs yet: the VM lifecycle (hypervisor backends, disks, \
         network) is not built",
    ))
}
