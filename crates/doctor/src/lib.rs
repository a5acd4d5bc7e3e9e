//! `banger doctor`: inspects the host (architecture, KVM, hypervisor
//! choice, the host tools banger runs, config, VM defaults, whether `.vm`
//! names resolve, the system install's units and sockets) and produces a
//! [`Report`] whose failing checks each say how to fix them.
//!
//! Gathering facts ([`HostProbe::gather`]) is separate from judging them
//! ([`diagnose`]), so every verdict is tested with an injected host. This
//! crate never changes the host.
#![deny(unsafe_code)]

mod checks;

pub use checks::{
    Check, DnsProbe, HostProbe, InstallProbe, Report, Status, TOOLS, ToolSpec, diagnose,
};
