//! A command run through the agent: its stdin sent as frames of the
//! request body, its stdout, stderr and end read from the response body.

use banger_agent_proto::{
    ExecSpec, ExitInfo, Frame, FrameDecoder, FrameKind, MAX_PAYLOAD, route, valid_id,
};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{AgentClient, AgentError, one_line, refusal};

/// What an exec says, in order; `Exit` is the last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitInfo),
}

/// A fresh exec id.
pub fn new_exec_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A running command.
pub struct Exec {
    id: String,
    client: AgentClient,
    stdin: Option<mpsc::Sender<Bytes>>,
    body: Incoming,
    decoder: FrameDecoder,
    ended: bool,
}

/// Sends the command's stdin. Dropping every sender, or [`Self::close`],
/// closes it.
#[derive(Clone)]
pub struct StdinSender(mpsc::Sender<Bytes>);

impl StdinSender {
    /// Sends `data` (in frames of at most [`MAX_PAYLOAD`]), waiting while
    /// the guest's window is full. An error means the command is gone.
    pub async fn write(&self, data: &[u8]) -> Result<(), AgentError> {
        for chunk in data.chunks(MAX_PAYLOAD) {
            let frame = Frame::new(FrameKind::Stdin, chunk.to_vec());
            self.0
                .send(Bytes::from(frame.encode()))
                .await
                .map_err(|_| AgentError::Gone)?;
        }
        Ok(())
    }

    /// Ends the command's stdin.
    pub async fn close(self) {
        let frame = Frame::new(FrameKind::StdinEof, Vec::new());
        let _ = self.0.send(Bytes::from(frame.encode())).await;
    }
}

impl AgentClient {
    /// Starts `spec` in the guest (a fresh id when `spec.id` is empty).
    /// A command the guest cannot start is [`AgentError::Refused`] with
    /// the guest's reason.
    pub async fn exec(&self, mut spec: ExecSpec) -> Result<Exec, AgentError> {
        if spec.id.is_empty() {
            spec.id = new_exec_id();
        }
        if !valid_id(&spec.id) {
            return Err(AgentError::Refused {
                status: 400,
                message: format!("exec id {:?} is not 16 hex digits", spec.id),
            });
        }
        let (tx, response) = self
            .open_stream(route::EXEC, Frame::json(FrameKind::Spec, &spec))
            .await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = self.read_json_body(response.into_body()).await?;
            return Err(refusal(status.as_u16(), &bytes));
        }
        Ok(Exec {
            id: spec.id,
            client: self.clone(),
            stdin: Some(tx),
            body: response.into_body(),
            decoder: FrameDecoder::new(),
            ended: false,
        })
    }
}

impl Exec {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The command's stdin; `None` after the first call.
    pub fn take_stdin(&mut self) -> Option<StdinSender> {
        self.stdin.take().map(StdinSender)
    }

    /// The next event; `None` after `Exit`. The body ending without an
    /// exit (the agent died, the guest went away) is [`AgentError::Gone`].
    pub async fn next_event(&mut self) -> Result<Option<ExecEvent>, AgentError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            match self.decoder.next_frame() {
                Ok(Some(frame)) => return self.event(frame).map(Some),
                Ok(None) => {}
                Err(e) => return Err(self.malformed(e.to_string())),
            }
            let Some(chunk) = self.body.frame().await else {
                self.ended = true;
                return Err(AgentError::Gone);
            };
            let chunk = chunk.map_err(|e| {
                self.ended = true;
                tracing::debug!(error = %e, "an exec stream failed");
                AgentError::Gone
            })?;
            if let Ok(data) = chunk.into_data()
                && let Err(e) = self.decoder.push(&data)
            {
                return Err(self.malformed(e.to_string()));
            }
        }
    }

    fn event(&mut self, frame: Frame) -> Result<ExecEvent, AgentError> {
        match frame.kind {
            FrameKind::Stdout => Ok(ExecEvent::Stdout(frame.payload)),
            FrameKind::Stderr => Ok(ExecEvent::Stderr(frame.payload)),
            FrameKind::Exit => {
                self.ended = true;
                let exit: ExitInfo = frame.parse().map_err(|e| self.malformed(e.to_string()))?;
                if !(0..=255).contains(&exit.code) {
                    return Err(self.malformed(format!("exit code {}", exit.code)));
                }
                Ok(ExecEvent::Exit(exit))
            }
            FrameKind::Error => {
                self.ended = true;
                Err(AgentError::Refused {
                    status: 500,
                    message: one_line(&frame.payload),
                })
            }
            other => Err(self.malformed(format!("a {other:?} frame in an exec's output"))),
        }
    }

    fn malformed(&mut self, why: String) -> AgentError {
        self.ended = true;
        self.client.poison(&why);
        AgentError::Protocol(why)
    }

    /// Runs the command to its end: `stdin` (if any) is sent as it is
    /// read, output written as it comes. Returns how the command ended.
    pub async fn run(
        mut self,
        stdin: Option<impl AsyncRead + Unpin + Send + 'static>,
        mut stdout: impl AsyncWrite + Unpin,
        mut stderr: impl AsyncWrite + Unpin,
    ) -> Result<ExitInfo, AgentError> {
        let sender = self.take_stdin();
        // In its own task: a command that never reads stdin must not stop
        // its output from being read here.
        let feeder = sender.map(|sender| {
            tokio::spawn(async move {
                if let Some(mut input) = stdin {
                    let mut buf = vec![0u8; MAX_PAYLOAD];
                    loop {
                        match input.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if sender.write(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
                sender.close().await;
            })
        });
        let result = async {
            loop {
                match self.next_event().await? {
                    Some(ExecEvent::Stdout(b)) => {
                        stdout.write_all(&b).await?;
                        stdout.flush().await?;
                    }
                    Some(ExecEvent::Stderr(b)) => {
                        stderr.write_all(&b).await?;
                        stderr.flush().await?;
                    }
                    Some(ExecEvent::Exit(exit)) => return Ok(exit),
                    None => return Err(AgentError::Gone),
                }
            }
        }
        .await;
        if let Some(feeder) = feeder {
            feeder.abort();
        }
        result
    }
}
