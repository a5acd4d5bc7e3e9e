//! VM sizing defaults: config first, then derived from the host, then a
//! built-in floor. Every value carries where it came from, so `doctor` and
//! `--help` can say why a VM gets 2 vCPUs rather than just that it does.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Size;

/// What the defaults resolver needs to know about the host. `None` when the
/// host could not be read (the resolver then falls back to the floor).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub cpus: Option<u32>,
    pub memory_bytes: Option<u64>,
}

/// `[vm_defaults]` from the config file: each key optional.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsOverride {
    pub vcpu: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_size: Option<Size>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provenance {
    /// Set in `[vm_defaults]` of the config file.
    Config,
    /// Derived from this host's CPUs and memory.
    Auto,
    /// banger's built-in floor.
    Builtin,
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provenance::Config => "config",
            Provenance::Auto => "auto",
            Provenance::Builtin => "builtin",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved<T> {
    pub value: T,
    pub provenance: Provenance,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDefaults {
    pub vcpu: Resolved<u32>,
    pub memory_mib: Resolved<u64>,
    pub disk_size: Resolved<Size>,
}

pub const BUILTIN_VCPU: u32 = 1;
pub const BUILTIN_MEMORY_MIB: u64 = 512;
pub const BUILTIN_DISK: Size = Size::from_gib(8);
const MAX_AUTO_VCPU: u32 = 4;
/// The fewest vCPUs a host with that many CPUs gets. Two, on any
/// accelerator: systemd starts units in parallel, and under TCG its
/// userspace took 16.7 s to `graphical.target` on 1 vCPU against 7.9 s on
/// 2 (issue 16; `vm create` to the first ssh command, a median 19.5 s
/// against 15.4 s on a 2-core host). Under KVM a second vCPU shortens the
/// boot too, and an idle vCPU costs a halted thread under either. The
/// rule does not ask which accelerator runs the guest, so `--help`,
/// `doctor` and the daemon, which probe different things, all give the
/// same answer.
const MIN_AUTO_VCPU: u32 = 2;
const MAX_AUTO_MEMORY_MIB: u64 = 8 * 1024;

impl VmDefaults {
    pub fn resolve(config: &DefaultsOverride, host: HostFacts) -> Self {
        let vcpu = match (config.vcpu, host.cpus) {
            (Some(v), _) => config_value(v),
            (None, Some(cpus)) => auto(auto_vcpu(cpus)),
            (None, None) => builtin(BUILTIN_VCPU),
        };
        let memory_mib = match (config.memory_mib, host.memory_bytes) {
            (Some(m), _) => config_value(m),
            // Rounded down to a multiple of 128 MiB: 2944 MiB, not 3013.
            (None, Some(bytes)) => {
                auto(((bytes >> 20) / 8 / 128 * 128).clamp(BUILTIN_MEMORY_MIB, MAX_AUTO_MEMORY_MIB))
            }
            (None, None) => builtin(BUILTIN_MEMORY_MIB),
        };
        let disk_size = match config.disk_size {
            Some(d) => config_value(d),
            None => builtin(BUILTIN_DISK),
        };
        Self {
            vcpu,
            memory_mib,
            disk_size,
        }
    }

    /// `2 vcpu · 2048 MiB · 8G disk`, the line `vm create` prints.
    pub fn summary(&self) -> String {
        format!(
            "{} vcpu · {} MiB · {} disk",
            self.vcpu.value, self.memory_mib.value, self.disk_size.value
        )
    }
}

/// A quarter of the host's CPUs, at least two (never more than the host
/// has) and at most four.
fn auto_vcpu(host_cpus: u32) -> u32 {
    (host_cpus / 4)
        .max(MIN_AUTO_VCPU.min(host_cpus))
        .clamp(1, MAX_AUTO_VCPU)
}

fn config_value<T>(value: T) -> Resolved<T> {
    Resolved {
        value,
        provenance: Provenance::Config,
    }
}
fn auto<T>(value: T) -> Resolved<T> {
    Resolved {
        value,
        provenance: Provenance::Auto,
    }
}
fn builtin<T>(value: T) -> Resolved<T> {
    Resolved {
        value,
        provenance: Provenance::Builtin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn host(cpus: u32, mem_gib: u64) -> HostFacts {
        HostFacts {
            cpus: Some(cpus),
            memory_bytes: Some(mem_gib * GIB),
        }
    }

    #[test]
    fn host_derived_values_follow_the_rules() {
        let d = VmDefaults::resolve(&DefaultsOverride::default(), host(16, 32));
        assert_eq!(d.vcpu, auto(4));
        assert_eq!(d.memory_mib, auto(4096));
        assert_eq!(d.disk_size, builtin(Size::from_gib(8)));

        // Small host: 2 vCPUs where it has them, and at least 512 MiB.
        let d = VmDefaults::resolve(&DefaultsOverride::default(), host(2, 2));
        assert_eq!(d.vcpu, auto(2));
        assert_eq!(d.memory_mib, auto(512));
        let d = VmDefaults::resolve(&DefaultsOverride::default(), host(1, 2));
        assert_eq!(d.vcpu, auto(1));

        // Big host: capped at 4 vCPUs and 8 GiB.
        let d = VmDefaults::resolve(&DefaultsOverride::default(), host(128, 512));
        assert_eq!(d.vcpu, auto(4));
        assert_eq!(d.memory_mib, auto(8192));

        // This workplace's machines: 2 cores, 24 GiB.
        let d = VmDefaults::resolve(&DefaultsOverride::default(), host(2, 24));
        assert_eq!((d.vcpu.value, d.memory_mib.value), (2, 3072));

        // Odd memory sizes round down to 128 MiB steps.
        let d = VmDefaults::resolve(
            &DefaultsOverride::default(),
            HostFacts {
                cpus: Some(2),
                memory_bytes: Some(24_104 << 20),
            },
        );
        assert_eq!(d.memory_mib.value, 2944);
    }

    #[test]
    fn auto_vcpus_are_a_quarter_of_the_host_at_least_two_at_most_four() {
        let by_host: Vec<(u32, u32)> = [1, 2, 3, 4, 8, 11, 12, 15, 16, 64]
            .into_iter()
            .map(|cpus| (cpus, auto_vcpu(cpus)))
            .collect();
        assert_eq!(
            by_host,
            [
                (1, 1),
                (2, 2),
                (3, 2),
                (4, 2),
                (8, 2),
                (11, 2),
                (12, 3),
                (15, 3),
                (16, 4),
                (64, 4)
            ]
        );
    }

    #[test]
    fn config_wins_per_field() {
        let cfg = DefaultsOverride {
            vcpu: Some(3),
            memory_mib: None,
            disk_size: Some(Size::from_gib(20)),
        };
        let d = VmDefaults::resolve(&cfg, host(16, 32));
        assert_eq!(d.vcpu, config_value(3));
        assert_eq!(d.memory_mib, auto(4096));
        assert_eq!(d.disk_size, config_value(Size::from_gib(20)));
    }

    #[test]
    fn unknown_host_falls_back_to_builtin_floor() {
        let d = VmDefaults::resolve(&DefaultsOverride::default(), HostFacts::default());
        assert_eq!(d.vcpu, builtin(1));
        assert_eq!(d.memory_mib, builtin(512));
        assert_eq!(d.summary(), "1 vcpu · 512 MiB · 8G disk");
    }
}
