//! Running VMs' console logs: kept to `console_log_max` by rotation
//! (`banger_vmm::console_log` says how), and streamed for `vm logs`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use banger_vmm::{ConsoleLog, Cursor, Rotation};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{get, handle_of, paths};
use crate::Orchestrator;
use crate::error::Error;

/// How often running VMs' logs are measured. With `console_log_max`, this
/// bounds each file: the cap, plus what a guest writes in this long (a
/// serial port flooded under TCG writes well under 1 MiB in it).
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// How often `vm logs -f` looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The most one read sends.
const CHUNK: usize = 64 * 1024;

/// The console log of a VM, for `vm logs`.
pub(crate) async fn console_log(d: &Orchestrator, name: &str) -> Result<ConsoleLog, Error> {
    let vm = get(d, name).await?;
    Ok(d.inner.consoles.get(&paths(d, &vm).console))
}

/// Rotates the console log of every VM whose hypervisor runs once it is
/// longer than `console_log_max`, for as long as the daemon runs. Stopped
/// VMs' logs do not grow.
pub(crate) async fn cap_console_logs(d: Orchestrator) {
    let cap = d.inner.config.console_log_max().bytes();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Names whose last rotation failed: warned about once, not twice a
    // second.
    let mut failing = HashSet::new();
    loop {
        tick.tick().await;
        let vms = match d.with_store(|s| s.list_vms()).await {
            Ok(vms) => vms,
            Err(e) => {
                tracing::warn!(error = %e.message, "console logs: cannot read the VMs");
                continue;
            }
        };
        let logs: Vec<(String, ConsoleLog)> = vms
            .iter()
            .filter(|vm| handle_of(vm).is_some())
            .map(|vm| {
                let log = d.inner.consoles.get(&paths(&d, vm).console);
                (vm.name.to_string(), log)
            })
            .collect();
        let previously = std::mem::take(&mut failing);
        let rotated = tokio::task::spawn_blocking(move || rotate_all(logs, cap, previously)).await;
        match rotated {
            Ok(now_failing) => failing = now_failing,
            Err(e) => tracing::warn!(error = %e, "console logs: the rotation task failed"),
        }
    }
}

/// One pass over the logs; returns the names whose rotation failed.
fn rotate_all(
    logs: Vec<(String, ConsoleLog)>,
    cap: u64,
    previously: HashSet<String>,
) -> HashSet<String> {
    let mut failing = HashSet::new();
    for (name, log) in logs {
        match log.rotate_if_over(cap) {
            Ok(Rotation::Kept) => {}
            Ok(Rotation::Rotated(bytes)) => {
                tracing::debug!(vm = %name, bytes, "console log rotated to console.log.1");
            }
            Err(e) => {
                if !previously.contains(&name) {
                    tracing::warn!(
                        vm = %name,
                        log = %log.path().display(),
                        error = %e,
                        "cannot rotate the console log: it keeps growing"
                    );
                }
                failing.insert(name);
            }
        }
    }
    failing
}

/// Sends the console log: all that is kept (the previous file, then the
/// current one) up to where it ends now; with `follow`, then what is
/// written after, across rotations, until the receiver goes away.
pub async fn stream_console(
    log: ConsoleLog,
    follow: bool,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let end = if follow {
        None
    } else {
        let log = log.clone();
        match tokio::task::spawn_blocking(move || log.end()).await {
            Ok(end) => Some(end),
            Err(_) => return,
        }
    };
    let mut cursor = log.cursor_at_start();
    loop {
        let want = match end {
            Some(end) => match usize::try_from(end.saturating_sub(cursor.position())) {
                Ok(0) => return,
                Ok(left) => left.min(CHUNK),
                Err(_) => CHUNK,
            },
            None => CHUNK,
        };
        let skipped = cursor.skipped();
        let Ok((back, chunk)) = tokio::task::spawn_blocking(move || read(cursor, want)).await
        else {
            return;
        };
        cursor = back;
        if cursor.skipped() != skipped {
            // The reader fell a whole file behind (a client that stopped
            // reading): what was rotated away meanwhile is gone.
            tracing::warn!(
                log = %log.path().display(),
                bytes = cursor.skipped() - skipped,
                "vm logs: console output rotated away before it was sent"
            );
        }
        match chunk {
            Ok(bytes) if bytes.is_empty() => {
                if !follow || tx.is_closed() {
                    return;
                }
                tokio::time::sleep(FOLLOW_POLL).await;
            }
            Ok(bytes) => {
                if tx.send(Ok(bytes)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(log = %log.path().display(), error = %e, "vm logs: cannot read");
                return;
            }
        }
    }
}

fn read(mut cursor: Cursor, want: usize) -> (Cursor, std::io::Result<Bytes>) {
    let mut buf = vec![0u8; want];
    let result = cursor.read(&mut buf).map(|n| {
        buf.truncate(n);
        Bytes::from(buf)
    });
    (cursor, result)
}

#[cfg(test)]
mod tests;
