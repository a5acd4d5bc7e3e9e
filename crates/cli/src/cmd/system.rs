//! `banger system`: install, inspect, restart and remove the system
//! services (docs/system-install.md). banger-system makes the host
//! changes; this checks who runs it, talks to the daemon where VMs are
//! concerned, and tells the user what happened.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use banger_api::{Client, DaemonStatus};
use banger_config::Install;
use banger_config::install::{DAEMON_UNIT, HELPER_SOCKET, HELPER_UNIT};
use banger_model::{VmRecord, VmState};
use banger_system::probe::{self, HelperProbe, SocketState};
use banger_system::setup::{self, Sources};
use banger_system::systemctl::{self, UnitState};
use banger_system::{require_root, require_systemd};
use serde::Serialize;

use crate::ExitCode;
use crate::args::{JsonFlag, SystemCommand};
use crate::output::{client_error, print_json};

/// How long a (re)started daemon may take to answer on its socket.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
const CLI_VERSION: &str = env!("CARGO_PKG_VERSION");

pub async fn run(cmd: SystemCommand) -> Result<ExitCode> {
    match cmd {
        SystemCommand::Install { owner, prefix } => install(&owner, &prefix).await,
        SystemCommand::Status(JsonFlag { json }) => status(json).await,
        SystemCommand::Restart => restart().await,
        SystemCommand::Uninstall { purge, force } => uninstall(purge, force).await,
    }
}

async fn install(owner: &str, prefix: &Path) -> Result<ExitCode> {
    require_root("install")?;
    require_systemd("install")?;
    let sources = sources()?;
    let record = setup::install(owner, prefix, &sources, &mut |line| println!("{line}"))?;
    let version = wait_until_answering(&record).await?;
    println!(
        "banger {version} runs as {DAEMON_UNIT} for {owner}: as {owner}, 'banger vm run' needs \
         no sudo",
        owner = record.owner
    );
    Ok(ExitCode::SUCCESS)
}

/// What the install copies: this banger, the bangerd beside it (never one
/// from PATH, which could be an older install), and the static guest init.
fn sources() -> Result<Sources> {
    let banger = std::env::current_exe().context("cannot tell where this banger is")?;
    let bangerd = banger.with_file_name("bangerd");
    if !bangerd.is_file() {
        bail!(
            "cannot find bangerd beside {}: build both (cargo build --release) and run the \
             banger next to it",
            banger.display()
        );
    }
    let init = banger_images::initramfs::find_init_binary()
        .map_err(|why| anyhow!("cannot install the guest's init: {why}"))?;
    Ok(Sources {
        banger,
        bangerd,
        init,
    })
}

/// Waits for the service's daemon to answer and the helper to take
/// connections (a daemon can answer while its helper fails, and would
/// then fail at the first VM); the daemon's version. A failure names the
/// unit that is down.
async fn wait_until_answering(install: &Install) -> Result<String> {
    let socket = install.paths().socket();
    let client = Client::new(&socket).with_timeout(Duration::from_secs(2));
    let started = Instant::now();
    loop {
        if let Ok(s) = client.get::<DaemonStatus>("/v1/status").await
            && probe::helper(Path::new(HELPER_SOCKET)).socket == SocketState::Connects
        {
            return Ok(s.version);
        }
        if started.elapsed() > ANSWER_TIMEOUT {
            // The helper first: without it the daemon does not start.
            for unit in [HELPER_UNIT, DAEMON_UNIT] {
                if let Ok(state) = systemctl::show(unit)
                    && !state.is_active()
                {
                    bail!(
                        "{unit} is {}: see 'systemctl status {unit}' and 'journalctl -u {unit}'",
                        state.describe()
                    );
                }
            }
            bail!(
                "{DAEMON_UNIT} on {} and {HELPER_UNIT} on {HELPER_SOCKET} did not both answer \
                 within {}s: see 'systemctl status {HELPER_UNIT} {DAEMON_UNIT}' and \
                 'journalctl -u {HELPER_UNIT} -u {DAEMON_UNIT}'",
                socket.display(),
                ANSWER_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn restart() -> Result<ExitCode> {
    require_root("restart")?;
    require_systemd("restart")?;
    let Some(install) = Install::find()? else {
        bail!(
            "banger is not installed as a service, so there is nothing to restart: in dev mode \
             'banger daemon stop' stops bangerd and the next command starts it"
        );
    };
    setup::restart()?;
    let version = wait_until_answering(&install).await?;
    println!("restarted {HELPER_UNIT} and {DAEMON_UNIT} (bangerd {version}); VMs kept running");
    Ok(ExitCode::SUCCESS)
}

async fn uninstall(purge: bool, force: bool) -> Result<ExitCode> {
    require_root("uninstall")?;
    require_systemd("uninstall")?;
    // A damaged record must not stand in the way of removing the rest.
    let install = match Install::find() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("warning: {e}; removing the rest");
            None
        }
    };
    if !setup::anything_installed(install.as_ref()) && !purge {
        println!("banger is not installed as a service: nothing to remove");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(i) = &install {
        stop_vms(i, force).await?;
    }
    setup::uninstall(install.as_ref(), purge, &mut |line| println!("{line}"))?;
    if purge {
        println!("banger's services and all their state are removed");
    } else {
        println!(
            "banger's services are removed; VMs, images and state stay in /var/lib/banger \
             (--purge removes them)"
        );
    }
    if let Some(i) = &install {
        println!(
            "kept: {}/.config/banger, and {}'s subordinate ids and groups",
            i.owner_home.display(),
            i.owner
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses while VMs run, unless `force`: then stops them through the
/// daemon, which tears down their TAPs and rules while the helper is up.
async fn stop_vms(install: &Install, force: bool) -> Result<()> {
    let paths = install.paths();
    let [_, daemon_unit] = banger_system::units::unit_files();
    if !daemon_unit.exists() {
        return Ok(());
    }
    let client = Client::new(paths.socket());
    let vms: Vec<VmRecord> = match client
        .clone()
        .with_timeout(Duration::from_secs(5))
        .get("/v1/vms")
        .await
    {
        Ok(vms) => vms,
        Err(e) if force => {
            eprintln!("warning: {e}: cannot stop VMs through bangerd; removing anyway");
            return Ok(());
        }
        Err(e) => bail!(
            "{e}, so banger cannot tell whether VMs run: start it with 'sudo banger system \
             restart', or pass --force"
        ),
    };
    let running: Vec<&VmRecord> = vms
        .iter()
        .filter(|v| {
            matches!(
                v.state,
                VmState::Running | VmState::Paused | VmState::Starting | VmState::Stopping
            )
        })
        .collect();
    if running.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = running.iter().map(|v| v.name.to_string()).collect();
    if !force {
        bail!(
            "{} VM(s) still running ({}): stop them with 'banger vm stop NAME', or pass --force \
             to stop them first",
            names.len(),
            names.join(", ")
        );
    }
    for name in &names {
        let path = format!("/v1/vms/{}/stop", crate::path_segment(name));
        client
            .post::<_, VmRecord>(&path, &serde_json::json!({}))
            .await
            .map_err(client_error)
            .with_context(|| format!("cannot stop VM {name}"))?;
        println!("stopped VM {name}");
    }
    Ok(())
}

#[derive(Serialize)]
struct BinaryStatus {
    path: PathBuf,
    version: Option<String>,
    error: Option<String>,
}

#[derive(Serialize)]
struct UnitStatus {
    unit: &'static str,
    #[serde(flatten)]
    state: Option<UnitState>,
    error: Option<String>,
}

#[derive(Serialize)]
struct DaemonSocket {
    path: PathBuf,
    socket: SocketState,
    /// bangerd's version, when it answered `GET /v1/status`.
    version: Option<String>,
}

#[derive(Serialize)]
struct Status {
    installed: bool,
    cli_version: &'static str,
    #[serde(flatten)]
    install: Install,
    binaries: Vec<BinaryStatus>,
    units: Vec<UnitStatus>,
    daemon: DaemonSocket,
    helper: HelperProbe,
    helper_socket: &'static str,
    /// Every unit active, the daemon answering, the helper's socket taking
    /// connections.
    ok: bool,
}

async fn status(json: bool) -> Result<ExitCode> {
    let Some(install) = Install::find()? else {
        if json {
            print_json(&serde_json::json!({
                "installed": false,
                "mode": "dev",
                "cli_version": CLI_VERSION,
            }))?;
        } else {
            println!(
                "not installed (dev mode): banger starts its own bangerd, and networking needs \
                 root; 'sudo banger system install --owner \"$USER\"' installs the services"
            );
        }
        return Ok(ExitCode::FAILURE);
    };
    let status = gather(install).await;
    if json {
        print_json(&status)?;
    } else {
        render(&status);
    }
    Ok(if status.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn gather(install: Install) -> Status {
    let binaries = ["banger", "bangerd"]
        .iter()
        .map(|name| {
            let path = install.bin_dir().join(name);
            let (version, error) = match probe::binary_version(&path) {
                Ok(v) => (Some(v), None),
                Err(e) => (None, Some(e)),
            };
            BinaryStatus {
                path,
                version,
                error,
            }
        })
        .collect();
    let units: Vec<UnitStatus> = [HELPER_UNIT, DAEMON_UNIT]
        .into_iter()
        .map(|unit| {
            let (state, error) = if !systemctl::systemd_runs() {
                (
                    None,
                    Some("systemd is not running on this host".to_string()),
                )
            } else {
                match systemctl::show(unit) {
                    Ok(s) => (Some(s), None),
                    Err(e) => (None, Some(e.to_string())),
                }
            };
            UnitStatus { unit, state, error }
        })
        .collect();
    let socket = install.paths().socket();
    let version = Client::new(&socket)
        .with_timeout(Duration::from_secs(2))
        .get::<DaemonStatus>("/v1/status")
        .await
        .ok()
        .map(|s| s.version);
    let daemon = DaemonSocket {
        socket: SocketState::of(&socket),
        path: socket,
        version,
    };
    let helper = probe::helper(Path::new(HELPER_SOCKET));
    let ok = units
        .iter()
        .all(|u| u.state.as_ref().is_some_and(UnitState::is_active))
        && daemon.version.is_some()
        && helper.socket == SocketState::Connects;
    Status {
        installed: true,
        cli_version: CLI_VERSION,
        install,
        binaries,
        units,
        daemon,
        helper,
        helper_socket: HELPER_SOCKET,
        ok,
    }
}

fn render(s: &Status) {
    let i = &s.install;
    println!(
        "banger is installed for {} (uid {}) under {}, by banger {}",
        i.owner,
        i.owner_uid,
        i.prefix.display(),
        i.version
    );
    for b in &s.binaries {
        let what = match (&b.version, &b.error) {
            (Some(v), _) => v.clone(),
            (None, Some(e)) => e.clone(),
            (None, None) => "unknown".into(),
        };
        println!("  {:<36} {what}", b.path.display());
    }
    println!("  {:<36} {CLI_VERSION}", "this banger");
    for u in &s.units {
        let what = match (&u.state, &u.error) {
            (Some(st), _) => match st.main_pid {
                Some(pid) => format!("{}, pid {pid}", st.describe()),
                None => st.describe(),
            },
            (None, Some(e)) => e.clone(),
            (None, None) => "unknown".into(),
        };
        println!("  {:<36} {what}", u.unit);
    }
    let daemon = match &s.daemon.version {
        Some(v) => format!("answers (bangerd {v})"),
        None => s.daemon.socket.describe(),
    };
    println!("  {:<36} {daemon}", s.daemon.path.display());
    let helper = match &s.helper.version {
        Some(v) => format!("answers (helper {v})"),
        None => s.helper.socket.describe(),
    };
    println!("  {:<36} {helper}", s.helper_socket);
    let installed = s.binaries.iter().find_map(|b| b.version.as_deref());
    if let Some(v) = installed
        && v != CLI_VERSION
    {
        println!(
            "note: this banger is {CLI_VERSION} but the installed one is {v}: run 'sudo banger \
             system install --owner {}' from the build you want",
            i.owner
        );
    }
    if !s.ok {
        println!(
            "not healthy: see 'systemctl status {HELPER_UNIT} {DAEMON_UNIT}'; 'sudo banger system \
             restart' restarts both"
        );
    }
}
