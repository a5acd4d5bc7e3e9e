//! Which kernel modules an initramfs needs: the wanted modules plus their
//! dependencies, in the order they must be loaded.
//!
//! Dependencies come from `modules.dep` when the modules tree has one
//! (an installed kernel, after depmod), else from each module's own
//! `.modinfo` `depends=` field (an unpacked Debian package: depmod runs in
//! its postinst, so the package ships no modules.dep). Modules listed in
//! `modules.builtin` are part of the kernel and need no file.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSection};

/// Module file suffixes, compressed ones included.
const SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error(
        "kernel module {name} (needed by {needed_by}) is neither built into kernel {release} nor shipped with it"
    )]
    NotFound {
        name: String,
        needed_by: String,
        release: String,
    },
    #[error("kernel modules depend on each other in a cycle: {0}")]
    Cycle(String),
    #[error("{path}: {reason}")]
    BadModule { path: PathBuf, reason: String },
    #[error("{path}, line {line}: {reason}")]
    BadIndex {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the kernel's tree says about one module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Module {
    /// Built into the kernel image.
    Builtin,
    /// A file (relative to the modules directory) and the modules it needs.
    File { path: PathBuf, depends: Vec<String> },
}

/// A module to put in the initramfs, in load order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModule {
    pub name: String,
    /// Relative to the modules directory.
    pub path: PathBuf,
}

/// `virtio-blk`, `virtio_blk` and `virtio_blk.ko.xz` all name `virtio_blk`.
pub fn module_name(path_or_name: &str) -> String {
    let file = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let stem = SUFFIXES
        .iter()
        .find_map(|s| file.strip_suffix(s))
        .unwrap_or(file);
    stem.replace('-', "_")
}

/// Resolves `wanted` and everything it depends on into load order
/// (dependencies first). Builtin modules are dropped: they need no file.
pub fn resolve<F>(
    wanted: &[&str],
    release: &str,
    mut lookup: F,
) -> Result<Vec<ResolvedModule>, ModuleError>
where
    F: FnMut(&str) -> Result<Option<Module>, ModuleError>,
{
    let mut order = Vec::new();
    let mut done = HashSet::new();
    let mut stack: Vec<String> = Vec::new();
    for name in wanted {
        visit(
            &module_name(name),
            "the initramfs",
            release,
            &mut lookup,
            &mut stack,
            &mut done,
            &mut order,
        )?;
    }
    Ok(order)
}

fn visit<F>(
    name: &str,
    needed_by: &str,
    release: &str,
    lookup: &mut F,
    stack: &mut Vec<String>,
    done: &mut HashSet<String>,
    order: &mut Vec<ResolvedModule>,
) -> Result<(), ModuleError>
where
    F: FnMut(&str) -> Result<Option<Module>, ModuleError>,
{
    if done.contains(name) {
        return Ok(());
    }
    if let Some(start) = stack.iter().position(|n| n == name) {
        let mut chain = stack[start..].to_vec();
        chain.push(name.to_owned());
        return Err(ModuleError::Cycle(chain.join(" -> ")));
    }
    let module = lookup(name)?.ok_or_else(|| ModuleError::NotFound {
        name: name.to_owned(),
        needed_by: needed_by.to_owned(),
        release: release.to_owned(),
    })?;
    if let Module::File { path, depends } = module {
        stack.push(name.to_owned());
        for dep in &depends {
            visit(&module_name(dep), name, release, lookup, stack, done, order)?;
        }
        stack.pop();
        order.push(ResolvedModule {
            name: name.to_owned(),
            path,
        });
    }
    done.insert(name.to_owned());
    Ok(())
}

/// The modules of one kernel release, as found in `lib/modules/<release>`.
#[derive(Debug)]
pub struct ModuleIndex {
    dir: PathBuf,
    release: String,
    builtin: HashSet<String>,
    files: HashMap<String, PathBuf>,
    /// From modules.dep; `None` means read `.modinfo` of each file.
    deps: Option<HashMap<String, Vec<String>>>,
}

impl ModuleIndex {
    /// Indexes `lib/modules/<release>` (the directory is named after the
    /// release).
    pub fn open(dir: &Path) -> Result<Self, ModuleError> {
        let release = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let builtin_path = dir.join("modules.builtin");
        let builtin = match read_optional(&builtin_path)? {
            Some(text) => parse_builtin(&text),
            None => HashSet::new(),
        };
        let dep_path = dir.join("modules.dep");
        let (files, deps) = match read_optional(&dep_path)? {
            Some(text) => {
                let deps = parse_modules_dep(&text, &dep_path)?;
                let files = deps
                    .iter()
                    .map(|(path, _)| (module_name(path), PathBuf::from(path)))
                    .collect();
                let deps = deps
                    .into_iter()
                    .map(|(path, d)| (module_name(&path), d))
                    .collect();
                (files, Some(deps))
            }
            None => (find_module_files(dir)?, None),
        };
        Ok(ModuleIndex {
            dir: dir.to_owned(),
            release,
            builtin,
            files,
            deps,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn release(&self) -> &str {
        &self.release
    }

    /// What the tree says about `name`; `None` if it does not know it.
    pub fn lookup(&self, name: &str) -> Result<Option<Module>, ModuleError> {
        if self.builtin.contains(name) {
            return Ok(Some(Module::Builtin));
        }
        let Some(path) = self.files.get(name) else {
            return Ok(None);
        };
        let depends = match &self.deps {
            Some(deps) => deps.get(name).cloned().unwrap_or_default(),
            None => {
                let data = read_module(&self.dir.join(path))?;
                modinfo_depends(&data).map_err(|reason| ModuleError::BadModule {
                    path: self.dir.join(path),
                    reason,
                })?
            }
        };
        Ok(Some(Module::File {
            path: path.clone(),
            depends,
        }))
    }

    /// Resolves `wanted` with their dependencies into load order.
    pub fn resolve(&self, wanted: &[&str]) -> Result<Vec<ResolvedModule>, ModuleError> {
        resolve(wanted, &self.release, |name| self.lookup(name))
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, ModuleError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ModuleError::Io {
            action: "cannot read",
            path: path.to_owned(),
            source,
        }),
    }
}

/// `modules.builtin`: one module path per line.
fn parse_builtin(text: &str) -> HashSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect()
}

/// `modules.dep`: `path: dep-path dep-path…`, one module per line.
fn parse_modules_dep(text: &str, path: &Path) -> Result<Vec<(String, Vec<String>)>, ModuleError> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((module, deps)) = line.split_once(':') else {
            return Err(ModuleError::BadIndex {
                path: path.to_owned(),
                line: i + 1,
                reason: format!("expected 'module.ko: deps…', found {line:?}"),
            });
        };
        entries.push((
            module.trim().to_owned(),
            deps.split_whitespace().map(module_name).collect(),
        ));
    }
    Ok(entries)
}

/// Every module file under `dir`, by module name.
fn find_module_files(dir: &Path) -> Result<HashMap<String, PathBuf>, ModuleError> {
    let mut files = HashMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let abs = dir.join(&rel);
        let entries = fs::read_dir(&abs).map_err(|source| ModuleError::Io {
            action: "cannot list",
            path: abs.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ModuleError::Io {
                action: "cannot list",
                path: abs.clone(),
                source,
            })?;
            let rel = rel.join(entry.file_name());
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                pending.push(rel);
            } else if let Some(name) = entry.file_name().to_str()
                && SUFFIXES.iter().any(|s| name.ends_with(s))
            {
                files.insert(module_name(name), rel);
            }
        }
    }
    Ok(files)
}

/// Reads a module file, decompressing `.ko.xz`, `.ko.zst` and `.ko.gz`.
pub fn read_module(path: &Path) -> Result<Vec<u8>, ModuleError> {
    let raw = fs::read(path).map_err(|source| ModuleError::Io {
        action: "cannot read",
        path: path.to_owned(),
        source,
    })?;
    let name = path.to_string_lossy();
    let bad = |e: std::io::Error| ModuleError::BadModule {
        path: path.to_owned(),
        reason: format!("cannot decompress: {e}"),
    };
    let mut out = Vec::new();
    if name.ends_with(".ko.xz") {
        liblzma::read::XzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(bad)?;
    } else if name.ends_with(".ko.zst") {
        ruzstd::decoding::StreamingDecoder::new(&raw[..])
            .map_err(|e| bad(std::io::Error::other(e.to_string())))?
            .read_to_end(&mut out)
            .map_err(bad)?;
    } else if name.ends_with(".ko.gz") {
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(bad)?;
    } else {
        return Ok(raw);
    }
    Ok(out)
}

/// The `depends=` field of a module's `.modinfo` section.
fn modinfo_depends(data: &[u8]) -> Result<Vec<String>, String> {
    let elf = ElfFile64::<Endianness>::parse(data)
        .map_err(|e| format!("not a kernel module (ELF): {e}"))?;
    let section = elf
        .section_by_name(".modinfo")
        .ok_or("no .modinfo section (not a kernel module?)")?;
    let info = section
        .data()
        .map_err(|e| format!("unreadable .modinfo: {e}"))?;
    Ok(info
        .split(|b| *b == 0)
        .filter_map(|field| field.strip_prefix(b"depends="))
        .flat_map(|deps| {
            String::from_utf8_lossy(deps)
                .split(',')
                .filter(|d| !d.is_empty())
                .map(module_name)
                .collect::<Vec<_>>()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vsock.ko:
";

    fn lookup_in(
        dep: &str,
        builtin: &str,
    ) -> impl FnMut(&str) -> Result<Option<Module>, ModuleError> {
        let entries = parse_modules_dep(dep, Path::new("modules.dep")).unwrap();
        let builtin = parse_builtin(builtin);
        move |name: &str| {
            if builtin.contains(name) {
                return Ok(Some(Module::Builtin));
            }
            Ok(entries
                .iter()
                .find(|(path, _)| module_name(path) == name)
                .map(|(path, depends)| Module::File {
                    path: PathBuf::from(path),
                    depends: depends.clone(),
                }))
        }
    }

    fn names(modules: &[ResolvedModule]) -> Vec<&str> {
        modules.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let order = resolve(
            &["virtio_blk", "virtio-pci", "vmw_vsock_virtio_transport"],
            "6.1",
            lookup_in(DEP, ""),
        )
        .unwrap();
        assert_eq!(
            names(&order),
            [
                "virtio",
                "virtio_ring",
                "virtio_blk",
                "virtio_pci_modern_dev",
                "virtio_pci",
                "vsock",
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport",
            ]
        );
        let pos = |n: &str| order.iter().position(|m| m.name == n).unwrap();
        for (module, dep) in [
            ("virtio_blk", "virtio"),
            ("virtio_blk", "virtio_ring"),
            ("virtio_pci", "virtio_pci_modern_dev"),
            (
                "vmw_vsock_virtio_transport",
                "vmw_vsock_virtio_transport_common",
            ),
            ("vmw_vsock_virtio_transport_common", "vsock"),
        ] {
            assert!(pos(dep) < pos(module), "{dep} must load before {module}");
        }
        assert_eq!(order.iter().filter(|m| m.name == "virtio").count(), 1);
        assert_eq!(order.len(), 8);
        assert_eq!(
            order[pos("virtio_blk")].path,
            PathBuf::from("kernel/drivers/block/virtio_blk.ko")
        );
    }

    #[test]
    fn builtin_modules_need_no_file() {
        let order = resolve(
            &["virtio_blk", "ext4"],
            "6.1",
            lookup_in(
                DEP,
                "kernel/drivers/virtio/virtio.ko\nkernel/fs/ext4/ext4.ko\n",
            ),
        )
        .unwrap();
        assert_eq!(names(&order), ["virtio_ring", "virtio_blk"]);
    }

    #[test]
    fn a_missing_module_names_who_needs_it() {
        let dep = "kernel/a.ko: kernel/b.ko\n";
        let err = resolve(&["a"], "6.1.0-x", lookup_in(dep, "")).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ModuleError::NotFound { .. }), "{text}");
        assert!(
            text.contains("module b (needed by a)") && text.contains("6.1.0-x"),
            "{text}"
        );
        let err = resolve(&["nope"], "6.1", lookup_in(DEP, ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope (needed by the initramfs)"), "{err}");
    }

    #[test]
    fn cycles_are_reported_with_their_chain() {
        let dep = "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko: kernel/a.ko\n";
        let err = resolve(&["a"], "6.1", lookup_in(dep, "")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel modules depend on each other in a cycle: a -> b -> c -> a"
        );
        let self_dep = "kernel/a.ko: kernel/a.ko\n";
        assert!(matches!(
            resolve(&["a"], "6.1", lookup_in(self_dep, "")),
            Err(ModuleError::Cycle(_))
        ));
    }

    #[test]
    fn malformed_modules_dep_lines_are_pinpointed() {
        let err = parse_modules_dep("kernel/a.ko:\nno colon here\n", Path::new("/m/modules.dep"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/m/modules.dep, line 2:"), "{err}");
    }

    #[test]
    fn names_normalise_suffixes_and_dashes() {
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko"),
            "virtio_rng"
        );
        assert_eq!(module_name("overlay.ko.zst"), "overlay");
        assert_eq!(module_name("crc32c-intel"), "crc32c_intel");
    }

    #[test]
    fn an_index_without_modules_dep_reads_modinfo() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("6.1.0-test");
        fs::create_dir_all(root.join("kernel/a")).unwrap();
        fs::write(
            root.join("kernel/a/virtio_blk.ko"),
            fake_module("virtio,virtio_ring"),
        )
        .unwrap();
        fs::write(root.join("kernel/a/virtio_ring.ko"), fake_module("")).unwrap();
        let mut xz = Vec::new();
        liblzma::read::XzEncoder::new(&fake_module("")[..], 6)
            .read_to_end(&mut xz)
            .unwrap();
        fs::write(root.join("kernel/a/virtio.ko.xz"), xz).unwrap();
        fs::write(root.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        let index = ModuleIndex::open(&root).unwrap();
        assert_eq!(index.release(), "6.1.0-test");
        let order = index.resolve(&["virtio_blk", "ext4"]).unwrap();
        assert_eq!(names(&order), ["virtio", "virtio_ring", "virtio_blk"]);
        assert_eq!(order[0].path, PathBuf::from("kernel/a/virtio.ko.xz"));
        let data = read_module(&root.join(&order[0].path)).unwrap();
        assert_eq!(&data[..4], b"\x7fELF");
        // A file that is not a module is named in the error.
        fs::write(root.join("kernel/a/virtio_ring.ko"), b"junk").unwrap();
        let err = ModuleIndex::open(&root)
            .unwrap()
            .resolve(&["virtio_blk"])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("virtio_ring.ko: not a kernel module"),
            "{err}"
        );
    }

    /// A relocatable x86-64 ELF with a `.modinfo` section.
    fn fake_module(depends: &str) -> Vec<u8> {
        let modinfo = format!("license=GPL\0depends={depends}\0vermagic=6.1.0 SMP\0");
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let mut out = vec![0u8; 64];
        let modinfo_off = out.len();
        out.extend_from_slice(modinfo.as_bytes());
        let shstr_off = out.len();
        out.extend_from_slice(shstrtab);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len();
        let section = |name: u32, kind: u32, off: usize, size: usize| {
            let mut s = Vec::new();
            s.extend_from_slice(&name.to_le_bytes());
            s.extend_from_slice(&kind.to_le_bytes());
            s.extend_from_slice(&0u64.to_le_bytes()); // flags
            s.extend_from_slice(&0u64.to_le_bytes()); // addr
            s.extend_from_slice(&(off as u64).to_le_bytes());
            s.extend_from_slice(&(size as u64).to_le_bytes());
            s.extend_from_slice(&0u32.to_le_bytes()); // link
            s.extend_from_slice(&0u32.to_le_bytes()); // info
            s.extend_from_slice(&1u64.to_le_bytes()); // align
            s.extend_from_slice(&0u64.to_le_bytes()); // entsize
            s
        };
        out.extend(section(0, 0, 0, 0));
        out.extend(section(
            1,
            object::elf::SHT_PROGBITS,
            modinfo_off,
            modinfo.len(),
        ));
        out.extend(section(
            10,
            object::elf::SHT_STRTAB,
            shstr_off,
            shstrtab.len(),
        ));
        let mut h = Vec::new();
        h.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        h.extend_from_slice(&object::elf::ET_REL.to_le_bytes());
        h.extend_from_slice(&object::elf::EM_X86_64.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&0u64.to_le_bytes()); // entry
        h.extend_from_slice(&0u64.to_le_bytes()); // phoff
        h.extend_from_slice(&(shoff as u64).to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // flags
        h.extend_from_slice(&64u16.to_le_bytes()); // ehsize
        h.extend_from_slice(&0u16.to_le_bytes()); // phentsize
        h.extend_from_slice(&0u16.to_le_bytes()); // phnum
        h.extend_from_slice(&64u16.to_le_bytes()); // shentsize
        h.extend_from_slice(&3u16.to_le_bytes()); // shnum
        h.extend_from_slice(&2u16.to_le_bytes()); // shstrndx
        out[..64].copy_from_slice(&h);
        out
    }
}
