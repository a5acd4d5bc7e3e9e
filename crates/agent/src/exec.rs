//! Exec: a command run without a shell, with pipes or a terminal, its
//! output streamed back as frames through a bounded channel, its stdin
//! fed from the request body by a task of its own (a command that never
//! reads stdin stalls only that task), and signals and window sizes
//! applied by id while it runs.

use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use banger_agent_proto::{
    ExecSpec, ExitInfo, FrameKind, MAX_PAYLOAD, ResizeRequest, SignalRequest, WindowSize, valid_id,
};
use bytes::Bytes;
use http::StatusCode;
use hyper::body::Incoming;
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::Agent;
use crate::body::{ChannelBody, FrameReader, encode, encode_json};
use crate::image_env;
use crate::server::{Reply, error, no_content, stream};
use crate::users::{self, User};

/// The PATH every command starts with.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// After the command exits, how long its output is still forwarded while
/// the pipes have nothing to read (a background child may hold them open
/// for ever).
const DRAIN: Duration = Duration::from_secs(1);
/// Between SIGHUP and SIGKILL when the host went away.
const HANGUP_GRACE: Duration = Duration::from_secs(3);
/// Bytes read from a pipe at once (within a frame's bound).
const READ_CHUNK: usize = 32 * 1024;
const _: () = assert!(READ_CHUNK <= MAX_PAYLOAD);

/// A running exec, as signals and resizes find it.
pub struct Running {
    /// Its process group (the command's pid).
    pgid: i32,
    /// A descriptor of its terminal's master side.
    pty: Option<OwnedFd>,
}

/// Why an exec did not start.
enum StartError {
    Invalid(String),
    Duplicate(String),
    Spawn(String),
}

enum Io {
    Pipes {
        stdin: tokio::process::ChildStdin,
        stdout: tokio::process::ChildStdout,
        stderr: tokio::process::ChildStderr,
    },
    Pty(OwnedFd),
}

struct Started {
    id: String,
    child: Child,
    pgid: i32,
    io: Io,
}

pub async fn exec(agent: &Agent, body: Incoming) -> Reply {
    let mut frames = FrameReader::new(body);
    let spec: ExecSpec = match frames.next().await {
        Ok(Some(f)) if f.kind == FrameKind::Spec => match f.parse() {
            Ok(spec) => spec,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("exec spec: {e}")),
        },
        Ok(Some(f)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("an exec stream opens with a Spec frame, not {:?}", f.kind),
            );
        }
        Ok(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the exec stream ended before its Spec frame",
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if let Err(why) = check_spec(&spec) {
        return error(StatusCode::BAD_REQUEST, why);
    }
    let starting = agent.clone();
    // Reading /etc/passwd and fork+exec block: off the executor.
    let started = match tokio::task::spawn_blocking(move || start(&starting, spec)).await {
        Ok(Ok(started)) => started,
        Ok(Err(StartError::Invalid(why))) => return error(StatusCode::BAD_REQUEST, why),
        Ok(Err(StartError::Duplicate(why))) => return error(StatusCode::CONFLICT, why),
        Ok(Err(StartError::Spawn(why))) => return error(StatusCode::UNPROCESSABLE_ENTITY, why),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let (tx, body) = ChannelBody::channel();
    tokio::spawn(supervise(agent.clone(), started, frames, tx));
    stream(body)
}

/// What can be checked without the guest's files.
fn check_spec(spec: &ExecSpec) -> Result<(), String> {
    if !valid_id(&spec.id) {
        return Err(format!(
            "exec id {:?} is not 16 lowercase hex digits",
            spec.id
        ));
    }
    // No argv at all is the user's login shell; an empty program is not.
    if spec.argv.first().is_some_and(String::is_empty) {
        return Err("the command is empty".into());
    }
    if spec.argv.iter().any(|a| a.contains('\0')) {
        return Err("the command has a NUL byte".into());
    }
    for (name, value) in &spec.env {
        if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
            return Err(format!("environment variable {name:?} is not NAME=value"));
        }
    }
    if let Some(cwd) = &spec.cwd
        && (!cwd.starts_with('/') || cwd.contains('\0'))
    {
        return Err(format!("working directory {cwd:?} is not an absolute path"));
    }
    if let Some(term) = &spec.term
        && (term.is_empty() || term.len() > 64 || !term.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(format!("TERM {term:?} is not a terminal name"));
    }
    Ok(())
}

/// The environment a command starts with, before its spec's own.
fn base_env(user: &User, term: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), PATH.to_owned()),
        ("HOME".to_owned(), user.home.clone()),
        ("USER".to_owned(), user.name.clone()),
        ("LOGNAME".to_owned(), user.name.clone()),
        ("SHELL".to_owned(), user.shell.clone()),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
    ];
    if let Some(term) = term {
        env.push(("TERM".to_owned(), term.to_owned()));
    }
    env
}

/// The environment a command starts with: the agent's base, then the
/// image's (minimal mode), then its spec's own. An entry replaces an
/// earlier one of the same name where that one was, so the image's PATH
/// replaces the default one.
fn command_env(
    base: Vec<(String, String)>,
    image: Vec<(String, String)>,
    spec: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env = base;
    let later = image.into_iter().chain(spec.iter().cloned());
    for (name, value) in later {
        match env.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => env.push((name, value)),
        }
    }
    env
}

/// The user's shell if the image has it, else the first of /bin/sh and
/// banger's own (minimal mode) that it has.
fn login_shell(user: &User) -> String {
    [user.shell.as_str(), "/bin/sh", "/.banger/bin/sh"]
        .into_iter()
        .find(|s| !s.is_empty() && Path::new(s).is_file())
        .unwrap_or("/bin/sh")
        .to_owned()
}

/// Blocking: resolves the user and the directory, then spawns under the
/// registry's lock, so an id is running at most once.
fn start(agent: &Agent, spec: ExecSpec) -> Result<Started, StartError> {
    let user = users::lookup(spec.user.as_deref()).map_err(StartError::Invalid)?;
    let cwd = match &spec.cwd {
        Some(cwd) if Path::new(cwd).is_dir() => cwd.clone(),
        Some(cwd) => {
            return Err(StartError::Invalid(format!(
                "working directory {cwd:?} is not a directory in the guest"
            )));
        }
        // A home that does not exist (a system user's) is not the
        // caller's error: start in /.
        None if Path::new(&user.home).is_dir() => user.home.clone(),
        None => "/".to_owned(),
    };
    let term = spec
        .pty
        .map(|_| spec.term.as_deref().unwrap_or("xterm-256color"));
    // No argv: the user's shell as a login shell (`-bash`), as sshd
    // starts it.
    let program = match spec.argv.first() {
        Some(program) => program.clone(),
        None => login_shell(&user),
    };
    let mut cmd = Command::new(&program);
    if spec.argv.is_empty() {
        let name = Path::new(&program)
            .file_name()
            .map_or("sh".into(), |n| n.to_string_lossy().into_owned());
        cmd.arg0(format!("-{name}"));
    }
    let env = command_env(
        base_env(&user, term),
        image_env::read(&agent.image_env),
        &spec.env,
    );
    cmd.args(spec.argv.iter().skip(1))
        .env_clear()
        .envs(env)
        .kill_on_drop(false);
    if spec.user.is_some() {
        let groups = users::groups(&user).map_err(StartError::Invalid)?;
        let dir = CString::new(cwd.as_str()).map_err(|_| {
            StartError::Invalid(format!("working directory {cwd:?} has a NUL byte"))
        })?;
        as_user(&mut cmd, &user, groups, dir);
    } else {
        cmd.current_dir(&cwd);
    }
    let pty = match spec.pty {
        Some(size) => {
            let (master, slave) = open_pty(size)
                .map_err(|e| StartError::Spawn(format!("cannot open a terminal: {e}")))?;
            let stdio = |fd: &OwnedFd| {
                fd.try_clone()
                    .map(Stdio::from)
                    .map_err(|e| StartError::Spawn(format!("cannot open a terminal: {e}")))
            };
            cmd.stdin(stdio(&slave)?)
                .stdout(stdio(&slave)?)
                .stderr(stdio(&slave)?);
            in_new_session(&mut cmd);
            Some(master)
        }
        None => {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            None
        }
    };

    let mut execs = agent
        .execs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if execs.contains_key(&spec.id) {
        return Err(StartError::Duplicate(format!(
            "exec {} is already running",
            spec.id
        )));
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| StartError::Spawn(format!("cannot run {program:?}: {e}")))?;
    // The Command holds the terminal's slave side: closed with it, so the
    // master reads EOF once the command's side is closed.
    drop(cmd);
    let Some(pid) = child.id() else {
        return Err(StartError::Spawn(format!(
            "cannot run {program:?}: it ended before it started"
        )));
    };
    let pgid = pid as i32;
    let io = match pty {
        Some(master) => {
            let handle = master.try_clone().ok();
            execs.insert(spec.id.clone(), Running { pgid, pty: handle });
            Io::Pty(master)
        }
        None => {
            let (Some(stdin), Some(stdout), Some(stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                return Err(StartError::Spawn("the command's pipes are missing".into()));
            };
            execs.insert(spec.id.clone(), Running { pgid, pty: None });
            Io::Pipes {
                stdin,
                stdout,
                stderr,
            }
        }
    };
    Ok(Started {
        id: spec.id,
        child,
        pgid,
        io,
    })
}

/// A new terminal of `size`: its master side, and its slave side for the
/// command.
fn open_pty(size: WindowSize) -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)?;
    rustix::termios::tcsetwinsize(&slave, winsize(size))?;
    Ok((master, slave))
}

fn winsize(size: WindowSize) -> Winsize {
    Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// The command runs as `user` with its `groups` (primary first), in
/// `dir`. std's `uid`/`gid` cannot carry supplementary groups (and would
/// drop them all before its hooks run), so the switch is this hook's:
/// groups, then gid, then uid (after setuid(2) the others are refused),
/// then the directory, entered as the user, as sshd does.
#[allow(unsafe_code)]
fn as_user(cmd: &mut Command, user: &User, groups: Vec<u32>, dir: CString) {
    let (uid, gid) = (user.uid, user.gid);
    let groups: Vec<libc::gid_t> = groups;
    // SAFETY: the hook runs in the forked child before exec; it is
    // registered before any other hook, so it runs first. It makes only
    // setgroups(2), setgid(2), setuid(2) and chdir(2), all
    // async-signal-safe, on memory that was allocated before the fork and
    // moved into the closure (the group list and the directory as a C
    // string): no allocation, no lock. An error is the OS error, which
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
                || libc::chdir(dir.as_ptr()) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The command starts a session whose controlling terminal is its stdin
/// (the terminal's slave side, set up by then).
#[allow(unsafe_code)]
fn in_new_session(cmd: &mut Command) {
    // SAFETY: the hook runs in the forked child before exec, after std has
    // put the terminal on fds 0-2. It makes only two raw syscalls through
    // rustix, setsid(2) and ioctl(TIOCSCTTY), both async-signal-safe: no
    // allocation, no lock, nothing copied from other threads. Fd 0 is open
    // (std just dup2'd the slave onto it) for as long as the borrow lives.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            let stdin = std::os::fd::BorrowedFd::borrow_raw(0);
            rustix::process::ioctl_tiocsctty(stdin)?;
            Ok(())
        });
    }
}

/// Runs an exec to its end: pumps, stdin, the wait, the last frame.
async fn supervise(agent: Agent, started: Started, frames: FrameReader, tx: mpsc::Sender<Bytes>) {
    let Started {
        id,
        mut child,
        pgid,
        io,
    } = started;
    let (exited_tx, exited) = watch::channel(None::<Instant>);
    let mut pumps = JoinSet::new();
    let stdin_task = match io {
        Io::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            pumps.spawn(pump(stdout, FrameKind::Stdout, tx.clone(), exited.clone()));
            pumps.spawn(pump(stderr, FrameKind::Stderr, tx.clone(), exited.clone()));
            Some(tokio::spawn(feed_stdin(frames, stdin)))
        }
        Io::Pty(master) => match pty_halves(master) {
            Ok((output, input)) => {
                pumps.spawn(pump(output, FrameKind::Stdout, tx.clone(), exited.clone()));
                Some(tokio::spawn(feed_stdin(frames, input)))
            }
            Err(e) => {
                let why = format!("the agent cannot watch the terminal: {e}");
                eprintln!("banger-agent: exec {id}: {why}");
                let _ = tx.send(encode(FrameKind::Error, why.as_bytes())).await;
                None
            }
        },
    };
    let status = if stdin_task.is_none() {
        hang_up(pgid, &mut child).await
    } else {
        tokio::select! {
            status = child.wait() => status,
            () = tx.closed() => {
                eprintln!("banger-agent: exec {id}: the host's stream went away; hanging up");
                hang_up(pgid, &mut child).await
            }
        }
    };
    // Reaped: its pid (and group) may be reused from now on.
    agent
        .execs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&id);
    let _ = exited_tx.send(Some(Instant::now() + DRAIN));
    while pumps.join_next().await.is_some() {}
    if let Some(task) = stdin_task {
        task.abort();
    }
    let last = match status {
        Ok(status) => encode_json(FrameKind::Exit, &exit_info(status)),
        Err(e) => encode(
            FrameKind::Error,
            format!("waiting for the command: {e}").as_bytes(),
        ),
    };
    let _ = tx.send(last).await;
}

/// SIGHUP to the command's group, SIGKILL after [`HANGUP_GRACE`]; reaps.
async fn hang_up(pgid: i32, child: &mut Child) -> io::Result<ExitStatus> {
    let _ = kill_group(pgid, libc::SIGHUP);
    let _ = kill_group(pgid, libc::SIGCONT);
    match tokio::time::timeout(HANGUP_GRACE, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            let _ = kill_group(pgid, libc::SIGKILL);
            child.wait().await
        }
    }
}

fn exit_info(status: ExitStatus) -> ExitInfo {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitInfo { code, signal: None },
        (None, Some(signal)) => ExitInfo {
            code: 128 + signal,
            signal: Some(signal),
        },
        // Neither exited nor killed (stopped): not something wait() returns.
        (None, None) => ExitInfo {
            code: 255,
            signal: None,
        },
    }
}

/// Forwards one output until EOF; once the command has exited, a read
/// that finds nothing by the drain deadline ends it. The channel's send
/// is where a slow host pushes back: it is never timed out.
async fn pump(
    mut out: impl AsyncRead + Unpin,
    kind: FrameKind,
    tx: mpsc::Sender<Bytes>,
    mut exited: watch::Receiver<Option<Instant>>,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = tokio::select! {
            read = out.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            () = drained(&mut exited) => return,
        };
        if tx.send(encode(kind, &buf[..n])).await.is_err() {
            return;
        }
    }
}

/// Resolves at the drain deadline, once the command has exited.
async fn drained(exited: &mut watch::Receiver<Option<Instant>>) {
    let deadline = loop {
        if let Some(deadline) = *exited.borrow_and_update() {
            break deadline;
        }
        if exited.changed().await.is_err() {
            break Instant::now();
        }
    };
    tokio::time::sleep_until(deadline).await;
}

/// Feeds the command's stdin from the host's frames. A command that
/// closed its stdin gets no more; the host's frames are still read (and
/// dropped), so its side never stalls on them.
async fn feed_stdin(mut frames: FrameReader, stdin: impl AsyncWrite + Unpin) {
    let mut stdin = Some(stdin);
    loop {
        match frames.next().await {
            Ok(Some(frame)) => match frame.kind {
                FrameKind::Stdin => {
                    if let Some(w) = stdin.as_mut()
                        && w.write_all(&frame.payload).await.is_err()
                    {
                        stdin = None;
                    }
                }
                FrameKind::StdinEof => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                    }
                }
                kind => {
                    eprintln!("banger-agent: exec stream: unexpected {kind:?} frame; stdin closed");
                    return;
                }
            },
            Ok(None) => return,
            Err(crate::body::ReadError::Frame(e)) => {
                eprintln!("banger-agent: exec stream: {e}; stdin closed");
                return;
            }
            // The host reset the stream: the exec's output side notices.
            Err(crate::body::ReadError::Body(_)) => return,
        }
    }
}

pub fn signal(agent: &Agent, req: SignalRequest) -> Reply {
    if !(1..=64).contains(&req.signal) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("signal {} is not between 1 and 64", req.signal),
        );
    }
    let execs = agent
        .execs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(running) = execs.get(&req.id) else {
        return unknown(&req.id);
    };
    match kill_group(running.pgid, req.signal) {
        Ok(()) => no_content(),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => unknown(&req.id),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("signalling exec {}: {e}", req.id),
        ),
    }
}

pub fn resize(agent: &Agent, req: ResizeRequest) -> Reply {
    let execs = agent
        .execs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(running) = execs.get(&req.id) else {
        return unknown(&req.id);
    };
    let Some(master) = &running.pty else {
        return error(
            StatusCode::CONFLICT,
            format!("exec {} has no terminal to resize", req.id),
        );
    };
    match rustix::termios::tcsetwinsize(master, winsize(req.size)) {
        Ok(()) => no_content(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("resizing the terminal of exec {}: {e}", req.id),
        ),
    }
}

fn unknown(id: &str) -> Reply {
    error(
        StatusCode::NOT_FOUND,
        format!("no running exec {id:?} in this guest"),
    )
}

/// kill(2) to a process group. Through libc: the safe wrappers (nix,
/// rustix) name only the classic signals, and the host may send any
/// signal from 1 to 64.
#[allow(unsafe_code)]
fn kill_group(pgid: i32, signal: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    // The negative pid addresses the group whose leader we spawned and
    // have not yet reaped (checked above to be neither 0 nor init).
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A terminal's master side on the reactor, as two descriptors of it:
/// the command's output is read from one, its stdin written to the other.
/// tokio's pipe types take any pollable descriptor (`_unchecked`), which
/// a terminal's master side is.
fn pty_halves(master: OwnedFd) -> io::Result<(pipe::Receiver, pipe::Sender)> {
    rustix::io::ioctl_fionbio(&master, true)?;
    let writer = master.try_clone()?;
    Ok((
        pipe::Receiver::from_owned_fd_unchecked(master)?,
        pipe::Sender::from_owned_fd_unchecked(writer)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ExecSpec {
        ExecSpec {
            id: "0123456789abcdef".into(),
            argv: vec!["true".into()],
            ..Default::default()
        }
    }

    #[test]
    fn specs_are_checked_before_the_guest_is_asked() {
        assert!(check_spec(&spec()).is_ok());
        let bad = [
            ExecSpec {
                id: "XYZ".into(),
                ..spec()
            },
            ExecSpec {
                argv: vec![String::new()],
                ..spec()
            },
            ExecSpec {
                argv: vec!["a\0b".into()],
                ..spec()
            },
            ExecSpec {
                env: vec![("A=B".into(), "c".into())],
                ..spec()
            },
            ExecSpec {
                cwd: Some("relative".into()),
                ..spec()
            },
            ExecSpec {
                term: Some("x y".into()),
                ..spec()
            },
        ];
        for s in bad {
            assert!(check_spec(&s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn the_image_env_comes_between_the_base_and_the_spec() {
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let user = User {
            name: "root".into(),
            uid: 0,
            gid: 0,
            home: "/root".into(),
            shell: "/bin/sh".into(),
        };
        let image = image_env::parse(b"PATH=/opt/image/bin:/usr/bin\nGREETING=image\nLANG=en\n");
        let spec = pairs(&[("GREETING", "spec"), ("EXTRA", "1")]);
        assert_eq!(
            command_env(base_env(&user, Some("xterm")), image, &spec),
            pairs(&[
                ("PATH", "/opt/image/bin:/usr/bin"),
                ("HOME", "/root"),
                ("USER", "root"),
                ("LOGNAME", "root"),
                ("SHELL", "/bin/sh"),
                ("LANG", "en"),
                ("TERM", "xterm"),
                ("GREETING", "spec"),
                ("EXTRA", "1"),
            ])
        );
        // No image environment (a systemd guest): the base and the spec.
        let env = command_env(base_env(&user, None), Vec::new(), &spec);
        assert_eq!(env[0], ("PATH".to_owned(), PATH.to_owned()));
        assert_eq!(env.len(), 8);
    }

    /// Dropping root to an unprivileged id (no account needed): the
    /// groups are set before the uid, or setgroups(2) would be refused.
    #[tokio::test]
    async fn the_switch_sets_every_group_given_before_dropping_root() {
        if !rustix::process::geteuid().is_root() {
            banger_testkit::skip("switching user needs root");
            return;
        }
        let nobody = User {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            home: "/".into(),
            shell: "/bin/sh".into(),
        };
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "id -u; id -G; pwd"]);
        let dir = CString::new("/tmp").unwrap();
        as_user(&mut cmd, &nobody, vec![65534, 4242, 4243], dir);
        let out = cmd.output().await.unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "65534\n65534 4242 4243\n/tmp\n"
        );
    }

    #[test]
    fn exit_codes_and_signals() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            exit_info(ExitStatus::from_raw(3 << 8)),
            ExitInfo {
                code: 3,
                signal: None
            }
        );
        assert_eq!(
            exit_info(ExitStatus::from_raw(9)),
            ExitInfo {
                code: 137,
                signal: Some(9)
            }
        );
    }
}
