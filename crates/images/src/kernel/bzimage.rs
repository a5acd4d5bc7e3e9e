//! The x86 boot protocol's setup header: just enough of it to find the
//! compressed kernel inside a bzImage (Documentation/arch/x86/boot.rst).

use super::KernelError;

/// Offset of `setup_sects` (u8): 512-byte sectors of real-mode setup code
/// after the boot sector; 0 means 4 for historical reasons.
const SETUP_SECTS: usize = 0x1f1;
/// Offset of the `HdrS` magic that marks a boot protocol >= 2.00 header.
const HEADER_MAGIC_OFFSET: usize = 0x202;
const HEADER_MAGIC: &[u8; 4] = b"HdrS";
/// Offset of the boot protocol version (u16, e.g. 0x020f).
const VERSION: usize = 0x206;
/// `payload_offset` and `payload_length` (u32 each), protocol >= 2.08.
const PAYLOAD_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH: usize = 0x24c;
const MIN_PAYLOAD_VERSION: u16 = 0x0208;

/// Where the compressed kernel sits in a bzImage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    /// The boot protocol version the header declares.
    pub protocol: u16,
    /// Absolute offset of the payload in the file.
    pub offset: usize,
    pub length: usize,
}

/// Finds the compressed payload of a bzImage from its setup header.
pub fn locate_payload(image: &[u8]) -> Result<Payload, KernelError> {
    if image.len() < PAYLOAD_LENGTH + 4 {
        return Err(KernelError::NotBzImage(format!(
            "{} bytes is too short to hold an x86 setup header",
            image.len()
        )));
    }
    if &image[HEADER_MAGIC_OFFSET..HEADER_MAGIC_OFFSET + 4] != HEADER_MAGIC {
        return Err(KernelError::NotBzImage(
            "no 'HdrS' magic at offset 0x202 (not an x86 boot image)".into(),
        ));
    }
    let protocol = u16::from_le_bytes([image[VERSION], image[VERSION + 1]]);
    if protocol < MIN_PAYLOAD_VERSION {
        return Err(KernelError::NotBzImage(format!(
            "boot protocol {}.{:02} predates payload_offset (needs 2.08 or newer)",
            protocol >> 8,
            protocol & 0xff
        )));
    }
    let setup_sects = match image[SETUP_SECTS] {
        0 => 4,
        n => usize::from(n),
    };
    // The protected-mode kernel starts after the boot sector and the setup
    // sectors; payload_offset is relative to that.
    let protected_mode_start = (setup_sects + 1) * 512;
    let payload_offset = read_u32(image, PAYLOAD_OFFSET) as usize;
    let length = read_u32(image, PAYLOAD_LENGTH) as usize;
    let offset = protected_mode_start + payload_offset;
    let end = offset.saturating_add(length);
    if length == 0 || end > image.len() {
        return Err(KernelError::Truncated(format!(
            "the header puts the payload at bytes {offset}..{end} but the file has {} bytes",
            image.len()
        )));
    }
    Ok(Payload {
        protocol,
        offset,
        length,
    })
}

fn read_u32(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// Builds a minimal bzImage around `payload`, for tests of this module and
/// of the extraction built on it.
#[cfg(test)]
pub(crate) fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
    let setup_sects = 3usize;
    let start = (setup_sects + 1) * 512;
    let payload_offset = 0x40usize;
    let mut image = vec![0u8; start + payload_offset];
    image[SETUP_SECTS] = setup_sects as u8;
    image[HEADER_MAGIC_OFFSET..HEADER_MAGIC_OFFSET + 4].copy_from_slice(HEADER_MAGIC);
    image[VERSION..VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
    image[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4]
        .copy_from_slice(&(payload_offset as u32).to_le_bytes());
    image[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4]
        .copy_from_slice(&(payload.len() as u32).to_le_bytes());
    image.extend_from_slice(payload);
    // Real bzImages carry more after the payload (the decompressor's tail).
    image.extend_from_slice(&[0xcc; 100]);
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_payload_after_the_setup_sectors() {
        let image = fake_bzimage(b"PAYLOAD!");
        let payload = locate_payload(&image).unwrap();
        assert_eq!(payload.protocol, 0x020f);
        assert_eq!(
            &image[payload.offset..payload.offset + payload.length],
            b"PAYLOAD!"
        );
    }

    #[test]
    fn zero_setup_sects_means_four() {
        let mut image = fake_bzimage(b"");
        image[SETUP_SECTS] = 0;
        image.truncate(5 * 512);
        image.resize(5 * 512 + 16, 0);
        image[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&0u32.to_le_bytes());
        image[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&16u32.to_le_bytes());
        assert_eq!(locate_payload(&image).unwrap().offset, 5 * 512);
    }

    #[test]
    fn rejects_short_and_foreign_files() {
        let err = locate_payload(b"hello").unwrap_err().to_string();
        assert!(err.contains("too short"), "{err}");
        let err = locate_payload(&[0u8; 4096]).unwrap_err().to_string();
        assert!(err.contains("HdrS"), "{err}");
    }

    #[test]
    fn rejects_a_payload_past_the_end_of_the_file() {
        let mut image = fake_bzimage(b"0123456789");
        image.truncate(image.len() - 105);
        let err = locate_payload(&image).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn rejects_old_boot_protocols() {
        let mut image = fake_bzimage(b"x");
        image[VERSION..VERSION + 2].copy_from_slice(&0x0206u16.to_le_bytes());
        let err = locate_payload(&image).unwrap_err().to_string();
        assert!(err.contains("2.06"), "{err}");
    }
}
