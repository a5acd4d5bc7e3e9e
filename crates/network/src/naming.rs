//! Names and addresses derived from a VM's name: stable, so that reconcile
//! after a crash finds the same TAP, and the guest keeps its MAC across
//! restarts.

use sha2::{Digest, Sha256};

use crate::NetError;

/// The longest interface name the kernel accepts (IFNAMSIZ minus the NUL).
pub const IFNAME_MAX: usize = 15;

/// Every TAP banger makes starts with this, so `ip link` shows whose it is.
pub const TAP_PREFIX: &str = "bgr";

/// A TAP name stable for a VM name: `bgr` and the first 12 hex digits of
/// the SHA-256 of the name (15 characters, the kernel's limit). VM names
/// may be 63 characters, so the name itself cannot be embedded; 48 bits of
/// hash make two VMs sharing a TAP name practically impossible.
pub fn tap_name(vm: &str) -> String {
    let digest = Sha256::digest(vm.as_bytes());
    let mut name = String::from(TAP_PREFIX);
    for byte in &digest[..6] {
        name.push_str(&format!("{byte:02x}"));
    }
    name
}

/// A MAC address stable for a VM name, `52:54:00:xx:xx:xx`: 0x52 has the
/// locally-administered bit set and the multicast bit clear, and the
/// 52:54:00 prefix is the one QEMU users recognise. The last three bytes
/// come from a hash domain-separated from `tap_name`'s.
pub fn mac_for(vm: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"banger-mac:");
    hasher.update(vm.as_bytes());
    let digest = hasher.finalize();
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        digest[0], digest[1], digest[2]
    )
}

/// Checks an interface name: one the kernel takes (at most 15 bytes, no
/// '/', ':' or whitespace), narrowed to letters, digits, '-', '_' and '.'
/// because the bridge's name lands inside a quoted string of an nft
/// script. A bad `bridge_name` fails here with its reason, not as EINVAL.
pub fn validate_ifname(name: &str) -> Result<(), NetError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > IFNAME_MAX {
        "it is longer than 15 bytes"
    } else if name == "." || name == ".." {
        "it is . or .."
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        "use only letters, digits, '-', '_' and '.'"
    } else {
        return Ok(());
    };
    Err(NetError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_are_short_stable_and_distinct() {
        let a = tap_name("sandbox");
        assert_eq!(a, tap_name("sandbox"));
        assert_eq!(a.len(), IFNAME_MAX);
        assert!(a.starts_with("bgr"));
        assert!(a[3..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, tap_name("sandbox2"));
        let long = "a".repeat(63);
        assert_eq!(tap_name(&long).len(), IFNAME_MAX);
        validate_ifname(&a).unwrap();
        validate_ifname(&tap_name(&long)).unwrap();
    }

    #[test]
    fn tap_name_is_pinned() {
        // Persisted VMs find their TAP by this name after an upgrade: a
        // change here orphans every existing TAP.
        assert_eq!(tap_name("sandbox"), "bgrb7ad567477c8");
    }

    #[test]
    fn macs_are_locally_administered_unicast_and_stable() {
        let mac = mac_for("sandbox");
        assert_eq!(mac, mac_for("sandbox"));
        assert_ne!(mac, mac_for("other"));
        let bytes: Vec<u8> = mac
            .split(':')
            .map(|p| {
                assert_eq!(p.len(), 2, "{mac}");
                u8::from_str_radix(p, 16).unwrap()
            })
            .collect();
        assert_eq!(bytes.len(), 6);
        assert_eq!(&bytes[..3], &[0x52, 0x54, 0x00]);
        assert_eq!(bytes[0] & 0b10, 0b10, "locally administered");
        assert_eq!(bytes[0] & 0b01, 0, "unicast");
        assert_eq!(mac, mac.to_lowercase());
    }

    #[test]
    fn interface_names_are_checked() {
        validate_ifname("banger0").unwrap();
        for bad in [
            "",
            "a/b",
            "a b",
            "a:b",
            "sixteen-chars-xx",
            ".",
            "ä",
            "a\"b",
            "a;b",
            "a{b",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }
}
