//! The decompressed kernel as an ELF file: check that it is a 64-bit x86
//! ELF that carries a Xen PVH entry note (what QEMU's microvm `-kernel` and
//! Firecracker need), and find where the ELF ends.

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::{Endianness, FileKind};

use super::KernelError;

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit physical entry point PVH boots.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// What the ELF checks found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfFacts {
    /// The PVH entry point's physical address.
    pub pvh_entry: u64,
    /// Bytes the ELF proper spans (headers, segments, sections); anything
    /// after it is not part of the ELF.
    pub extent: usize,
}

/// Checks `data` is an x86-64 ELF with a PVH note and measures it.
pub fn inspect(data: &[u8]) -> Result<ElfFacts, KernelError> {
    let not_elf = |why: String| KernelError::NotElf(why);
    match FileKind::parse(data) {
        Ok(FileKind::Elf64) => {}
        Ok(kind) => return Err(not_elf(format!("it is {kind:?}, not a 64-bit ELF"))),
        Err(_) => {
            let start: Vec<String> = data.iter().take(4).map(|b| format!("{b:02x}")).collect();
            return Err(not_elf(format!(
                "it starts with {} instead of the ELF magic 7f 45 4c 46",
                start.join(" ")
            )));
        }
    }
    let header = elf::FileHeader64::<Endianness>::parse(data)
        .map_err(|e| not_elf(format!("bad ELF header: {e}")))?;
    let endian = header
        .endian()
        .map_err(|e| not_elf(format!("bad ELF header: {e}")))?;
    if header.e_machine(endian) != elf::EM_X86_64 {
        return Err(not_elf(format!(
            "machine {} is not x86-64",
            header.e_machine(endian)
        )));
    }
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|e| not_elf(format!("bad program headers: {e}")))?;
    let sections = header
        .sections(endian, data)
        .map_err(|e| not_elf(format!("bad section headers: {e}")))?;

    let mut extent = header.e_phoff(endian) as usize
        + usize::from(header.e_phnum(endian)) * usize::from(header.e_phentsize(endian));
    extent = extent.max(
        header.e_shoff(endian) as usize
            + usize::from(header.e_shnum(endian)) * usize::from(header.e_shentsize(endian)),
    );
    let mut pvh_entry = None;
    for ph in phdrs {
        extent = extent.max((ph.p_offset(endian) + ph.p_filesz(endian)) as usize);
        let notes = ph
            .notes(endian, data)
            .map_err(|e| not_elf(format!("bad note segment: {e}")))?;
        if let Some(mut notes) = notes {
            while let Some(note) = notes
                .next()
                .map_err(|e| not_elf(format!("bad note: {e}")))?
            {
                if note.name() == b"Xen" && note.n_type(endian) == XEN_ELFNOTE_PHYS32_ENTRY {
                    pvh_entry = Some(read_address(note.desc()));
                }
            }
        }
    }
    for section in sections.iter() {
        if section.sh_type(endian) != elf::SHT_NOBITS {
            extent = extent.max((section.sh_offset(endian) + section.sh_size(endian)) as usize);
        }
    }
    if extent > data.len() {
        return Err(KernelError::Truncated(format!(
            "the ELF headers describe {extent} bytes but only {} were decompressed",
            data.len()
        )));
    }
    let pvh_entry = pvh_entry.ok_or(KernelError::NoPvhNote)?;
    Ok(ElfFacts { pvh_entry, extent })
}

/// The note's descriptor is the entry address, 4 or 8 bytes little-endian
/// (Linux emits it with `_ASM_PTR`, so 8 on x86-64).
fn read_address(desc: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = desc.len().min(8);
    bytes[..n].copy_from_slice(&desc[..n]);
    u64::from_le_bytes(bytes)
}

/// A minimal x86-64 ELF: header, one PT_NOTE program header and the note.
/// With `pvh` false the note has another type. Used by this crate's tests.
#[cfg(test)]
pub(crate) fn fake_vmlinux(pvh: bool) -> Vec<u8> {
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes()); // namesz ("Xen\0")
    note.extend_from_slice(&8u32.to_le_bytes()); // descsz
    let n_type = if pvh { XEN_ELFNOTE_PHYS32_ENTRY } else { 5 };
    note.extend_from_slice(&n_type.to_le_bytes());
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&0x0100_0abcu64.to_le_bytes());

    let ehsize = 64u16;
    let phentsize = 56u16;
    let note_offset = u64::from(ehsize + phentsize);
    let mut out = Vec::new();
    out.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&elf::ET_EXEC.to_le_bytes());
    out.extend_from_slice(&elf::EM_X86_64.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // e_version
    out.extend_from_slice(&0x0100_0000u64.to_le_bytes()); // e_entry
    out.extend_from_slice(&u64::from(ehsize).to_le_bytes()); // e_phoff
    out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    out.extend_from_slice(&ehsize.to_le_bytes());
    out.extend_from_slice(&phentsize.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    out.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    out.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    out.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    // The PT_NOTE program header.
    out.extend_from_slice(&elf::PT_NOTE.to_le_bytes());
    out.extend_from_slice(&elf::PF_R.to_le_bytes());
    out.extend_from_slice(&note_offset.to_le_bytes()); // p_offset
    out.extend_from_slice(&0u64.to_le_bytes()); // p_vaddr
    out.extend_from_slice(&0u64.to_le_bytes()); // p_paddr
    out.extend_from_slice(&(note.len() as u64).to_le_bytes()); // p_filesz
    out.extend_from_slice(&(note.len() as u64).to_le_bytes()); // p_memsz
    out.extend_from_slice(&4u64.to_le_bytes()); // p_align
    out.extend_from_slice(&note);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_pvh_entry_and_the_extent() {
        let image = fake_vmlinux(true);
        let facts = inspect(&image).unwrap();
        assert_eq!(facts.pvh_entry, 0x0100_0abc);
        assert_eq!(facts.extent, image.len());
    }

    #[test]
    fn trailing_bytes_are_outside_the_extent() {
        let mut image = fake_vmlinux(true);
        let len = image.len();
        image.extend_from_slice(b"relocation table");
        assert_eq!(inspect(&image).unwrap().extent, len);
    }

    #[test]
    fn an_elf_without_the_note_is_refused() {
        let err = inspect(&fake_vmlinux(false)).unwrap_err();
        assert!(matches!(err, KernelError::NoPvhNote), "{err}");
        assert!(err.to_string().contains("PVH"));
    }

    #[test]
    fn garbage_is_not_elf() {
        let err = inspect(b"MZ\x90\x00 this is not a kernel")
            .unwrap_err()
            .to_string();
        assert!(err.contains("4d 5a 90 00"), "{err}");
    }

    #[test]
    fn a_cut_elf_is_truncated() {
        let image = fake_vmlinux(true);
        let err = inspect(&image[..image.len() - 4]).unwrap_err().to_string();
        assert!(
            err.contains("bad note") || err.contains("truncated"),
            "{err}"
        );
    }
}
