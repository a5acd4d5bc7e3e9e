//! Commands and shells through a VM's guest agent (the daemon's proxy to
//! it): the command's own stdin, stdout and stderr, its exit status, a
//! terminal with its size for a shell, Ctrl-C and other signals passed
//! on. Where the agent does not answer, the caller uses ssh and
//! [`reach`] has said so.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, anyhow};
use banger_agent_proto::{ExecSpec, ExitInfo, WindowSize};
use banger_api::{AgentInfo, Client, ClientError, ErrorCode};
use banger_guest::agent::{AgentClient, AgentError, ExecEvent, StdinSender, new_exec_id};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::path_segment;

/// Whether commands and shells go through the guest agent: unless the
/// command says `--ssh` (`force_ssh`), or `BANGER_AGENT=0` says so for
/// every command.
pub fn enabled(force_ssh: bool) -> bool {
    !force_ssh && std::env::var_os("BANGER_AGENT").is_none_or(|v| v != "0")
}

/// How long `banger` gives the daemon's proxy to reach the agent (the
/// proxy itself tries for 10 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The VM's agent, or `None` after saying on stderr why ssh is used.
pub async fn reach(client: &Client, name: &str) -> Option<AgentClient> {
    let info: AgentInfo = match client
        .get(&format!("/v1/vms/{}/agent", path_segment(name)))
        .await
    {
        Ok(info) => info,
        // A VM that takes no commands now (stopped, paused): the ssh path
        // asks next and fails with the same one-line reason, said once.
        Err(ClientError::Api(e)) if e.code == ErrorCode::Conflict => return None,
        Err(e) => {
            eprintln!("banger: cannot ask for VM {name}'s guest agent ({e}): using ssh");
            return None;
        }
    };
    let Some(socket) = info.socket else {
        let why = info.reason.unwrap_or_else(|| "none".into());
        eprintln!("banger: VM {name} has no guest agent ({why}): using ssh");
        return None;
    };
    match AgentClient::connect(&socket, CONNECT_TIMEOUT).await {
        Ok(agent) => Some(agent),
        Err(e) => {
            let why = match e {
                AgentError::Greeting(banger_agent_proto::greeting::GreetingError::Closed) => {
                    "it does not answer".to_string()
                }
                e => e.to_string(),
            };
            eprintln!("banger: VM {name}'s guest agent cannot be used ({why}): using ssh");
            None
        }
    }
}

/// Runs `argv` (or, empty, the user's login shell) in `cwd`, on a
/// terminal when `interactive` and stdin is one. Returns the command's
/// status: its exit code, or 128+N for signal N.
pub async fn run(
    agent: &AgentClient,
    argv: &[String],
    cwd: Option<String>,
    interactive: bool,
) -> Result<ExitCode> {
    let tty = interactive && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let size = if tty { window_size() } else { None };
    let spec = ExecSpec {
        id: new_exec_id(),
        argv: argv.to_vec(),
        cwd,
        pty: size,
        term: if tty {
            std::env::var("TERM").ok().filter(|t| is_term_name(t))
        } else {
            None
        },
        ..Default::default()
    };
    let mut exec = agent.exec(spec).await.map_err(|e| anyhow!("{e}"))?;
    let id = exec.id().to_owned();
    let raw = if tty { RawMode::enter() } else { None };
    if let Some(stdin) = exec.take_stdin() {
        forward_stdin(stdin);
    }
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut winch = signal(SignalKind::window_change()).ok();
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let ended: Result<ExitInfo, AgentError> = loop {
        tokio::select! {
            event = exec.next_event() => match event {
                Ok(Some(ExecEvent::Stdout(b))) => {
                    stdout.write_all(&b).await?;
                    stdout.flush().await?;
                }
                Ok(Some(ExecEvent::Stderr(b))) => {
                    stderr.write_all(&b).await?;
                    stderr.flush().await?;
                }
                Ok(Some(ExecEvent::Exit(exit))) => break Ok(exit),
                Ok(None) => break Err(AgentError::Gone),
                Err(e) => break Err(e),
            },
            Some(()) = async { winch.as_mut()?.recv().await } => {
                if let Some(size) = window_size() {
                    let _ = agent.resize(&id, size).await;
                }
            }
            // On a terminal Ctrl-C is a byte the guest's terminal turns
            // into SIGINT; without one, banger passes the signal on.
            Some(()) = int.recv() => { let _ = agent.signal(&id, 2).await; }
            Some(()) = term.recv() => { let _ = agent.signal(&id, 15).await; }
            Some(()) = hup.recv() => { let _ = agent.signal(&id, 1).await; }
        }
    };
    drop(raw);
    match ended {
        Ok(exit) => Ok(ExitCode::from(u8::try_from(exit.code).unwrap_or(255))),
        Err(AgentError::Gone) => Err(anyhow!(
            "the guest agent went away before the command ended (the VM stopped, or the agent \
             died): its status is unknown"
        )),
        Err(e) => Err(anyhow!("{e}")),
    }
}

/// Runs `argv` with stdin written by `produce` (on a blocking thread),
/// its stdout dropped; an error quotes the end of its stderr.
pub async fn feed(
    agent: &AgentClient,
    argv: Vec<String>,
    what: &str,
    produce: impl FnOnce(&mut dyn Write) -> Result<()> + Send + 'static,
) -> Result<()> {
    let spec = ExecSpec {
        id: new_exec_id(),
        argv,
        ..Default::default()
    };
    let mut exec = agent.exec(spec).await.map_err(|e| anyhow!("{what}: {e}"))?;
    let stdin = exec
        .take_stdin()
        .ok_or_else(|| anyhow!("{what}: no stdin"))?;
    let runtime = tokio::runtime::Handle::current();
    let writer = tokio::task::spawn_blocking(move || {
        let mut sink = std::io::BufWriter::with_capacity(
            banger_agent_proto::MAX_PAYLOAD,
            AgentStdin {
                sender: stdin.clone(),
                runtime: runtime.clone(),
            },
        );
        let produced = produce(&mut sink).and_then(|()| Ok(sink.flush()?));
        drop(sink);
        runtime.block_on(stdin.close());
        produced
    });
    let mut tail = Vec::new();
    let exit = loop {
        match exec
            .next_event()
            .await
            .map_err(|e| anyhow!("{what}: {e}"))?
        {
            Some(ExecEvent::Stderr(b)) => {
                tail.extend_from_slice(&b);
                let cut = tail.len().saturating_sub(4096);
                tail.drain(..cut);
            }
            Some(ExecEvent::Stdout(_)) => {}
            Some(ExecEvent::Exit(exit)) => break exit,
            None => return Err(anyhow!("{what}: the guest agent went away")),
        }
    };
    if exit.code != 0 {
        writer.abort();
        return Err(anyhow!(
            "{what} failed (exit {}): {}",
            exit.code,
            String::from_utf8_lossy(&tail).trim()
        ));
    }
    writer.await.map_err(|e| anyhow!("{what}: {e}"))??;
    Ok(())
}

/// A blocking writer into a command's stdin.
struct AgentStdin {
    sender: StdinSender,
    runtime: tokio::runtime::Handle,
}

impl Write for AgentStdin {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.runtime
            .block_on(self.sender.write(buf))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::BrokenPipe, e.to_string()))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Passes this process's stdin to the command, from a thread of its own
/// (a blocking read that may never end must not keep banger from
/// exiting, and tokio's stdin would).
fn forward_stdin(sender: StdinSender) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if sender.write(&chunk).await.is_err() {
                return;
            }
        }
        sender.close().await;
    });
}

fn window_size() -> Option<WindowSize> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    Some(WindowSize {
        rows: ws.ws_row.max(1),
        cols: ws.ws_col.max(1),
    })
}

/// A terminal name worth passing on (letters, digits, `-`, `.`, `+`).
fn is_term_name(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'+' | b'_'))
}

/// This terminal in raw mode (every key to the guest's terminal) until
/// dropped.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}
