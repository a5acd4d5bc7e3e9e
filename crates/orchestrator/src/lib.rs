//! The VM and image logic behind `bangerd` (DESIGN.md, "orchestrator"):
//! create, boot, stop, kill, delete and change VMs; build, register, pull,
//! verify and delete images and kernels; and reconcile, which finishes or
//! undoes what a crash interrupted. It owns the state a daemon's requests
//! share ([`Orchestrator`]): the store, the per-VM locks, the ephemeral
//! VMs' leases, the console logs, and the table of `.vm` names.
//!
//! Its dependencies come in at construction ([`Deps`]): the privileged
//! network operations as a `dyn HostOps`, the hypervisors as a
//! `dyn Hypervisors`, and how a guest is found to answer as a
//! `dyn GuestProbe`, so that tests run it with fakes, without root, QEMU
//! or a guest. Every step records what it is about to make before making it, so
//! that teardown reads the store, never memory.
//!
//! It must not know about HTTP: failures are [`Error`]s with an
//! [`ErrorKind`], and the daemon maps kinds to statuses in one place. It
//! must not pick a hypervisor backend by name, run anything through a
//! shell, or perform a privileged host operation except through `HostOps`.
#![deny(unsafe_code)]

pub mod dns;
mod error;
mod host_ids;
mod hypervisors;
mod images;
mod progress;
mod vms;
mod workspaces;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use banger_api::{
    BuildImageRequest, CreateVmRequest, PullImageRequest, RegisterImageRequest, SetVmRequest,
    SshInfo, VerifiedFile, VmStarted, VmStats, WarmRequest,
};
use banger_config::{Config, Paths};
use banger_hostops::HostOps;
use banger_images::catalog::Entry;
use banger_model::{HostFacts, ImageRecord, KernelRecord, TemplateRecord, VmDefaults, VmRecord};
use banger_store::Store;
use banger_vmm::ConsoleLog;
use bytes::Bytes;
use tokio::sync::mpsc;

pub use error::{Error, ErrorKind};
pub use host_ids::HostIds;
pub use hypervisors::{
    AGENT_GREETING, AGENT_PROXY_FLAG, AgentReport, AgentWait, BootTimeouts, GuestProbe,
    Hypervisors, Probed, ProxyProcess, SshProbe,
};
pub use progress::Progress;
pub use vms::stream_console;

/// What an orchestrator is made of, chosen by whoever makes it: the
/// daemon passes the real ones, tests pass fakes.
pub struct Deps {
    pub paths: Paths,
    pub config: Config,
    pub host: HostFacts,
    /// The privileged network operations: in this process (dev mode as
    /// root) or through the root helper.
    pub host_ops: Arc<dyn HostOps>,
    pub store: Store,
    /// Which hypervisor boots a VM, and which one runs a handle.
    pub hypervisors: Arc<dyn Hypervisors>,
    /// How a booted guest is found to answer.
    pub guests: Arc<dyn GuestProbe>,
    pub timeouts: BootTimeouts,
    /// banger's guest init, put into kernels' initramfs; `None`: found
    /// when needed (`$BANGER_INIT_BIN`, else beside this binary).
    pub init_binary: Option<PathBuf>,
    /// Where guests ask the host's time at boot, if something answers
    /// there (`banger.clock=` on their command line).
    pub clock: Option<SocketAddr>,
    /// Who writes the id maps of an image build's user namespace when
    /// bangerd is not root: the root helper (`HostIds`) under the system
    /// install, whose unit keeps NoNewPrivileges; `None`: the setuid
    /// newuidmap/newgidmap (dev mode).
    pub id_mapper: Option<Arc<dyn banger_images::userns::IdMapper>>,
}

/// The state every operation shares. Cheap to clone (all shared).
#[derive(Clone)]
pub struct Orchestrator {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub paths: Paths,
    pub config: Config,
    pub host: HostFacts,
    pub host_ops: Arc<dyn HostOps>,
    pub hypervisors: Arc<dyn Hypervisors>,
    pub guests: Arc<dyn GuestProbe>,
    pub timeouts: BootTimeouts,
    pub init_binary: Option<PathBuf>,
    pub id_mapper: Arc<dyn banger_images::userns::IdMapper>,
    pub store: Arc<Store>,
    /// Serializes image builds.
    pub build_lock: tokio::sync::Mutex<()>,
    pub vms: vms::VmLocks,
    /// Who holds the ephemeral VMs (`vm run --rm`).
    pub leases: vms::Leases,
    /// The running VMs' proxies to their guest agents.
    pub agents: vms::AgentDoors,
    /// The VMs' console logs, shared by their rotation and their readers.
    pub consoles: banger_vmm::ConsoleLogs,
    pub verified: images::VerifiedFiles,
    /// The `.vm` names the DNS server answers.
    pub dns: Arc<dns::DnsRecords>,
    pub clock: Option<SocketAddr>,
    /// Serializes bringing kernels' initramfs up to the installed init.
    pub initramfs_lock: tokio::sync::Mutex<()>,
    /// Shapes (`IMAGE VCPU MEMORY`) whose template could not be made in
    /// the background: not tried again there until a restart.
    pub templates_failed: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Workspaces staged for VMs not yet created (`POST /v1/workspaces`).
    pub(crate) workspaces: workspaces::Staged,
    /// Where the tests stop an operation as a crash would.
    #[cfg(test)]
    pub crash: tests::CrashPoint,
}

/// Names a journaled step (`create:disks`, `boot:spawned`...) at which
/// bangerd kills itself with SIGKILL: how the smoke suite's fault
/// scenarios crash a real daemon at a chosen point (the unit tests use
/// their own `CrashPoint`). Read once; unset, empty or unknown means never.
pub const CRASH_AT_ENV: &str = "BANGER_CRASH_AT";

fn crash_at() -> Option<&'static str> {
    static STEP: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    STEP.get_or_init(|| std::env::var(CRASH_AT_ENV).ok().filter(|s| !s.is_empty()))
        .as_deref()
}

impl Orchestrator {
    pub fn new(deps: Deps) -> Self {
        Self {
            inner: Arc::new(Inner {
                paths: deps.paths,
                config: deps.config,
                host: deps.host,
                host_ops: deps.host_ops,
                hypervisors: deps.hypervisors,
                guests: deps.guests,
                timeouts: deps.timeouts,
                init_binary: deps.init_binary,
                id_mapper: deps
                    .id_mapper
                    .unwrap_or_else(|| Arc::new(banger_images::userns::NewIdMap)),
                store: Arc::new(deps.store),
                build_lock: tokio::sync::Mutex::new(()),
                vms: Default::default(),
                leases: Default::default(),
                agents: Default::default(),
                consoles: Default::default(),
                verified: Default::default(),
                dns: Default::default(),
                clock: deps.clock,
                initramfs_lock: tokio::sync::Mutex::new(()),
                templates_failed: Default::default(),
                workspaces: Default::default(),
                #[cfg(test)]
                crash: Default::default(),
            }),
        }
    }

    pub fn paths(&self) -> &Paths {
        &self.inner.paths
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn host_ops(&self) -> &Arc<dyn HostOps> {
        &self.inner.host_ops
    }

    /// The `.vm` names, for the DNS server to answer from.
    pub fn dns_records(&self) -> Arc<dns::DnsRecords> {
        self.inner.dns.clone()
    }

    /// Before anything is served: finishes or undoes what a crash left
    /// half-made (images, kernels, then VMs), rebuilds the `.vm` names,
    /// and starts keeping the running VMs' console logs to their cap.
    pub async fn start(&self) -> Result<(), Error> {
        images::reconcile(self).await?;
        vms::reconcile(self).await?;
        workspaces::reconcile(self);
        self.refresh_dns().await;
        tokio::spawn(vms::cap_console_logs(self.clone()));
        Ok(())
    }

    /// Ends every lease without deleting its VM: the daemon is stopping,
    /// and the next start's reconcile deals with ephemeral VMs.
    pub fn close_leases(&self) {
        self.inner.leases.close();
    }

    /// Marks the end of a journaled step (`create:recorded`,
    /// `boot:spawned`...): what the store says from here on is what
    /// reconcile finds if the daemon dies now. The unit tests stop an
    /// operation at one of these, as a crash would; `scripts/smoke` starts
    /// a real bangerd with [`CRASH_AT_ENV`] naming a step, and the daemon
    /// dies there by SIGKILL. Otherwise it does nothing.
    pub(crate) async fn journaled(&self, step: &'static str) {
        if crash_at() == Some(step) {
            tracing::warn!(step, "{CRASH_AT_ENV} names this step: killing bangerd");
            // SIGKILL, as the fault it stands for: no destructor, no
            // flush, no cleanup runs.
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
        #[cfg(test)]
        self.inner.crash.reached(step).await;
    }

    /// Runs a store call off the async executor (SQLite blocks).
    pub(crate) async fn with_store<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&Store) -> banger_store::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Error::internal(format!("store task failed: {e}")))?
            .map_err(Error::from)
    }

    /// Rebuilds the DNS table from the store: called after every VM state
    /// change, so names follow the records. A store error keeps the old
    /// table (and is logged): the next change rebuilds it.
    pub(crate) async fn refresh_dns(&self) {
        match self.with_store(|s| s.list_vms()).await {
            Ok(vms) => self.inner.dns.replace(dns::records_of(&vms)),
            Err(e) => tracing::warn!(error = %e.message, "dns: cannot read the VMs"),
        }
    }

    pub async fn schema_version(&self) -> Result<i64, Error> {
        self.with_store(|s| s.schema_version()).await
    }

    /// What a VM gets when the request does not say.
    pub fn vm_defaults(&self) -> VmDefaults {
        VmDefaults::resolve(&self.inner.config.vm_defaults, self.inner.host)
    }

    // --- VMs ---

    /// The VMs, without the hidden ones that make templates.
    pub async fn list_vms(&self) -> Result<Vec<VmRecord>, Error> {
        let all = self.with_store(|s| s.list_vms()).await?;
        Ok(all
            .into_iter()
            .filter(|v| v.template_build.is_none())
            .collect())
    }

    pub async fn vm(&self, name: &str) -> Result<VmRecord, Error> {
        vms::get(self, name).await
    }

    pub async fn create_vm(
        &self,
        req: CreateVmRequest,
        progress: &Progress,
    ) -> Result<VmStarted, Error> {
        vms::create(self, req, progress).await
    }

    /// Unpacks a workspace's tar stream (`body`, read on a blocking
    /// thread) for a VM about to be created.
    pub async fn stage_workspace(
        &self,
        query: banger_api::StageWorkspaceQuery,
        body: impl std::io::Read + Send + 'static,
    ) -> Result<banger_api::StagedWorkspace, Error> {
        workspaces::stage(self, query, body).await
    }

    /// `vm fork NAME [--name NEW]`.
    pub async fn fork_vm(
        &self,
        name: &str,
        new_name: Option<String>,
        progress: &Progress,
    ) -> Result<VmStarted, Error> {
        vms::fork(self, name, new_name, progress).await
    }

    pub async fn start_vm(&self, name: &str, progress: &Progress) -> Result<VmStarted, Error> {
        vms::start(self, name, progress).await
    }

    pub async fn restart_vm(&self, name: &str, progress: &Progress) -> Result<VmStarted, Error> {
        vms::restart(self, name, progress).await
    }

    pub async fn stop_vm(&self, name: &str) -> Result<VmRecord, Error> {
        vms::stop(self, name).await
    }

    /// Freezes a running VM's vCPUs; its memory and network stay.
    pub async fn pause_vm(&self, name: &str) -> Result<VmRecord, Error> {
        vms::pause(self, name).await
    }

    /// Lets a paused VM run again.
    pub async fn resume_vm(&self, name: &str) -> Result<VmRecord, Error> {
        vms::resume(self, name).await
    }

    /// Sends `signal` (`KILL`, `SIGTERM`, `9`...) to a running VM's
    /// hypervisor.
    pub async fn kill_vm(&self, name: &str, signal: &str) -> Result<VmRecord, Error> {
        let signal = vms::parse_signal(signal).map_err(Error::invalid)?;
        vms::kill(self, name, signal).await
    }

    pub async fn delete_vm(&self, name: &str, force: bool) -> Result<(), Error> {
        vms::delete(self, name, force).await
    }

    pub async fn set_vm(&self, name: &str, req: SetVmRequest) -> Result<VmRecord, Error> {
        vms::set(self, name, req).await
    }

    pub async fn vm_ssh(&self, name: &str) -> Result<SshInfo, Error> {
        vms::ssh(self, name).await
    }

    pub async fn vm_agent(&self, name: &str) -> Result<banger_api::AgentInfo, Error> {
        vms::agent(self, name).await
    }

    pub async fn vm_stats(&self, name: &str) -> Result<VmStats, Error> {
        vms::stats(self, name).await
    }

    /// The VM's console log, for [`stream_console`].
    pub async fn console_log(&self, name: &str) -> Result<ConsoleLog, Error> {
        vms::console_log(self, name).await
    }

    /// Takes an ephemeral VM's lease: it is held while the returned
    /// receiver is (heartbeats a second), and the VM is deleted once the
    /// receiver is dropped.
    pub async fn lease_vm(
        &self,
        name: &str,
    ) -> Result<mpsc::Receiver<Result<Bytes, Infallible>>, Error> {
        vms::lease(self, name).await
    }

    // --- images and kernels ---

    pub async fn list_images(&self) -> Result<Vec<ImageRecord>, Error> {
        self.with_store(|s| s.list_images()).await
    }

    pub async fn image(&self, name: &str) -> Result<ImageRecord, Error> {
        images::get_image(self, name).await
    }

    pub async fn build_image(
        &self,
        req: BuildImageRequest,
        progress: &Progress,
    ) -> Result<ImageRecord, Error> {
        images::build(self, req, progress).await
    }

    pub async fn register_image(
        &self,
        req: RegisterImageRequest,
        progress: &Progress,
    ) -> Result<ImageRecord, Error> {
        images::register(self, req, progress).await
    }

    pub async fn pull_image(
        &self,
        req: PullImageRequest,
        progress: &Progress,
    ) -> Result<ImageRecord, Error> {
        images::pull(self, req, progress).await
    }

    pub async fn verify_image(&self, name: &str) -> Result<Vec<VerifiedFile>, Error> {
        images::verify(self, name).await
    }

    pub async fn delete_image(&self, name: &str) -> Result<(), Error> {
        images::delete_image(self, name).await?;
        vms::template::delete_for_image(self, name).await;
        Ok(())
    }

    // --- templates ---

    pub async fn list_templates(&self) -> Result<Vec<TemplateRecord>, Error> {
        vms::template::list(self).await
    }

    /// Makes (or finds) the template of an image at a shape.
    pub async fn warm_template(
        &self,
        req: WarmRequest,
        progress: &Progress,
    ) -> Result<TemplateRecord, Error> {
        vms::template::warm(self, &req.image, req.vcpu, req.memory_mib, progress).await
    }

    pub async fn delete_template(&self, id: &str) -> Result<(), Error> {
        vms::template::delete(self, id).await
    }

    pub fn catalog(&self) -> Result<Vec<Entry>, Error> {
        Ok(images::catalog(self)?.entries().cloned().collect())
    }

    pub async fn list_kernels(&self) -> Result<Vec<KernelRecord>, Error> {
        self.with_store(|s| s.list_kernels()).await
    }

    pub async fn kernel(&self, name: &str) -> Result<KernelRecord, Error> {
        images::get_kernel(self, name).await
    }

    pub async fn delete_kernel(&self, name: &str) -> Result<(), Error> {
        images::delete_kernel(self, name).await
    }
}

#[cfg(test)]
mod tests;
