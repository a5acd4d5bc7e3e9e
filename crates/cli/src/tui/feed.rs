//! What the TUI asks the daemon, in tasks of their own: the refresh
//! once a second, a followed console, and the operations the keys start.
//! Each sends what it learns to the loop over one bounded channel, so a
//! flood (a chatty console) slows its reader, never the screen.

use std::collections::HashMap;
use std::time::Duration;

use banger_api::{Client, ClientError, ErrorCode, Event, VmStats};
use banger_model::{ImageRecord, KernelRecord, VmRecord, VmState};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::app::Snapshot;
use crate::path_segment;

/// How often the lists and stats are asked for.
pub const REFRESH: Duration = Duration::from_secs(1);
/// Room in the channel to the loop; senders wait when it is full.
pub const CHANNEL: usize = 256;

pub enum Msg {
    Snapshot(Snapshot),
    /// The refresh failed: the daemon is gone, or restarting.
    Unreachable(String),
    Console {
        vm: String,
        bytes: Bytes,
    },
    ConsoleEnd {
        vm: String,
        why: String,
    },
    OpEvent {
        id: u64,
        event: Event,
    },
    /// An operation ended: what to say, and whether it is an error.
    OpEnd {
        id: u64,
        said: String,
        failed: bool,
    },
}

pub type Sender = mpsc::Sender<Msg>;

/// Refreshes until the loop goes away.
pub fn refresh(client: Client, tx: Sender) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client = client.with_timeout(Duration::from_secs(5));
        loop {
            let msg = match snapshot(&client).await {
                Ok(snap) => Msg::Snapshot(snap),
                Err(e) => Msg::Unreachable(e.to_string()),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
            tokio::time::sleep(REFRESH).await;
        }
    })
}

async fn snapshot(client: &Client) -> Result<Snapshot, ClientError> {
    let vms: Vec<VmRecord> = client.get("/v1/vms").await?;
    let mut stats = HashMap::new();
    for vm in vms
        .iter()
        .filter(|v| matches!(v.state, VmState::Running | VmState::Paused))
    {
        let name = vm.name.as_str();
        match client
            .get::<VmStats>(&format!("/v1/vms/{}/stats", path_segment(name)))
            .await
        {
            Ok(s) => {
                stats.insert(name.to_string(), s);
            }
            // Deleted since the list: it goes with the next one.
            Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let images: Vec<ImageRecord> = client.get("/v1/images").await?;
    let kernels: Vec<KernelRecord> = client.get("/v1/kernels").await?;
    let templates = client.get("/v1/templates").await?;
    Ok(Snapshot {
        vms,
        stats,
        images,
        kernels,
        templates,
    })
}

/// Follows a VM's console from the start of its log; abort the task to
/// stop.
pub fn console(client: Client, vm: String, tx: Sender) -> JoinHandle<()> {
    tokio::spawn(async move {
        let path = format!("/v1/vms/{}/logs?follow=true", path_segment(&vm));
        let why = match client.get_chunks(&path).await {
            Err(e) => message(e),
            Ok(mut chunks) => loop {
                match chunks.next().await {
                    Some(Ok(bytes)) => {
                        let msg = Msg::Console {
                            vm: vm.clone(),
                            bytes,
                        };
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => break message(e),
                    None => break "the console stream ended".into(),
                }
            },
        };
        let _ = tx.send(Msg::ConsoleEnd { vm, why }).await;
    })
}

/// A long operation (`POST` with a progress stream): its events, then
/// its end, described by `done` from its result.
pub fn stream<B: Serialize + Send + Sync + 'static>(
    client: Client,
    id: u64,
    path: String,
    body: B,
    tx: Sender,
    done: impl FnOnce(serde_json::Value) -> String + Send + 'static,
) {
    tokio::spawn(async move {
        let mut events = match client.stream(&path, &body).await {
            Ok(events) => events,
            Err(e) => return end(&tx, id, Err(message(e))).await,
        };
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Done { result }) => return end(&tx, id, Ok(done(result))).await,
                Ok(Event::Failed { error }) => return end(&tx, id, Err(error.message)).await,
                Ok(event) => {
                    let _ = tx.send(Msg::OpEvent { id, event }).await;
                }
                Err(e) => return end(&tx, id, Err(message(e))).await,
            }
        }
        end(&tx, id, Err("the operation ended without a result".into())).await
    });
}

/// A short operation: one call, then its end.
pub fn call<F>(id: u64, tx: Sender, op: F)
where
    F: Future<Output = Result<String, ClientError>> + Send + 'static,
{
    tokio::spawn(async move {
        let result = op.await.map_err(message);
        end(&tx, id, result).await
    });
}

async fn end(tx: &Sender, id: u64, result: Result<String, String>) {
    let (said, failed) = match result {
        Ok(s) => (s, false),
        Err(e) => (e, true),
    };
    let _ = tx.send(Msg::OpEnd { id, said, failed }).await;
}

/// The daemon's own messages are written for the user.
fn message(e: ClientError) -> String {
    match e {
        ClientError::Api(api) => api.message,
        other => other.to_string(),
    }
}
