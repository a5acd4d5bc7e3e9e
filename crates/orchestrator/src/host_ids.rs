//! The id maps of an image build's user namespace, written by the root
//! helper (`HostOps::map_ids`) rather than the setuid newuidmap, which
//! `NoNewPrivileges=yes` in bangerd.service forbids. The helper computes
//! the map from /etc/subuid and /etc/subgid itself; the one the images
//! crate expects (0 the owner, 1.. its first range) is the same by
//! construction (both use `banger_config::subids`).

use std::sync::Arc;

use banger_hostops::HostOps;
use banger_images::userns::{IdMap, IdMapper, UsernsError};

pub struct HostIds(pub Arc<dyn HostOps>);

impl std::fmt::Debug for HostIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostIds({})", self.0.describe())
    }
}

impl IdMapper for HostIds {
    fn check(&self) -> Result<(), UsernsError> {
        Ok(())
    }

    fn map(&self, pid: u32, _map: &IdMap) -> Result<(), UsernsError> {
        self.0
            .map_ids(pid)
            .map_err(|e| UsernsError::MapBy(e.to_string()))
    }
}
