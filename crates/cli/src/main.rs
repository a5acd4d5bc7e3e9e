//! `banger`: parses the command line, talks to `bangerd`, renders. The
//! work happens in the daemon; nothing here changes state on its own.
#![deny(unsafe_code)]

mod agent;
mod args;
mod cmd;
mod complete;
mod connect;
mod help;
mod output;
mod terminal;
mod tui;
mod workspace;

use std::io::Write;

use anyhow::{Context, Result};
use args::{Cli, Command};
use banger_config::Config;
use clap::{CommandFactory, FromArgMatches};
use clap_complete::CompleteEnv;

pub use std::process::ExitCode;

fn command() -> clap::Command {
    help::with_resolved_defaults(Cli::command(), &help::resolved_defaults())
}

fn main() -> ExitCode {
    // Shell completion calls back into this binary with COMPLETE set.
    CompleteEnv::with_factory(Cli::command)
        .var(complete::COMPLETE_VAR)
        .complete();

    let matches = command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Completion { shell } = cli.command {
        complete::write_registration(shell, &mut std::io::stdout().lock())?;
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
    };
    // Before anything reads the install record: installing is what writes
    // it, and a broken one is what re-installing repairs.
    if let Command::System(c) = cli.command {
        return runtime()?.block_on(cmd::system::run(c));
    }
    let located = connect::locate()?;
    let paths = &located.paths;
    match cli.command {
        Command::Doctor(flag) => return cmd::doctor::run(&located, flag.json),
        Command::Dns(c) => return cmd::dns::run(c, paths),
        Command::SshConfig(a) if !a.install => return cmd::ssh_config::run(a, paths),
        _ => {}
    }
    runtime()?.block_on(async {
        match cli.command {
            Command::Daemon(c) => cmd::daemon::run(c, &located).await,
            other => {
                // A bad config would only make the daemon fail to start;
                // say so here, with its line, before starting anything.
                Config::load(&paths.config_file())?;
                let client = connect::connect(&located).await?;
                match other {
                    Command::Vm(c) => cmd::vm::run(c, &client).await,
                    Command::Image(c) => cmd::image::run(c, &client).await,
                    Command::Kernel(c) => cmd::kernel::run(c, &client).await,
                    Command::Template(c) => cmd::template::run(c, &client).await,
                    Command::Tui => tui::run(&client).await,
                    Command::Web(c) => cmd::web::run(c, &client).await,
                    // The daemon is up: it has written the file to include.
                    Command::SshConfig(a) => cmd::ssh_config::run(a, paths),
                    Command::Daemon(_)
                    | Command::Doctor(_)
                    | Command::Dns(_)
                    | Command::System(_)
                    | Command::Completion { .. } => {
                        unreachable!("handled above")
                    }
                }
            }
        }
    })
}

/// One URL path segment: resource names are validated by the daemon, but
/// must reach it intact whatever they contain.
pub fn path_segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}
