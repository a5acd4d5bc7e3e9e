//! Hypervisors (DESIGN.md, "vmm"): one trait, two backends. Firecracker
//! where KVM works and the binary exists; QEMU everywhere else, with KVM
//! when it can run a stock kernel and TCG software emulation when not.
//!
//! This crate owns: whether KVM is usable ([`kvm::probe`]), which backend
//! `hypervisor = auto|firecracker|qemu` means ([`select::choose`]), and the
//! [`Hypervisor`] trait with its backends ([`qemu`], [`firecracker`]):
//! turning a [`LaunchSpec`] into a detached hypervisor process, knowing it
//! again after a daemon restart from a persisted [`VmHandle`] (pid and
//! start time), stopping and signalling it, and reading its console
//! ([`wait_for_console`]), which the hypervisor writes to a log the
//! daemon keeps to a size ([`console_log`]: rotation, and readers that
//! follow it across rotations); and saving a paused VM's memory and
//! device state to files ([`Hypervisor::save_state`]) that a new VM
//! resumes from ([`LaunchSpec::incoming`]); and growing a running VM's
//! disk so its guest sees the new size ([`Hypervisor::grow_disk`]). The
//! orchestrator holds the
//! `Arc<dyn Hypervisor>` from [`hypervisor_for`] and never asks which
//! backend it has.
//!
//! It must not: create or delete disks, TAP devices or any other host
//! resource (the caller passes them in, already made; the one exception
//! is a saved state's files, which `save_state` makes and, when it
//! fails, removes; `grow_disk` lengthens a disk it is given, never
//! shortens one), touch the store,
//! or run anything through a shell. It never waits without a bound.
#![deny(unsafe_code)]

pub mod console;
pub mod console_log;
pub mod error;
pub mod firecracker;
pub mod hypervisor;
pub mod kvm;
pub mod process;
pub mod qemu;
pub mod select;
mod state_file;
pub mod tsc;

pub use console::wait_for_console;
pub use console_log::{ConsoleLog, ConsoleLogs, Cursor, Rotation};
pub use error::VmmError;
pub use hypervisor::{
    DiskSpec, Hypervisor, LaunchSpec, NetSpec, SavedState, VmHandle, hypervisor_for,
};
pub use select::{Accel, Backend, Selection};
