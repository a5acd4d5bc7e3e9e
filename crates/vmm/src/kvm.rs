//! Is KVM usable for a stock guest kernel? `/dev/kvm` that opens is not
//! enough: on PVM hosts (`kvm_pvm` module, no `vmx`/`svm` CPU flag) it runs
//! only PVM-patched guests, and a stock kernel spins forever right after
//! the boot loader. So we look at the module and the CPU flags too.

use std::fs::OpenOptions;
use std::path::Path;

use serde::Serialize;

/// What the probe found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum KvmStatus {
    /// KVM can run a stock kernel.
    Usable,
    /// `/dev/kvm` does not exist.
    Absent,
    /// `/dev/kvm` exists but this user cannot open it read-write.
    NoAccess { error: String },
    /// `/dev/kvm` opens but is backed by PVM.
    Pvm,
    /// `/dev/kvm` opens but the CPU has no hardware virtualization flag
    /// (e.g. a nested guest without it exposed).
    NoHardwareVirt,
}

impl KvmStatus {
    /// Can KVM run banger's stock guest kernel?
    pub fn is_usable(&self) -> bool {
        matches!(self, KvmStatus::Usable)
    }

    /// One line for a person: why KVM can or cannot be used.
    pub fn explain(&self) -> String {
        match self {
            KvmStatus::Usable => "/dev/kvm is present, accessible and backed by hardware virtualization".into(),
            KvmStatus::Absent => "/dev/kvm does not exist (no KVM on this host)".into(),
            KvmStatus::NoAccess { error } => format!(
                "/dev/kvm exists but cannot be opened read-write ({error}): add your user to the 'kvm' group"
            ),
            KvmStatus::Pvm => "/dev/kvm is PVM (kvm_pvm loaded, no vmx/svm CPU flag): it runs only PVM-patched guest kernels, not banger's stock kernel".into(),
            KvmStatus::NoHardwareVirt => "/dev/kvm opens but the CPU shows neither vmx nor svm: it cannot run a stock guest kernel".into(),
        }
    }
}

/// Where the probe looks; injected so tests can fake a host.
#[derive(Clone, Debug)]
pub struct KvmProbe<'a> {
    pub dev: &'a Path,
    pub pvm_module: &'a Path,
    pub cpuinfo: &'a Path,
}

impl Default for KvmProbe<'static> {
    fn default() -> Self {
        Self {
            dev: Path::new("/dev/kvm"),
            pvm_module: Path::new("/sys/module/kvm_pvm"),
            cpuinfo: Path::new("/proc/cpuinfo"),
        }
    }
}

/// Probes this host's `/dev/kvm`, `kvm_pvm` module and CPU flags.
pub fn probe() -> KvmStatus {
    KvmProbe::default().run()
}

impl KvmProbe<'_> {
    /// Looks at the paths this probe names.
    pub fn run(&self) -> KvmStatus {
        if !self.dev.exists() {
            return KvmStatus::Absent;
        }
        if let Err(e) = OpenOptions::new().read(true).write(true).open(self.dev) {
            return KvmStatus::NoAccess {
                error: e.to_string(),
            };
        }
        let has_hw_flag = std::fs::read_to_string(self.cpuinfo)
            .map(|s| cpu_has_virt_flag(&s))
            .unwrap_or(false);
        if self.pvm_module.exists() && !has_hw_flag {
            return KvmStatus::Pvm;
        }
        if !has_hw_flag {
            return KvmStatus::NoHardwareVirt;
        }
        KvmStatus::Usable
    }
}

fn cpu_has_virt_flag(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace())
        .any(|f| f == "vmx" || f == "svm")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    struct FakeHost {
        dir: tempfile::TempDir,
    }

    impl FakeHost {
        fn new(kvm: bool, pvm: bool, flags: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            if kvm {
                fs::write(dir.path().join("kvm"), "").unwrap();
            }
            if pvm {
                fs::create_dir(dir.path().join("kvm_pvm")).unwrap();
            }
            fs::write(
                dir.path().join("cpuinfo"),
                format!("processor\t: 0\nflags\t\t: fpu sse2 {flags}\n"),
            )
            .unwrap();
            Self { dir }
        }
        fn probe(&self) -> KvmStatus {
            KvmProbe {
                dev: &self.dir.path().join("kvm"),
                pvm_module: &self.dir.path().join("kvm_pvm"),
                cpuinfo: &self.dir.path().join("cpuinfo"),
            }
            .run()
        }
    }

    #[test]
    fn classifies_hosts() {
        assert_eq!(
            FakeHost::new(false, false, "vmx").probe(),
            KvmStatus::Absent
        );
        assert_eq!(FakeHost::new(true, true, "").probe(), KvmStatus::Pvm);
        assert_eq!(
            FakeHost::new(true, false, "").probe(),
            KvmStatus::NoHardwareVirt
        );
        assert_eq!(FakeHost::new(true, false, "vmx").probe(), KvmStatus::Usable);
        assert_eq!(FakeHost::new(true, false, "svm").probe(), KvmStatus::Usable);
        // PVM module loaded beside real VT-x: the hardware path still works.
        assert_eq!(FakeHost::new(true, true, "vmx").probe(), KvmStatus::Usable);
    }

    #[test]
    fn flag_match_is_whole_word() {
        assert!(!cpu_has_virt_flag("flags : vmxx svmfoo\n"));
        assert!(cpu_has_virt_flag("flags : a vmx b\n"));
    }
}
