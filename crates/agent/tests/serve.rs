//! The agent's routes, driven by a small HTTP/2 client over a socketpair:
//! no VM, the commands run on this machine (as the user running the
//! tests; the tests that need root say so).

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use banger_agent::Agent;
use banger_agent_proto::{
    ErrorReply, ExecSpec, ExitInfo, Frame, FrameDecoder, FrameKind, Ready, ResizeRequest,
    SignalRequest, TarDone, TarInSpec, TarOutRequest, WindowSize, limits, route,
};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

type ReqBody = UnsyncBoxBody<Bytes, Infallible>;

/// A request body fed through a channel.
struct Chan(mpsc::Receiver<Bytes>);

impl Body for Chan {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

struct Client(http2::SendRequest<ReqBody>);

async fn connect() -> Client {
    connect_to(Agent::new()).await
}

async fn connect_to(agent: Agent) -> Client {
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    tokio::spawn(async move { agent.serve_connection(theirs).await });
    let (send, conn) = http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(limits::STREAM_WINDOW)
        .initial_connection_window_size(limits::CONNECTION_WINDOW)
        .max_frame_size(limits::MAX_FRAME)
        .handshake(TokioIo::new(ours))
        .await
        .unwrap();
    tokio::spawn(conn);
    Client(send)
}

fn frame(kind: FrameKind, payload: impl Into<Vec<u8>>) -> Bytes {
    Frame::new(kind, payload).encode().into()
}

impl Client {
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: ReqBody,
    ) -> hyper::Response<Incoming> {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://agent{path}"))
            .body(body)
            .unwrap();
        self.0.ready().await.unwrap();
        self.0.send_request(req).await.unwrap()
    }

    async fn post_json(
        &mut self,
        path: &str,
        value: &impl serde::Serialize,
    ) -> (StatusCode, Bytes) {
        let body = Full::new(Bytes::from(serde_json::to_vec(value).unwrap())).boxed_unsync();
        let reply = self.request("POST", path, body).await;
        let status = reply.status();
        (
            status,
            reply.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    /// Opens an exec: the sender for more request frames, the reply.
    async fn open_exec(
        &mut self,
        spec: &ExecSpec,
    ) -> (mpsc::Sender<Bytes>, hyper::Response<Incoming>) {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Frame::json(FrameKind::Spec, spec).encode().into())
            .await
            .unwrap();
        let reply = self
            .request("POST", route::EXEC, Chan(rx).boxed_unsync())
            .await;
        (tx, reply)
    }
}

fn spec(id: &str, argv: &[&str]) -> ExecSpec {
    ExecSpec {
        id: id.into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[derive(Debug, Default)]
struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: Option<ExitInfo>,
    error: Option<String>,
}

/// Reads a response body of frames; `on_stdout` sees each stdout chunk.
async fn read_frames(mut body: Incoming, mut each: impl FnMut(&Frame)) {
    let mut decoder = FrameDecoder::new();
    while let Some(chunk) = body.frame().await {
        if let Ok(data) = chunk.unwrap().into_data() {
            decoder.push(&data).unwrap();
            while let Some(f) = decoder.next_frame().unwrap() {
                each(&f);
            }
        }
    }
    decoder.finish().unwrap();
}

async fn outcome(body: Incoming) -> Outcome {
    let mut out = Outcome::default();
    read_frames(body, |f| match f.kind {
        FrameKind::Stdout => out.stdout.extend_from_slice(&f.payload),
        FrameKind::Stderr => out.stderr.extend_from_slice(&f.payload),
        FrameKind::Exit => {
            assert!(
                out.exit.is_none() && out.error.is_none(),
                "a second last frame"
            );
            out.exit = Some(f.parse().unwrap());
        }
        FrameKind::Error => out.error = Some(String::from_utf8_lossy(&f.payload).into()),
        kind => panic!("unexpected {kind:?} from an exec"),
    })
    .await;
    out
}

fn with_timeout<F: std::future::Future>(secs: u64, f: F) -> tokio::time::Timeout<F> {
    tokio::time::timeout(Duration::from_secs(secs), f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_stdout_and_stderr_are_kept_apart_and_the_exit_code_comes_last() {
    let mut c = connect().await;
    let (tx, reply) = c
        .open_exec(&spec(
            "0000000000000001",
            &[
                "sh",
                "-c",
                "read x; echo \"out:$x\"; echo err:$HOME >&2; cat; exit 3",
            ],
        ))
        .await;
    assert_eq!(reply.status(), StatusCode::OK);
    tx.send(frame(FrameKind::Stdin, "hello\nrest"))
        .await
        .unwrap();
    tx.send(frame(FrameKind::StdinEof, "")).await.unwrap();
    let out = with_timeout(20, outcome(reply.into_body())).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out:hello\nrest");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err:/root\n");
    assert_eq!(
        out.exit,
        Some(ExitInfo {
            code: 3,
            signal: None
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_ending_closes_stdin_and_env_and_cwd_apply() {
    let mut c = connect().await;
    let mut s = spec(
        "0000000000000002",
        &["sh", "-c", "pwd; echo $GREETING $PATH $LANG; cat"],
    );
    s.env = vec![("GREETING".into(), "hi".into())];
    s.cwd = Some("/tmp".into());
    let (tx, reply) = c.open_exec(&s).await;
    tx.send(frame(FrameKind::Stdin, "piped")).await.unwrap();
    drop(tx);
    let out = with_timeout(20, outcome(reply.into_body())).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "/tmp\nhi /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin C.UTF-8\npiped"
    );
    assert_eq!(out.exit.map(|e| e.code), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_environment_comes_after_the_agent_s_and_before_the_spec_s() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent-env");
    std::fs::write(
        &file,
        "PATH=/opt/image/bin:/usr/bin:/bin\n\
         GREETING=from the image config\n\
         NOEQUALS\n\
         LANG=image\n",
    )
    .unwrap();
    let mut c = connect_to(Agent::with_image_env(&file)).await;
    let mut s = spec(
        "0000000000000010",
        &["sh", "-c", "echo \"$PATH|$GREETING|$LANG|$NOEQUALS\""],
    );
    s.env = vec![("LANG".into(), "spec".into())];
    let (tx, reply) = c.open_exec(&s).await;
    drop(tx);
    let out = with_timeout(20, outcome(reply.into_body())).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "/opt/image/bin:/usr/bin:/bin|from the image config|spec|\n"
    );
    assert_eq!(out.exit.map(|e| e.code), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_user_gets_its_supplementary_groups_and_its_directory() {
    if !nix::unistd::geteuid().is_root() {
        banger_testkit::skip("switching user needs root");
        return;
    }
    // What initgroups(3) gives root here, through NSS: the oracle for the
    // agent's own reading of /etc/group.
    let host = std::process::Command::new("id")
        .args(["-G", "root"])
        .output()
        .unwrap();
    assert!(host.status.success());
    let mut expected: Vec<u32> = String::from_utf8_lossy(&host.stdout)
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    expected.sort_unstable();

    let mut c = connect().await;
    let mut s = spec("0000000000000011", &["sh", "-c", "id -G; pwd"]);
    s.user = Some("root".into());
    s.cwd = Some("/tmp".into());
    let (tx, reply) = c.open_exec(&s).await;
    drop(tx);
    let out = with_timeout(20, outcome(reply.into_body())).await.unwrap();
    assert_eq!(out.exit.map(|e| e.code), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let mut groups: Vec<u32> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    groups.sort_unstable();
    assert_eq!(groups, expected);
    assert_eq!(lines.next(), Some("/tmp"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_ends_an_exec_with_128_plus_n() {
    let mut c = connect().await;
    let id = "00000000000000a1";
    let (_tx, reply) = c.open_exec(&spec(id, &["sleep", "30"])).await;
    assert_eq!(reply.status(), StatusCode::OK);
    // The same id again while it runs.
    let (_tx2, again) = c.open_exec(&spec(id, &["true"])).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let resize = ResizeRequest {
        id: id.into(),
        size: WindowSize { rows: 1, cols: 1 },
    };
    assert_eq!(
        c.post_json(route::RESIZE, &resize).await.0,
        StatusCode::CONFLICT
    );
    let bad = SignalRequest {
        id: id.into(),
        signal: 65,
    };
    assert_eq!(
        c.post_json(route::SIGNAL, &bad).await.0,
        StatusCode::BAD_REQUEST
    );
    let unknown = SignalRequest {
        id: "00000000000000ff".into(),
        signal: 9,
    };
    assert_eq!(
        c.post_json(route::SIGNAL, &unknown).await.0,
        StatusCode::NOT_FOUND
    );
    let kill = SignalRequest {
        id: id.into(),
        signal: 9,
    };
    assert_eq!(
        c.post_json(route::SIGNAL, &kill).await.0,
        StatusCode::NO_CONTENT
    );
    let out = with_timeout(20, outcome(reply.into_body())).await.unwrap();
    assert_eq!(
        out.exit,
        Some(ExitInfo {
            code: 137,
            signal: Some(9)
        })
    );
    // Gone from the registry once reaped.
    assert_eq!(
        c.post_json(route::SIGNAL, &kill).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_sees_its_size_change() {
    let mut c = connect().await;
    let id = "00000000000000b1";
    let mut s = spec(
        id,
        &["sh", "-c", "stty size; echo TERM=$TERM; read x; stty size"],
    );
    s.pty = Some(WindowSize { rows: 24, cols: 80 });
    let (tx, reply) = c.open_exec(&s).await;
    assert_eq!(reply.status(), StatusCode::OK);
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut all = Vec::new();
        let mut exit = None;
        read_frames(reply.into_body(), |f| match f.kind {
            FrameKind::Stdout => {
                all.extend_from_slice(&f.payload);
                let _ = seen_tx.send(String::from_utf8_lossy(&all).into_owned());
            }
            FrameKind::Exit => exit = Some(f.parse::<ExitInfo>().unwrap()),
            kind => panic!("unexpected {kind:?}"),
        })
        .await;
        (String::from_utf8_lossy(&all).into_owned(), exit)
    });
    with_timeout(20, async {
        while let Some(text) = seen.recv().await {
            if text.contains("TERM=") {
                break;
            }
        }
    })
    .await
    .unwrap();
    let resize = ResizeRequest {
        id: id.into(),
        size: WindowSize {
            rows: 40,
            cols: 100,
        },
    };
    assert_eq!(
        c.post_json(route::RESIZE, &resize).await.0,
        StatusCode::NO_CONTENT
    );
    tx.send(frame(FrameKind::Stdin, "\n")).await.unwrap();
    let (text, exit) = with_timeout(20, reader).await.unwrap().unwrap();
    assert!(text.contains("24 80"), "{text:?}");
    assert!(text.contains("TERM=xterm-256color"), "{text:?}");
    assert!(text.contains("40 100"), "{text:?}");
    assert_eq!(exit.map(|e| e.code), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_never_reads_stdin_cannot_stall_its_output() {
    let mut c = connect().await;
    let (tx, reply) = c
        .open_exec(&spec(
            "00000000000000c1",
            &["sh", "-c", "head -c 3000000 /dev/zero"],
        ))
        .await;
    // 16 MB of stdin nobody reads, sent while the output is read.
    let feeder = tokio::spawn(async move {
        for _ in 0..256 {
            if tx
                .send(frame(FrameKind::Stdin, vec![b'x'; 64 * 1024]))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let out = with_timeout(60, outcome(reply.into_body())).await.unwrap();
    assert_eq!(out.stdout.len(), 3_000_000);
    assert_eq!(out.exit.map(|e| e.code), Some(0));
    feeder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_of_output_arrive_intact() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    let mut data = vec![0u8; 50_000_000];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&file, &data).unwrap();
    let want = Sha256::digest(&data);
    drop(data);
    let mut c = connect().await;
    let (_tx, reply) = c
        .open_exec(&spec("00000000000000d1", &["cat", file.to_str().unwrap()]))
        .await;
    let mut hash = Sha256::new();
    let mut len = 0;
    let mut exit = None;
    with_timeout(
        120,
        read_frames(reply.into_body(), |f| match f.kind {
            FrameKind::Stdout => {
                len += f.payload.len();
                hash.update(&f.payload);
            }
            FrameKind::Exit => exit = Some(f.parse::<ExitInfo>().unwrap()),
            kind => panic!("unexpected {kind:?}"),
        }),
    )
    .await
    .unwrap();
    assert_eq!(len, 50_000_000);
    assert_eq!(hash.finalize(), want);
    assert_eq!(exit.map(|e| e.code), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_and_failed_spawns_are_refused_before_streaming() {
    let mut c = connect().await;
    let error = |reply: hyper::Response<Incoming>| async move {
        let status = reply.status();
        let body = reply.into_body().collect().await.unwrap().to_bytes();
        let error: ErrorReply = serde_json::from_slice(&body).unwrap();
        (status, error.error)
    };
    let (_tx, reply) = c.open_exec(&spec("0000000000000003", &[""])).await;
    let (status, why) = error(reply).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{why}");
    let (_tx, reply) = c.open_exec(&spec("not-an-id", &["true"])).await;
    assert_eq!(error(reply).await.0, StatusCode::BAD_REQUEST);
    let mut s = spec("0000000000000004", &["true"]);
    s.user = Some("no-such-user-here".into());
    let (_tx, reply) = c.open_exec(&s).await;
    let (status, why) = error(reply).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(why.contains("no-such-user-here"), "{why}");
    let mut s = spec("0000000000000005", &["true"]);
    s.cwd = Some("/no/such/dir".into());
    let (_tx, reply) = c.open_exec(&s).await;
    assert_eq!(error(reply).await.0, StatusCode::BAD_REQUEST);
    let (_tx, reply) = c.open_exec(&spec("0000000000000006", &["nope"])).await;
    let (status, why) = error(reply).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        why,
        "cannot run \"nope\": No such file or directory (os error 2)"
    );
    // A stream that does not open with its spec.
    let (tx, rx) = mpsc::channel(1);
    tx.send(frame(FrameKind::Stdin, "x")).await.unwrap();
    let reply = c
        .request("POST", route::EXEC, Chan(rx).boxed_unsync())
        .await;
    assert_eq!(error(reply).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_unknown_routes() {
    let mut c = connect().await;
    let reply = c
        .request("GET", route::READY, Full::new(Bytes::new()).boxed_unsync())
        .await;
    assert_eq!(reply.status(), StatusCode::OK);
    let ready: Ready =
        serde_json::from_slice(&reply.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(ready.protocol, banger_agent_proto::PROTOCOL_VERSION);
    assert!(ready.uptime_ms > 0);
    let reply = c
        .request("GET", "/v1/nothing", Full::new(Bytes::new()).boxed_unsync())
        .await;
    assert_eq!(reply.status(), StatusCode::NOT_FOUND);
    // A JSON body over its bound.
    let huge = vec![b' '; banger_agent_proto::MAX_JSON + 10];
    let reply = c
        .request(
            "POST",
            route::SIGNAL,
            Full::new(Bytes::from(huge)).boxed_unsync(),
        )
        .await;
    assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_goes_out_and_back_in_with_modes_and_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha").unwrap();
    std::fs::write(src.join("sub/deeper/b.bin"), vec![7u8; 300_000]).unwrap();
    std::fs::write(src.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("../outside", src.join("sub/link")).unwrap();

    let mut c = connect().await;
    let (status, _) = c
        .post_json(
            route::TAR_OUT,
            &TarOutRequest {
                path: dir.path().join("missing").display().to_string(),
            },
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let body = Full::new(Bytes::from(
        serde_json::to_vec(&TarOutRequest {
            path: src.display().to_string(),
        })
        .unwrap(),
    ))
    .boxed_unsync();
    let reply = c.request("POST", route::TAR_OUT, body).await;
    assert_eq!(reply.status(), StatusCode::OK);
    let mut tar = Vec::new();
    let mut done = None;
    read_frames(reply.into_body(), |f| match f.kind {
        FrameKind::Data => tar.extend_from_slice(&f.payload),
        FrameKind::End => done = Some(f.parse::<TarDone>().unwrap()),
        kind => panic!(
            "unexpected {kind:?}: {}",
            String::from_utf8_lossy(&f.payload)
        ),
    })
    .await;
    let done = done.expect("an End frame");
    assert_eq!(
        done.entries, 7,
        "src, a.txt, run.sh, sub, deeper, b.bin, link"
    );
    assert_eq!(done.bytes, 5 + 300_000 + 10);

    let dest = dir.path().join("dest/new");
    let (tx, rx) = mpsc::channel(4);
    let reply = {
        let spec = TarInSpec {
            dir: dest.display().to_string(),
            user: None,
        };
        tx.send(Frame::json(FrameKind::Spec, &spec).encode().into())
            .await
            .unwrap();
        let sending = tokio::spawn(async move {
            for chunk in tar.chunks(50_000) {
                tx.send(frame(FrameKind::Data, chunk)).await.unwrap();
            }
            tx.send(frame(FrameKind::End, "")).await.unwrap();
        });
        let reply = c
            .request("POST", route::TAR_IN, Chan(rx).boxed_unsync())
            .await;
        sending.await.unwrap();
        reply
    };
    assert_eq!(reply.status(), StatusCode::OK);
    let got: TarDone =
        serde_json::from_slice(&reply.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(got, done);
    let back = dest.join("src");
    assert_eq!(
        std::fs::read_to_string(back.join("a.txt")).unwrap(),
        "alpha"
    );
    assert_eq!(
        std::fs::read(back.join("sub/deeper/b.bin")).unwrap(),
        vec![7u8; 300_000]
    );
    let mode = std::fs::metadata(back.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o750);
    assert_eq!(
        std::fs::read_link(back.join("sub/link")).unwrap(),
        Path::new("../outside")
    );
    let made = std::fs::metadata(&dest).unwrap().permissions().mode();
    assert_eq!(made & 0o777, 0o755);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_goes_away_hangs_up_the_command_and_it_is_reaped() {
    let mut c = connect().await;
    let (tx, reply) = c
        .open_exec(&spec(
            "00000000000000e1",
            &["sh", "-c", "echo $$; exec sleep 30"],
        ))
        .await;
    let mut body = reply.into_body();
    let mut decoder = FrameDecoder::new();
    let pid: u32 = loop {
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        decoder.push(&data).unwrap();
        if let Some(f) = decoder.next_frame().unwrap() {
            break String::from_utf8_lossy(&f.payload).trim().parse().unwrap();
        }
    };
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    // Dropping both halves resets the stream.
    drop((tx, body));
    with_timeout(10, async {
        // Gone, not a zombie: reaped.
        while Path::new(&format!("/proc/{pid}")).exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the command outlived its host");
}
