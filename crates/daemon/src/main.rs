//! `bangerd`: thin glue around the daemon library, in one of three modes:
//! the dev-mode daemon `banger` starts on demand, the system install's
//! owner daemon (`--system`), and its root helper (`--root-helper`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use banger_config::{Config, Install, Paths, install, probe_host};
use banger_daemon::{Daemon, dirs, init_logging};
use banger_hostops::{HelperClient, HelperConfig, HostOps, Local};
use banger_images::oci::owner::HELPER_FLAG;
use clap::Parser;

/// The banger daemon. `banger` starts it on demand; you rarely run it by
/// hand. It serves the API on $XDG_RUNTIME_DIR/banger/bangerd.sock and logs
/// JSON to ~/.local/state/banger/bangerd.log (BANGER_HOME moves both).
///
/// Under the system install (`sudo banger system install --owner USER`),
/// systemd runs it twice: `bangerd --system` as the owner
/// (bangerd.service) and `bangerd --root-helper` as root
/// (bangerd-root.service).
#[derive(Parser)]
#[command(name = "bangerd", version, about, long_about)]
struct Args {
    /// Run as the system install's daemon, as its owner: state in
    /// /var/lib/banger, caches in /var/cache/banger, the socket in
    /// /run/banger, networking through the root helper.
    #[arg(long, conflicts_with = "root_helper")]
    system: bool,

    /// Run as the system install's root helper: the bridge, TAPs and
    /// firewall rules for the owner's daemon, on
    /// /run/banger-root/bangerd-root.sock, for the owner's uid only.
    #[arg(long)]
    root_helper: bool,

    /// With --root-helper: the uid it serves (default: the install's owner).
    #[arg(long, requires = "root_helper", requires = "owner_gid")]
    owner_uid: Option<u32>,

    /// With --root-helper: the owner's group, for the socket file.
    #[arg(long, requires = "root_helper", requires = "owner_uid")]
    owner_gid: Option<u32>,

    /// With --root-helper: where to listen (default: the install's socket).
    #[arg(long, requires = "root_helper")]
    socket: Option<PathBuf>,
}

/// Dev mode only: the root helper socket to send host operations to, for
/// a daemon that is not root (the unprivileged end-to-end tests).
const HELPER_ENV: &str = "BANGER_ROOT_HELPER";

fn main() -> ExitCode {
    // Not an option for people: bangerd runs itself with it, in a user
    // namespace, to flatten an OCI image's layers when it is not root.
    if std::env::args_os().nth(1).is_some_and(|a| a == HELPER_FLAG) {
        return banger_images::oci::owner::helper_main();
    }
    // Nor this: bangerd runs itself with it as a VM's agent proxy.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == banger_orchestrator::AGENT_PROXY_FLAG)
    {
        return banger_daemon::agent_proxy::main(std::env::args_os().skip(1));
    }
    let args = Args::parse();
    if args.root_helper {
        return match root_helper(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "root helper failed");
                fatal(&format!("{e:#}"))
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fatal(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(args.system)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "bangerd failed");
            fatal(&e.to_string())
        }
    }
}

async fn run(system: bool) -> anyhow::Result<()> {
    let (paths, host_ops, via_helper) = if system {
        system_daemon()?
    } else {
        dev_daemon()?
    };
    let config = Config::load(&paths.config_file())?;
    let level = config.log_level(std::env::var("BANGER_LOG_LEVEL").ok().as_deref())?;
    // Before the log is opened in it: the state dir must be one that no
    // other user can plant a link in (Daemon::start checks again).
    dirs::prepare(&paths)?;
    init_logging(&paths.daemon_log(), level)?;
    let (daemon, listener) =
        Daemon::start(paths, config, probe_host(), host_ops, via_helper).await?;
    daemon.serve(listener).await?;
    Ok(())
}

/// The daemon `banger` starts: its user's XDG directories (or
/// BANGER_HOME), networking in this process (which needs root) unless
/// BANGER_ROOT_HELPER names a helper's socket.
fn dev_daemon() -> anyhow::Result<(Paths, Arc<dyn HostOps>, bool)> {
    let paths = Paths::from_env()?;
    Ok(
        match std::env::var_os(HELPER_ENV).filter(|v| !v.is_empty()) {
            Some(socket) => (paths, Arc::new(HelperClient::new(socket)), true),
            None => (paths, Arc::new(Local::new()), false),
        },
    )
}

/// bangerd.service: the install's owner, the install's directories, the
/// helper's socket.
fn system_daemon() -> anyhow::Result<(Paths, Arc<dyn HostOps>, bool)> {
    let install = installed()?;
    let me = nix::unistd::geteuid().as_raw();
    if me != install.owner_uid {
        bail!(
            "bangerd --system runs as the install's owner {} (uid {}), not uid {me}: \
             start it with 'systemctl start bangerd.service'",
            install.owner,
            install.owner_uid
        );
    }
    let helper = HelperClient::new(install::HELPER_SOCKET);
    // Not fatal: VMs that are running need no helper until they stop, and
    // each network step names the helper's unit when it is down.
    if let Err(e) = helper.ping() {
        eprintln!("bangerd: warning: {e}");
    }
    Ok((install.paths(), Arc::new(helper), true))
}

fn installed() -> anyhow::Result<Install> {
    Install::find()?.with_context(|| {
        format!(
            "banger is not installed as a service ({} is missing): run \
             'sudo banger system install --owner USER'",
            install::install_file().display()
        )
    })
}

/// bangerd-root.service, or a test's helper with --owner-uid/--socket.
fn root_helper(args: &Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))?;
    let config = match (args.owner_uid, args.owner_gid) {
        (Some(owner_uid), Some(owner_gid)) => HelperConfig {
            socket: args
                .socket
                .clone()
                .unwrap_or_else(|| PathBuf::from(install::HELPER_SOCKET)),
            owner_uid,
            owner_gid,
        },
        _ => {
            let install = installed()?;
            HelperConfig {
                socket: args
                    .socket
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(install::HELPER_SOCKET)),
                owner_uid: install.owner_uid,
                owner_gid: install.owner_gid,
            }
        }
    };
    banger_hostops::serve(&config)?;
    Ok(())
}

/// The one line `banger` shows when the daemon fails to start.
fn fatal(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "bangerd: {message}");
    ExitCode::FAILURE
}
