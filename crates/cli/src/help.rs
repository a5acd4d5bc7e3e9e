//! `--help` of `vm run` and `vm create` shows the defaults this host would
//! give a VM, and where each comes from, so nobody has to guess.

use banger_config::{Config, probe_host};
use banger_model::{Provenance, VmDefaults};
use clap::Command;

/// The defaults as `vm create` would resolve them. A broken config is
/// ignored here (help must always print); the command itself reports it.
pub fn resolved_defaults() -> VmDefaults {
    let config = crate::connect::locate()
        .ok()
        .and_then(|l| Config::load(&l.paths.config_file()).ok())
        .unwrap_or_default();
    VmDefaults::resolve(&config.vm_defaults, probe_host())
}

fn origin(p: Provenance, auto_rule: &str) -> String {
    match p {
        Provenance::Config => "from [vm_defaults] in config".into(),
        Provenance::Auto => format!("auto: {auto_rule}"),
        Provenance::Builtin => "built-in".into(),
    }
}

pub fn with_resolved_defaults(cmd: Command, d: &VmDefaults) -> Command {
    let annotate = |sub: Command| {
        sub.mut_arg("vcpu", |a| {
            a.help(format!(
                "Number of virtual CPUs [default here: {} ({})]",
                d.vcpu.value,
                origin(
                    d.vcpu.provenance,
                    "host CPUs / 4, 2 to 4 (1 on a 1-CPU host)"
                )
            ))
        })
        .mut_arg("memory", |a| {
            a.help(format!(
                "Guest memory, like 2G or 1536M [default here: {} MiB ({})]",
                d.memory_mib.value,
                origin(d.memory_mib.provenance, "host RAM / 8, 512 MiB to 8 GiB")
            ))
        })
        .mut_arg("disk_size", |a| {
            a.help(format!(
                "Size of the persistent work disk mounted at /root [default here: {} ({})]",
                d.disk_size.value,
                origin(d.disk_size.provenance, "")
            ))
        })
        .after_help(
            "Defaults come from [vm_defaults] in ~/.config/banger/config.toml when set, \
             else from this host's CPUs and memory, else built-in values; \
             `banger doctor` shows them too.",
        )
    };
    cmd.mut_subcommand("vm", |vm| {
        vm.mut_subcommand("run", annotate)
            .mut_subcommand("create", annotate)
    })
}
