//! What banger asks of systemd, through `systemctl` (its documented
//! interface; a D-Bus client for a handful of calls would be more code to
//! trust, not less).

use std::path::Path;
use std::process::Command;

use banger_images::host_command;
use serde::Serialize;

use crate::SystemError;

/// Exists only while systemd is PID 1 (sd_booted(3) checks the same).
pub const SYSTEMD_RUN_DIR: &str = "/run/systemd/system";

pub fn systemd_runs() -> bool {
    Path::new(SYSTEMD_RUN_DIR).is_dir()
}

/// `systemctl ARGS`, failing with the end of its stderr.
pub fn systemctl(args: &[&str]) -> Result<(), SystemError> {
    host_command::run(Command::new("systemctl").args(args))?;
    Ok(())
}

/// A unit's state as `systemctl show` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UnitState {
    /// `active`, `inactive`, `failed`, `activating`...
    pub active_state: String,
    /// `running`, `dead`, `exited`, `auto-restart`...
    pub sub_state: String,
    /// The main process, when it has one.
    pub main_pid: Option<u32>,
}

impl UnitState {
    pub fn is_active(&self) -> bool {
        self.active_state == "active"
    }

    /// `active (running)`, as `systemctl status` words it; `failed`, not
    /// `failed (failed)`.
    pub fn describe(&self) -> String {
        if self.sub_state.is_empty() || self.sub_state == self.active_state {
            return self.active_state.clone();
        }
        format!("{} ({})", self.active_state, self.sub_state)
    }

    /// The `Key=value` lines of `systemctl show -p ActiveState,SubState,MainPID`.
    pub fn parse(text: &str) -> Self {
        let mut state = UnitState::default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("ActiveState", v)) => state.active_state = v.to_string(),
                Some(("SubState", v)) => state.sub_state = v.to_string(),
                Some(("MainPID", v)) => state.main_pid = v.parse().ok().filter(|&p| p != 0),
                _ => {}
            }
        }
        state
    }
}

/// `unit`'s state; works without root (systemd answers anyone).
pub fn show(unit: &str) -> Result<UnitState, SystemError> {
    let out = host_command::run(
        Command::new("systemctl")
            .args(["show", "-p", "ActiveState,SubState,MainPID", "--"])
            .arg(unit),
    )?;
    Ok(UnitState::parse(&String::from_utf8_lossy(&out.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_output_is_read_whatever_its_order() {
        let s = UnitState::parse("MainPID=4242\nActiveState=active\nSubState=running\n");
        assert_eq!(
            s,
            UnitState {
                active_state: "active".into(),
                sub_state: "running".into(),
                main_pid: Some(4242),
            }
        );
        assert!(s.is_active());
        assert_eq!(s.describe(), "active (running)");
        // A unit that is not loaded has no main process: MainPID=0.
        let s = UnitState::parse("ActiveState=inactive\nSubState=dead\nMainPID=0\n");
        assert_eq!(s.main_pid, None);
        assert!(!s.is_active());
        assert_eq!(
            UnitState::parse("ActiveState=failed\nSubState=failed\n").describe(),
            "failed"
        );
    }
}
