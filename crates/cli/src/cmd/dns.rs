use anyhow::{Result, bail};
use banger_config::{Config, Paths, find_tool};
use banger_network::dns::{HostResolver, resolvectl_install, resolvectl_uninstall};

use crate::ExitCode;
use crate::args::DnsCommand;

pub fn run(command: DnsCommand, paths: &Paths) -> Result<ExitCode> {
    let config = Config::load(&paths.config_file())?;
    let bridge = config.bridge_name();
    let listen = config.dns_listen_addr();
    let (argvs, dry_run) = match command {
        DnsCommand::Install { dry_run } => (resolvectl_install(bridge, listen), dry_run),
        DnsCommand::Uninstall { dry_run } => (resolvectl_uninstall(bridge), dry_run),
    };
    if dry_run {
        for argv in &argvs {
            println!("{}", argv.join(" "));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let resolver = HostResolver::detect();
    if resolver != HostResolver::SystemdResolved {
        let what = match command {
            DnsCommand::Install { .. } => {
                format!("to set it up: {}", resolver.recipe(bridge, listen))
            }
            DnsCommand::Uninstall { .. } => "undo the steps of docs/dns-routing.md by hand".into(),
        };
        bail!(
            "this host resolves names with {}, not systemd-resolved: {what}",
            resolver.name()
        );
    }
    let Some(resolvectl) = find_tool("resolvectl") else {
        bail!("resolvectl is not installed: apt-get install systemd-resolved");
    };
    if !std::path::Path::new("/sys/class/net").join(bridge).exists() {
        if matches!(command, DnsCommand::Uninstall { .. }) {
            eprintln!("bridge {bridge} does not exist: nothing to undo");
            return Ok(ExitCode::SUCCESS);
        }
        bail!(
            "bridge {bridge} does not exist yet: start a VM first (its first boot makes the \
             bridge), then run 'banger dns install' again"
        );
    }
    for argv in &argvs {
        // The real tool, as its documentation gives the recipe: resolved's
        // D-Bus API would need a D-Bus client for three calls.
        let out = std::process::Command::new(&resolvectl)
            .args(&argv[1..])
            .output()?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            bail!(
                "'{}' failed: {} (run it as root)",
                argv.join(" "),
                err.lines().last().unwrap_or("").trim()
            );
        }
        eprintln!("ran: {}", argv.join(" "));
    }
    if matches!(command, DnsCommand::Install { .. }) {
        eprintln!(
            "the settings last until {bridge} goes away (a reboot): run this again then; \
             docs/dns-routing.md shows how to make them permanent"
        );
    }
    Ok(ExitCode::SUCCESS)
}
