//! banger's initramfs: a gzip'd newc cpio holding banger-init as `/init`,
//! the kernel modules the guest needs before its root exists, and the
//! order to load them in. One per kernel (the modules must match it).
//!
//! The layout is a contract with banger-init (crates/init, docs/guest-init.md):
//! modules live in [`MODULES_DIR`] as `<name>.ko`, uncompressed, and
//! [`MODULES_ORDER`] lists their file names, one a line, in load order.

pub mod modules;

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use cpio::newc::{Builder, ModeFileType};

pub use modules::{Module, ModuleError, ModuleIndex, ResolvedModule};

/// Where the modules sit inside the initramfs.
pub const MODULES_DIR: &str = "banger/modules";
/// The load-order file inside the initramfs.
pub const MODULES_ORDER: &str = "banger/modules.order";

/// What banger's guests need before the root filesystem is mounted:
/// virtio transports (PCI for `-M pc`, MMIO for microvm and Firecracker),
/// disks, network, console, vsock, the overlay, and ext4 (builtin on
/// Debian's kernels, a module on some others); and the ACPI power button
/// with evdev, so banger-init's minimal mode sees `vm stop`'s button press
/// (systemd's logind uses them too).
pub const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "vsock",
    "vmw_vsock_virtio_transport",
    "overlay",
    "ext4",
    "button",
    "evdev",
];

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error(transparent)]
    Modules(#[from] ModuleError),
    #[error("banger-init binary {path}: {source} (build it with 'cargo build -p banger-init')")]
    Init { path: PathBuf, source: io::Error },
    #[error(
        "banger-init binary {path} {reason}: the initramfs has no libc; build it with RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu -p banger-init"
    )]
    InitNotStatic { path: PathBuf, reason: String },
    #[error("cannot write initramfs {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// What goes into an initramfs.
#[derive(Debug, Clone)]
pub struct InitramfsSpec<'a> {
    /// The banger-init binary (statically linked).
    pub init: &'a Path,
    /// The kernel's `lib/modules/<release>` directory.
    pub modules_dir: &'a Path,
    /// Modules wanted; their dependencies are added. Usually [`GUEST_MODULES`].
    pub modules: &'a [&'a str],
}

/// What [`build_initramfs`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitramfsInfo {
    /// Module names in load order.
    pub modules: Vec<String>,
    pub size: u64,
}

/// Builds the initramfs for `spec` at `out` (written to a sibling
/// temporary file and renamed, so `out` is absent or complete).
pub fn build_initramfs(
    spec: &InitramfsSpec<'_>,
    out: &Path,
) -> Result<InitramfsInfo, InitramfsError> {
    let index = ModuleIndex::open(spec.modules_dir)?;
    let order = index.resolve(spec.modules)?;
    let init = fs::read(spec.init).map_err(|source| InitramfsError::Init {
        path: spec.init.to_owned(),
        source,
    })?;
    check_static(&init).map_err(|reason| InitramfsError::InitNotStatic {
        path: spec.init.to_owned(),
        reason,
    })?;
    let mut files = Vec::with_capacity(order.len());
    for module in &order {
        let data = modules::read_module(&index.dir().join(&module.path))?;
        files.push((format!("{MODULES_DIR}/{}.ko", module.name), data));
    }
    let order_file: String = order.iter().map(|m| format!("{}.ko\n", m.name)).collect();

    let write_err = |source| InitramfsError::Write {
        path: out.to_owned(),
        source,
    };
    write_atomically(out, |archive| {
        for dir in [
            "dev",
            "proc",
            "sys",
            "run",
            "newroot",
            "banger",
            MODULES_DIR,
        ] {
            archive.dir(dir)?;
        }
        archive.char_device("dev/console", 0o600, 5, 1)?;
        archive.file("init", 0o755, &init)?;
        for (name, data) in &files {
            archive.file(name, 0o644, data)?;
        }
        archive.file(MODULES_ORDER, 0o644, order_file.as_bytes())
    })?;
    let size = fs::metadata(out).map_err(write_err)?.len();
    Ok(InitramfsInfo {
        modules: order.into_iter().map(|m| m.name).collect(),
        size,
    })
}

/// Beside an initramfs: the SHA-256 of the banger-init inside it, so a
/// daemon can tell, without unpacking it, whether it still carries the
/// installed one ([`replace_init`]).
pub const INIT_DIGEST_SUFFIX: &str = ".init-sha256";
/// An initramfs of banger's is a few MiB; unpacking stops well past that.
const MAX_UNPACKED: u64 = 1 << 30;

/// Where the digest of `initramfs`'s init is kept.
pub fn init_digest_path(initramfs: &Path) -> PathBuf {
    let mut name = initramfs.as_os_str().to_owned();
    name.push(INIT_DIGEST_SUFFIX);
    PathBuf::from(name)
}

/// Whether `initramfs` is known to carry the init whose SHA-256 is
/// `init_sha256` (an initramfs with no digest beside it is not).
pub fn carries_init(initramfs: &Path, init_sha256: &str) -> bool {
    fs::read_to_string(init_digest_path(initramfs)).is_ok_and(|d| d.trim() == init_sha256)
}

/// Records that `initramfs` carries the init whose SHA-256 is given.
pub fn record_init(initramfs: &Path, init_sha256: &str) -> io::Result<()> {
    fs::write(init_digest_path(initramfs), format!("{init_sha256}\n"))
}

/// Rewrites `initramfs` with `init` as its `/init`, every other entry
/// (modules, their order, directories, the console node) as it was: what
/// a fresh build with this init would give, byte for byte. A kernel keeps
/// its initramfs, and banger-init changes with banger, so a daemon brings
/// each kernel's initramfs up to the installed init before it boots it.
/// Written beside and renamed: a running VM keeps the file it opened.
pub fn replace_init(initramfs: &Path, init: &Path) -> Result<(), InitramfsError> {
    let new_init = fs::read(init).map_err(|source| InitramfsError::Init {
        path: init.to_owned(),
        source,
    })?;
    check_static(&new_init).map_err(|reason| InitramfsError::InitNotStatic {
        path: init.to_owned(),
        reason,
    })?;
    let entries = read_archive(initramfs)?;
    if !entries.iter().any(|(name, ..)| name == "init") {
        return Err(InitramfsError::Write {
            path: initramfs.to_owned(),
            source: io::Error::other("cannot read it back: it has no /init"),
        });
    }
    write_atomically(initramfs, |archive| {
        for (name, mode, (major, minor), content) in &entries {
            let perm = mode & 0o7777;
            // The kinds build_initramfs writes; nothing else is in one.
            match mode & 0o170000 {
                _ if name == "init" => archive.file(name, perm, &new_init)?,
                0o040000 => archive.dir(name)?,
                0o020000 => archive.char_device(name, perm, *major, *minor)?,
                0o100000 => archive.file(name, perm, content)?,
                other => {
                    return Err(io::Error::other(format!(
                        "{name} has file type {other:o}, which banger never writes"
                    )));
                }
            }
        }
        Ok(())
    })
}

/// (name, mode, (rdev major, minor), content) of one archive entry.
type Entry = (String, u32, (u32, u32), Vec<u8>);

/// Reads a gzip'd newc cpio (one banger wrote) back, entry by entry, at
/// most [`MAX_UNPACKED`] bytes of it.
fn read_archive(initramfs: &Path) -> Result<Vec<Entry>, InitramfsError> {
    use std::io::Read;
    let read_err = |e: io::Error| InitramfsError::Write {
        path: initramfs.to_owned(),
        source: io::Error::new(e.kind(), format!("cannot read it back: {e}")),
    };
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(initramfs).map_err(read_err)?)
        .take(MAX_UNPACKED)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    let mut entries = Vec::new();
    let mut rest = &data[..];
    loop {
        let mut reader = cpio::NewcReader::new(rest).map_err(read_err)?;
        if reader.entry().is_trailer() {
            break;
        }
        let e = reader.entry();
        let (name, mode, rdev) = (
            e.name().to_owned(),
            e.mode(),
            (e.rdev_major(), e.rdev_minor()),
        );
        let mut content = Vec::new();
        reader.read_to_end(&mut content).map_err(read_err)?;
        entries.push((name, mode, rdev, content));
        rest = reader.finish().map_err(read_err)?;
    }
    Ok(entries)
}

/// Writes an archive to a sibling temporary file and renames it to `out`.
fn write_atomically(
    out: &Path,
    fill: impl FnOnce(&mut Archive<flate2::write::GzEncoder<BufWriter<fs::File>>>) -> io::Result<()>,
) -> Result<(), InitramfsError> {
    let mut tmp_name = out.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let file = fs::File::create(&tmp)?;
        let gz =
            flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::default());
        let mut archive = Archive::new(gz);
        fill(&mut archive)?;
        let file = archive
            .finish()?
            .finish()?
            .into_inner()
            .map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, out)
    })();
    result.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        InitramfsError::Write {
            path: out.to_owned(),
            source,
        }
    })
}

/// Where banger's guest init is: `$BANGER_INIT_BIN`, else `banger-init`
/// beside the running binary (a build tree: scripts/build-init puts it
/// there), else in `lib/banger/` of the prefix the running binary is under
/// (`PREFIX/bin/bangerd` finds `PREFIX/lib/banger/banger-init`, where
/// `banger system install` puts guest files). Checked to be a statically
/// linked ELF.
pub fn find_init_binary() -> Result<PathBuf, String> {
    let path = match std::env::var_os("BANGER_INIT_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| format!("cannot tell where banger is installed: {e}"))?;
            // None there: the error names the build tree's place.
            let candidates = init_candidates(&exe);
            candidates
                .iter()
                .find(|p| p.exists())
                .unwrap_or(&candidates[0])
                .clone()
        }
    };
    let data = fs::read(&path).map_err(|e| {
        format!(
            "banger-init {}: {e}: build it with ./scripts/setup (a static build), or set \
             BANGER_INIT_BIN",
            path.display()
        )
    })?;
    check_static(&data).map_err(|why| {
        format!(
            "banger-init {} {why}: rebuild it with ./scripts/setup (a static build)",
            path.display()
        )
    })?;
    Ok(path)
}

/// Where [`find_init_binary`] looks for the binary running as `exe`, in
/// order.
fn init_candidates(exe: &Path) -> Vec<PathBuf> {
    let mut candidates = vec![exe.with_file_name("banger-init")];
    if let Some(prefix) = exe.parent().and_then(Path::parent) {
        candidates.push(prefix.join("lib/banger/banger-init"));
    }
    candidates
}

/// A dynamically linked `/init` would die in the initramfs with only the
/// kernel's "Requested init /init failed (error -2)"; catch it here.
fn check_static(binary: &[u8]) -> Result<(), String> {
    use object::read::elf::{FileHeader, ProgramHeader};
    let header = object::elf::FileHeader64::<object::Endianness>::parse(binary)
        .map_err(|_| "is not a 64-bit ELF executable".to_owned())?;
    let endian = header
        .endian()
        .map_err(|_| "is not a 64-bit ELF executable".to_owned())?;
    let phdrs = header
        .program_headers(endian, binary)
        .map_err(|e| format!("has bad program headers ({e})"))?;
    if phdrs
        .iter()
        .any(|ph| ph.p_type(endian) == object::elf::PT_INTERP)
    {
        return Err("is dynamically linked (it names an ELF interpreter)".into());
    }
    Ok(())
}

/// A newc cpio stream with fixed owners and times, so the same inputs give
/// the same bytes (the cpio crate writes the format; we pick the fields).
struct Archive<W: Write> {
    out: W,
    next_ino: u32,
}

impl<W: Write> Archive<W> {
    fn new(out: W) -> Self {
        Archive { out, next_ino: 1 }
    }

    fn entry(&mut self, name: &str, kind: ModeFileType, perm: u32) -> Builder {
        self.next_ino += 1;
        Builder::new(name)
            .ino(self.next_ino)
            .uid(0)
            .gid(0)
            .mtime(0)
            .nlink(if matches!(kind, ModeFileType::Directory) {
                2
            } else {
                1
            })
            .mode(perm)
            .set_mode_file_type(kind)
    }

    fn dir(&mut self, name: &str) -> io::Result<()> {
        let builder = self.entry(name, ModeFileType::Directory, 0o755);
        self.write(builder, &[])
    }

    fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        let builder = self
            .entry(name, ModeFileType::Char, perm)
            .rdev_major(major)
            .rdev_minor(minor);
        self.write(builder, &[])
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        let builder = self.entry(name, ModeFileType::Regular, perm);
        self.write(builder, data)
    }

    fn write(&mut self, builder: Builder, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::other("file larger than 4 GiB cannot go in a cpio archive"))?;
        let mut writer = builder.write(&mut self.out, size);
        writer.write_all(data)?;
        writer.finish()?;
        Ok(())
    }

    fn finish(self) -> io::Result<W> {
        cpio::newc::trailer(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a gzip'd newc cpio back.
    fn read_archive(path: &Path) -> Vec<Entry> {
        super::read_archive(path).unwrap()
    }

    fn fake_tree(dir: &Path) -> PathBuf {
        let modules = dir.join("lib/modules/6.1.0-test");
        fs::create_dir_all(modules.join("kernel")).unwrap();
        fs::write(
            modules.join("modules.dep"),
            "kernel/virtio.ko:\nkernel/virtio_blk.ko: kernel/virtio.ko\nkernel/overlay.ko.gz:\n",
        )
        .unwrap();
        fs::write(modules.join("modules.builtin"), "kernel/ext4.ko\n").unwrap();
        fs::write(modules.join("kernel/virtio.ko"), b"VIRTIO").unwrap();
        fs::write(modules.join("kernel/virtio_blk.ko"), b"BLK").unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"OVERLAY").unwrap();
        fs::write(modules.join("kernel/overlay.ko.gz"), gz.finish().unwrap()).unwrap();
        fs::write(dir.join("banger-init"), fake_executable(false)).unwrap();
        modules
    }

    #[test]
    fn round_trips_through_a_cpio_reader() {
        let dir = tempfile::tempdir().unwrap();
        let modules_dir = fake_tree(dir.path());
        let init = dir.path().join("banger-init");
        let out = dir.path().join("initramfs.cpio.gz");
        let spec = InitramfsSpec {
            init: &init,
            modules_dir: &modules_dir,
            modules: &["virtio_blk", "overlay", "ext4"],
        };
        let info = build_initramfs(&spec, &out).unwrap();
        assert_eq!(info.modules, ["virtio", "virtio_blk", "overlay"]);
        assert_eq!(info.size, fs::metadata(&out).unwrap().len());

        let entries = read_archive(&out);
        let get = |name: &str| {
            entries
                .iter()
                .find(|e| e.0 == name)
                .unwrap_or_else(|| panic!("{name} missing from the archive"))
        };
        let init = get("init");
        assert_eq!(init.1, 0o100755);
        assert_eq!(init.3, fake_executable(false));
        assert_eq!(get("banger/modules/virtio_blk.ko").3, b"BLK");
        // Compressed modules go in decompressed.
        assert_eq!(get("banger/modules/overlay.ko").3, b"OVERLAY");
        assert_eq!(
            get("banger/modules.order").3,
            b"virtio.ko\nvirtio_blk.ko\noverlay.ko\n"
        );
        let console = get("dev/console");
        assert_eq!((console.1, console.2), (0o020600, (5, 1)));
        assert_eq!(get("newroot").1, 0o040755);
        // Directories precede what they contain.
        let pos = |n: &str| entries.iter().position(|e| e.0 == n).unwrap();
        assert!(pos("banger/modules") < pos("banger/modules/virtio.ko"));

        // Same inputs, same bytes.
        let again = dir.path().join("again.cpio.gz");
        build_initramfs(&spec, &again).unwrap();
        assert_eq!(fs::read(&out).unwrap(), fs::read(&again).unwrap());
    }

    #[test]
    fn replacing_the_init_gives_what_a_fresh_build_with_it_would() {
        let dir = tempfile::tempdir().unwrap();
        let modules_dir = fake_tree(dir.path());
        let old_init = dir.path().join("banger-init");
        let out = dir.path().join("initramfs.cpio.gz");
        let spec = |init| InitramfsSpec {
            init,
            modules_dir: &modules_dir,
            modules: &["virtio_blk", "overlay"],
        };
        build_initramfs(&spec(&old_init), &out).unwrap();
        let mut newer = fake_executable(false);
        newer.extend_from_slice(b"a newer banger-init");
        let new_init = dir.path().join("banger-init-2");
        fs::write(&new_init, &newer).unwrap();
        let fresh = dir.path().join("fresh.cpio.gz");
        build_initramfs(&spec(&new_init), &fresh).unwrap();

        assert!(!carries_init(&out, "abc"), "no digest recorded yet");
        replace_init(&out, &new_init).unwrap();
        assert_eq!(fs::read(&out).unwrap(), fs::read(&fresh).unwrap());
        record_init(&out, "abc").unwrap();
        assert!(carries_init(&out, "abc") && !carries_init(&out, "abd"));

        let dynamic = dir.path().join("dynamic-init");
        fs::write(&dynamic, fake_executable(true)).unwrap();
        let err = replace_init(&out, &dynamic).unwrap_err().to_string();
        assert!(err.contains("crt-static"), "{err}");
        assert_eq!(
            fs::read(&out).unwrap(),
            fs::read(&fresh).unwrap(),
            "untouched"
        );
    }

    /// An x86-64 ELF header and one program header: PT_INTERP when
    /// `dynamic`, else PT_LOAD.
    fn fake_executable(dynamic: bool) -> Vec<u8> {
        let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        elf.extend_from_slice(&object::elf::ET_DYN.to_le_bytes());
        elf.extend_from_slice(&object::elf::EM_X86_64.to_le_bytes());
        elf.extend_from_slice(&1u32.to_le_bytes());
        elf.extend_from_slice(&0u64.to_le_bytes()); // entry
        elf.extend_from_slice(&64u64.to_le_bytes()); // phoff
        elf.extend_from_slice(&0u64.to_le_bytes()); // shoff
        elf.extend_from_slice(&0u32.to_le_bytes()); // flags
        for half in [64u16, 56, 1, 64, 0, 0] {
            elf.extend_from_slice(&half.to_le_bytes());
        }
        let p_type = if dynamic {
            object::elf::PT_INTERP
        } else {
            object::elf::PT_LOAD
        };
        elf.extend_from_slice(&p_type.to_le_bytes());
        elf.extend_from_slice(&[0u8; 52]);
        elf
    }

    #[test]
    fn a_dynamic_or_foreign_init_is_refused() {
        assert_eq!(check_static(&fake_executable(false)), Ok(()));
        let err = check_static(&fake_executable(true)).unwrap_err();
        assert!(err.contains("dynamically linked"), "{err}");
        let err = check_static(b"#!/bin/sh\n").unwrap_err();
        assert!(err.contains("not a 64-bit ELF"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let modules_dir = fake_tree(dir.path());
        let init = dir.path().join("banger-init");
        fs::write(&init, fake_executable(true)).unwrap();
        let spec = InitramfsSpec {
            init: &init,
            modules_dir: &modules_dir,
            modules: &["virtio_blk"],
        };
        let err = build_initramfs(&spec, &dir.path().join("i.cpio.gz"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("crt-static"), "{err}");
    }

    #[test]
    fn failures_leave_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let modules_dir = fake_tree(dir.path());
        let out = dir.path().join("initramfs.cpio.gz");
        let missing_init = dir.path().join("no-such-init");
        let spec = InitramfsSpec {
            init: &missing_init,
            modules_dir: &modules_dir,
            modules: &["virtio_blk"],
        };
        let err = build_initramfs(&spec, &out).unwrap_err().to_string();
        assert!(
            err.contains("banger-init binary") && err.contains("no-such-init"),
            "{err}"
        );
        let init = dir.path().join("banger-init");
        let spec = InitramfsSpec {
            init: &init,
            modules_dir: &modules_dir,
            modules: &["virtio_net"],
        };
        let err = build_initramfs(&spec, &out).unwrap_err().to_string();
        assert!(err.contains("virtio_net"), "{err}");
        assert!(fs::read_dir(dir.path()).unwrap().all(|e| {
            let name = e.unwrap().file_name();
            !name.to_string_lossy().starts_with("initramfs")
        }));
    }

    #[test]
    fn init_is_found_beside_the_binary_then_under_its_prefix() {
        assert_eq!(
            init_candidates(Path::new("/usr/local/bin/bangerd")),
            [
                PathBuf::from("/usr/local/bin/banger-init"),
                PathBuf::from("/usr/local/lib/banger/banger-init"),
            ]
        );
        assert_eq!(
            init_candidates(Path::new("/w/target/debug/bangerd"))[0],
            Path::new("/w/target/debug/banger-init")
        );
    }
}
