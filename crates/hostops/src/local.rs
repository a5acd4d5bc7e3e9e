//! The operations carried out in this process: the dev-mode daemon as
//! root, and the root helper itself (with the owner's uid for TAPs).

use std::os::fd::OwnedFd;

use banger_network::{BridgeSpec, GuestPort};

use crate::{HostOps, HostOpsError};

/// In-process host operations.
#[derive(Clone, Debug)]
pub struct Local {
    /// Who may open the TAPs made: none (only privileged processes) when
    /// the hypervisor runs as root beside us; the owner under the helper.
    tap_owner: Option<u32>,
    /// Whose build namespaces it maps: the helper's owner only.
    owner: Option<crate::Owner>,
    /// Whether this process has the privilege: checked up front so that a
    /// dev-mode daemon without root says what to do instead of EPERM.
    privileged: bool,
}

impl Local {
    /// For the daemon in dev mode: TAPs for root's hypervisors.
    pub fn new() -> Self {
        Local {
            tap_owner: None,
            owner: None,
            privileged: nix::unistd::geteuid().is_root(),
        }
    }

    /// For the root helper: TAPs the owner opens, and its builds' maps.
    pub fn for_owner(owner: crate::Owner) -> Self {
        Local {
            tap_owner: Some(owner.uid),
            owner: Some(owner),
            privileged: nix::unistd::geteuid().is_root(),
        }
    }

    fn privileged(&self) -> Result<(), HostOpsError> {
        if self.privileged {
            Ok(())
        } else {
            Err(HostOpsError::NeedsRoot)
        }
    }
}

impl Default for Local {
    fn default() -> Self {
        Self::new()
    }
}

impl HostOps for Local {
    fn ensure_bridge(&self, bridge: &BridgeSpec) -> Result<(), HostOpsError> {
        self.privileged()?;
        Ok(banger_network::ensure_bridge(bridge)?)
    }

    fn create_tap(&self, tap: &str, bridge: &BridgeSpec) -> Result<(), HostOpsError> {
        self.privileged()?;
        Ok(banger_network::create_tap_owned(
            tap,
            &bridge.name,
            self.tap_owner,
        )?)
    }

    fn delete_tap(&self, tap: &str) -> Result<(), HostOpsError> {
        self.privileged()?;
        Ok(banger_network::delete_tap(tap)?)
    }

    fn isolate_guest(&self, port: &GuestPort) -> Result<(), HostOpsError> {
        self.privileged()?;
        Ok(banger_network::isolate_guest(port)?)
    }

    fn remove_isolation(&self, vm: &str) -> Result<(), HostOpsError> {
        self.privileged()?;
        Ok(banger_network::remove_isolation(vm)?)
    }

    fn enable_nat(&self, port: &GuestPort) -> Result<(), HostOpsError> {
        self.privileged()?;
        Ok(banger_network::enable_nat(
            &port.vm,
            port.ip,
            &port.bridge.name,
        )?)
    }

    fn disable_nat(&self, vm: &str) -> Result<(), HostOpsError> {
        self.privileged()?;
        Ok(banger_network::disable_nat(vm)?)
    }

    fn bind_dns(&self, bridge: &BridgeSpec) -> Result<OwnedFd, HostOpsError> {
        let addr = std::net::SocketAddr::from((bridge.cidr.addr(), crate::DNS_PORT));
        crate::fd::bind_udp(addr)
            .map_err(|e| HostOpsError::Failed(format!("cannot bind the DNS socket on {addr}: {e}")))
    }

    fn map_ids(&self, pid: u32) -> Result<(), HostOpsError> {
        self.privileged()?;
        let owner = self.owner.as_ref().ok_or_else(|| {
            HostOpsError::Failed(
                "only the root helper maps a build's ids; a root daemon builds as root".into(),
            )
        })?;
        crate::userns::map_owner(pid, owner)
    }

    fn describe(&self) -> String {
        if self.privileged {
            "in bangerd (root)".into()
        } else {
            "in bangerd, which is not root: networking will fail".into()
        }
    }
}
