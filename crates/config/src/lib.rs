//! Where banger keeps things and how the user configures it: the XDG
//! directory layout (with a `BANGER_HOME` override so tests never touch a
//! real user's directories), `config.toml` with every key optional and
//! unknown keys rejected, and the host facts the VM defaults derive from.
//!
//! Loading never writes: a bad config is reported with its line and the
//! offending key, and nothing is created until a caller asks for it.
#![deny(unsafe_code)]

mod file;
mod host;
pub mod install;
mod paths;
pub mod subids;

pub use file::{
    Config, ConfigError, DEFAULT_CONSOLE_LOG_MAX, DEFAULT_FILE_SYNC_MAX_FILE,
    DEFAULT_FILE_SYNC_MAX_TOTAL, DEFAULT_OCI_MAX_UNPACKED, FileSyncEntry, HypervisorChoice,
    LogLevel,
};
pub use host::{find_tool, probe_host};
pub use install::{Install, InstallError};
pub use paths::{Paths, PathsError};

/// The default image `vm run` uses when neither `--image` nor
/// `default_image_name` names one.
pub const DEFAULT_IMAGE_NAME: &str = "debian-bookworm";
pub const DEFAULT_BRIDGE_NAME: &str = "banger0";
pub const DEFAULT_BRIDGE_CIDR: &str = "172.16.0.1/24";
