//! `vm run --rm` as the daemon's promise: an ephemeral VM lives as long as
//! its client's lease, and is deleted (as `vm delete --force` does) when
//! the lease ends, however the client ended.
//!
//! The lease is one HTTP request, `POST /v1/vms/{name}/lease`, whose
//! response body never ends while the daemon holds the lease. Why a held
//! connection rather than renewals the client sends: the kernel closes a
//! dead process's socket, so kill -9, a closed terminal and a normal exit
//! all end the lease the same way, at once, with no timer to tune and no
//! client code that must run at the end. The daemon writes a heartbeat
//! byte every second; writing to a socket whose peer is gone fails, which
//! is how a vanished client is noticed even if the HTTP server does not
//! watch idle reads.
//!
//! A VM whose first boot wedged is kept for `vm logs` (create makes it
//! durable) and never leased, so no lease deletes it. Leases live in
//! memory: reconcile deletes every ephemeral VM at the next start, since
//! no client's lease survives a bangerd restart.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::Orchestrator;
use crate::error::{Error, ErrorKind};

/// How often a held lease writes to its client.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a new ephemeral VM waits for its client to take the lease
/// (the CLI does so right after create answers): a client that died in
/// between must not leave the VM behind.
const LEASE_GRACE: Duration = Duration::from_secs(60);

/// The leases held now, and whether the daemon is stopping (which ends
/// them without deleting: reconcile does that at the next start).
pub(crate) struct Leases {
    held: Mutex<HashSet<String>>,
    closing: watch::Sender<bool>,
}

impl Default for Leases {
    fn default() -> Self {
        Self {
            held: Mutex::default(),
            closing: watch::Sender::new(false),
        }
    }
}

impl Leases {
    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `name`'s lease; `false` if another client holds it.
    fn take(&self, name: &str) -> bool {
        self.held().insert(name.to_string())
    }

    fn release(&self, name: &str) {
        self.held().remove(name);
    }

    fn is_held(&self, name: &str) -> bool {
        self.held().contains(name)
    }

    /// Ends every lease without deleting its VM: the daemon is stopping.
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }
}

/// Why a lease ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The client went away (or closed the request): delete the VM.
    Client,
    /// The daemon is stopping: leave the VM to reconcile.
    Orchestrator,
}

/// Takes `name`'s lease for this request; the returned body is the lease.
pub(crate) async fn lease(
    d: &Orchestrator,
    name: &str,
) -> Result<mpsc::Receiver<Result<Bytes, Infallible>>, Error> {
    let vm = super::get(d, name).await?;
    if !vm.ephemeral {
        return Err(Error::conflict(format!(
            "VM {name} is not ephemeral: only VMs made by 'banger vm run --rm' are leased"
        )));
    }
    if !d.inner.leases.take(name) {
        return Err(Error::conflict(format!(
            "VM {name} is already leased by another client"
        )));
    }
    tracing::info!(vm = %name, "lease taken: the VM is deleted when its client goes away");
    let (tx, rx) = mpsc::channel(1);
    let (d, name) = (d.clone(), name.to_string());
    tokio::spawn(async move {
        let ended = hold(&tx, d.inner.leases.closing.subscribe()).await;
        drop(tx);
        d.inner.leases.release(&name);
        match ended {
            Ended::Orchestrator => tracing::info!(
                vm = %name,
                "lease ended by bangerd stopping: the VM is deleted at its next start"
            ),
            Ended::Client => remove(&d, &name, "its client's lease ended").await,
        }
    });
    Ok(rx)
}

/// Writes heartbeats until the client is gone or the daemon stops.
async fn hold(
    tx: &mpsc::Sender<Result<Bytes, Infallible>>,
    closing: watch::Receiver<bool>,
) -> Ended {
    let stopping = stopping(closing);
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            _ = tx.closed() => return Ended::Client,
            _ = &mut stopping => return Ended::Orchestrator,
            _ = tokio::time::sleep(HEARTBEAT) => {
                if tx.send(Ok(Bytes::from_static(b"\n"))).await.is_err() {
                    return Ended::Client;
                }
            }
        }
    }
}

/// Resolves once the daemon is stopping.
async fn stopping(mut closing: watch::Receiver<bool>) {
    loop {
        let closed = *closing.borrow_and_update();
        if closed {
            return;
        }
        if closing.changed().await.is_err() {
            // The daemon's state is gone: it never says "stopping" now.
            return std::future::pending().await;
        }
    }
}

/// After create: deletes the VM if no client took its lease in time.
pub(crate) async fn expect_lease(d: Orchestrator, name: String) {
    tokio::time::sleep(LEASE_GRACE).await;
    if *d.inner.leases.closing.borrow() || d.inner.leases.is_held(&name) {
        return;
    }
    remove(&d, &name, "no client took its lease").await;
}

/// Deletes `name` if it is still there and still ephemeral (the client
/// may have deleted it first, as `vm run --rm` does on a normal exit).
async fn remove(d: &Orchestrator, name: &str, why: &str) {
    match super::get(d, name).await {
        Ok(vm) if vm.ephemeral => {}
        _ => return,
    }
    match super::delete(d, name, true).await {
        Ok(()) => tracing::info!(vm = %name, "deleted an ephemeral VM: {why}"),
        Err(e) if e.kind == ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            vm = %name,
            error = %e.message,
            "cannot delete an ephemeral VM ({why}): delete it with 'banger vm delete --force'"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lease_per_vm() {
        let leases = Leases::default();
        assert!(leases.take("a"));
        assert!(!leases.take("a"), "a second client is refused");
        assert!(leases.take("b"));
        assert!(leases.is_held("a"));
        leases.release("a");
        assert!(!leases.is_held("a"));
        assert!(leases.take("a"), "free again once released");
    }

    #[tokio::test]
    async fn a_client_going_away_ends_the_lease() {
        let leases = Leases::default();
        let (tx, rx) = mpsc::channel(1);
        let held = tokio::spawn({
            let closing = leases.closing.subscribe();
            async move { hold(&tx, closing).await }
        });
        drop(rx);
        let ended = tokio::time::timeout(Duration::from_secs(5), held).await;
        assert_eq!(ended.unwrap().unwrap(), Ended::Client);
    }

    #[tokio::test]
    async fn heartbeats_flow_while_held_and_stopping_ends_without_delete() {
        let leases = Leases::default();
        let (tx, mut rx) = mpsc::channel(1);
        let held = tokio::spawn({
            let closing = leases.closing.subscribe();
            async move { hold(&tx, closing).await }
        });
        let beat = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(beat.unwrap().unwrap().unwrap(), Bytes::from_static(b"\n"));
        leases.close();
        let ended = tokio::time::timeout(Duration::from_secs(5), held).await;
        assert_eq!(ended.unwrap().unwrap(), Ended::Orchestrator);
    }
}
