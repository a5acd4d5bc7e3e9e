//! The transports: QEMU's virtio-serial port and Firecracker's vsock.
//! Each waits for a host, answers its greeting on the blocking
//! descriptor, then serves HTTP/2 over a socketpair that two pump threads
//! bridge to the descriptor, until the host goes away.

use std::convert::Infallible;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use banger_agent_proto::greeting::{self, GreetingError};
use banger_agent_proto::{PORT_NAME, VSOCK_PORT};
use rustix::event::{PollFd, PollFlags, Timespec};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::runtime::Handle;

use crate::Agent;

/// How often a port without a host is looked at again.
const RETRY: Duration = Duration::from_millis(100);
/// How long a vsock peer gets to greet.
const GREETING_TIMEOUT: Duration = Duration::from_secs(10);
/// After this long without a virtio-serial port, the agent says so once.
const PORT_PATIENCE: Duration = Duration::from_secs(5);
const VIRTIO_PORTS: &str = "/sys/class/virtio-ports";
const VMADDR_CID_ANY: u32 = u32::MAX;

/// The agent's main loop: a tokio runtime, then the virtio-serial port
/// (QEMU) and the vsock port (Firecracker), whichever the guest has. Only
/// returns on an error that leaves it nothing to serve.
pub fn run() -> io::Result<Infallible> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("banger-agent")
        .build()?;
    let agent = Agent::new();
    let vsock = Path::new("/dev/vsock").exists().then(|| {
        let (agent, handle) = (agent.clone(), runtime.handle().clone());
        thread::spawn(move || run_vsock(&agent, &handle, VSOCK_PORT))
    });
    let started = Instant::now();
    let mut told = false;
    loop {
        if let Some(port) = find_virtio_port(PORT_NAME) {
            return run_virtio_serial(&agent, runtime.handle(), &port);
        }
        if let Some(listener) = &vsock
            && listener.is_finished()
        {
            return match vsock.map(thread::JoinHandle::join) {
                Some(Ok(Err(e))) => Err(e),
                _ => Err(io::Error::other("the vsock listener ended")),
            };
        }
        if !told && started.elapsed() > PORT_PATIENCE {
            eprintln!(
                "banger-agent: no virtio-serial port {PORT_NAME:?} yet{}",
                if vsock.is_some() {
                    format!("; listening on vsock port {VSOCK_PORT}")
                } else {
                    String::new()
                }
            );
            told = true;
        }
        thread::sleep(RETRY);
    }
}

/// The device of the virtio-serial port named `name`, found through
/// sysfs (minimal guests have no udev, so no /dev/virtio-ports links).
pub fn find_virtio_port(name: &str) -> Option<PathBuf> {
    fs::read_dir(VIRTIO_PORTS)
        .ok()?
        .flatten()
        .find_map(|entry| {
            let label = fs::read_to_string(entry.path().join("name")).ok()?;
            (label.trim_end() == name).then(|| Path::new("/dev").join(entry.file_name()))
        })
}

/// Serves hosts on the virtio-serial port at `port`, one at a time, for
/// ever. A read of 0 means no host is connected.
pub fn run_virtio_serial(agent: &Agent, runtime: &Handle, port: &Path) -> io::Result<Infallible> {
    eprintln!("banger-agent: serving on {}", port.display());
    loop {
        let mut dev = match OpenOptions::new().read(true).write(true).open(port) {
            Ok(dev) => dev,
            Err(e) => {
                eprintln!("banger-agent: opening {}: {e}; retrying", port.display());
                thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        loop {
            match greeting::agent_answer(&mut dev) {
                Ok(()) => {}
                Err(GreetingError::Closed) => {
                    thread::sleep(RETRY);
                    continue;
                }
                Err(GreetingError::Io(e)) => {
                    eprintln!("banger-agent: {}: {e}; reopening", port.display());
                    thread::sleep(Duration::from_secs(1));
                    break;
                }
                Err(e) => {
                    eprintln!("banger-agent: greeting on {}: {e}", port.display());
                    continue;
                }
            }
            eprintln!("banger-agent: a host connected on {}", port.display());
            let ended = match (dev.try_clone(), dev.try_clone()) {
                (Ok(reader), Ok(writer)) => bridge(agent, runtime, reader, writer),
                (Err(e), _) | (_, Err(e)) => format!("cannot share the port: {e}"),
            };
            eprintln!("banger-agent: the host on {} left: {ended}", port.display());
        }
    }
}

/// Listens on vsock `port`; each connection greets and is served on a
/// thread of its own, concurrently.
pub fn run_vsock(agent: &Agent, runtime: &Handle, port: u32) -> io::Result<Infallible> {
    let listener = Socket::new(Domain::VSOCK, Type::STREAM.cloexec(), None)?;
    listener.bind(&SockAddr::vsock(VMADDR_CID_ANY, port))?;
    listener.listen(16)?;
    eprintln!("banger-agent: listening on vsock port {port}");
    loop {
        let (mut conn, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("banger-agent: vsock accept: {e}");
                thread::sleep(RETRY);
                continue;
            }
        };
        let (agent, runtime) = (agent.clone(), runtime.clone());
        thread::spawn(move || {
            let peer = peer
                .as_vsock_address()
                .map_or_else(|| "?".to_owned(), |(cid, port)| format!("{cid}:{port}"));
            let greeted = conn
                .set_read_timeout(Some(GREETING_TIMEOUT))
                .map_err(GreetingError::Io)
                .and_then(|()| greeting::agent_answer(&mut conn))
                .and_then(|()| conn.set_read_timeout(None).map_err(GreetingError::Io));
            if let Err(e) = greeted {
                eprintln!("banger-agent: vsock peer {peer}: greeting: {e}");
                return;
            }
            eprintln!("banger-agent: a host connected over vsock from {peer}");
            let ended = match conn.try_clone() {
                Ok(writer) => bridge(&agent, &runtime, conn, writer),
                Err(e) => format!("cannot share the socket: {e}"),
            };
            eprintln!("banger-agent: the vsock host {peer} left: {ended}");
        });
    }
}

/// Serves one host: `reader` and `writer` are the transport (after the
/// greeting), bridged to a socketpair whose other end carries HTTP/2.
/// Returns once the connection is over and the reader pump has stopped
/// (so the next greeting is read by no one else); the writer pump may
/// still be blocked on a port whose host left, and ends on its own.
fn bridge<R, W>(agent: &Agent, runtime: &Handle, reader: R, writer: W) -> String
where
    R: Read + AsFd + Send + 'static,
    W: Write + Send + 'static,
{
    let (ours, theirs) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => return format!("cannot make a socketpair: {e}"),
    };
    let to_agent = match theirs.try_clone() {
        Ok(s) => s,
        Err(e) => return format!("cannot make a socketpair: {e}"),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let pump_in = {
        let stop = stop.clone();
        thread::spawn(move || pump_from_host(reader, to_agent, &stop))
    };
    thread::spawn(move || pump_to_host(theirs, writer));
    let served = runtime.block_on(async {
        ours.set_nonblocking(true)?;
        let io = tokio::net::UnixStream::from_std(ours)?;
        agent
            .serve_connection(io)
            .await
            .map_err(|e| io::Error::other(e.to_string()))
    });
    stop.store(true, Ordering::Relaxed);
    let host = pump_in
        .join()
        .unwrap_or_else(|_| "the reader pump panicked".to_owned());
    match served {
        Ok(()) => host,
        Err(e) => format!("{host}; HTTP/2: {e}"),
    }
}

/// Host to agent, polling so that `stop` is seen within [`RETRY`]: once
/// the HTTP/2 side is over, nothing may read the next host's greeting.
fn pump_from_host(mut from: impl Read + AsFd, mut to: UnixStream, stop: &AtomicBool) -> String {
    let mut buf = vec![0u8; 64 * 1024];
    let timeout = Timespec {
        tv_sec: 0,
        tv_nsec: RETRY.as_nanos() as _,
    };
    let why = loop {
        if stop.load(Ordering::Relaxed) {
            break "the connection ended".to_owned();
        }
        let mut fds = [PollFd::new(&from, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => break format!("poll: {e}"),
        }
        match from.read(&mut buf) {
            Ok(0) => break "end of stream".to_owned(),
            Ok(n) => {
                if let Err(e) = to.write_all(&buf[..n]) {
                    break format!("the connection ended ({e})");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break format!("read: {e}"),
        }
    };
    let _ = to.shutdown(std::net::Shutdown::Write);
    why
}

/// Agent to host, until the HTTP/2 side closes or the transport fails.
fn pump_to_host(mut from: UnixStream, mut to: impl Write) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.flush();
}
