//! banger-init when it is not PID 1: `banger-agent agent` runs the guest
//! agent (crates/agent), `banger-agent mark sysinit|multi-user` records
//! how far systemd has come (run by the units boot.rs writes).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::DirBuilderExt;

use banger_agent_proto::guest_paths;

const USAGE: &str = "usage: banger-agent agent | banger-agent mark sysinit|multi-user";

/// Runs the command in `args` (without the program name); the exit code.
pub fn run(mut args: impl Iterator<Item = OsString>) -> i32 {
    let command = args.next();
    let rest: Vec<OsString> = args.collect();
    match (command.as_deref().and_then(|c| c.to_str()), rest.as_slice()) {
        (Some("agent"), []) => match banger_agent::run() {
            Ok(never) => match never {},
            Err(e) => {
                eprintln!("banger-agent: {e}");
                1
            }
        },
        (Some("mark"), [stage]) => match mark_path(stage.to_str().unwrap_or_default()) {
            Some(path) => match mark(path) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("banger-agent: marking {path}: {e}");
                    1
                }
            },
            None => {
                eprintln!("{USAGE}");
                2
            }
        },
        _ => {
            eprintln!("{USAGE}");
            2
        }
    }
}

fn mark_path(stage: &str) -> Option<&'static str> {
    match stage {
        "sysinit" => Some(guest_paths::SYSINIT_MARK),
        "multi-user" => Some(guest_paths::MULTI_USER_MARK),
        _ => None,
    }
}

fn mark(path: &str) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(guest_paths::DIR)?;
    fs::write(path, b"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_name_their_marks() {
        assert_eq!(mark_path("sysinit"), Some(guest_paths::SYSINIT_MARK));
        assert_eq!(mark_path("multi-user"), Some(guest_paths::MULTI_USER_MARK));
        assert_eq!(mark_path("graphical"), None);
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>().into_iter();
        assert_eq!(run(args(&["mark"])), 2);
        assert_eq!(run(args(&["mark", "nothing"])), 2);
        assert_eq!(run(args(&["agent", "extra"])), 2);
        assert_eq!(run(args(&[])), 2);
    }
}
