//! Kernels: the ELF `vmlinux` inside a bzImage, Debian's kernel packages
//! as a source of both, and the kernel installed inside an image's root
//! filesystem (`rootfs`).
//!
//! A bzImage is real-mode setup code plus a compressed ELF kernel and the
//! code to decompress it. Firecracker boots only the ELF, and QEMU's
//! `microvm` boots it directly through its Xen PVH entry note, skipping the
//! in-guest decompression; so we pull the ELF out once, on the host.

mod bzimage;
mod decompress;
mod elf;
pub mod package;
pub mod rootfs;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use bzimage::{Payload, locate_payload};
pub use decompress::Compression;
pub use elf::ElfFacts;

/// Why a kernel could not be extracted or checked.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("not an x86 bzImage: {0}")]
    NotBzImage(String),
    #[error("kernel image is truncated: {0}")]
    Truncated(String),
    #[error(
        "kernel payload has unknown compression (starts with {magic}); supported: gzip, bzip2, lzma, xz, lz4, zstd"
    )]
    UnknownCompression { magic: String },
    #[error("kernel payload uses {format} compression, which banger does not decompress: {hint}")]
    UnsupportedCompression {
        format: Compression,
        hint: &'static str,
    },
    #[error("cannot decompress the {format} kernel payload: {reason}")]
    Decompress { format: Compression, reason: String },
    #[error(
        "the {format} kernel payload decompressed to {actual} bytes but its size trailer says {expected} (corrupt image)"
    )]
    SizeMismatch {
        format: Compression,
        expected: usize,
        actual: usize,
    },
    #[error("decompressed kernel is not usable: {0}")]
    NotElf(String),
    #[error(
        "kernel has no Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): it needs CONFIG_PVH=y to boot as vmlinux"
    )]
    NoPvhNote,
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An ELF kernel extracted from a bzImage.
#[derive(Debug)]
pub struct Vmlinux {
    /// The ELF file, trimmed to its own extent (the build appends the
    /// relocation table after it for the in-guest decompressor).
    pub elf: Vec<u8>,
    pub compression: Compression,
    pub pvh_entry: u64,
}

/// What [`extract_vmlinux_file`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmlinuxInfo {
    pub compression: Compression,
    pub pvh_entry: u64,
    pub size: u64,
}

/// Extracts the ELF kernel from a bzImage held in memory.
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vmlinux, KernelError> {
    let payload = locate_payload(bzimage)?;
    let compressed = &bzimage[payload.offset..payload.offset + payload.length];
    let compression = decompress::detect(compressed)?;
    let mut elf = decompress::decompress(compressed, compression)?;
    let facts = elf::inspect(&elf)?;
    elf.truncate(facts.extent);
    Ok(Vmlinux {
        elf,
        compression,
        pvh_entry: facts.pvh_entry,
    })
}

/// Checks an ELF kernel (e.g. one a user registers) boots as vmlinux.
pub fn inspect_vmlinux(data: &[u8]) -> Result<ElfFacts, KernelError> {
    elf::inspect(data)
}

/// Reads the bzImage at `bzimage` and writes its ELF kernel to `out`.
/// Writes a sibling temporary file and renames it, so `out` is either
/// absent or complete.
pub fn extract_vmlinux_file(bzimage: &Path, out: &Path) -> Result<VmlinuxInfo, KernelError> {
    let data = fs::read(bzimage).map_err(|source| KernelError::Io {
        action: "cannot read kernel",
        path: bzimage.to_owned(),
        source,
    })?;
    let vmlinux = extract_vmlinux(&data)?;
    write_atomically(out, &vmlinux.elf)?;
    Ok(VmlinuxInfo {
        compression: vmlinux.compression,
        pvh_entry: vmlinux.pvh_entry,
        size: vmlinux.elf.len() as u64,
    })
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<(), KernelError> {
    let io = |action, source| KernelError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io("cannot write vmlinux", source));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_a_pvh_elf_from_each_format() {
        let mut vmlinux = elf::fake_vmlinux(true);
        let elf_len = vmlinux.len();
        vmlinux.extend_from_slice(&[0xaa; 300]); // the appended relocations
        for format in [Compression::Gzip, Compression::Lz4, Compression::Xz] {
            let payload = decompress::tests::kernel_compress(&vmlinux, format);
            let image = bzimage::fake_bzimage(&payload);
            let out = extract_vmlinux(&image).unwrap_or_else(|e| panic!("{format}: {e}"));
            assert_eq!(out.compression, format);
            assert_eq!(out.elf, vmlinux[..elf_len]);
            assert_eq!(out.pvh_entry, 0x0100_0abc);
        }
    }

    #[test]
    fn a_kernel_without_pvh_is_refused() {
        let payload =
            decompress::tests::kernel_compress(&elf::fake_vmlinux(false), Compression::Gzip);
        let err = extract_vmlinux(&bzimage::fake_bzimage(&payload)).unwrap_err();
        assert!(matches!(err, KernelError::NoPvhNote), "{err}");
    }

    #[test]
    fn a_payload_that_is_not_elf_is_refused() {
        let payload =
            decompress::tests::kernel_compress(b"just some bytes, no ELF", Compression::Zstd);
        let err = extract_vmlinux(&bzimage::fake_bzimage(&payload))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ELF magic"), "{err}");
    }

    #[test]
    fn garbage_payload_names_its_magic() {
        let err = extract_vmlinux(&bzimage::fake_bzimage(b"\xde\xad\xbe\xefxxxxxxxx"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("de ad be ef"), "{err}");
    }

    #[test]
    fn the_file_api_leaves_no_output_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("vmlinuz");
        let out = dir.path().join("vmlinux");
        std::fs::write(&input, b"not a kernel").unwrap();
        assert!(extract_vmlinux_file(&input, &out).is_err());
        assert!(!out.exists());
        let err = extract_vmlinux_file(&dir.path().join("absent"), &out).unwrap_err();
        assert!(err.to_string().contains("cannot read kernel"), "{err}");
    }
}
