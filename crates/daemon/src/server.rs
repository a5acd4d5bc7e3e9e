//! Starting, serving and stopping the daemon.

use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use banger_config::{Config, Paths};
use banger_model::HostFacts;
use banger_orchestrator::{BootTimeouts, Deps, Orchestrator, Probed, SshProbe};
use banger_store::{Store, StoreError};
use tokio::net::UnixListener;
use tokio::sync::Notify;

use crate::dirs::DirError;
use crate::lock::{DaemonLock, LockError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error("cannot listen on {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("{path} exists and is not a socket: move it aside")]
    NotASocket { path: PathBuf },
    #[error("cannot clean up after an interrupted operation: {0}")]
    Reconcile(String),
    #[error("server error: {0}")]
    Serve(io::Error),
}

/// Everything a handler may use. Cheap to clone (all shared).
#[derive(Clone)]
pub struct Daemon {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The VM and image logic, and the state it shares.
    pub orch: Orchestrator,
    pub started: Instant,
    pub shutdown: Notify,
    /// What `GET /v1/web` answers.
    pub web: banger_api::WebInfo,
    /// The web UI, bound at start, served from [`Daemon::serve`].
    web_pending: std::sync::Mutex<Option<crate::web::Web>>,
    _lock: DaemonLock,
}

impl Daemon {
    /// Takes the state-dir lock, opens the store and binds the socket. When
    /// this returns, the daemon is ready: a client that connects is served.
    pub async fn start(
        paths: Paths,
        config: Config,
        host: HostFacts,
        host_ops: Arc<dyn banger_hostops::HostOps>,
        via_helper: bool,
    ) -> Result<(Self, UnixListener), StartError> {
        crate::dirs::prepare(&paths)?;
        // The lock comes first: nothing below may touch state that another
        // daemon owns, including its socket.
        let lock = DaemonLock::acquire(&paths.daemon_lock())?;
        let db = paths.database();
        let store = tokio::task::spawn_blocking(move || Store::open(&db))
            .await
            .map_err(|e| StartError::Serve(io::Error::other(e)))??;
        let listener = bind(&paths.socket())?;
        tracing::info!(
            socket = %paths.socket().display(),
            pid = std::process::id(),
            version = env!("CARGO_PKG_VERSION"),
            host_ops = %host_ops.describe(),
            "bangerd ready"
        );
        let config_clock_addr = std::net::SocketAddr::new(
            std::net::IpAddr::V4(config.bridge_cidr().addr()),
            banger_model::clock::CLOCK_PORT,
        );
        let started = Instant::now();
        // Through the helper, the helper maps image builds' ids too, so
        // bangerd.service keeps NoNewPrivileges (no setuid newuidmap).
        let id_mapper = via_helper.then(|| {
            Arc::new(banger_orchestrator::HostIds(host_ops.clone()))
                as Arc<dyn banger_images::userns::IdMapper>
        });
        let orch = Orchestrator::new(Deps {
            paths,
            config,
            host,
            host_ops,
            hypervisors: Arc::new(Probed),
            guests: Arc::new(SshProbe),
            timeouts: BootTimeouts::from_env(),
            init_binary: None,
            store,
            clock: start_clock(&config_clock_addr),
            id_mapper,
        });
        // Before serving: nothing half-made may be seen as usable.
        orch.start()
            .await
            .map_err(|e| StartError::Reconcile(e.message))?;
        let (web_pending, web) = match orch.config().web_listen_addr {
            Some(addr) => crate::web::bind(addr, &orch.paths().state_dir.join("web-token")).await,
            None => (
                None,
                banger_api::WebInfo {
                    url: None,
                    reason: Some(
                        "the web UI is off: set web_listen_addr in config.toml \
                         (like \"127.0.0.1:7878\") and restart bangerd"
                            .into(),
                    ),
                },
            ),
        };
        let daemon = Daemon {
            inner: Arc::new(Inner {
                orch,
                started,
                shutdown: Notify::new(),
                web,
                web_pending: std::sync::Mutex::new(web_pending),
                _lock: lock,
            }),
        };
        daemon.start_dns().await;
        daemon.write_ssh_config().await;
        Ok((daemon, listener))
    }

    /// Serves until `banger daemon stop`, SIGTERM or SIGINT, then removes
    /// the socket. SIGHUP is ignored: the daemon outlives the terminal that
    /// happened to start it.
    pub async fn serve(self, listener: UnixListener) -> Result<(), StartError> {
        let web = self
            .inner
            .web_pending
            .lock()
            .ok()
            .and_then(|mut w| w.take());
        if let Some(web) = web {
            // Ends with the process: its event streams never end by
            // themselves, and nothing of it needs a graceful close.
            tokio::spawn(crate::web::serve(web, self.clone()));
        }
        let app = crate::routes::router(self.clone());
        let socket = self.inner.orch.paths().socket();
        let stopper = self.clone();
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                stopper.stopped().await;
                // A lease's request never ends by itself, and the graceful
                // shutdown waits for every request.
                stopper.inner.orch.close_leases();
            })
            .await;
        let _ = remove_socket(&socket);
        tracing::info!("bangerd stopped");
        result.map_err(StartError::Serve)
    }

    /// The VM and image logic behind the routes.
    pub(crate) fn orch(&self) -> &Orchestrator {
        &self.inner.orch
    }

    /// Starts the `.vm` DNS server. Not being able to bind is not fatal
    /// (VMs work without it): it is logged, and `banger doctor` reports
    /// that nothing answers there. The default, the bridge's address on
    /// port 53, is below 1024: a daemon that is not root gets that socket
    /// from the root helper.
    async fn start_dns(&self) {
        let config = self.inner.orch.config();
        let addr = config.dns_listen_addr();
        let bridge = banger_network::BridgeSpec {
            name: config.bridge_name().to_string(),
            cidr: config.bridge_cidr(),
        };
        let privileged = addr.port() < 1024 && !nix::unistd::geteuid().is_root();
        let on_bridge = addr == std::net::SocketAddr::from((bridge.cidr.addr(), 53));
        let socket = if privileged && on_bridge {
            let ops = self.inner.orch.host_ops().clone();
            tokio::task::spawn_blocking(move || ops.bind_dns(&bridge))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
                .and_then(|fd| {
                    let std = std::net::UdpSocket::from(fd);
                    std.set_nonblocking(true).map_err(|e| e.to_string())?;
                    tokio::net::UdpSocket::from_std(std).map_err(|e| e.to_string())
                })
        } else {
            crate::dns::bind(addr).map_err(|e| e.to_string())
        };
        match socket {
            Ok(socket) => {
                tracing::info!(listen = %addr, "dns: answering the .vm zone");
                tokio::spawn(crate::dns::serve(socket, self.inner.orch.dns_records()));
            }
            Err(e) => tracing::warn!(
                listen = %addr,
                error = %e,
                "dns: cannot listen; .vm names will not resolve (set dns_listen_addr to a port above 1024, or install the root helper: sudo banger system install)"
            ),
        }
    }

    /// Rewrites banger's ssh_config (`Host *.vm`) for the current key and
    /// paths; a failure is logged, not fatal.
    async fn write_ssh_config(&self) {
        let paths = self.inner.orch.paths();
        let config = banger_guest::VmSshConfig {
            identity: self.inner.orch.config().ssh_key_path(paths),
            known_hosts: paths.state_dir.join("ssh").join("known_hosts"),
            control_dir: paths.runtime_dir.join("ssh"),
        };
        let path = paths.ssh_config();
        let result = tokio::task::spawn_blocking(move || config.write(&path)).await;
        if let Ok(Err(e)) = result {
            tracing::warn!(error = %e, "cannot write banger's ssh_config");
        }
    }

    pub fn request_shutdown(&self) {
        self.inner.shutdown.notify_one();
    }

    async fn stopped(&self) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        let mut hup = signal(SignalKind::hangup()).ok();
        loop {
            tokio::select! {
                _ = self.inner.shutdown.notified() => { tracing::info!("stop requested over the API"); return }
                Some(_) = recv(&mut term) => { tracing::info!("SIGTERM: stopping"); return }
                Some(_) = recv(&mut int) => { tracing::info!("SIGINT: stopping"); return }
                Some(_) = recv(&mut hup) => tracing::info!("SIGHUP ignored"),
            }
        }
    }
}

async fn recv(sig: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match sig {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Binds the socket, replacing a stale one. We hold the lock, so a socket
/// file that exists belongs to a daemon that is gone. Nothing here follows
/// a link: only a socket is removed (and unlinking removes the name, never
/// what a link points at), `bind` fails rather than follow one, and the
/// chmod refuses one.
fn bind(path: &Path) -> Result<UnixListener, StartError> {
    let bind_err = |source| StartError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if remove_socket(path).map_err(bind_err)? == Removed::NotASocket {
        return Err(StartError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    restrict_socket(path).map_err(bind_err)?;
    Ok(listener)
}

#[derive(Debug, PartialEq, Eq)]
enum Removed {
    Yes,
    Absent,
    NotASocket,
}

/// Removes `path` if, and only if, it is a socket.
fn remove_socket(path: &Path) -> io::Result<Removed> {
    use std::os::unix::fs::FileTypeExt;
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            fs::remove_file(path)?;
            Ok(Removed::Yes)
        }
        Ok(_) => Ok(Removed::NotASocket),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Removed::Absent),
        Err(e) => Err(e),
    }
}

/// chmod 0600 on the socket just bound, never on what a link there points
/// at.
fn restrict_socket(path: &Path) -> io::Result<()> {
    use nix::errno::Errno;
    use nix::sys::stat::{FchmodatFlags, Mode, fchmodat};
    let mode = Mode::from_bits_truncate(0o600);
    match fchmodat(
        nix::fcntl::AT_FDCWD,
        path,
        mode,
        FchmodatFlags::NoFollowSymlink,
    ) {
        Ok(()) => Ok(()),
        // A C library older than glibc 2.32 cannot chmod without following.
        // Then look first: the runtime dir was checked, so only this user
        // could swap the socket in between.
        Err(Errno::EOPNOTSUPP) => {
            use std::os::unix::fs::FileTypeExt;
            let meta = fs::symlink_metadata(path)?;
            if !meta.file_type().is_socket() {
                return Err(io::Error::other(
                    "the socket was replaced by something else right after bind",
                ));
            }
            fs::set_permissions(path, Permissions::from_mode(0o600))
        }
        Err(e) => Err(e.into()),
    }
}

/// Starts the clock answerer on the bridge address; `None` (logged) when
/// it cannot listen: guests then keep the time of the emulated RTC.
fn start_clock(addr: &std::net::SocketAddr) -> Option<std::net::SocketAddr> {
    // The DNS server's socket options: the bridge address appears only
    // when the first VM makes the bridge.
    match crate::dns::bind(*addr) {
        Ok(socket) => {
            tracing::info!(listen = %addr, "clock: answering guests' time questions");
            tokio::spawn(crate::clock::serve(socket));
            Some(*addr)
        }
        Err(e) => {
            tracing::warn!(listen = %addr, error = %e, "clock: cannot listen; guests keep their RTC's time");
            None
        }
    }
}
