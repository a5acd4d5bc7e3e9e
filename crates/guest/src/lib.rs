//! Talking to a guest (DESIGN.md, "guest"): the managed ed25519 key, guest
//! host keys generated on the host and pinned in banger's own known_hosts,
//! OpenSSH sessions multiplexed over one ControlMaster per VM, and workspace
//! sync. The user's `~/.ssh` is never touched from here.
//!
//! Empty today: the VM lifecycle issue fills it.
#![deny(unsafe_code)]
