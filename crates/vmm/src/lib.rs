//! Hypervisors (DESIGN.md, "vmm"): one trait, two backends, Firecracker
//! where KVM works and the binary exists, QEMU everywhere else (with KVM
//! when it works, TCG software emulation when not).
//!
//! Today this crate owns the choice itself: probing whether KVM can run a
//! stock guest kernel ([`kvm::probe`]) and picking a backend
//! ([`select::choose`]), so `doctor` and, later, the orchestrator agree on
//! it. The backends arrive with the VM lifecycle issue; the orchestrator
//! will hold an `Arc<dyn Hypervisor>` and never ask which one it has.
#![deny(unsafe_code)]

pub mod kvm;
pub mod select;
