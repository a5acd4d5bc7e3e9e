//! The host's agent client through Firecracker's vsock socket, played by a
//! fake: a Unix socket that takes `CONNECT <port>\n`, answers `OK <host
//! port>\n` and hands the stream to the real agent server in this
//! process, or does what Firecracker does when nothing in the guest
//! listens (closes the connection), or misbehaves.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use banger_agent_proto::{AgentChannel, ExecSpec, VSOCK_PORT, greeting};
use banger_guest::agent::{AgentClient, AgentError, ExecEvent, VsockError};

/// What the fake Firecracker does after reading the `CONNECT` line.
#[derive(Clone, Copy)]
enum Fake {
    /// Answers `OK` and serves the real agent on the connection, if the
    /// port asked for is the agent's; closes it otherwise.
    Agent,
    /// Closes the connection: nothing listens on the port in the guest.
    Close,
    /// Writes these bytes and keeps the connection open.
    Reply(&'static [u8]),
    /// Writes a megabyte without a newline.
    Flood,
    /// Says nothing and keeps the connection open.
    Silent,
}

/// A fake Firecracker vsock socket in `dir`; returns the channel to it.
fn fake_firecracker(dir: &Path, fake: Fake) -> AgentChannel {
    let uds = dir.join("vsock.sock");
    let listener = UnixListener::bind(&uds).unwrap();
    let runtime = tokio::runtime::Handle::current();
    let agent = banger_agent::Agent::new();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (agent, runtime) = (agent.clone(), runtime.clone());
            std::thread::spawn(move || {
                let _ = answer(stream, fake, &agent, &runtime);
            });
        }
    });
    AgentChannel::Vsock {
        uds,
        port: VSOCK_PORT,
    }
}

fn answer(
    mut stream: UnixStream,
    fake: Fake,
    agent: &banger_agent::Agent,
    runtime: &tokio::runtime::Handle,
) -> std::io::Result<()> {
    let line = read_line(&mut stream)?;
    let hold = || std::thread::sleep(Duration::from_secs(10));
    match fake {
        Fake::Agent if line == format!("CONNECT {VSOCK_PORT}") => {
            stream.write_all(b"OK 1073741824\n")?;
            greeting::agent_answer(&mut stream).map_err(std::io::Error::other)?;
            stream.set_nonblocking(true)?;
            let _guard = runtime.enter();
            let io = tokio::net::UnixStream::from_std(stream)?;
            let _ = runtime.block_on(agent.serve_connection(io));
        }
        Fake::Agent | Fake::Close => {}
        Fake::Reply(bytes) => {
            stream.write_all(bytes)?;
            hold();
        }
        Fake::Flood => {
            // The write fails once the client hangs up.
            stream.write_all(&vec![b'7'; 1 << 20])?;
            hold();
        }
        Fake::Silent => hold(),
    }
    Ok(())
}

/// The `CONNECT` line, at most 64 bytes, without its newline.
fn read_line(stream: &mut UnixStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while line.len() < 64 {
        if stream.read(&mut byte)? == 0 || byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

async fn connect(channel: &AgentChannel, secs: u64) -> Result<AgentClient, AgentError> {
    AgentClient::connect_channel(channel, Duration::from_secs(secs)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_through_firecracker_s_vsock_socket() {
    let dir = tempfile::tempdir().unwrap();
    let channel = fake_firecracker(dir.path(), Fake::Agent);
    let client = connect(&channel, 5).await.unwrap();
    let ready = client.ready().await.unwrap();
    assert_eq!(ready.protocol, banger_agent_proto::PROTOCOL_VERSION);

    let mut exec = client
        .exec(ExecSpec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 3".into(),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    if let Some(stdin) = exec.take_stdin() {
        stdin.close().await;
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = loop {
        match exec.next_event().await.unwrap() {
            Some(ExecEvent::Stdout(b)) => out.extend(b),
            Some(ExecEvent::Stderr(b)) => err.extend(b),
            Some(ExecEvent::Exit(e)) => break e.code,
            None => panic!("no exit"),
        }
    };
    assert_eq!(
        (out.as_slice(), err.as_slice(), code),
        (&b"out\n"[..], &b"err\n"[..], 3)
    );

    // Another port: Firecracker finds nobody listening and hangs up.
    let AgentChannel::Vsock { uds, .. } = &channel else {
        unreachable!()
    };
    let other = AgentChannel::Vsock {
        uds: uds.clone(),
        port: 52,
    };
    let e = connect(&other, 5).await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
}

#[tokio::test]
async fn an_agent_not_listening_yet_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let channel = fake_firecracker(dir.path(), Fake::Close);
    let e = connect(&channel, 5).await.unwrap_err();
    assert!(
        matches!(
            &e,
            AgentError::Vsock {
                source: VsockError::Closed,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.is_unavailable(), "{e}");
    assert!(e.to_string().contains("vsock port 1024"), "{e}");
}

#[tokio::test]
async fn a_vm_without_its_vsock_socket_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let channel = AgentChannel::Vsock {
        uds: dir.path().join("vsock.sock"),
        port: VSOCK_PORT,
    };
    let e = connect(&channel, 5).await.unwrap_err();
    assert!(matches!(e, AgentError::Connect { .. }), "{e}");
    assert!(e.is_unavailable(), "{e}");
}

#[tokio::test]
async fn a_malformed_answer_is_refused() {
    for reply in [
        &b"NOPE\n"[..],
        b"OK\n",
        b"OK 99999999999\n",
        b"OK 1 BANGER-AGENT-OK\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let channel = fake_firecracker(dir.path(), Fake::Reply(reply));
        let e = connect(&channel, 5).await.unwrap_err();
        assert!(
            matches!(
                &e,
                AgentError::Vsock {
                    source: VsockError::Reply(_),
                    ..
                }
            ),
            "{reply:?}: {e}"
        );
        assert!(e.is_unavailable(), "{e}");
    }
}

#[tokio::test]
async fn an_endless_answer_is_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let channel = fake_firecracker(dir.path(), Fake::Flood);
    let started = Instant::now();
    let e = connect(&channel, 5).await.unwrap_err();
    assert!(
        matches!(
            &e,
            AgentError::Vsock {
                source: VsockError::TooLong,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.is_unavailable(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_silent_firecracker_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let channel = fake_firecracker(dir.path(), Fake::Silent);
    let started = Instant::now();
    let e = connect(&channel, 1).await.unwrap_err();
    assert!(matches!(e, AgentError::Timeout(1)), "{e}");
    assert!(e.is_unavailable(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A trickle of bytes, each inside the timeout, cannot stretch the
/// deadline.
#[tokio::test]
async fn a_trickling_answer_still_ends_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(&uds).unwrap();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = read_line(&mut stream);
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(300));
            if stream.write_all(b"O").is_err() {
                return;
            }
        }
    });
    let channel = AgentChannel::Vsock {
        uds,
        port: VSOCK_PORT,
    };
    let started = Instant::now();
    let e = connect(&channel, 1).await.unwrap_err();
    assert!(matches!(e, AgentError::Timeout(1)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}
