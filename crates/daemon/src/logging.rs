use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Mutex;

use banger_config::LogLevel;
use tracing_subscriber::EnvFilter;

/// Structured JSON log, one object per line, appended to `path`. Panics are
/// logged too, so a crash leaves its reason in the log rather than on a
/// stderr nobody reads.
pub fn init_logging(path: &Path, level: LogLevel) -> io::Result<()> {
    let file: File = OpenOptions::new().create(true).append(true).open(path)?;
    let filter = EnvFilter::new(format!(
        "warn,banger_daemon={0},bangerd={0},banger_store={0}",
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
        .map_err(|e| io::Error::other(e.to_string()))?;
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "bangerd panicked");
    }));
    Ok(())
}
