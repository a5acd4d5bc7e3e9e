//! The host's agent client and the daemon's proxy against the real agent
//! server (`banger-agent`) in this process, on Unix sockets: no VM. What a
//! guest that misbehaves sends is played by small fakes.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener as StdListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_agent_proto::AgentChannel;
use banger_agent_proto::{
    ExecSpec, HostKey, IdentityPart, IdentityRequest, SshdRestart, TarInSpec, greeting,
};
use banger_guest::agent::{AgentClient, AgentError, AgentProxy, ExecEvent};

/// Serves the real agent on a socket in `dir`.
fn serve_agent(dir: &Path) -> PathBuf {
    serve(dir, banger_agent::Agent::new())
}

fn serve(dir: &Path, agent: banger_agent::Agent) -> PathBuf {
    let path = dir.join("agent.sock");
    let listener = StdListener::bind(&path).unwrap();
    let runtime = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (agent, runtime) = (agent.clone(), runtime.clone());
            std::thread::spawn(move || {
                if greeting::agent_answer(&mut stream).is_err() {
                    return;
                }
                stream.set_nonblocking(true).unwrap();
                let _guard = runtime.enter();
                let io = tokio::net::UnixStream::from_std(stream).unwrap();
                let _ = runtime.block_on(agent.serve_connection(io));
            });
        }
    });
    path
}

async fn run(client: &AgentClient, argv: &[&str], stdin: &[u8]) -> (Vec<u8>, Vec<u8>, i32) {
    let mut exec = client
        .exec(ExecSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    let input = exec.take_stdin().unwrap();
    let data = stdin.to_vec();
    tokio::spawn(async move {
        input.write(&data).await.unwrap();
        input.close().await;
    });
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        match exec.next_event().await.unwrap() {
            Some(ExecEvent::Stdout(b)) => out.extend(b),
            Some(ExecEvent::Stderr(b)) => err.extend(b),
            Some(ExecEvent::Exit(e)) => return (out, err, e.code),
            None => panic!("no exit"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_signals_and_copies_through_the_client_and_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let agent = serve_agent(dir.path());
    let client = AgentClient::connect(&agent, Duration::from_secs(5))
        .await
        .unwrap();
    let ready = client.ready().await.unwrap();
    assert_eq!(ready.protocol, banger_agent_proto::PROTOCOL_VERSION);

    let (out, err, code) = run(&client, &["sh", "-c", "cat; echo err >&2; exit 3"], b"hi\n").await;
    assert_eq!(
        (out.as_slice(), err.as_slice(), code),
        (&b"hi\n"[..], &b"err\n"[..], 3)
    );

    // A signal by the exec's id: 128+9.
    let mut exec = client
        .exec(ExecSpec {
            argv: vec!["sleep".into(), "30".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    client.signal(exec.id(), 9).await.unwrap();
    let exit = loop {
        if let Some(ExecEvent::Exit(e)) = exec.next_event().await.unwrap() {
            break e;
        }
    };
    assert_eq!((exit.code, exit.signal), (137, Some(9)));

    // A program that does not exist: refused with its name.
    let e = client
        .exec(ExecSpec {
            argv: vec!["no-such-program".into()],
            ..Default::default()
        })
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("no-such-program"), "{e}");

    // Tar in, then out.
    let tree = dir.path().join("tree");
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(5);
    header.set_mode(0o640);
    header.set_cksum();
    builder
        .append_data(&mut header, "a/b.txt", &b"hello"[..])
        .unwrap();
    let archive = builder.into_inner().unwrap();
    let done = client
        .tar_in(
            &TarInSpec {
                dir: tree.to_str().unwrap().into(),
                user: None,
            },
            &archive[..],
        )
        .await
        .unwrap();
    assert!(done.entries >= 1, "{done:?}");
    assert_eq!(std::fs::read(tree.join("a/b.txt")).unwrap(), b"hello");
    let mut back = Vec::new();
    client
        .tar_out(tree.join("a").to_str().unwrap(), &mut back)
        .await
        .unwrap();
    let mut names = Vec::new();
    for entry in tar::Archive::new(&back[..]).entries().unwrap() {
        names.push(entry.unwrap().path().unwrap().display().to_string());
    }
    assert!(names.iter().any(|n| n.ends_with("b.txt")), "{names:?}");

    // Through the proxy: two clients at once on one agent connection.
    let proxy_path = dir.path().join("proxy.sock");
    let _proxy = AgentProxy::start(&proxy_path, AgentChannel::Serial(agent.clone())).unwrap();
    let (a, b) = tokio::join!(
        AgentClient::connect(&proxy_path, Duration::from_secs(5)),
        AgentClient::connect(&proxy_path, Duration::from_secs(5))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let (ra, rb) = tokio::join!(
        run(&a, &["sh", "-c", "sleep 1; echo a"], b""),
        run(&b, &["sh", "-c", "sleep 1; echo b"], b"")
    );
    assert_eq!((ra.0, rb.0), (b"a\n".to_vec(), b"b\n".to_vec()));
    let big = vec![7u8; 8 << 20];
    let (out, _, code) = run(&a, &["cat"], &big).await;
    assert_eq!((out.len(), code), (big.len(), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_is_applied_part_by_part_and_a_malformed_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The agent's files go under a root of its own: this host's /etc is
    // never touched (and the parts that change the kernel's state, which
    // need root and a namespace, are crates/agent/tests/identity.rs's).
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let agent = serve(dir.path(), banger_agent::Agent::new().with_root(&root));
    let client = AgentClient::connect(&agent, Duration::from_secs(5))
        .await
        .unwrap();
    let req = IdentityRequest {
        machine_id: Some("00112233445566778899aabbccddeeff".into()),
        host_keys: Some(vec![HostKey {
            name: "ssh_host_ed25519_key".into(),
            private_key: "PRIVATE\n".into(),
            public_key: "ssh-ed25519 AAAA".into(),
        }]),
        ..Default::default()
    };
    let reply = client.set_identity(&req).await.unwrap();
    assert_eq!(
        reply.applied,
        [IdentityPart::MachineId, IdentityPart::HostKeys],
        "{reply:?}"
    );
    assert!(reply.is_complete());
    // No systemd and no supervisor under that root: said, not hidden.
    assert!(
        matches!(reply.sshd, Some(SshdRestart::NotRestarted { .. })),
        "{reply:?}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/machine-id")).unwrap(),
        "00112233445566778899aabbccddeeff\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/ssh/ssh_host_ed25519_key.pub")).unwrap(),
        "ssh-ed25519 AAAA\n"
    );

    let bad = IdentityRequest {
        machine_id: Some("00112233445566778899aabbccddeeff".into()),
        host_keys: Some(vec![HostKey {
            name: "../../etc/shadow".into(),
            private_key: "x".into(),
            public_key: "y".into(),
        }]),
        ..Default::default()
    };
    match client.set_identity(&bad).await {
        Err(AgentError::Refused { status, message }) => {
            assert_eq!(status, 400);
            assert!(message.starts_with("host_keys: "), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_proxy_without_an_agent_turns_clients_away() {
    let dir = tempfile::tempdir().unwrap();
    let proxy_path = dir.path().join("proxy.sock");
    let _proxy = AgentProxy::start(
        &proxy_path,
        AgentChannel::Serial(dir.path().join("nothing.sock")),
    )
    .unwrap();
    let e = AgentClient::connect(&proxy_path, Duration::from_secs(15))
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
}

#[tokio::test]
async fn a_proxy_process_ends_with_its_vm_and_removes_only_its_own_socket() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let listen = dir.path().join("proxy.sock");
    let agent = dir.path().join("nothing.sock");

    let alive = Arc::new(AtomicBool::new(true));
    let flag = alive.clone();
    let (l, a) = (listen.clone(), agent.clone());
    let served = tokio::spawn(async move {
        banger_guest::agent::serve_proxy(&l, AgentChannel::Serial(a), move || {
            flag.load(Ordering::SeqCst)
        })
        .await
    });
    wait_for(&listen).await;
    alive.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("the proxy ends when the VM is gone")
        .unwrap()
        .unwrap();
    assert!(!listen.exists(), "it removed its socket");

    // A later boot's proxy took the path: the old one leaves it alone.
    let alive = Arc::new(AtomicBool::new(true));
    let flag = alive.clone();
    let (l, a) = (listen.clone(), agent.clone());
    let old = tokio::spawn(async move {
        banger_guest::agent::serve_proxy(&l, AgentChannel::Serial(a), move || {
            flag.load(Ordering::SeqCst)
        })
        .await
    });
    wait_for(&listen).await;
    let _newer = AgentProxy::start(&listen, AgentChannel::Serial(agent.clone())).unwrap();
    alive.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(5), old)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(listen.exists(), "the newer proxy's socket stays");
}

async fn wait_for(path: &Path) {
    for _ in 0..100 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{} never appeared", path.display());
}

/// A fake agent: answers the greeting with `answer`, then writes `after`.
fn fake_agent(dir: &Path, answer: &'static [u8], after: Vec<u8>) -> PathBuf {
    let path = dir.join("fake.sock");
    let listener = StdListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8];
        // The host's greeting starts with a newline.
        while line.iter().filter(|&&b| b == b'\n').count() < 2 {
            if stream.read(&mut byte).unwrap() == 0 {
                return;
            }
            line.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        let nonce = text
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_owned();
        let reply = String::from_utf8_lossy(answer).replace("NONCE", &nonce);
        stream.write_all(reply.as_bytes()).unwrap();
        stream.write_all(&after).unwrap();
        std::thread::sleep(Duration::from_secs(5));
    });
    path
}

#[tokio::test]
async fn another_protocol_version_is_refused_saying_who_updates() {
    let dir = tempfile::tempdir().unwrap();
    let path = fake_agent(dir.path(), b"BANGER-AGENT-VERSION 9\n", Vec::new());
    let e = AgentClient::connect(&path, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(e, AgentError::Greeting(_)), "{e}");
    assert!(e.to_string().contains("update banger on the host"), "{e}");
}

#[tokio::test]
async fn a_guest_that_never_greets_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    let _listener = StdListener::bind(&path).unwrap();
    let started = std::time::Instant::now();
    let e = AgentClient::connect(&path, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(e, AgentError::Timeout(_)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn garbage_instead_of_http2_fails_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = fake_agent(
        dir.path(),
        b"BANGER-AGENT-OK 1 NONCE\n",
        vec![0xff; 1 << 20],
    );
    let client = AgentClient::connect(&path, Duration::from_secs(5)).await;
    let e = match client {
        Ok(client) => client.ready().await.unwrap_err(),
        Err(e) => e,
    };
    assert!(
        !e.is_unavailable() || matches!(e, AgentError::Http(_)),
        "{e}"
    );
}
