//! What an ext2/3/4 superblock says about itself: its label and UUID.
//! banger-init finds the disks the kernel command line names by them, and
//! the agent a resumed guest's workspace disk; neither needs blkid (a
//! minimal image has none, and the initramfs has nothing but banger-init).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

/// Where the superblock starts on the device.
pub const OFFSET: u64 = 1024;
/// Its size.
pub const SIZE: usize = 1024;
/// `s_magic` (at 0x38), little-endian.
pub const MAGIC: u16 = 0xef53;

/// An ext filesystem's label and UUID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `s_volume_name`: up to 16 bytes, NUL-padded.
    pub label: String,
    /// `s_uuid`, lowercase and dashed as `mkfs.ext4 -U` takes it.
    pub uuid: String,
}

/// The label and UUID of an ext2/3/4 superblock (the [`SIZE`] bytes at
/// [`OFFSET`] of the device), or `None` if it is not one.
pub fn identity(superblock: &[u8]) -> Option<Identity> {
    if superblock.len() < 0x88 {
        return None;
    }
    if u16::from_le_bytes([superblock[0x38], superblock[0x39]]) != MAGIC {
        return None;
    }
    let label_bytes = &superblock[0x78..0x88];
    let end = label_bytes.iter().position(|b| *b == 0).unwrap_or(16);
    let label = String::from_utf8_lossy(&label_bytes[..end]).into_owned();
    let u = &superblock[0x68..0x78];
    let hex: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        hex[0..4].concat(),
        hex[4..6].concat(),
        hex[6..8].concat(),
        hex[8..10].concat(),
        hex[10..16].concat()
    );
    Some(Identity { label, uuid })
}

/// Reads the superblock's bytes from a device (or image) opened for
/// reading. A device smaller than that fails (`UnexpectedEof`).
pub fn read(device: &mut File) -> io::Result<Vec<u8>> {
    device.seek(SeekFrom::Start(OFFSET))?;
    let mut buf = vec![0u8; SIZE];
    device.read_exact(&mut buf)?;
    Ok(buf)
}

/// A superblock for tests: the magic, `uuid` and `label`, zeros
/// elsewhere.
#[cfg(test)]
pub(crate) fn fake(label: &str, uuid: [u8; 16]) -> Vec<u8> {
    let mut sb = vec![0u8; SIZE];
    sb[0x38..0x3a].copy_from_slice(&MAGIC.to_le_bytes());
    sb[0x68..0x78].copy_from_slice(&uuid);
    sb[0x78..0x78 + label.len()].copy_from_slice(label.as_bytes());
    sb
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: [u8; 16] = [
        0x0f, 0x8f, 0xad, 0x5b, 0xd9, 0xcb, 0x46, 0x9f, 0xa1, 0x65, 0x70, 0x86, 0x77, 0x28, 0x95,
        0x0e,
    ];

    #[test]
    fn reads_label_and_uuid() {
        let id = identity(&fake("banger-work", UUID)).unwrap();
        assert_eq!(id.label, "banger-work");
        assert_eq!(id.uuid, "0f8fad5b-d9cb-469f-a165-70867728950e");
        // A full 16-byte label has no terminating NUL.
        let id = identity(&fake("sixteen-chars-xx", UUID)).unwrap();
        assert_eq!(id.label, "sixteen-chars-xx");
        assert_eq!(identity(&[0u8; 1024]), None);
        assert_eq!(identity(&[0u8; 10]), None);
    }

    #[test]
    fn reads_it_at_its_offset_and_fails_on_a_short_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let mut data = vec![0xffu8; OFFSET as usize];
        data.extend_from_slice(&fake("x", UUID));
        std::fs::write(&path, &data).unwrap();
        let sb = read(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!(identity(&sb).unwrap().label, "x");
        std::fs::write(&path, &data[..1500]).unwrap();
        let err = read(&mut File::open(&path).unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
