//! banger-init: `/init` of the initramfs banger builds for each kernel
//! (crates/images/src/initramfs). As PID 1 it loads the modules the
//! initramfs carries, finds the disks the kernel command line names,
//! builds the guest's root (the read-only base under an overlay whose upper
//! layer is on the per-VM system disk, the work disk at /root, a workspace
//! disk at /root/NAME when the host gives one), copies the
//! per-VM files, configures the network, and `switch_root`s to the image's
//! init. docs/guest-init.md documents the parameters and the sequence.
//!
//! It must never hang and never leave a half-booted guest: every wait is
//! bounded, and any failure prints one line (`banger-init: <what>: <why>`)
//! and powers the machine off. It holds no policy: the host decides
//! everything through the command line. Statically linked, so it needs
//! nothing from the initramfs; no `unsafe` (nix wraps every syscall).
//!
//! The same binary is the guest agent: not as PID 1, it is a multi-call
//! binary (`agent`, `mark`; see `multicall`). banger-init copies itself to
//! `/run/banger-agent/banger-agent` for that before handing over.
#![deny(unsafe_code)]

mod agent;
mod boot;
mod clock;
mod cmdline;
mod devices;
mod failure;
mod files;
mod minimal;
mod modules;
mod multicall;
mod network;
mod plan;
mod users;

fn main() {
    // The kernel may pass words of its command line to /init: only a
    // process that is not PID 1 reads its arguments as a command.
    if std::process::id() != 1 {
        std::process::exit(multicall::run(std::env::args_os().skip(1)));
    }
    // A bug must end like any other failure: one line, then power off
    // (not a panic message and a kernel panic for killing init).
    std::panic::set_hook(Box::new(|info| {
        failure::die(&failure::Failure::new("internal error", info));
    }));
    match boot::run() {
        Ok(never) => match never {},
        Err(failure) => failure::die(&failure),
    }
}
