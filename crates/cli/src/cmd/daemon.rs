use std::time::Duration;

use anyhow::Result;
use banger_api::DaemonStatus;
use banger_config::Paths;
use banger_config::install::DAEMON_UNIT;

use crate::ExitCode;
use crate::args::{DaemonCommand, JsonFlag};
use crate::connect::{Located, existing, wait_until_stopped};
use crate::output::{client_error, print_json};

pub async fn run(cmd: DaemonCommand, located: &Located) -> Result<ExitCode> {
    let paths = &located.paths;
    let service = located.install.is_some();
    match cmd {
        DaemonCommand::Socket => {
            println!("{}", paths.socket().display());
            Ok(ExitCode::SUCCESS)
        }
        DaemonCommand::Status(JsonFlag { json }) => status(paths, service, json).await,
        // systemd would not start it again (it exits cleanly), and every
        // command would fail until someone did.
        DaemonCommand::Stop if service => anyhow::bail!(
            "bangerd runs as {DAEMON_UNIT} here: restart it with 'sudo banger system restart', \
             or stop it with 'sudo systemctl stop {DAEMON_UNIT}'"
        ),
        DaemonCommand::Stop => stop(paths).await,
    }
}

async fn status(paths: &Paths, service: bool, json: bool) -> Result<ExitCode> {
    let status = match existing(paths).get::<DaemonStatus>("/v1/status").await {
        Ok(s) => Some(s),
        Err(e) if e.is_not_running() => None,
        Err(e) => return Err(client_error(e)),
    };
    let socket = paths.socket();
    let log = paths.daemon_log();
    if json {
        // The daemon's own status when it answers, else where it would be.
        let mut out = match &status {
            Some(s) => serde_json::to_value(s)?,
            None => serde_json::json!({ "socket": socket, "log": log }),
        };
        out["running"] = status.is_some().into();
        out["service"] = service.into();
        out["client_version"] = env!("CARGO_PKG_VERSION").into();
        print_json(&out)?;
    } else if let Some(s) = &status {
        println!("bangerd is running");
        println!("  pid:      {}", s.pid);
        println!("  version:  {}", s.version);
        println!("  uptime:   {}s", s.uptime_secs);
        println!("  socket:   {}", s.socket.display());
        println!("  log:      {}", s.log.display());
        println!("  state:    {}", s.state_dir.display());
        println!(
            "  database: {} (schema {})",
            s.database.display(),
            s.schema_version
        );
        if s.version != env!("CARGO_PKG_VERSION") {
            println!(
                "  note:     banger is {} but bangerd is {}: {}",
                env!("CARGO_PKG_VERSION"),
                s.version,
                if service {
                    "run 'sudo banger system install' again to upgrade the service"
                } else {
                    "run 'banger daemon stop' to restart it"
                }
            );
        }
    } else {
        println!("bangerd is not running");
        println!("  socket:   {}", socket.display());
        println!("  log:      {}", log.display());
        if service {
            println!("  (systemd runs it as {DAEMON_UNIT}: see 'banger system status')");
        } else {
            println!("  (any banger command that needs it starts it)");
        }
    }
    Ok(if status.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn stop(paths: &Paths) -> Result<ExitCode> {
    let client = existing(paths);
    match client
        .post::<_, serde_json::Value>("/v1/shutdown", &serde_json::json!({}))
        .await
    {
        Ok(_) => {
            wait_until_stopped(paths, Duration::from_secs(15)).await?;
            println!("bangerd stopped");
        }
        Err(e) if e.is_not_running() => println!("bangerd is not running"),
        Err(e) => return Err(client_error(e)),
    }
    Ok(ExitCode::SUCCESS)
}
