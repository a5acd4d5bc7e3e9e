//! Which hypervisor `hypervisor = auto|firecracker|qemu` means on this host.

use std::fmt;
use std::path::{Path, PathBuf};

use banger_config::{Config, HypervisorChoice};
use serde::{Deserialize, Serialize};

use crate::kvm::KvmStatus;

/// The Firecracker binary looked up on `PATH` unless `firecracker_bin` is set.
pub const DEFAULT_FIRECRACKER_BIN: &str = "firecracker";
/// The QEMU binary looked up on `PATH` unless `qemu_bin` is set.
pub const DEFAULT_QEMU_BIN: &str = "qemu-system-x86_64";

/// A hypervisor backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Firecracker,
    Qemu,
}

/// How the guest's CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    /// QEMU's software emulation: works everywhere, several times slower.
    Tcg,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Firecracker => "firecracker",
            Backend::Qemu => "qemu",
        })
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// The backend to use on this host, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Selection {
    pub backend: Backend,
    pub accel: Accel,
    pub binary: PathBuf,
    /// Why this one, in words for a person.
    pub reason: String,
}

/// Why no hypervisor can be used, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NoHypervisor {
    pub reason: String,
    pub fix: String,
}

impl fmt::Display for NoHypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.fix)
    }
}

/// What the choice depends on, gathered from the host.
#[derive(Clone, Debug)]
pub struct HostHypervisors {
    pub kvm: KvmStatus,
    pub firecracker: Result<PathBuf, String>,
    pub qemu: Result<PathBuf, String>,
}

impl HostHypervisors {
    /// Probes KVM and finds both binaries as `config` names them.
    pub fn probe(config: &Config) -> Self {
        let fc = config
            .firecracker_bin
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_FIRECRACKER_BIN));
        let qemu = config
            .qemu_bin
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_QEMU_BIN));
        Self {
            kvm: crate::kvm::probe(),
            firecracker: find_program(fc),
            qemu: find_program(qemu),
        }
    }
}

/// Resolves a program name through `PATH`, or checks an explicit path.
pub fn find_program(program: &Path) -> Result<PathBuf, String> {
    which::which(program).map_err(|_| {
        if program.components().count() > 1 {
            format!("{} is not an executable file", program.display())
        } else {
            format!("{} is not on PATH", program.display())
        }
    })
}

/// Picks the backend `want` means on a host like `host`.
pub fn choose(want: HypervisorChoice, host: &HostHypervisors) -> Result<Selection, NoHypervisor> {
    let kvm_ok = host.kvm.is_usable();
    let install_qemu = "install QEMU: apt-get install qemu-system-x86".to_string();
    match want {
        HypervisorChoice::Firecracker => {
            let binary = host.firecracker.clone().map_err(|e| NoHypervisor {
                reason: format!("hypervisor = \"firecracker\" but {e}"),
                fix: "set firecracker_bin to the firecracker binary, or hypervisor = \"auto\""
                    .into(),
            })?;
            if !kvm_ok {
                return Err(NoHypervisor {
                    reason: format!(
                        "hypervisor = \"firecracker\" needs KVM, but {}",
                        host.kvm.explain()
                    ),
                    fix: "set hypervisor = \"auto\" or \"qemu\" to use QEMU instead".into(),
                });
            }
            Ok(Selection {
                backend: Backend::Firecracker,
                accel: Accel::Kvm,
                binary,
                reason: "hypervisor = \"firecracker\" in config, and KVM is usable".into(),
            })
        }
        HypervisorChoice::Qemu => {
            let binary = host.qemu.clone().map_err(|e| NoHypervisor {
                reason: format!("hypervisor = \"qemu\" but {e}"),
                fix: install_qemu.clone(),
            })?;
            Ok(qemu_selection(
                binary,
                &host.kvm,
                "hypervisor = \"qemu\" in config",
            ))
        }
        HypervisorChoice::Auto => {
            if kvm_ok && let Ok(binary) = &host.firecracker {
                return Ok(Selection {
                    backend: Backend::Firecracker,
                    accel: Accel::Kvm,
                    binary: binary.clone(),
                    reason: "KVM is usable and firecracker is installed".into(),
                });
            }
            let binary = host.qemu.clone().map_err(|e| NoHypervisor {
                reason: format!(
                    "no usable hypervisor: {}, and {e}",
                    match (&host.firecracker, kvm_ok) {
                        (Err(fe), _) => fe.clone(),
                        (Ok(_), false) => host.kvm.explain(),
                        (Ok(_), true) => unreachable!("firecracker with KVM is chosen above"),
                    }
                ),
                fix: install_qemu.clone(),
            })?;
            let why = if kvm_ok {
                "firecracker is not installed"
            } else {
                "KVM is not usable"
            };
            Ok(qemu_selection(binary, &host.kvm, why))
        }
    }
}

fn qemu_selection(binary: PathBuf, kvm: &KvmStatus, why: &str) -> Selection {
    if kvm.is_usable() {
        Selection {
            backend: Backend::Qemu,
            accel: Accel::Kvm,
            binary,
            reason: format!("{why}; QEMU with KVM"),
        }
    } else {
        Selection {
            backend: Backend::Qemu,
            accel: Accel::Tcg,
            binary,
            reason: format!(
                "{why}; QEMU with TCG software emulation, which works everywhere but is \
                 several times slower than KVM"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(kvm: KvmStatus, fc: bool, qemu: bool) -> HostHypervisors {
        HostHypervisors {
            kvm,
            firecracker: if fc {
                Ok("/usr/bin/firecracker".into())
            } else {
                Err("firecracker is not on PATH".into())
            },
            qemu: if qemu {
                Ok("/usr/bin/qemu-system-x86_64".into())
            } else {
                Err("qemu-system-x86_64 is not on PATH".into())
            },
        }
    }

    fn pick(want: HypervisorChoice, h: &HostHypervisors) -> Option<(Backend, Accel)> {
        choose(want, h).ok().map(|s| (s.backend, s.accel))
    }

    #[test]
    fn auto_prefers_firecracker_then_qemu_kvm_then_tcg() {
        use HypervisorChoice::Auto;
        let fc = Some((Backend::Firecracker, Accel::Kvm));
        let qkvm = Some((Backend::Qemu, Accel::Kvm));
        let tcg = Some((Backend::Qemu, Accel::Tcg));
        assert_eq!(pick(Auto, &host(KvmStatus::Usable, true, true)), fc);
        assert_eq!(pick(Auto, &host(KvmStatus::Usable, false, true)), qkvm);
        assert_eq!(pick(Auto, &host(KvmStatus::Pvm, true, true)), tcg);
        assert_eq!(pick(Auto, &host(KvmStatus::Absent, false, true)), tcg);
        assert_eq!(pick(Auto, &host(KvmStatus::Pvm, false, false)), None);
    }

    #[test]
    fn tcg_reason_says_it_is_slow_and_why() {
        let s = choose(HypervisorChoice::Auto, &host(KvmStatus::Pvm, false, true)).unwrap();
        assert!(s.reason.contains("slower"), "{}", s.reason);
        assert!(s.reason.contains("KVM is not usable"), "{}", s.reason);
    }

    #[test]
    fn explicit_choices_are_checked() {
        let err = choose(
            HypervisorChoice::Firecracker,
            &host(KvmStatus::Pvm, true, true),
        )
        .unwrap_err();
        assert!(err.reason.contains("needs KVM"), "{err}");
        assert!(
            choose(
                HypervisorChoice::Firecracker,
                &host(KvmStatus::Usable, false, true)
            )
            .is_err()
        );
        assert_eq!(
            pick(HypervisorChoice::Qemu, &host(KvmStatus::Usable, true, true)),
            Some((Backend::Qemu, Accel::Kvm))
        );
        let err = choose(
            HypervisorChoice::Qemu,
            &host(KvmStatus::Usable, true, false),
        )
        .unwrap_err();
        assert!(err.fix.contains("apt-get install qemu-system-x86"), "{err}");
    }

    #[test]
    fn no_hypervisor_says_how_to_fix() {
        let err = choose(
            HypervisorChoice::Auto,
            &host(KvmStatus::Absent, false, false),
        )
        .unwrap_err();
        assert!(err.to_string().contains("qemu-system-x86"), "{err}");
    }
}
