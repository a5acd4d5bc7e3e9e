use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use banger_config::LogLevel;
use tracing_subscriber::EnvFilter;

use crate::dirs::{OwnFileError, open_own};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Open(#[from] OwnFileError),
    #[error("cannot start logging: {0}")]
    Init(String),
}

/// Structured JSON log, one object per line, appended to `path` (never
/// through a link planted there). Panics are logged too, so a crash leaves
/// its reason in the log rather than on a stderr nobody reads.
pub fn init_logging(path: &Path, level: LogLevel) -> Result<(), LogError> {
    let file = open_own(
        path,
        OpenOptions::new().create(true).append(true).mode(0o600),
    )?;
    let filter = EnvFilter::new(format!(
        "warn,banger_daemon={0},banger_orchestrator={0},bangerd={0},banger_store={0}",
        level.as_str()
    ));
    tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .with_writer(Mutex::new(file))
        .try_init()
        .map_err(|e| LogError::Init(e.to_string()))?;
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "bangerd panicked");
    }));
    Ok(())
}
