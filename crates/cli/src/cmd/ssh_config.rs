use anyhow::Result;
use banger_config::Paths;
use banger_guest::user_config::{self, Outcome};

use crate::ExitCode;
use crate::args::SshConfigArgs;

pub fn run(args: SshConfigArgs, paths: &Paths) -> Result<ExitCode> {
    let user = paths.user_ssh_config();
    let ours = paths.ssh_config();
    if args.install {
        match user_config::install(&user, &ours)? {
            Outcome::Changed => eprintln!(
                "added to {}: {} ('banger ssh-config --uninstall' removes it)",
                user.display(),
                user_config::include_line(&ours)
            ),
            Outcome::Unchanged => {
                eprintln!("{} already includes {}", user.display(), ours.display())
            }
        }
    } else if args.uninstall {
        match user_config::uninstall(&user)? {
            Outcome::Changed => eprintln!("removed banger's block from {}", user.display()),
            Outcome::Unchanged => {
                eprintln!("{} has no banger block: nothing to remove", user.display())
            }
        }
    } else {
        println!("{}", user_config::include_line(&ours));
    }
    Ok(ExitCode::SUCCESS)
}
