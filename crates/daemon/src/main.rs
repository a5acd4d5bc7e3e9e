//! `bangerd`: thin glue around the daemon library.

use std::io::Write;
use std::process::ExitCode;

use banger_config::{Config, Paths, probe_host};
use banger_daemon::{Daemon, dirs, init_logging};
use banger_images::oci::owner::HELPER_FLAG;
use clap::Parser;

/// The banger daemon. `banger` starts it on demand; you rarely run it by
/// hand. It serves the API on $XDG_RUNTIME_DIR/banger/bangerd.sock and logs
/// JSON to ~/.local/state/banger/bangerd.log (BANGER_HOME moves both).
#[derive(Parser)]
#[command(name = "bangerd", version, about)]
struct Args {}

fn main() -> ExitCode {
    // Not an option for people: bangerd runs itself with it, in a user
    // namespace, to flatten an OCI image's layers when it is not root.
    if std::env::args_os().nth(1).is_some_and(|a| a == HELPER_FLAG) {
        return banger_images::oci::owner::helper_main();
    }
    let _ = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fatal(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "bangerd failed");
            fatal(&e.to_string())
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let paths = Paths::from_env()?;
    let config = Config::load(&paths.config_file())?;
    let level = config.log_level(std::env::var("BANGER_LOG_LEVEL").ok().as_deref())?;
    // Before the log is opened in it: the state dir must be one that no
    // other user can plant a link in (Daemon::start checks again).
    dirs::prepare(&paths)?;
    init_logging(&paths.daemon_log(), level)?;
    let (daemon, listener) = Daemon::start(paths, config, probe_host()).await?;
    daemon.serve(listener).await?;
    Ok(())
}

/// The one line `banger` shows when the daemon fails to start.
fn fatal(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "bangerd: {message}");
    ExitCode::FAILURE
}
