//! Rendering: tables for people, JSON for scripts, progress on stderr.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow};
use banger_api::{ClientError, Event, EventStream};
use comfy_table::presets::NOTHING;
use comfy_table::{ContentArrangement, Table};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A borderless, left-aligned table like `docker ps`.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(|h| h.to_uppercase()));
    t
}

pub fn print_table(t: &Table) {
    for line in t.to_string().lines() {
        println!("{}", line.trim_end().trim_start_matches(' '));
    }
}

/// `5m ago`, `3d ago`: when a record was created.
pub fn age(unix_secs: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(unix_secs);
    let s = (now - unix_secs).max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

fn draw_target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

pub fn spinner(message: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, draw_target());
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(message.to_string());
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// Draws a long operation's events (a spinner per phase, a bar when the
/// total is known; messages above them) and returns its result.
pub async fn follow(mut events: EventStream) -> Result<serde_json::Value> {
    let multi = MultiProgress::with_draw_target(draw_target());
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let bar_style =
        ProgressStyle::with_template("{spinner} {prefix:12} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    // OCI layers report bytes: `layer 0123456789ab`.
    let bytes_style = ProgressStyle::with_template(
        "{spinner} {prefix:18} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let spin_style = ProgressStyle::with_template("{spinner} {prefix:12} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let say = |multi: &MultiProgress, line: String| {
        if multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = multi.println(line);
        }
    };
    let finish_all = |bars: &mut HashMap<String, ProgressBar>| {
        for (_, pb) in bars.drain() {
            pb.finish_and_clear();
        }
    };
    while let Some(event) = events.next().await {
        match event.map_err(client_error)? {
            Event::Phase { name, message } => {
                finish_all(&mut bars);
                say(&multi, format!("• {message}"));
                let pb = multi.add(ProgressBar::new_spinner());
                pb.set_style(spin_style.clone());
                pb.set_prefix(name.clone());
                pb.set_message(message);
                pb.enable_steady_tick(Duration::from_millis(100));
                bars.insert(name, pb);
            }
            Event::Progress { phase, done, total } => {
                let is_layer = phase.starts_with("layer ");
                let pb = bars.entry(phase.clone()).or_insert_with(|| {
                    let pb = multi.add(ProgressBar::new_spinner());
                    pb.set_prefix(phase);
                    pb
                });
                if let Some(total) = total {
                    if is_layer {
                        pb.set_style(bytes_style.clone());
                    } else {
                        pb.set_style(bar_style.clone());
                    }
                    pb.set_length(total);
                }
                pb.set_position(done);
            }
            Event::Info { message } => say(&multi, message),
            Event::Warning { message } => say(&multi, format!("warning: {message}")),
            Event::Done { result } => {
                finish_all(&mut bars);
                return Ok(result);
            }
            Event::Failed { error } => {
                finish_all(&mut bars);
                return Err(anyhow!(error.message));
            }
        }
    }
    finish_all(&mut bars);
    Err(anyhow!("bangerd ended the operation without a result"))
}

/// The daemon's own messages are already written for the user.
pub fn client_error(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Api(api) => anyhow!(api.message),
        other => anyhow!(other),
    }
}

/// `1.2 GiB`, `512 MiB`, `4 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(4096), "4.0 KiB");
        assert_eq!(human_bytes(1536 << 20), "1.5 GiB");
    }

    #[test]
    fn ages() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert_eq!(age(now - 5), "5s ago");
        assert_eq!(age(now - 7200), "2h ago");
        assert_eq!(age(now - 3 * 86400), "3d ago");
        assert_eq!(age(now + 100), "0s ago");
    }
}
