//! A small QMP client: QEMU's JSON control protocol over a Unix socket,
//! one JSON object a line. Enough for banger: the greeting,
//! `qmp_capabilities`, and single commands (`query-status`, `stop`,
//! `cont`, `system_powerdown`, `quit`, the migration commands), one of
//! which may carry an open file (`getfd`); asynchronous events are
//! skipped.

use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::VmmError;

/// One message from QEMU.
#[derive(Clone, Debug, PartialEq)]
pub enum QmpMessage {
    /// `{"QMP": {"version": ..., "capabilities": [...]}}`, first on connect.
    Greeting { version: String },
    /// `{"return": ...}`: a command succeeded.
    Return(Value),
    /// `{"error": {"class": ..., "desc": ...}}`: a command failed.
    Error { class: String, desc: String },
    /// `{"event": NAME, ...}`: asynchronous, e.g. `POWERDOWN`, `SHUTDOWN`.
    Event(String),
}

impl QmpMessage {
    /// Parses one line of QMP.
    pub fn parse(line: &str) -> Result<Self, String> {
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line:.200}"))?;
        if let Some(greeting) = v.get("QMP") {
            let q = &greeting["version"]["qemu"];
            return Ok(QmpMessage::Greeting {
                version: format!("{}.{}.{}", q["major"], q["minor"], q["micro"]),
            });
        }
        if let Some(ret) = v.get("return") {
            return Ok(QmpMessage::Return(ret.clone()));
        }
        if let Some(err) = v.get("error") {
            let text = |k: &str| err[k].as_str().unwrap_or("?").to_owned();
            return Ok(QmpMessage::Error {
                class: text("class"),
                desc: text("desc"),
            });
        }
        if let Some(name) = v.get("event").and_then(Value::as_str) {
            return Ok(QmpMessage::Event(name.to_owned()));
        }
        Err(format!("unexpected message: {line:.200}"))
    }
}

/// A connection that has done the capabilities handshake.
#[derive(Debug)]
pub struct Qmp {
    stream: UnixStream,
    socket: PathBuf,
    buf: Vec<u8>,
    /// QEMU's version, from the greeting.
    pub version: String,
}

/// Why a read stopped.
enum ReadError {
    Closed,
    TimedOut,
    Other(String),
}

impl Qmp {
    /// Connects and negotiates; every step within `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Self, VmmError> {
        let stream = UnixStream::connect(socket).map_err(|e| VmmError::Qmp {
            socket: socket.to_path_buf(),
            message: format!("cannot connect: {e}"),
        })?;
        Self::handshake(stream, socket, Instant::now() + timeout, &mut || false)
    }

    /// Reads the greeting and sends `qmp_capabilities` on a connected
    /// stream. `give_up` is asked while waiting (e.g. "did QEMU exit?").
    pub(crate) fn handshake(
        stream: UnixStream,
        socket: &Path,
        deadline: Instant,
        give_up: &mut dyn FnMut() -> bool,
    ) -> Result<Self, VmmError> {
        let mut qmp = Qmp {
            stream,
            socket: socket.to_path_buf(),
            buf: Vec::new(),
            version: String::new(),
        };
        match qmp.next_message(deadline, give_up)? {
            QmpMessage::Greeting { version } => qmp.version = version,
            other => return Err(qmp.error(format!("expected the greeting, got {other:?}"))),
        }
        qmp.execute_until("qmp_capabilities", None, deadline, give_up)?;
        Ok(qmp)
    }

    /// Runs one command and returns its `return` value.
    pub fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, VmmError> {
        self.execute_until(command, arguments, Instant::now() + timeout, &mut || false)
    }

    fn execute_until(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        deadline: Instant,
        give_up: &mut dyn FnMut() -> bool,
    ) -> Result<Value, VmmError> {
        let line = request_line(command, arguments);
        self.stream
            .write_all(line.as_bytes())
            .map_err(|e| self.error(format!("sending {command}: {e}")))?;
        self.answer(command, deadline, give_up)
    }

    /// Hands QEMU an open file under `name` (`getfd`), for a later
    /// command to use as `fd:NAME`. The descriptor travels with the
    /// command as SCM_RIGHTS ancillary data: QEMU gets its own copy of
    /// the open file and never opens a path, and no path reaches a
    /// command line or a shell.
    pub fn pass_fd(
        &mut self,
        name: &str,
        fd: BorrowedFd<'_>,
        timeout: Duration,
    ) -> Result<(), VmmError> {
        use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
        let line = request_line("getfd", Some(json!({ "fdname": name })));
        let bytes = line.as_bytes();
        let fds = [fd.as_raw_fd()];
        let sent = sendmsg::<UnixAddr>(
            self.stream.as_raw_fd(),
            &[IoSlice::new(bytes)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| self.error(format!("sending getfd with a file: {e}")))?;
        // The file went with the first byte; the rest, if the socket took
        // only part, follows as plain bytes.
        self.stream
            .write_all(&bytes[sent.min(bytes.len())..])
            .map_err(|e| self.error(format!("sending getfd: {e}")))?;
        self.answer("getfd", Instant::now() + timeout, &mut || false)
            .map(drop)
    }

    /// Reads until the answer to `command`, skipping events.
    fn answer(
        &mut self,
        command: &str,
        deadline: Instant,
        give_up: &mut dyn FnMut() -> bool,
    ) -> Result<Value, VmmError> {
        loop {
            match self.next_message(deadline, give_up)? {
                QmpMessage::Return(v) => return Ok(v),
                QmpMessage::Error { class, desc } => {
                    return Err(self.error(format!("{command} failed: {class}: {desc}")));
                }
                QmpMessage::Event(_) => continue,
                QmpMessage::Greeting { .. } => {
                    return Err(self.error(format!("unexpected greeting after {command}")));
                }
            }
        }
    }

    /// The VM's run state, e.g. `running`, `paused`, `shutdown`.
    pub fn query_status(&mut self, timeout: Duration) -> Result<String, VmmError> {
        let v = self.execute("query-status", None, timeout)?;
        v["status"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.error(format!("query-status answered {v}")))
    }

    /// Freezes the vCPUs (`stop`, which returns once they are stopped)
    /// and checks that QEMU says `paused`, or `postmigrate`: a VM whose
    /// state was saved is stopped already, and a `stop` leaves it so.
    pub fn pause(&mut self, timeout: Duration) -> Result<(), VmmError> {
        self.change_run_state("stop", &["paused", "postmigrate"], timeout)
    }

    /// Lets the vCPUs run again (`cont`, which also runs a VM whose state
    /// was saved) and checks that QEMU says `running`.
    pub fn resume(&mut self, timeout: Duration) -> Result<(), VmmError> {
        self.change_run_state("cont", &["running"], timeout)
    }

    /// `command`, then `query-status`, which must say one of `want` (the
    /// first is the one an error names).
    fn change_run_state(
        &mut self,
        command: &str,
        want: &[&str],
        timeout: Duration,
    ) -> Result<(), VmmError> {
        self.execute(command, None, timeout)?;
        let status = self.query_status(timeout)?;
        if want.contains(&status.as_str()) {
            Ok(())
        } else {
            let want = want.first().copied().unwrap_or_default();
            Err(self.error(format!("after {command} the VM is {status}, not {want}")))
        }
    }

    fn next_message(
        &mut self,
        deadline: Instant,
        give_up: &mut dyn FnMut() -> bool,
    ) -> Result<QmpMessage, VmmError> {
        loop {
            if let Some(line) = self.take_line() {
                if line.trim().is_empty() {
                    continue;
                }
                return QmpMessage::parse(&line).map_err(|e| self.error(e));
            }
            match self.fill(deadline) {
                Ok(()) => {}
                Err(ReadError::Closed) => {
                    return Err(self.error("QEMU closed the connection".into()));
                }
                Err(ReadError::Other(e)) => return Err(self.error(e)),
                Err(ReadError::TimedOut) => {
                    if give_up() || Instant::now() >= deadline {
                        return Err(self.error("no answer in time".into()));
                    }
                }
            }
        }
    }

    fn take_line(&mut self) -> Option<String> {
        let end = self.buf.iter().position(|&b| b == b'\n')?;
        let line: Vec<u8> = self.buf.drain(..=end).collect();
        Some(String::from_utf8_lossy(&line).into_owned())
    }

    /// Reads what is there, waiting at most 100 ms (so `give_up` is asked
    /// often) and never past the deadline.
    fn fill(&mut self, deadline: Instant) -> Result<(), ReadError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = left.clamp(Duration::from_millis(1), Duration::from_millis(100));
        self.stream
            .set_read_timeout(Some(wait))
            .map_err(|e| ReadError::Other(e.to_string()))?;
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(ReadError::Closed),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                Err(ReadError::TimedOut)
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Err(ReadError::Closed),
            Err(e) => Err(ReadError::Other(e.to_string())),
        }
    }

    pub(crate) fn error(&self, message: String) -> VmmError {
        VmmError::Qmp {
            socket: self.socket.clone(),
            message,
        }
    }
}

/// One command as QMP wants it: a JSON object and a newline.
fn request_line(command: &str, arguments: Option<Value>) -> String {
    let mut request = json!({ "execute": command });
    if let Some(args) = arguments {
        request["arguments"] = args;
    }
    let mut line = request.to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixListener;

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18"}, "capabilities": ["oob"]}}"#;

    #[test]
    fn parses_each_kind_of_message() {
        assert_eq!(
            QmpMessage::parse(GREETING).unwrap(),
            QmpMessage::Greeting {
                version: "7.2.22".into()
            }
        );
        assert_eq!(
            QmpMessage::parse(r#"{"return": {}}"#).unwrap(),
            QmpMessage::Return(json!({}))
        );
        assert_eq!(
            QmpMessage::parse(
                r#"{"return": {"status": "running", "singlestep": false, "running": true}}"#
            )
            .unwrap(),
            QmpMessage::Return(json!({"status": "running", "singlestep": false, "running": true}))
        );
        assert_eq!(
            QmpMessage::parse(r#"{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#)
                .unwrap(),
            QmpMessage::Error {
                class: "CommandNotFound".into(),
                desc: "The command nope has not been found".into()
            }
        );
        assert_eq!(
            QmpMessage::parse(
                r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "POWERDOWN"}"#
            )
            .unwrap(),
            QmpMessage::Event("POWERDOWN".into())
        );
        assert!(QmpMessage::parse("{\"what\": 1}").is_err());
        assert!(QmpMessage::parse("not json").is_err());
    }

    /// A fake QEMU: greets, then answers each command from a script,
    /// throwing in an event first to check that events are skipped.
    fn fake_qemu(
        dir: &Path,
        answers: Vec<&'static str>,
    ) -> (PathBuf, std::thread::JoinHandle<Vec<String>>) {
        let socket = dir.join("qmp.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            // Split over two writes: the client must join them.
            writer.write_all(&GREETING.as_bytes()[..20]).unwrap();
            writer.write_all(&GREETING.as_bytes()[20..]).unwrap();
            writer.write_all(b"\r\n").unwrap();
            let mut seen = Vec::new();
            for answer in answers {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                seen.push(line.trim().to_owned());
                writer
                    .write_all(b"{\"event\": \"RTC_CHANGE\", \"data\": {}}\n")
                    .unwrap();
                writer.write_all(answer.as_bytes()).unwrap();
                writer.write_all(b"\n").unwrap();
            }
            seen
        });
        (socket, server)
    }

    #[test]
    fn talks_to_a_fake_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, server) = fake_qemu(
            dir.path(),
            vec![
                r#"{"return": {}}"#,
                r#"{"return": {"status": "running", "running": true}}"#,
                r#"{"error": {"class": "GenericError", "desc": "nope"}}"#,
            ],
        );
        let mut qmp = Qmp::connect(&socket, Duration::from_secs(5)).unwrap();
        assert_eq!(qmp.version, "7.2.22");
        assert_eq!(qmp.query_status(Duration::from_secs(5)).unwrap(), "running");
        let err = qmp
            .execute("system_powerdown", None, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("system_powerdown failed: GenericError: nope"),
            "{err}"
        );
        drop(qmp);
        assert_eq!(
            server.join().unwrap(),
            vec![
                r#"{"execute":"qmp_capabilities"}"#,
                r#"{"execute":"query-status"}"#,
                r#"{"execute":"system_powerdown"}"#,
            ]
        );
    }

    #[test]
    fn pauses_and_resumes_checking_the_status() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, server) = fake_qemu(
            dir.path(),
            vec![
                r#"{"return": {}}"#,
                r#"{"return": {}}"#,
                r#"{"return": {"status": "paused", "running": false}}"#,
                r#"{"return": {}}"#,
                r#"{"return": {"status": "running", "running": true}}"#,
                // After a save: `stop` leaves `postmigrate`, which is
                // paused; `cont` runs it.
                r#"{"return": {}}"#,
                r#"{"return": {"status": "postmigrate", "running": false}}"#,
                r#"{"return": {}}"#,
                r#"{"return": {"status": "running", "running": true}}"#,
                // A `cont` that QEMU accepts but that leaves the VM
                // elsewhere (e.g. a guest that panicked meanwhile).
                r#"{"return": {}}"#,
                r#"{"return": {"status": "guest-panicked", "running": false}}"#,
            ],
        );
        let mut qmp = Qmp::connect(&socket, Duration::from_secs(5)).unwrap();
        qmp.pause(Duration::from_secs(5)).unwrap();
        qmp.resume(Duration::from_secs(5)).unwrap();
        qmp.pause(Duration::from_secs(5)).unwrap();
        qmp.resume(Duration::from_secs(5)).unwrap();
        let err = qmp.resume(Duration::from_secs(5)).unwrap_err().to_string();
        assert!(
            err.contains("after cont the VM is guest-panicked, not running"),
            "{err}"
        );
        drop(qmp);
        assert_eq!(
            server.join().unwrap(),
            vec![
                r#"{"execute":"qmp_capabilities"}"#,
                r#"{"execute":"stop"}"#,
                r#"{"execute":"query-status"}"#,
                r#"{"execute":"cont"}"#,
                r#"{"execute":"query-status"}"#,
                r#"{"execute":"stop"}"#,
                r#"{"execute":"query-status"}"#,
                r#"{"execute":"cont"}"#,
                r#"{"execute":"query-status"}"#,
                r#"{"execute":"cont"}"#,
                r#"{"execute":"query-status"}"#,
            ]
        );
    }

    #[test]
    fn passes_an_open_file_with_getfd() {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        use std::io::IoSliceMut;
        use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(GREETING.as_bytes()).unwrap();
            stream.write_all(b"\n").unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            stream.write_all(b"{\"return\": {}}\n").unwrap();
            // The getfd line and its file, as QEMU's chardev reads them.
            let mut buf = [0u8; 256];
            let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            )
            .unwrap();
            let mut fds = Vec::new();
            for c in msg.cmsgs().unwrap() {
                if let ControlMessageOwned::ScmRights(r) = c {
                    fds.extend(r);
                }
            }
            let n = msg.bytes;
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert_eq!(fds.len(), 1, "one file with the command");
            // SAFETY: the descriptor was just received and is owned by no one else.
            #[allow(unsafe_code)]
            let fd = unsafe { OwnedFd::from_raw_fd(fds[0]) };
            std::fs::File::from(fd)
                .write_all(b"written by QEMU")
                .unwrap();
            stream.write_all(b"{\"return\": {}}\n").unwrap();
            text
        });
        let mut qmp = Qmp::connect(&socket, Duration::from_secs(5)).unwrap();
        let path = dir.path().join("state");
        let file = std::fs::File::create(&path).unwrap();
        qmp.pass_fd("banger-save", file.as_fd(), Duration::from_secs(5))
            .unwrap();
        let sent = server.join().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&sent).unwrap(),
            json!({"execute": "getfd", "arguments": {"fdname": "banger-save"}})
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"written by QEMU");
    }

    #[test]
    fn a_silent_server_times_out_and_a_closed_one_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let started = Instant::now();
        let err = Qmp::connect(&socket, Duration::from_millis(300)).unwrap_err();
        assert!(err.to_string().contains("no answer in time"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        let closer = std::thread::spawn(move || {
            // The first connection is still queued; close the next one.
            let _ = listener.accept();
            let (s, _) = listener.accept().unwrap();
            drop(s);
        });
        let err = Qmp::connect(&socket, Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("closed the connection"), "{err}");
        closer.join().unwrap();
    }
}
