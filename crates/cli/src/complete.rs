//! Shell completion: the registration scripts (clap_complete's dynamic
//! engine, which calls back into `banger` on each TAB) and the live
//! candidates (VM, image and kernel names) asked from a running daemon.
//! With the daemon down, or slow, completion quietly offers nothing: it
//! never starts the daemon and never prints an error into the shell.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::time::Duration;

use banger_api::Client;
use banger_model::{ImageRecord, KernelRecord, VmRecord};
use clap_complete::CompletionCandidate;
use clap_complete::env::{Bash, EnvCompleter, Fish, Powershell, Zsh};
use serde::de::DeserializeOwned;

use crate::args::CompletionShell;

/// The environment variable that switches `banger` into completion mode.
pub const COMPLETE_VAR: &str = "COMPLETE";
const TIMEOUT: Duration = Duration::from_millis(800);

pub fn write_registration(shell: CompletionShell, out: &mut dyn Write) -> io::Result<()> {
    let completer = completer_path();
    let shell: &dyn EnvCompleter = match shell {
        CompletionShell::Bash => &Bash,
        CompletionShell::Zsh => &Zsh,
        CompletionShell::Fish => &Fish,
        CompletionShell::Powershell => &Powershell,
    };
    shell.write_registration(COMPLETE_VAR, "banger", "banger", &completer, out)
}

/// `banger` when that is this binary on PATH; else this binary's full path,
/// so completion works from a build tree too.
fn completer_path() -> String {
    let me = std::env::current_exe().ok();
    let on_path = which::which("banger").ok();
    match (me, on_path) {
        (Some(me), Some(p)) if p.canonicalize().ok() == me.canonicalize().ok() => "banger".into(),
        (Some(me), _) => me.to_string_lossy().into_owned(),
        (None, _) => "banger".into(),
    }
}

fn fetch<T: DeserializeOwned>(path: &str) -> Vec<T> {
    let Ok(located) = crate::connect::locate() else {
        return Vec::new();
    };
    let client = Client::new(located.paths.socket()).with_timeout(TIMEOUT);
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    rt.block_on(client.get::<Vec<T>>(path)).unwrap_or_default()
}

fn matching(current: &OsStr, names: impl IntoIterator<Item = String>) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    names
        .into_iter()
        .filter(|n| n.starts_with(current.as_ref()))
        .map(CompletionCandidate::new)
        .collect()
}

pub fn vms(current: &OsStr) -> Vec<CompletionCandidate> {
    let vms: Vec<VmRecord> = fetch("/v1/vms");
    matching(current, vms.into_iter().map(|v| v.name.to_string()))
}

pub fn images(current: &OsStr) -> Vec<CompletionCandidate> {
    let images: Vec<ImageRecord> = fetch("/v1/images");
    matching(current, images.into_iter().map(|i| i.name))
}

pub fn kernels(current: &OsStr) -> Vec<CompletionCandidate> {
    let kernels: Vec<KernelRecord> = fetch("/v1/kernels");
    matching(current, kernels.into_iter().map(|k| k.name))
}
