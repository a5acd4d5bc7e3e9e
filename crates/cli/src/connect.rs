//! Finding the daemon and reaching it: the system install's service when
//! there is one (never started from here: systemd runs it), else dev
//! mode's own daemon, started first when nothing answers.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use banger_api::{Client, ClientError, DaemonStatus};
use banger_config::install::DAEMON_UNIT;
use banger_config::{Install, Paths};

const START_TIMEOUT: Duration = Duration::from_secs(20);
/// After a daemon we started exits, how long another one (started by a
/// concurrent `banger`) may take to answer before we report the failure.
const RACE_GRACE: Duration = Duration::from_secs(1);

/// Where this `banger` finds its daemon.
#[derive(Clone, Debug)]
pub struct Located {
    pub paths: Paths,
    /// The system install, whose daemon systemd runs; None in dev mode.
    pub install: Option<Install>,
}

/// `BANGER_HOME` always means dev mode (tests and side-by-side builds rely
/// on it); otherwise an install record means its service, and no record
/// means dev mode in the XDG directories.
pub fn locate() -> Result<Located> {
    let dev = || -> Result<Located> {
        Ok(Located {
            paths: Paths::from_env()?,
            install: None,
        })
    };
    if std::env::var_os("BANGER_HOME").is_some_and(|v| !v.is_empty()) {
        return dev();
    }
    match Install::find()? {
        Some(install) => Ok(Located {
            paths: install.paths(),
            install: Some(install),
        }),
        None => dev(),
    }
}

/// A client for a daemon that answers: the service's, or in dev mode one
/// that is started if none answers.
pub async fn connect(located: &Located) -> Result<Client> {
    let paths = &located.paths;
    let client = Client::new(paths.socket());
    match client.get::<DaemonStatus>("/v1/status").await {
        Ok(_) => Ok(client),
        Err(e) => match &located.install {
            Some(install) => Err(service_unreachable(install, paths, e)),
            None if e.is_not_running() => {
                start_daemon(paths).await?;
                Ok(client)
            }
            None => Err(e.into()),
        },
    }
}

/// The one line for a service that does not answer this user.
pub fn service_unreachable(install: &Install, paths: &Paths, e: ClientError) -> anyhow::Error {
    let socket = paths.socket();
    match e {
        ClientError::Connect { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            anyhow!(
                "banger is installed for {owner}, and only {owner} may use its daemon \
                 ({}): run banger as {owner}",
                socket.display(),
                owner = install.owner
            )
        }
        ClientError::NotRunning { .. } | ClientError::Connect { .. } | ClientError::Timeout(_) => {
            anyhow!(
                "{DAEMON_UNIT} does not answer on {}: see 'systemctl status {DAEMON_UNIT}' \
                 or 'banger system status'",
                socket.display()
            )
        }
        other => other.into(),
    }
}

/// A client for a daemon that is already running; never starts one.
pub fn existing(paths: &Paths) -> Client {
    Client::new(paths.socket())
}

/// `bangerd` next to this binary (a build tree, a tarball), else on PATH.
fn daemon_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("BANGER_DAEMON_BIN") {
        return Ok(PathBuf::from(bin));
    }
    if let Some(sibling) = std::env::current_exe()
        .ok()
        .and_then(|me| me.parent().map(|d| d.join("bangerd")))
        .filter(|p| p.is_file())
    {
        return Ok(sibling);
    }
    which::which("bangerd").map_err(|_| {
        anyhow!("cannot find bangerd next to banger or on PATH: install both binaries together")
    })
}

async fn start_daemon(paths: &Paths) -> Result<()> {
    let bin = daemon_binary()?;
    let spinner = crate::output::spinner("starting bangerd");
    // Detached: its own process group, so a Ctrl-C aimed at this command
    // does not reach it, and no stdio tied to this terminal. stderr is
    // piped only so a failure to start can be shown here; once running it
    // logs to its file and never writes to stderr.
    let mut child = Command::new(&bin)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let client = Client::new(paths.socket()).with_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let mut exited_at = None;
    let result = loop {
        match client.get::<DaemonStatus>("/v1/status").await {
            Ok(_) => break Ok(()),
            Err(e) if !e.is_not_running() && !matches!(e, ClientError::Timeout(_)) => {
                break Err(e.into());
            }
            Err(_) => {}
        }
        if exited_at.is_none()
            && let Ok(Some(_)) = child.try_wait()
        {
            exited_at = Some(Instant::now());
        }
        if let Some(at) = exited_at
            && at.elapsed() > RACE_GRACE
        {
            break Err(start_failure(&mut child, &paths.daemon_log()));
        }
        if started.elapsed() > START_TIMEOUT {
            break Err(anyhow!(
                "bangerd did not answer within {}s: see its log {}",
                START_TIMEOUT.as_secs(),
                paths.daemon_log().display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    };
    spinner.finish_and_clear();
    result
}

fn start_failure(child: &mut Child, log: &Path) -> anyhow::Error {
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let reason = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim_start_matches("bangerd: ").to_string())
        .unwrap_or_else(|| "it exited without saying why".into());
    anyhow!("bangerd failed to start: {reason} (log: {})", log.display())
}

/// Waits until the daemon's process is gone: its lock on the state dir is
/// released only when it exits, however it exits.
pub async fn wait_until_stopped(paths: &Paths, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        let Ok(file) = OpenOptions::new().read(true).open(paths.daemon_lock()) else {
            return Ok(());
        };
        if file.try_lock().is_ok() {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!(
                "bangerd is still running {}s after being asked to stop: see {}",
                timeout.as_secs(),
                paths.daemon_log().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}
