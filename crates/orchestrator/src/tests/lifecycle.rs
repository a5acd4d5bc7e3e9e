//! Create, boot, stop and delete, each failure's cleanup, a crash after
//! each journaled step followed by reconcile, and delete while booting.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use banger_api::CreateVmRequest;
use banger_config::{Config, Paths};
use banger_images::digest::sha256_file;
use banger_model::{
    Artifact, ArtifactRole, HostFacts, ImageRecord, KernelRecord, ObjectState, Size, VmRecord,
    VmState,
};
use banger_store::Store;

use super::fakes::{
    FakeAgent, FakeGuest, FakeHost, FakeHypervisor, FakeHypervisors, Guest, HostState,
};
use crate::{BootTimeouts, Deps, ErrorKind, Orchestrator, Progress};

pub(super) const IMAGE: &str = "img";
const KERNEL: &str = "k1";
pub(super) const VM: &str = "box";

/// A state dir with one ready image and kernel (real files, pinned), and
/// the fakes an orchestrator over it uses. The fakes are shared by every
/// orchestrator made here: the host's devices and the hypervisors'
/// processes outlive a daemon.
pub(super) struct Fixture {
    dir: tempfile::TempDir,
    pub host: Arc<FakeHost>,
    pub hv: Arc<FakeHypervisor>,
    pub guest: Arc<FakeGuest>,
    timeouts: BootTimeouts,
}

impl Fixture {
    /// `None` (after saying why) where the tools disks need are missing.
    pub(super) fn new(guest: Guest) -> Option<Self> {
        if !banger_testkit::have_tools(&["mkfs.ext4", "ssh-keygen"]) {
            return None;
        }
        let fixture = Self {
            dir: tempfile::tempdir().unwrap(),
            host: Arc::default(),
            hv: Arc::new(FakeHypervisor::new(guest)),
            guest: Arc::new(FakeGuest::new(true)),
            timeouts: BootTimeouts {
                init: Duration::from_secs(2),
                ssh: Duration::from_secs(2),
            },
        };
        fixture.seed();
        Some(fixture)
    }

    pub(super) fn paths(&self) -> Paths {
        let root = self.dir.path().to_str().unwrap().to_string();
        Paths::from_vars(|k| match k {
            "BANGER_HOME" | "HOME" => Some(root.clone()),
            _ => None,
        })
        .unwrap()
    }

    fn init(&self) -> PathBuf {
        self.dir.path().join("banger-init")
    }

    /// A fresh orchestrator over the same store, as after a restart.
    pub(super) fn orchestrator(&self) -> Orchestrator {
        self.orchestrator_with(Config {
            vm_templates: Some(false),
            ..Config::default()
        })
    }

    /// [`Self::orchestrator`] with this config.
    pub(super) fn orchestrator_with(&self, config: Config) -> Orchestrator {
        let paths = self.paths();
        let store = Store::open(&paths.database()).unwrap();
        Orchestrator::new(Deps {
            paths,
            config,
            host: HostFacts {
                cpus: Some(2),
                memory_bytes: Some(4 << 30),
            },
            host_ops: self.host.clone(),
            hypervisors: Arc::new(FakeHypervisors(self.hv.clone())),
            guests: self.guest.clone(),
            timeouts: self.timeouts,
            init_binary: Some(self.init()),
            store,
            clock: None,
            id_mapper: None,
        })
    }

    /// The image and kernel, as a build would have left them.
    fn seed(&self) {
        let paths = self.paths();
        for dir in [&paths.state_dir, &paths.runtime_dir, &paths.config_dir] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(self.init(), b"not really banger-init").unwrap();
        let (init_sha, _) = sha256_file(&self.init()).unwrap();

        let kdir = paths.kernels_dir().join(KERNEL);
        std::fs::create_dir_all(&kdir).unwrap();
        let mut kernel_files = vec![];
        for (role, file) in [
            (ArtifactRole::Vmlinux, "vmlinux"),
            (ArtifactRole::Bzimage, "bzImage"),
            (ArtifactRole::Initramfs, "initramfs.cpio.gz"),
        ] {
            std::fs::write(kdir.join(file), file.as_bytes()).unwrap();
            kernel_files.push(pinned(&kdir, file, role));
        }
        banger_images::initramfs::record_init(&kdir.join("initramfs.cpio.gz"), &init_sha).unwrap();

        let idir = paths.images_dir().join(IMAGE);
        std::fs::create_dir_all(&idir).unwrap();
        banger_storage::make_disk(
            &idir.join("rootfs.ext4"),
            Size::from_mib(16),
            "rootfs",
            &banger_storage::new_uuid(),
            &banger_storage::Seed::default(),
        )
        .unwrap();
        let rootfs = pinned(&idir, "rootfs.ext4", ArtifactRole::Rootfs);

        let store = Store::open(&paths.database()).unwrap();
        store
            .insert_kernel(&KernelRecord {
                name: KERNEL.into(),
                version: "6.1.0-test".into(),
                source: "test".into(),
                state: ObjectState::Building,
                artifacts: vec![],
                created_at: 0,
            })
            .unwrap();
        store.finish_kernel(KERNEL, &kernel_files).unwrap();
        store
            .insert_image(&ImageRecord {
                name: IMAGE.into(),
                kernel: KERNEL.into(),
                source: "test".into(),
                state: ObjectState::Building,
                artifacts: vec![],
                created_at: 0,
                oci: None,
                facts: None,
            })
            .unwrap();
        store.finish_image(IMAGE, &[rootfs]).unwrap();
    }

    pub(super) fn vm_dir(&self) -> PathBuf {
        self.paths().state_dir.join("vms").join(VM)
    }

    fn disks_exist(&self) -> bool {
        let dir = self.vm_dir();
        dir.join("system.ext4").is_file() && dir.join("work.ext4").is_file()
    }

    pub(super) fn vm(&self) -> Option<VmRecord> {
        Store::open(&self.paths().database())
            .unwrap()
            .get_vm(VM)
            .unwrap()
    }

    pub(super) fn host(&self) -> HostState {
        self.host.state()
    }

    /// No VM left at all: no row, no files, nothing on the host, no
    /// process.
    pub(super) fn assert_nothing_left(&self, what: &str) {
        assert_eq!(self.vm().map(|v| v.state), None, "{what}: the row is left");
        assert!(!self.vm_dir().exists(), "{what}: the VM's files are left");
        assert!(self.host().no_vm_left(), "{what}: {:?}", self.host());
        assert_eq!(self.hv.running(), 0, "{what}: a hypervisor still runs");
    }

    /// Nothing in the VMs' folder, hidden entries included.
    pub(super) fn assert_no_vm_folders(&self, what: &str) {
        let vms = self.paths().state_dir.join("vms");
        let left: Vec<_> = std::fs::read_dir(&vms)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "{what}: {left:?} left in {}",
            vms.display()
        );
    }

    /// The VM is kept stopped, with its disks, and nothing of it runs or
    /// is left on the host.
    fn assert_kept_stopped(&self, what: &str) {
        let vm = self
            .vm()
            .unwrap_or_else(|| panic!("{what}: the VM is gone"));
        assert_eq!(vm.state, VmState::Stopped, "{what}");
        assert_eq!(vm.runtime, None, "{what}");
        assert!(self.disks_exist(), "{what}: the disks are gone");
        assert!(self.host().no_vm_left(), "{what}: {:?}", self.host());
        assert_eq!(self.hv.running(), 0, "{what}: a hypervisor still runs");
    }
}

fn pinned(dir: &Path, file: &str, role: ArtifactRole) -> Artifact {
    let (sha256, size) = sha256_file(&dir.join(file)).unwrap();
    Artifact {
        role,
        file: file.into(),
        sha256,
        size,
    }
}

pub(super) fn request(start: bool) -> CreateVmRequest {
    CreateVmRequest {
        name: Some(VM.into()),
        image: Some(IMAGE.into()),
        vcpu: Some(1),
        memory_mib: Some(128),
        disk_size: Some(Size::from_mib(64)),
        nat: true,
        start,
        remove_on_failure: false,
        ephemeral: false,
        wait: None,
        cold: false,
        workspace: None,
    }
}

fn run_rm() -> CreateVmRequest {
    CreateVmRequest {
        remove_on_failure: true,
        ephemeral: true,
        ..request(true)
    }
}

pub(super) async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not end within a minute"))
}

// --- a boot that works, then stop and delete ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_boots_stops_and_is_deleted_leaving_nothing() {
    let Some(f) = Fixture::new(Guest::InitReady) else {
        return;
    };
    let o = f.orchestrator();
    let started = within("create", o.create_vm(request(true), &Progress::discard()))
        .await
        .unwrap();
    assert_eq!(started.vm.state, VmState::Running);
    let host = f.host();
    assert!(host.bridge);
    assert_eq!(host.taps.len(), 1);
    assert!(
        host.isolated.contains(VM) && host.nat.contains(VM),
        "{host:?}"
    );
    assert_eq!(f.hv.running(), 1);
    assert_eq!(
        o.dns_records().get(VM).map(|ip| ip.to_string()),
        started.vm.ip
    );

    let stopped = o.stop_vm(VM).await.unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    f.assert_kept_stopped("after stop");
    assert_eq!(o.dns_records().get(VM), None, "a stopped VM still resolves");

    o.delete_vm(VM, false).await.unwrap();
    f.assert_nothing_left("after delete");
    let e = o.vm(VM).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_vm_is_refused_what_needs_it_stopped() {
    let Some(f) = Fixture::new(Guest::InitReady) else {
        return;
    };
    let o = f.orchestrator();
    within("create", o.create_vm(request(true), &Progress::discard()))
        .await
        .unwrap();
    let e = o.delete_vm(VM, false).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    let e = o.create_vm(request(false), &Progress::discard()).await;
    assert_eq!(e.unwrap_err().kind, ErrorKind::Conflict);
    let e = o.kill_vm(VM, "NOPE").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
    o.delete_vm(VM, true).await.unwrap();
    f.assert_nothing_left("after delete --force");
}

// --- what a boot waits for: the guest agent, else sshd ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boot_waits_for_the_agent_and_falls_back_to_sshd_without_one() {
    let Some(f) = Fixture::new(Guest::InitReady) else {
        return;
    };
    let o = f.orchestrator();
    let phases = |s: &banger_api::VmStarted| -> Vec<String> {
        s.timings.iter().map(|t| t.phase.clone()).collect()
    };
    let sysinit = || CreateVmRequest {
        wait: Some(banger_api::ReadyWait::Sysinit),
        ..request(true)
    };

    // The agent answers: sshd is not waited for (it never answers here).
    f.guest.set_agent(FakeAgent::Ready);
    f.guest
        .answers
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let started = within("create", o.create_vm(sysinit(), &Progress::discard()))
        .await
        .unwrap();
    assert_eq!(started.vm.state, VmState::Running);
    let p = phases(&started);
    assert!(p.ends_with(&["agent".into(), "ready".into()]), "{p:?}");
    let info = o.vm_agent(VM).await.unwrap();
    let socket = info.socket.expect("a proxy to the agent");
    assert!(socket.exists(), "{}", socket.display());
    // Nothing saw its sshd answer: ssh is told so, after a wait for it.
    let e = o.vm_ssh(VM).await.unwrap_err();
    assert!(e.message.contains("sshd did not answer"), "{e}");
    f.guest
        .answers
        .store(true, std::sync::atomic::Ordering::SeqCst);
    o.vm_ssh(VM).await.unwrap();
    f.guest
        .answers
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // Seen once is enough.
    o.vm_ssh(VM).await.unwrap();
    o.stop_vm(VM).await.unwrap();
    let e = o.vm_agent(VM).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");

    // No agent: the boot says so and waits for sshd.
    f.guest.set_agent(FakeAgent::Absent);
    f.guest
        .answers
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let started = within("start", o.start_vm(VM, &Progress::discard()))
        .await
        .unwrap();
    assert_eq!(phases(&started).last().map(String::as_str), Some("ssh"));
    o.stop_vm(VM).await.unwrap();
    o.delete_vm(VM, false).await.unwrap();
    let started = within("create", o.create_vm(sysinit(), &Progress::discard()))
        .await
        .unwrap();
    assert_eq!(phases(&started).last().map(String::as_str), Some("ssh"));
    let info = o.vm_agent(VM).await.unwrap();
    assert_eq!(info.socket, None);
    assert!(info.reason.unwrap().contains("the fake has none"));
    o.delete_vm(VM, true).await.unwrap();

    // An agent that answers but whose guest never gets there: a boot
    // timeout, the VM kept for diagnosis.
    f.guest.set_agent(FakeAgent::NeverReady);
    let e = within("create", o.create_vm(sysinit(), &Progress::discard()))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BootTimeout, "{e}");
    assert!(e.message.contains("did not reach sysinit"), "{e}");
    assert_eq!(f.vm().unwrap().state, VmState::Error);
    o.delete_vm(VM, true).await.unwrap();
    f.assert_nothing_left("after delete --force");
}

// --- cleanup after a failed boot ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hypervisor_that_fails_to_start_leaves_no_network_and_keeps_the_disks() {
    let Some(f) = Fixture::new(Guest::FailsToStart) else {
        return;
    };
    let o = f.orchestrator();
    let e = within("create", o.create_vm(request(true), &Progress::discard()))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal, "{e}");
    assert_eq!(f.hv.launches.lock().unwrap().len(), 1);
    let vm = f.vm().expect("a VM that failed to boot is kept");
    assert_eq!(vm.state, VmState::Error);
    assert!(vm.last_error.unwrap().contains("fails to start"));
    assert_eq!(vm.runtime, None);
    assert!(f.disks_exist());
    assert!(f.host().no_vm_left(), "{:?}", f.host());
    // It boots once the hypervisor does.
    f.hv.set_guest(Guest::InitReady);
    let started = within("start", o.start_vm(VM, &Progress::discard()))
        .await
        .unwrap();
    assert_eq!(started.vm.state, VmState::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_run_rm_whose_hypervisor_fails_to_start_leaves_nothing() {
    let Some(f) = Fixture::new(Guest::FailsToStart) else {
        return;
    };
    let o = f.orchestrator();
    let e = within("create", o.create_vm(run_rm(), &Progress::discard()))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal, "{e}");
    f.assert_nothing_left("vm run --rm that failed to boot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_never_starts_init_is_stopped_and_its_network_removed() {
    let Some(f) = Fixture::new(Guest::NeverReady) else {
        return;
    };
    let o = f.orchestrator();
    let e = within("create", o.create_vm(request(true), &Progress::discard()))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal, "{e}");
    assert!(e.message.contains("banger-init ready"), "{e}");
    let vm = f.vm().unwrap();
    assert_eq!(vm.state, VmState::Error);
    assert_eq!(vm.runtime, None);
    assert_eq!(f.hv.running(), 0);
    assert_eq!(f.hv.stops.lock().unwrap().len(), 1);
    assert!(f.host().no_vm_left(), "{:?}", f.host());
    assert!(f.disks_exist());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_whose_sshd_never_answers_is_left_running_for_diagnosis() {
    let Some(f) = Fixture::new(Guest::InitReady) else {
        return;
    };
    f.guest
        .answers
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let o = f.orchestrator();
    // Even for `vm run --rm`: the wedged VM is kept for `vm logs`, and is
    // no longer ephemeral, so no lease or reconcile deletes it.
    let e = within("create", o.create_vm(run_rm(), &Progress::discard()))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BootTimeout, "{e}");
    let vm = f.vm().unwrap();
    assert_eq!(vm.state, VmState::Error);
    assert!(vm.runtime.is_some() && !vm.ephemeral, "{vm:?}");
    assert_eq!(f.hv.running(), 1);
    assert_eq!(f.host().taps.len(), 1);
    // A restart keeps it too.
    let o = f.orchestrator();
    o.start().await.unwrap();
    assert_eq!(f.vm().unwrap().state, VmState::Error);
    assert_eq!(f.hv.running(), 1);
    o.delete_vm(VM, true).await.unwrap();
    f.assert_nothing_left("after delete --force");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_host_operation_undoes_the_network_and_starts_nothing() {
    let Some(f) = Fixture::new(Guest::InitReady) else {
        return;
    };
    for op in ["create_tap", "isolate_guest", "enable_nat"] {
        f.host.fail(op);
        let o = f.orchestrator();
        let e = within("create", o.create_vm(request(true), &Progress::discard()))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Host, "{op}: {e}");
        assert!(f.host().no_vm_left(), "{op}: {:?}", f.host());
        assert!(f.hv.launches.lock().unwrap().is_empty(), "{op}");
        // As it was before the boot: stopped, with its disks.
        f.assert_kept_stopped(op);
        o.delete_vm(VM, false).await.unwrap();
        f.assert_nothing_left(op);
    }
}

// --- delete while booting ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_while_booting_waits_for_the_boot_then_removes_everything() {
    let Some(f) = Fixture::new(Guest::NeverReady) else {
        return;
    };
    let o = f.orchestrator();
    let booting = tokio::spawn({
        let o = o.clone();
        async move { o.create_vm(request(true), &Progress::discard()).await }
    });
    // Until the hypervisor runs: the boot holds the VM's lock.
    within("the boot", async {
        while f.hv.running() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(f.vm().unwrap().state, VmState::Starting);
    within("delete", o.delete_vm(VM, true)).await.unwrap();
    let boot = booting.await.unwrap();
    assert!(boot.is_err(), "the boot cannot succeed: {boot:?}");
    f.assert_nothing_left("delete while booting");
}

// --- a crash after each journaled step, then reconcile ---

/// The steps of `vm create` (and its first boot), in order.
const STEPS: [&str; 7] = [
    "create:recorded",
    "create:disks",
    "create:stopped",
    "boot:starting",
    "boot:network",
    "boot:spawned",
    "boot:recorded",
];

/// Runs create until `step`, drops it there as a crash would, and runs a
/// fresh orchestrator's reconcile over what is left.
async fn crash_then_reconcile(f: &Fixture, req: CreateVmRequest, step: &'static str) {
    crash_at(f, step, |o| async move {
        o.create_vm(req, &Progress::discard()).await
    })
    .await;
}

/// Runs `op` on a fresh orchestrator until `step`, drops it there as a
/// crash would, and runs another one's reconcile over what is left.
async fn crash_at<F, Fut, T>(f: &Fixture, step: &'static str, op: F)
where
    F: FnOnce(Orchestrator) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: std::fmt::Debug + Send + 'static,
{
    let o = f.orchestrator();
    o.inner.crash.arm(step);
    let task = tokio::spawn(op(o.clone()));
    within(step, o.inner.crash.wait()).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    drop(o);
    within("reconcile", f.orchestrator().start()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_each_step_of_create_is_undone_or_finished_by_reconcile() {
    for (i, step) in STEPS.into_iter().enumerate() {
        let Some(f) = Fixture::new(Guest::NeverReady) else {
            return;
        };
        crash_then_reconcile(&f, request(true), step).await;
        if i < 2 {
            // Before its disks were all made, the VM was never the user's.
            f.assert_nothing_left(step);
        } else {
            // A whole VM: kept, stopped, and nothing of a boot is left.
            f.assert_kept_stopped(step);
            let vm = f.vm().unwrap();
            assert_eq!(vm.last_error.is_some(), step == "boot:recorded", "{step}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_vm_run_rm_leaves_nothing_after_reconcile() {
    for step in STEPS {
        let Some(f) = Fixture::new(Guest::NeverReady) else {
            return;
        };
        crash_then_reconcile(&f, run_rm(), step).await;
        f.assert_nothing_left(step);
    }
}

/// The steps of `vm delete --force` of a running VM, in order.
const DELETE_STEPS: [&str; 3] = ["delete:stopped", "delete:network", "delete:files"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_each_step_of_delete_leaves_the_vm_whole_or_gone() {
    for step in DELETE_STEPS {
        let Some(f) = Fixture::new(Guest::InitReady) else {
            return;
        };
        let o = f.orchestrator();
        within("create", o.create_vm(request(true), &Progress::discard()))
            .await
            .unwrap();
        drop(o);
        crash_at(&f, step, |o| async move { o.delete_vm(VM, true).await }).await;
        if step == "delete:files" {
            // Its folder was gone, its record not yet: the delete is
            // finished.
            f.assert_nothing_left(step);
            f.assert_no_vm_folders(step);
        } else {
            // Stopped with its disks: a whole VM, which a delete removes.
            f.assert_kept_stopped(step);
            f.orchestrator().delete_vm(VM, false).await.unwrap();
            f.assert_nothing_left(step);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_a_vm_folder_is_removed_is_finished_by_reconcile() {
    let Some(f) = Fixture::new(Guest::InitReady) else {
        return;
    };
    let o = f.orchestrator();
    within("create", o.create_vm(request(false), &Progress::discard()))
        .await
        .unwrap();
    drop(o);
    // As a daemon killed inside the removal leaves it: the folder moved
    // aside and half removed, the record still there.
    let doomed = f
        .paths()
        .state_dir
        .join("vms")
        .join(format!(".{VM}.deleting"));
    std::fs::rename(f.vm_dir(), &doomed).unwrap();
    std::fs::remove_file(doomed.join("system.ext4")).unwrap();
    within("reconcile", f.orchestrator().start()).await.unwrap();
    f.assert_nothing_left("a half-removed folder");
    f.assert_no_vm_folders("a half-removed folder");
}

/// The steps of making an image (build, register, pull), in order.
const IMAGE_STEPS: [&str; 2] = ["image:recorded", "image:filled"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_an_image_is_made_leaves_no_image_after_reconcile() {
    for step in IMAGE_STEPS {
        let Some(f) = Fixture::new(Guest::InitReady) else {
            return;
        };
        let paths = f.paths();
        // And a layer download a crash cut short earlier.
        let tmp = paths.oci_cache().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let half = tmp.join(format!("{}.4242", "ab".repeat(32)));
        std::fs::write(&half, "half a layer").unwrap();
        let req = banger_api::RegisterImageRequest {
            name: "copy".into(),
            rootfs: paths.images_dir().join(IMAGE).join("rootfs.ext4"),
            kernel: KERNEL.into(),
        };
        crash_at(&f, step, |o| async move {
            o.register_image(req, &Progress::discard()).await
        })
        .await;
        let store = Store::open(&paths.database()).unwrap();
        assert_eq!(store.get_image("copy").unwrap(), None, "{step}: the row");
        assert!(
            !paths.images_dir().join("copy").exists(),
            "{step}: the folder"
        );
        assert!(!half.exists(), "{step}: the download");
        let kept = store.get_image(IMAGE).unwrap().map(|i| i.state);
        assert_eq!(kept, Some(ObjectState::Ready), "{step}: the other image");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_readopts_a_running_vm_and_stops_one_whose_hypervisor_died() {
    let Some(f) = Fixture::new(Guest::InitReady) else {
        return;
    };
    let o = f.orchestrator();
    within("create", o.create_vm(request(true), &Progress::discard()))
        .await
        .unwrap();
    drop(o);
    // bangerd restarts while the VM runs: re-adopted as it is.
    let o = f.orchestrator();
    o.start().await.unwrap();
    let vm = f.vm().unwrap();
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(f.hv.running(), 1);
    assert!(f.host().isolated.contains(VM));
    assert!(o.dns_records().get(VM).is_some());
    drop(o);
    // Its hypervisor exits while bangerd is down: stopped, network freed.
    f.hv.exit_all();
    f.orchestrator().start().await.unwrap();
    f.assert_kept_stopped("hypervisor gone");
    assert!(f.vm().unwrap().last_error.unwrap().contains("exited"));
}

// --- pause and resume ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_pauses_and_resumes_and_what_needs_it_running_says_resume() {
    let Some(f) = Fixture::new(Guest::InitReady) else {
        return;
    };
    let o = f.orchestrator();
    let started = within("create", o.create_vm(request(true), &Progress::discard()))
        .await
        .unwrap();
    let vm = o.pause_vm(VM).await.unwrap();
    assert_eq!(vm.state, VmState::Paused);
    assert_eq!(vm.runtime, started.vm.runtime, "the process is the same");
    assert_eq!((f.hv.running(), f.hv.paused()), (1, 1));
    // Its network and name stay: it runs again where it left off.
    assert!(f.host().isolated.contains(VM), "{:?}", f.host());
    assert_eq!(
        o.dns_records().get(VM).map(|ip| ip.to_string()),
        started.vm.ip
    );
    let stats = o.vm_stats(VM).await.unwrap();
    assert_eq!(stats.state, VmState::Paused);
    assert!(stats.pid.is_some());

    let conflict = |e: crate::Error, says: &str| {
        assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
        assert!(e.message.contains(says), "{e}");
    };
    let resume_hint = "resume it with 'banger vm resume box'";
    conflict(o.pause_vm(VM).await.unwrap_err(), "already paused");
    conflict(o.vm_ssh(VM).await.unwrap_err(), resume_hint);
    conflict(o.vm_agent(VM).await.unwrap_err(), resume_hint);
    conflict(
        o.start_vm(VM, &Progress::discard()).await.unwrap_err(),
        resume_hint,
    );
    conflict(
        o.delete_vm(VM, false).await.unwrap_err(),
        "VM box is paused",
    );
    let set = banger_api::SetVmRequest {
        vcpu: Some(2),
        ..Default::default()
    };
    conflict(o.set_vm(VM, set).await.unwrap_err(), "VM box is paused");
    assert_eq!(f.hv.launches.lock().unwrap().len(), 1, "nothing booted");

    let vm = o.resume_vm(VM).await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    assert_eq!((f.hv.running(), f.hv.paused()), (1, 0));
    o.vm_ssh(VM).await.unwrap();
    conflict(o.resume_vm(VM).await.unwrap_err(), "not paused");

    o.stop_vm(VM).await.unwrap();
    conflict(o.pause_vm(VM).await.unwrap_err(), "VM box is stopped");
    conflict(o.resume_vm(VM).await.unwrap_err(), "'banger vm start box'");
    let e = o.pause_vm("nope").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_vm_stops_restarts_and_is_deleted_by_force() {
    let Some(f) = Fixture::new(Guest::InitReady) else {
        return;
    };
    let o = f.orchestrator();
    within("create", o.create_vm(request(true), &Progress::discard()))
        .await
        .unwrap();
    o.pause_vm(VM).await.unwrap();
    let stopped = o.stop_vm(VM).await.unwrap();
    assert_eq!(stopped.state, VmState::Stopped);
    f.assert_kept_stopped("stop of a paused VM");
    assert_eq!(f.hv.paused(), 0);

    within("start", o.start_vm(VM, &Progress::discard()))
        .await
        .unwrap();
    o.pause_vm(VM).await.unwrap();
    let restarted = within("restart", o.restart_vm(VM, &Progress::discard()))
        .await
        .unwrap();
    assert_eq!(restarted.vm.state, VmState::Running);
    assert_eq!((f.hv.running(), f.hv.paused()), (1, 0));

    o.pause_vm(VM).await.unwrap();
    let killed = o.kill_vm(VM, "KILL").await.unwrap();
    assert_eq!(killed.state, VmState::Stopped);
    f.assert_kept_stopped("kill of a paused VM");

    within("start", o.start_vm(VM, &Progress::discard()))
        .await
        .unwrap();
    o.pause_vm(VM).await.unwrap();
    o.delete_vm(VM, true).await.unwrap();
    f.assert_nothing_left("delete --force of a paused VM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_the_hypervisor_refuses_leaves_the_vm_running() {
    let Some(f) = Fixture::new(Guest::InitReady) else {
        return;
    };
    let o = f.orchestrator();
    within("create", o.create_vm(request(true), &Progress::discard()))
        .await
        .unwrap();
    f.hv.fail_pause
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let e = o.pause_vm(VM).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal, "{e}");
    assert!(e.message.contains("left running"), "{e}");
    assert_eq!(f.vm().unwrap().state, VmState::Running);
    assert_eq!((f.hv.running(), f.hv.paused()), (1, 0), "resumed again");

    // A hypervisor that died behind the daemon's back: `vm stop` clears it.
    f.hv.exit_all();
    let e = o.resume_vm(VM).await.unwrap_err();
    assert!(e.message.contains("not paused"), "{e}");
    let e = o.pause_vm(VM).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    assert!(e.message.contains("no longer running"), "{e}");
    o.stop_vm(VM).await.unwrap();
    f.assert_kept_stopped("stop after the hypervisor died");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_keeps_a_paused_vm_paused() {
    let Some(f) = Fixture::new(Guest::InitReady) else {
        return;
    };
    let o = f.orchestrator();
    within("create", o.create_vm(request(true), &Progress::discard()))
        .await
        .unwrap();
    o.pause_vm(VM).await.unwrap();
    drop(o);
    let o = f.orchestrator();
    o.start().await.unwrap();
    let vm = f.vm().unwrap();
    assert_eq!(vm.state, VmState::Paused);
    assert_eq!((f.hv.running(), f.hv.paused()), (1, 1));
    assert!(f.host().isolated.contains(VM));
    assert_eq!(o.resume_vm(VM).await.unwrap().state, VmState::Running);
    o.pause_vm(VM).await.unwrap();
    drop(o);
    // Its hypervisor exits while bangerd is down: stopped, network freed.
    f.hv.exit_all();
    f.orchestrator().start().await.unwrap();
    f.assert_kept_stopped("a paused VM whose hypervisor is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_pause_is_recorded_leaves_a_vm_that_resume_puts_right() {
    let Some(f) = Fixture::new(Guest::InitReady) else {
        return;
    };
    let o = f.orchestrator();
    within("create", o.create_vm(request(true), &Progress::discard()))
        .await
        .unwrap();
    o.inner.crash.arm("pause:recorded");
    let pause = tokio::spawn({
        let o = o.clone();
        async move { o.pause_vm(VM).await }
    });
    within("pause:recorded", o.inner.crash.wait()).await;
    pause.abort();
    assert!(pause.await.unwrap_err().is_cancelled());
    drop(o);
    let o = f.orchestrator();
    within("reconcile", o.start()).await.unwrap();
    // Recorded paused while the guest still runs: the safe side, since
    // commands are refused rather than left hanging.
    assert_eq!(f.vm().unwrap().state, VmState::Paused);
    assert_eq!((f.hv.running(), f.hv.paused()), (1, 0));
    assert_eq!(o.resume_vm(VM).await.unwrap().state, VmState::Running);
    o.vm_ssh(VM).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_vm_run_rm_keeps_its_lease_rules() {
    let Some(f) = Fixture::new(Guest::InitReady) else {
        return;
    };
    let o = f.orchestrator();
    within("create", o.create_vm(run_rm(), &Progress::discard()))
        .await
        .unwrap();
    let vm = o.pause_vm(VM).await.unwrap();
    assert!(vm.ephemeral && vm.state == VmState::Paused, "{vm:?}");
    drop(o);
    // After a restart it waits, paused, for its client to take the lease
    // again (as a running one does)...
    let o = f.orchestrator();
    o.start().await.unwrap();
    let vm = f.vm().unwrap();
    assert!(vm.ephemeral && vm.state == VmState::Paused, "{vm:?}");
    // ...and the lease's end deletes it as it would a running one.
    o.delete_vm(VM, true).await.unwrap();
    f.assert_nothing_left("the lease of a paused VM ended");
}

// --- images and kernels ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_and_a_kernel_left_building_by_a_crash_are_removed() {
    let Some(f) = Fixture::new(Guest::InitReady) else {
        return;
    };
    let paths = f.paths();
    let store = Store::open(&paths.database()).unwrap();
    store
        .insert_kernel(&KernelRecord {
            name: "half-k".into(),
            version: "6.1.0-half".into(),
            source: "test".into(),
            state: ObjectState::Building,
            artifacts: vec![],
            created_at: 0,
        })
        .unwrap();
    store
        .insert_image(&ImageRecord {
            name: "half".into(),
            kernel: "half-k".into(),
            source: "test".into(),
            state: ObjectState::Building,
            artifacts: vec![],
            created_at: 0,
            oci: None,
            facts: None,
        })
        .unwrap();
    for dir in [
        paths.images_dir().join("half"),
        paths.kernels_dir().join("half-k"),
    ] {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("partial"), b"x").unwrap();
    }
    drop(store);
    let o = f.orchestrator();
    o.start().await.unwrap();
    assert_eq!(o.image("half").await.unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(
        o.kernel("half-k").await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert!(!paths.images_dir().join("half").exists());
    assert!(!paths.kernels_dir().join("half-k").exists());
    // What was whole stays.
    assert_eq!(o.image(IMAGE).await.unwrap().state, ObjectState::Ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_in_use_is_not_deleted_and_a_missing_one_is_not_found() {
    let Some(f) = Fixture::new(Guest::InitReady) else {
        return;
    };
    let o = f.orchestrator();
    within("create", o.create_vm(request(false), &Progress::discard()))
        .await
        .unwrap();
    let e = o.delete_image(IMAGE).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    let e = o.delete_image("nope").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    o.delete_vm(VM, false).await.unwrap();
    o.delete_image(IMAGE).await.unwrap();
    assert!(!f.paths().images_dir().join(IMAGE).exists());
}
