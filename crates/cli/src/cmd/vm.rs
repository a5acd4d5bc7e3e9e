use std::io::{IsTerminal, Write};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use banger_api::{
    Client, ClientError, CreateVmRequest, ErrorCode, KillVmRequest, ReadyWait, SetVmRequest,
    SshInfo, Timing, VmStarted, VmStats,
};
use banger_model::VmRecord;

use crate::ExitCode;
use crate::args::{CreateArgs, JsonFlag, RunArgs, SetArgs, StartArgs, VmCommand, WorkspaceCommand};
use crate::output::{age, client_error, follow, human_bytes, print_json, print_table, table};
use crate::terminal::{LineTail, TerminalSafe};

pub async fn run(cmd: VmCommand, client: &Client) -> Result<ExitCode> {
    match cmd {
        VmCommand::List(JsonFlag { json }) => list(client, json).await,
        VmCommand::Show(show) => {
            let vm = get(client, &show.name).await?;
            if show.json.json {
                print_json(&vm)?;
            } else {
                print_vm(&vm);
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Create(args) => {
            let started = create(client, &args, false, ReadyWait::Ssh).await?;
            report_started(&started, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Run(args) => run_vm(client, args).await,
        VmCommand::Start(StartArgs { vm, timings }) => {
            let events = client
                .stream(
                    &format!("/v1/vms/{}/start", vm.name),
                    &serde_json::json!({}),
                )
                .await
                .map_err(client_error)?;
            let started: VmStarted = serde_json::from_value(follow(events).await?)?;
            println!(
                "VM {} is running at {}",
                vm.name,
                started.vm.ip.as_deref().unwrap_or("?")
            );
            if timings {
                print_timings(&started.timings, &started.vm);
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Restart(StartArgs { vm, timings }) => {
            let events = client
                .stream(
                    &format!("/v1/vms/{}/restart", vm.name),
                    &serde_json::json!({}),
                )
                .await
                .map_err(client_error)?;
            let started: VmStarted = serde_json::from_value(follow(events).await?)?;
            println!("VM {} restarted", vm.name);
            if timings {
                print_timings(&started.timings, &started.vm);
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Stop(vm) => {
            let spinner = crate::output::spinner(&format!("stopping {}", vm.name));
            let result: Result<VmRecord, _> = client
                .post(&format!("/v1/vms/{}/stop", vm.name), &serde_json::json!({}))
                .await;
            spinner.finish_and_clear();
            result.map_err(client_error)?;
            println!("VM {} stopped", vm.name);
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Kill { vm, signal } => {
            let after: VmRecord = client
                .post(
                    &format!("/v1/vms/{}/kill", vm.name),
                    &KillVmRequest {
                        signal: Some(signal.clone()),
                    },
                )
                .await
                .map_err(client_error)?;
            println!("sent {signal} to VM {}: it is {}", vm.name, after.state);
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Pause(vm) => {
            let paused: VmRecord = client
                .post(
                    &format!("/v1/vms/{}/pause", vm.name),
                    &serde_json::json!({}),
                )
                .await
                .map_err(client_error)?;
            if vm.json.json {
                print_json(&paused)?;
            } else {
                println!(
                    "VM {} is paused: 'banger vm resume {}' lets it run again",
                    vm.name, vm.name
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Fork(args) => {
            let req = banger_api::ForkVmRequest {
                name: args.name.clone(),
            };
            let events = client
                .stream(&format!("/v1/vms/{}/fork", args.vm), &req)
                .await
                .map_err(client_error)?;
            let started: VmStarted = serde_json::from_value(follow(events).await?)?;
            if args.json.json {
                print_json(&started.vm)?;
            } else {
                println!(
                    "VM {} is a fork of {}, running at {}: 'banger vm ssh {}'",
                    started.vm.name,
                    args.vm,
                    started.vm.ip.as_deref().unwrap_or("?"),
                    started.vm.name
                );
            }
            if args.timings {
                print_timings(&started.timings, &started.vm);
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Resume(vm) => {
            let resumed: VmRecord = client
                .post(
                    &format!("/v1/vms/{}/resume", vm.name),
                    &serde_json::json!({}),
                )
                .await
                .map_err(client_error)?;
            if vm.json.json {
                print_json(&resumed)?;
            } else {
                println!("VM {} is running again", vm.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Delete { vm, force } => {
            delete(client, &vm.name, force).await?;
            println!("deleted VM {}", vm.name);
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Stats(show) => {
            let stats: VmStats = client
                .get(&format!("/v1/vms/{}/stats", show.name))
                .await
                .map_err(client_error)?;
            if show.json.json {
                print_json(&stats)?;
            } else {
                print_stats(&stats);
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Ssh {
            vm,
            ssh: force_ssh,
            command,
        } => {
            if crate::agent::enabled(force_ssh)
                && let Some(agent) = crate::agent::reach(client, &vm.name).await
            {
                return crate::agent::run(&agent, &command, None, command.is_empty()).await;
            }
            let info: SshInfo = client
                .get(&format!("/v1/vms/{}/ssh", vm.name))
                .await
                .map_err(client_error)?;
            ssh(&info, &command).await
        }
        VmCommand::Logs { vm, follow, raw } => {
            let mut chunks = client
                .get_chunks(&format!("/v1/vms/{}/logs?follow={follow}", vm.name))
                .await
                .map_err(client_error)?;
            let mut out = std::io::stdout().lock();
            // The guest wrote these bytes: a terminal shows them, it does
            // not obey them.
            let mut filter = (!raw && out.is_terminal()).then(TerminalSafe::default);
            let mut text = String::new();
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(client_error)?;
                let bytes = match &mut filter {
                    Some(filter) => {
                        text.clear();
                        filter.push(&chunk, &mut text);
                        text.as_bytes()
                    }
                    None => &chunk[..],
                };
                if out.write_all(bytes).and_then(|()| out.flush()).is_err() {
                    return Ok(ExitCode::SUCCESS); // the reader went away (a pager closed)
                }
            }
            if let Some(filter) = &mut filter {
                text.clear();
                filter.finish(&mut text);
                let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Workspace(WorkspaceCommand::Prepare {
            vm,
            path,
            workspace,
        }) => {
            let sel = crate::workspace::select(&path, &workspace)?;
            if workspace.dry_run {
                crate::workspace::print_dry_run(&sel)?;
                return Ok(ExitCode::SUCCESS);
            }
            let dir = sel.guest_workdir();
            let agent = match crate::agent::enabled(false) {
                true => crate::agent::reach(client, &vm.name).await,
                false => None,
            };
            match agent {
                Some(agent) => copy_workspace_through(&agent, sel).await?,
                None => {
                    let info: SshInfo = client
                        .get(&format!("/v1/vms/{}/ssh", vm.name))
                        .await
                        .map_err(client_error)?;
                    copy_workspace(&info, sel).await?;
                }
            }
            println!("copied into {dir} of VM {}", vm.name);
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Set(args) => {
            let vm = set(client, &args).await?;
            println!(
                "VM {}: {} vcpu · {} MiB · {} disk · NAT {}",
                vm.name,
                vm.vcpu,
                vm.memory_mib,
                vm.disk_size,
                if vm.nat { "on" } else { "off" }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn get(client: &Client, name: &str) -> Result<VmRecord> {
    client
        .get(&format!("/v1/vms/{name}"))
        .await
        .map_err(client_error)
}

async fn list(client: &Client, json: bool) -> Result<ExitCode> {
    let vms: Vec<VmRecord> = client.get("/v1/vms").await.map_err(client_error)?;
    if json {
        print_json(&vms)?;
    } else if vms.is_empty() {
        println!("no VMs: start one with 'banger vm run'");
    } else {
        let mut t = table(&[
            "name", "state", "ip", "image", "vcpu", "memory", "disk", "created",
        ]);
        for v in &vms {
            t.add_row(vec![
                v.name.to_string(),
                state_of(v),
                v.ip.clone().unwrap_or_default(),
                v.image.clone(),
                v.vcpu.to_string(),
                format!("{} MiB", v.memory_mib),
                v.disk_size.to_string(),
                age(v.created_at),
            ]);
        }
        print_table(&t);
    }
    Ok(ExitCode::SUCCESS)
}

/// The state, marked when the VM goes with its `vm run --rm`.
fn state_of(vm: &VmRecord) -> String {
    if vm.ephemeral {
        format!("{} (--rm)", vm.state)
    } else {
        vm.state.to_string()
    }
}

fn print_vm(vm: &VmRecord) {
    println!("name:    {}", vm.name);
    println!("state:   {}", vm.state);
    if vm.ephemeral {
        println!("lease:   ephemeral: deleted when its 'banger vm run --rm' ends");
    }
    println!("image:   {} (kernel {})", vm.image, vm.kernel);
    println!(
        "spec:    {} vcpu · {} MiB · {} disk",
        vm.vcpu, vm.memory_mib, vm.disk_size
    );
    println!(
        "network: {} ({}, {}){}",
        vm.ip.as_deref().unwrap_or("-"),
        vm.tap,
        vm.mac,
        if vm.nat { ", NAT" } else { "" }
    );
    if let Some(pid) = vm.runtime.as_ref().and_then(|r| r.get("pid")) {
        println!("pid:     {pid}");
    }
    println!("created: {}", age(vm.created_at));
    if let Some(ws) = &vm.workspace {
        println!(
            "workspace: /root/{} on its own disk ({} files, {} when made)",
            ws.dir,
            ws.files,
            human_bytes(ws.bytes)
        );
    }
    if let Some(path) = &vm.boot_path {
        println!("started: {path}");
    }
    if let Some(e) = &vm.last_error {
        println!("error:   {e}");
    }
}

fn print_stats(s: &VmStats) {
    println!("name:    {}", s.name);
    println!("state:   {}", s.state);
    if let Some(pid) = s.pid {
        println!("pid:     {pid}");
    }
    if let Some(cpu) = s.cpu_secs {
        println!("cpu:     {cpu:.1} s");
    }
    if let Some(rss) = s.rss_bytes {
        println!("memory:  {} resident", human_bytes(rss));
    }
    if let Some(up) = s.uptime_secs {
        println!("uptime:  {up} s");
    }
    for d in &s.disks {
        println!(
            "disk:    {} {} of {} used on the host ({})",
            d.name,
            human_bytes(d.allocated),
            human_bytes(d.size),
            d.path.display()
        );
    }
}

/// `ephemeral`: for `vm run --rm`, a VM the daemon deletes when the
/// client's lease ends (and, before that, if it fails to boot).
fn request(
    args: &CreateArgs,
    start: bool,
    ephemeral: bool,
    wait: ReadyWait,
) -> Result<CreateVmRequest> {
    let memory_mib = match args.memory {
        Some(m) if !m.bytes().is_multiple_of(1 << 20) => {
            bail!("--memory {m} is not a whole number of MiB: write it like 1536M or 2G")
        }
        Some(m) => Some(m.mib()),
        None => None,
    };
    Ok(CreateVmRequest {
        name: args.name.clone(),
        image: args.image.clone(),
        vcpu: args.vcpu,
        memory_mib,
        disk_size: args.disk_size,
        nat: args.nat,
        start,
        remove_on_failure: ephemeral,
        ephemeral,
        wait: Some(args.wait.map_or(wait, Into::into)),
        cold: args.cold,
        workspace: None,
    })
}

async fn create(
    client: &Client,
    args: &CreateArgs,
    ephemeral: bool,
    wait: ReadyWait,
) -> Result<VmStarted> {
    create_with(client, args, ephemeral, wait, None).await
}

/// [`create`], with a staged workspace for its workspace disk.
async fn create_with(
    client: &Client,
    args: &CreateArgs,
    ephemeral: bool,
    wait: ReadyWait,
    workspace: Option<String>,
) -> Result<VmStarted> {
    let mut req = request(args, true, ephemeral, wait)?;
    req.workspace = workspace;
    let events = client.stream("/v1/vms", &req).await.map_err(client_error)?;
    let result = follow(events).await?;
    Ok(serde_json::from_value(result)?)
}

fn report_started(started: &VmStarted, args: &CreateArgs) -> Result<()> {
    if args.json.json {
        print_json(&started.vm)?;
    } else {
        println!(
            "VM {} is running at {}: 'banger vm ssh {}'",
            started.vm.name,
            started.vm.ip.as_deref().unwrap_or("?"),
            started.vm.name
        );
    }
    if args.timings {
        print_timings(&started.timings, &started.vm);
    }
    Ok(())
}

pub fn print_timings(timings: &[Timing], vm: &VmRecord) {
    let total: f64 = timings.iter().map(|t| t.secs).sum();
    eprintln!("timings:");
    if let Some(path) = &vm.boot_path {
        eprintln!("  path         {path}");
    }
    for t in timings {
        eprintln!("  {:<12} {:>7.2} s", t.phase, t.secs);
    }
    eprintln!("  {:<12} {:>7.2} s", "total", total);
}

async fn delete(client: &Client, name: &str, force: bool) -> Result<()> {
    client
        .delete::<serde_json::Value>(&format!("/v1/vms/{name}?force={force}"))
        .await
        .map_err(client_error)?;
    Ok(())
}

async fn set(client: &Client, args: &SetArgs) -> Result<VmRecord> {
    let memory_mib = match args.memory {
        Some(m) if !m.bytes().is_multiple_of(1 << 20) => {
            bail!("--memory {m} is not a whole number of MiB")
        }
        Some(m) => Some(m.mib()),
        None => None,
    };
    let nat = match (args.nat, args.no_nat) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    if args.vcpu.is_none() && memory_mib.is_none() && args.disk_size.is_none() && nat.is_none() {
        bail!("nothing to change: give --vcpu, --memory, --disk-size, --nat or --no-nat");
    }
    client
        .patch(
            &format!("/v1/vms/{}", args.vm.name),
            &SetVmRequest {
                vcpu: args.vcpu,
                memory_mib,
                disk_size: args.disk_size,
                nat,
            },
        )
        .await
        .map_err(client_error)
}

/// Runs OpenSSH in the foreground with this terminal; returns the remote
/// command's status as banger's own. ssh's own stderr is passed through and
/// its end kept, to tell ssh's failures (a changed host key) from the
/// command's status.
async fn ssh(info: &SshInfo, command: &[String]) -> Result<ExitCode> {
    ssh_words(info, command, command.is_empty()).await
}

/// As [`ssh`], with the remote words given and whether the session is
/// interactive (a terminal, when there is one).
async fn ssh_words(info: &SshInfo, command: &[String], interactive: bool) -> Result<ExitCode> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cmd = info.command(command, interactive && std::io::stdin().is_terminal());
    cmd.stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    let mut child = tokio::process::Command::from(cmd)
        .spawn()
        .context("cannot run ssh (apt-get install openssh-client)")?;
    let stderr = child.stderr.take();
    // The bytes pass through as they come (this is the user's own command
    // talking to their terminal, as with ssh), whatever their encoding or
    // line length; only a bounded tail is kept.
    let relay = tokio::spawn(async move {
        let mut tail = LineTail::default();
        let Some(mut stderr) = stderr else {
            return tail.text();
        };
        let mut out = tokio::io::stderr();
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = stderr.read(&mut buf).await {
            let _ = out.write_all(&buf[..n]).await;
            tail.push(&buf[..n]);
        }
        tail.text()
    });
    // Ctrl-C belongs to the remote command: ssh passes it on, and banger
    // must outlive it to report the status (and clean up with --rm).
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.context("waiting for ssh")?,
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let tail = relay.await.unwrap_or_default();
    let code = banger_guest::exit_code(status, &tail).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
}

/// Streams a selection into the VM, then starts its tool bootstrap.
async fn copy_workspace(info: &SshInfo, sel: banger_guest::workspace::Selection) -> Result<()> {
    let target = info.clone();
    tokio::task::spawn_blocking(move || {
        crate::workspace::ship(&target, &sel)?;
        crate::workspace::bootstrap_tooling(&target, &sel);
        Ok::<_, anyhow::Error>(())
    })
    .await
    .context("copying the workspace")?
}

/// As [`copy_workspace`], through the guest agent.
async fn copy_workspace_through(
    agent: &banger_guest::agent::AgentClient,
    sel: banger_guest::workspace::Selection,
) -> Result<()> {
    use banger_guest::workspace;
    let argv = match &sel.history {
        Some(h) => workspace::checkout_command(&sel, h),
        None => ["tar", "-x", "-C", "/root"].map(String::from).to_vec(),
    };
    let tooling = crate::workspace::tooling_command(&sel);
    crate::agent::feed(agent, argv, "copying the workspace into the VM", move |w| {
        match &sel.history {
            Some(h) => workspace::write_bundle(&sel.root, h, w)?,
            None => workspace::write_tar(&sel, w)?,
        }
        Ok(())
    })
    .await?;
    if let Some(argv) = tooling {
        // Starts `mise install` in the background; its log says how it went.
        let _ = crate::agent::feed(agent, argv, "starting the tool bootstrap", |_| Ok(())).await;
    }
    Ok(())
}

async fn run_vm(client: &Client, args: RunArgs) -> Result<ExitCode> {
    let selection = match &args.path {
        Some(path) => Some(crate::workspace::select(path, &args.workspace)?),
        None if args.workspace.any() => bail!(
            "--include-untracked, --dry-run, --branch and --from go with a PATH: \
             'banger vm run PATH ...'"
        ),
        None => None,
    };
    if let Some(sel) = &selection
        && args.workspace.dry_run
    {
        crate::workspace::print_dry_run(sel)?;
        return Ok(ExitCode::SUCCESS);
    }
    let wait = if crate::agent::enabled(args.ssh) {
        ReadyWait::Sysinit
    } else {
        ReadyWait::Ssh
    };
    // The files go on a workspace disk the host makes before the VM
    // boots; a checkout with history (--branch/--from) is made here first,
    // by the guest's own script run with the host's git.
    let t0 = std::time::Instant::now();
    let staged = match &selection {
        Some(sel) => {
            Some(crate::workspace::stage_selection(client, sel, args.create.disk_size).await?)
        }
        None => None,
    };
    let staging = t0.elapsed().as_secs_f64();
    let started = create_with(
        client,
        &args.create,
        args.rm,
        wait,
        staged.as_ref().map(|s| s.id.clone()),
    )
    .await?;
    let name = started.vm.name.to_string();
    // Held until this function returns, or until the process dies: the
    // daemon deletes the VM when the lease's connection closes.
    let _lease = if args.rm {
        match Lease::take(client, &name).await {
            Ok(lease) => Some(lease),
            Err(e) => {
                let _ = delete(client, &name, true).await;
                return Err(e);
            }
        }
    } else {
        None
    };
    let agent = match crate::agent::enabled(args.ssh) {
        true => crate::agent::reach(client, &name).await,
        false => None,
    };
    // The ssh details only without the agent: for a VM booted through it,
    // the daemon first waits for its sshd.
    let channel = match agent {
        Some(agent) => Channel::Agent(agent),
        None => Channel::Ssh(
            client
                .get(&format!("/v1/vms/{name}/ssh"))
                .await
                .map_err(client_error)?,
        ),
    };
    let mut timings = started.timings.clone();
    let mut command = args.command.clone();
    let mut cwd = None;
    if let Some(sel) = &selection {
        timings.insert(
            0,
            Timing {
                phase: "workspace".into(),
                secs: staging,
            },
        );
        let dir = sel.guest_workdir();
        // `mise install`, in the background, as after a copy.
        if let Some(argv) = crate::workspace::tooling_command(sel) {
            match &channel {
                Channel::Agent(agent) => {
                    let _ =
                        crate::agent::feed(agent, argv, "starting the tool bootstrap", |_| Ok(()))
                            .await;
                }
                Channel::Ssh(info) => {
                    let (target, sel) = (info.clone(), sel.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        crate::workspace::bootstrap_tooling(&target, &sel)
                    })
                    .await;
                }
            }
        }
        match channel {
            Channel::Agent(_) => cwd = Some(dir),
            Channel::Ssh(_) => command = crate::workspace::in_dir(&dir, &args.command),
        }
    }
    let t0 = std::time::Instant::now();
    let interactive = args.command.is_empty();
    let result = match &channel {
        Channel::Agent(agent) => crate::agent::run(agent, &command, cwd, interactive).await,
        Channel::Ssh(info) => ssh_words(info, &command, interactive).await,
    };
    timings.push(Timing {
        phase: if interactive { "session" } else { "command" }.into(),
        secs: t0.elapsed().as_secs_f64(),
    });
    if args.rm {
        // Deleted here rather than left to the lease's end, so that the
        // VM is gone when banger exits and a failure is reported.
        if let Channel::Ssh(info) = &channel {
            info.close();
        }
        match client
            .delete::<serde_json::Value>(&format!("/v1/vms/{name}?force=true"))
            .await
        {
            Ok(_) => {}
            // Already gone: a bangerd restart deleted it.
            Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => {}
            Err(e) => eprintln!("warning: could not delete VM {name}: {:#}", client_error(e)),
        }
    } else if interactive {
        eprintln!(
            "VM {name} is still running: 'banger vm ssh {name}' to return, \
             'banger vm delete --force {name}' to remove it"
        );
    }
    if args.create.timings {
        print_timings(&timings, &started.vm);
    }
    result
}

/// How `vm run` reaches its guest: the agent, or ssh without one.
enum Channel {
    Agent(banger_guest::agent::AgentClient),
    Ssh(SshInfo),
}

/// The lease of a `vm run --rm` VM: one request to the daemon held open
/// (`POST /v1/vms/{name}/lease`) whose end, for any reason, is the
/// daemon's cue to delete the VM. Dropping it closes the connection.
struct Lease {
    task: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// How often a lease lost to a bangerd restart is asked for again;
    /// well inside the minute a restarted bangerd waits for it.
    const RETAKE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

    async fn take(client: &Client, name: &str) -> Result<Self> {
        let path = format!("/v1/vms/{name}/lease");
        let mut beats = client.post_chunks(&path).await.map_err(client_error)?;
        let (client, name) = (client.clone(), name.to_string());
        let task = tokio::spawn(async move {
            loop {
                // Heartbeats carry nothing: reading them keeps the
                // connection drained. The daemon ends the body only when
                // it stops.
                while let Some(Ok(_)) = beats.next().await {}
                eprintln!(
                    "warning: bangerd stopped: banger takes VM {name}'s lease again when it is \
                     back (a restarted bangerd deletes the VM if nobody does within a minute)"
                );
                beats = loop {
                    tokio::time::sleep(Self::RETAKE_EVERY).await;
                    match client.post_chunks(&path).await {
                        Ok(beats) => break beats,
                        // Deleted meanwhile: nothing left to hold.
                        Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => return,
                        Err(_) => {}
                    }
                };
            }
        });
        Ok(Self { task })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}
