//! Host networking for VMs (DESIGN.md, "network"): the bridge, one TAP per
//! VM, guest addresses leased from a pool persisted in the store, optional
//! NAT rules tagged as banger's own, and the DNS server for the `.vm` zone.
//!
//! Empty today: the VM lifecycle issue fills it. It never passes user input
//! through a shell.
#![deny(unsafe_code)]
