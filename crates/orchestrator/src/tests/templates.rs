//! Templates and forks with fakes: what a template is made of and what is
//! left of its making, what a resumed VM is told, the cold boot when a
//! resume fails, a crash while a template is made, and a fork.

use banger_api::CreateVmRequest;
use banger_config::Config;
use banger_model::{ObjectState, Size, VmState};
use banger_store::Store;

use super::fakes::{FakeAgent, Guest};
use super::lifecycle::{Fixture, IMAGE, VM, request, within};
use crate::{Orchestrator, Progress};

/// Templates on, made at a 1 GiB default disk size.
fn templates_on(f: &Fixture) -> Orchestrator {
    f.orchestrator_with(Config {
        vm_templates: Some(true),
        vm_defaults: banger_model::DefaultsOverride {
            disk_size: Some(Size::from_gib(1)),
            ..Default::default()
        },
        ..Config::default()
    })
}

/// A VM of the shape the tests warm: 1 vCPU, 128 MiB, a work disk larger
/// than a template's.
fn resumable() -> CreateVmRequest {
    CreateVmRequest {
        disk_size: Some(Size::from_gib(2)),
        ..request(true)
    }
}

fn fixture() -> Option<Fixture> {
    let f = Fixture::new(Guest::InitReady)?;
    f.guest.set_agent(FakeAgent::Ready);
    Some(f)
}

/// The template of [`resumable`]'s shape.
fn warm_request() -> banger_api::WarmRequest {
    banger_api::WarmRequest {
        image: IMAGE.into(),
        vcpu: Some(1),
        memory_mib: Some(128),
    }
}

async fn warm(o: &Orchestrator) -> banger_model::TemplateRecord {
    within(
        "warm",
        o.warm_template(warm_request(), &Progress::discard()),
    )
    .await
    .unwrap()
}

/// No template, no VM (a template's hidden one included), nothing
/// running, no template files.
fn assert_no_template_left(f: &Fixture) {
    let store = Store::open(&f.paths().database()).unwrap();
    assert!(store.list_templates().unwrap().is_empty());
    assert!(store.list_vms().unwrap().is_empty());
    assert_eq!(f.hv.running(), 0);
    assert!(f.host().no_vm_left(), "{:?}", f.host());
    let dir = f.paths().state_dir.join("templates");
    let left = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "template files left in {}", dir.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_is_made_then_resumed_with_the_vms_own_identity() {
    let Some(f) = fixture() else { return };
    let o = templates_on(&f);
    let t = warm(&o).await;
    assert_eq!(t.state, ObjectState::Ready);
    let dir = f.paths().state_dir.join("templates").join(&t.id);
    for file in ["state", "system.ext4", "work.ext4"] {
        assert!(dir.join(file).is_file(), "{file}");
        assert!(t.files.iter().any(|p| p.file == file), "{file} is pinned");
    }
    // Its VM is gone, hidden while it lived, and nothing of it runs.
    let store = Store::open(&f.paths().database()).unwrap();
    assert!(store.list_vms().unwrap().is_empty());
    assert_eq!(f.hv.running(), 0);
    assert!(f.host().no_vm_left(), "{:?}", f.host());
    // Warming again keeps it.
    assert_eq!(warm(&o).await.created_at, t.created_at);

    let started = within("create", o.create_vm(resumable(), &Progress::discard()))
        .await
        .unwrap();
    let vm = started.vm;
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(
        vm.boot_path.as_deref(),
        Some(format!("resumed from template {}", t.id).as_str())
    );
    assert_eq!(
        (vm.system_uuid.as_str(), vm.work_uuid.as_str()),
        (t.system_uuid.as_str(), t.work_uuid.as_str())
    );
    assert_eq!(
        f.hv.incoming.lock().unwrap().last().cloned().flatten(),
        Some(dir.join("state"))
    );
    assert!(started.timings.iter().any(|p| p.phase == "identity"));
    // The work disk grows to the VM's size, and the guest is told so.
    assert_eq!(
        f.hv.grown.lock().unwrap().last().cloned(),
        Some((f.vm_dir().join("work.ext4"), Size::from_gib(2).bytes()))
    );
    let id = f.guest.identities.lock().unwrap().last().cloned().unwrap();
    assert_eq!(id.hostname.as_deref(), Some(VM));
    let net = id.network.unwrap();
    assert_eq!(net.mac, vm.mac);
    assert_eq!(net.link, banger_agent_proto::LinkRef::Mac(t.mac.clone()));
    assert_eq!(Some(net.address.to_string()), vm.ip);
    let keys = id.host_keys.unwrap();
    let pinned = std::fs::read_to_string(f.vm_dir().join("ssh/ssh_host_ed25519_key.pub")).unwrap();
    assert_eq!(keys[0].public_key, pinned);
    assert_eq!(id.machine_id.map(|m| m.len()), Some(32));
    let fs = id.filesystems.unwrap();
    assert_eq!((fs[0].mount.as_str(), fs[0].bytes), ("/root", 2 << 30));
    // Two resumes differ in what is random.
    let mut second = resumable();
    second.name = Some("box2".into());
    within("create", o.create_vm(second, &Progress::discard()))
        .await
        .unwrap();
    let ids = f.guest.identities.lock().unwrap().clone();
    assert_ne!(ids[0].machine_id, ids[1].machine_id);
    assert_ne!(ids[0].entropy, ids[1].entropy);

    // Deleting the template leaves the VMs' disks alone.
    o.delete_template(&t.id).await.unwrap();
    assert!(!dir.exists());
    assert!(f.vm_dir().join("work.ext4").is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_resume_boots_cold_and_leaves_nothing_of_the_resume() {
    let Some(f) = fixture() else { return };
    let o = templates_on(&f);
    let t = warm(&o).await;
    f.guest
        .fail_identity
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let vm = within("create", o.create_vm(resumable(), &Progress::discard()))
        .await
        .unwrap()
        .vm;
    assert_eq!(vm.state, VmState::Running);
    let path = vm.boot_path.unwrap();
    assert!(path.contains("the resume failed"), "{path}");
    // Only the cold boot's hypervisor runs; the suspect template is gone.
    assert_eq!(f.hv.running(), 1);
    assert_eq!(
        f.hv.incoming.lock().unwrap().last().cloned().flatten(),
        None
    );
    let store = Store::open(&f.paths().database()).unwrap();
    assert!(
        store.get_template(&t.id).unwrap().is_none() || {
            // A new one may already be made in the background.
            store.get_template(&t.id).unwrap().unwrap().created_at >= t.created_at
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_template_file_is_refused() {
    let Some(f) = fixture() else { return };
    let o = templates_on(&f);
    let t = warm(&o).await;
    let state = f
        .paths()
        .state_dir
        .join("templates")
        .join(&t.id)
        .join("state");
    std::fs::write(&state, b"something else").unwrap();
    let vm = within("create", o.create_vm(resumable(), &Progress::discard()))
        .await
        .unwrap()
        .vm;
    let path = vm.boot_path.unwrap();
    assert!(path.contains("template invalid"), "{path}");
    assert_eq!(
        f.hv.incoming.lock().unwrap().last().cloned().flatten(),
        None
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_while_saving_records_no_template() {
    let Some(f) = fixture() else { return };
    let o = templates_on(&f);
    f.hv.fail_save
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let e = o
        .warm_template(warm_request(), &Progress::discard())
        .await
        .unwrap_err();
    assert!(
        e.message.contains("state filesystem is full"),
        "{}",
        e.message
    );
    assert_no_template_left(&f);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_while_a_template_is_made_is_undone_by_reconcile() {
    let Some(f) = fixture() else { return };
    let o = templates_on(&f);
    o.inner.crash.arm("boot:recorded");
    let making = tokio::spawn({
        let o = o.clone();
        async move { o.warm_template(warm_request(), &Progress::discard()).await }
    });
    within("boot:recorded", o.inner.crash.wait()).await;
    making.abort();
    let _ = making.await;
    drop(o);
    let store = Store::open(&f.paths().database()).unwrap();
    assert_eq!(store.list_templates().unwrap().len(), 1);
    assert_eq!(store.list_vms().unwrap().len(), 1);
    let o = templates_on(&f);
    within("reconcile", o.start()).await.unwrap();
    assert_no_template_left(&f);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_resumes_the_running_vms_state_and_the_vm_runs_on() {
    let Some(f) = fixture() else { return };
    let o = f.orchestrator();
    within("create", o.create_vm(request(true), &Progress::discard()))
        .await
        .unwrap();
    let src = o.vm(VM).await.unwrap();
    let fork = within(
        "fork",
        o.fork_vm(VM, Some("copy".into()), &Progress::discard()),
    )
    .await
    .unwrap()
    .vm;
    assert_eq!(fork.state, VmState::Running);
    assert_eq!(
        fork.boot_path.as_deref(),
        Some("resumed from a fork of box")
    );
    assert_eq!(fork.work_uuid, src.work_uuid);
    assert_ne!(fork.ip, src.ip);
    let id = f.guest.identities.lock().unwrap().last().cloned().unwrap();
    assert_eq!(id.hostname.as_deref(), Some("copy"));
    assert_eq!(
        id.network.unwrap().link,
        banger_agent_proto::LinkRef::Mac(src.mac.clone())
    );
    assert_eq!(id.filesystems, None, "same size: nothing to grow");
    // The source runs on, unpaused; the saved state is gone.
    assert_eq!(o.vm(VM).await.unwrap().state, VmState::Running);
    assert_eq!(f.hv.paused(), 0);
    assert_eq!(f.hv.running(), 2);
    let fork_dir = f.paths().state_dir.join("vms").join("copy");
    assert!(!fork_dir.join("fork.state").exists());
    assert!(fork_dir.join("work.ext4").is_file());

    // A stopped VM cannot be forked.
    o.stop_vm(VM).await.unwrap();
    let e = o
        .fork_vm(VM, Some("copy2".into()), &Progress::discard())
        .await
        .unwrap_err();
    assert!(e.message.contains("only a running"), "{}", e.message);
    assert!(o.vm("copy2").await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_while_forking_leaves_the_vm_paused_and_no_fork() {
    let Some(f) = fixture() else { return };
    let o = f.orchestrator();
    within("create", o.create_vm(request(true), &Progress::discard()))
        .await
        .unwrap();
    o.inner.crash.arm("fork:paused");
    let forking = tokio::spawn({
        let o = o.clone();
        async move {
            o.fork_vm(VM, Some("copy".into()), &Progress::discard())
                .await
        }
    });
    within("fork:paused", o.inner.crash.wait()).await;
    forking.abort();
    let _ = forking.await;
    drop(o);
    // As a crash after the save would leave it: a saved state beside the
    // new VM's record.
    let fork_dir = f.paths().state_dir.join("vms").join("copy");
    std::fs::create_dir_all(&fork_dir).unwrap();
    std::fs::write(fork_dir.join("fork.state"), b"saved").unwrap();
    let o = f.orchestrator();
    within("reconcile", o.start()).await.unwrap();
    assert!(o.vm("copy").await.is_err(), "the fork's record is removed");
    assert!(!fork_dir.exists(), "the fork's files are removed");
    // Recorded paused before it was frozen: `vm resume` puts it right.
    assert_eq!(o.vm(VM).await.unwrap().state, VmState::Paused);
    o.resume_vm(VM).await.unwrap();
    assert_eq!(o.vm(VM).await.unwrap().state, VmState::Running);
}

/// A VM with a workspace resumes the template: its workspace disk takes
/// the placeholder's slot, grows with the work disk, and the agent is told
/// to mount it; one without gets a placeholder of its own in that slot.
#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_vm_gets_its_workspace_disk_in_the_templates_slot() {
    let Some(f) = fixture() else { return };
    let o = templates_on(&f);
    warm(&o).await;
    let template_spec = f.hv.specs.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        template_spec.disks.len(),
        4,
        "the template's guest has the slot"
    );
    assert!(!template_spec.cmdline.contains("banger.workspace"));

    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    b.append_data(&mut h, "repo/a.txt", &b"abc"[..]).unwrap();
    let staged = o
        .stage_workspace(
            banger_api::StageWorkspaceQuery {
                dir: "repo".into(),
                disk_size: Some(Size::from_gib(2)),
                bytes: Some(3),
            },
            std::io::Cursor::new(b.into_inner().unwrap()),
        )
        .await
        .unwrap();
    let req = CreateVmRequest {
        workspace: Some(staged.id),
        ..resumable()
    };
    let vm = within("create", o.create_vm(req, &Progress::discard()))
        .await
        .unwrap()
        .vm;
    assert!(
        vm.boot_path
            .as_deref()
            .unwrap_or_default()
            .starts_with("resumed")
    );
    let ws = vm.workspace.clone().unwrap();
    let disk = f.vm_dir().join("workspace.ext4");
    assert_eq!(banger_storage::read_ext4_uuid(&disk).unwrap(), ws.uuid);
    let spec = f.hv.specs.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        spec.disks.get(3).map(|d| d.path.clone()),
        Some(disk.clone())
    );
    assert!(
        f.hv.grown
            .lock()
            .unwrap()
            .contains(&(disk.clone(), 2 << 30)),
        "{:?}",
        f.hv.grown.lock().unwrap()
    );
    let told = f.guest.identities.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        told.workspace,
        Some(banger_agent_proto::WorkspaceMount {
            uuid: ws.uuid.clone(),
            dir: "/root/repo".into(),
            bytes: 2 << 30,
        })
    );
    o.delete_vm(VM, true).await.unwrap();

    // Without a workspace: an empty placeholder, the template's size.
    let vm = within("create", o.create_vm(resumable(), &Progress::discard()))
        .await
        .unwrap()
        .vm;
    assert!(vm.workspace.is_none());
    let placeholder = std::fs::metadata(f.vm_dir().join("workspace.ext4")).unwrap();
    assert_eq!(placeholder.len(), 1 << 30);
    let told = f.guest.identities.lock().unwrap().last().cloned().unwrap();
    assert_eq!(told.workspace, None);
    o.delete_vm(VM, true).await.unwrap();
}
