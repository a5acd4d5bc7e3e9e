//! The kernel's random number generator after a snapshot resume.
//!
//! Every VM resumed from one template starts with the same kernel RNG
//! state: the same input pool, the same base and per-CPU ChaCha keys.
//! Without help, siblings draw the same "random" bytes until their pools
//! drift apart through interrupt timings, and the CRNG would not even
//! fold that in before its next scheduled reseed (every 60 s once the
//! guest has been up two minutes, counted in the guest's jiffies, which
//! did not run while the snapshot sat on disk).
//!
//! What Linux 6.1's drivers/char/random.c does with the two ioctls used
//! here (both need CAP_SYS_ADMIN):
//!
//! - `RNDADDENTROPY` hashes the bytes into the input pool
//!   (`write_pool_user` → `mix_pool_bytes`, BLAKE2s) and credits
//!   `entropy_count` bits through `credit_init_bits`, which counts only
//!   while the CRNG is not yet ready: in a booted template it is, so the
//!   credit changes nothing there, and the bytes wait in the pool.
//! - `RNDRESEEDCRNG` calls `crng_reseed()` at once: a new base key
//!   extracted from the input pool (now holding the host's bytes) and a
//!   new generation, so every per-CPU CRNG and every batch of
//!   `get_random_u32()` and friends rekeys on its next use.
//!
//! So the host's bytes, different per VM, reach every consumer of the
//! kernel's randomness before the reply is sent, and siblings' outputs
//! differ from then on. The credit still matters where the CRNG is not
//! ready yet (a template made very early): the host's bytes are a full
//! seed and make it ready. Userspace generators seeded before the
//! snapshot (a long-running process's own DRBG) are not reached: sshd is
//! restarted with its new keys for that reason too.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use banger_agent_proto::ENTROPY_BYTES;

/// `_IOW('R', 0x03, int[2])` and `_IO('R', 0x07)` from
/// include/uapi/linux/random.h (the generic encoding: x86 and arm64).
const RNDADDENTROPY: libc::Ioctl = 0x4008_5203;
const RNDRESEEDCRNG: libc::Ioctl = 0x5207;

/// `struct rand_pool_info` with its flexible array at our largest size.
#[repr(C)]
struct RandPoolInfo {
    entropy_count: libc::c_int,
    buf_size: libc::c_int,
    buf: [u8; *ENTROPY_BYTES.end()],
}

/// Mixes `bytes` into the kernel's input pool, crediting them in full,
/// and reseeds the CRNG from it.
pub fn mix_and_reseed(bytes: &[u8]) -> io::Result<()> {
    if !ENTROPY_BYTES.contains(&bytes.len()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} random bytes (between {} and {} are taken)",
                bytes.len(),
                ENTROPY_BYTES.start(),
                ENTROPY_BYTES.end()
            ),
        ));
    }
    let urandom = File::open("/dev/urandom")?;
    let mut info = RandPoolInfo {
        entropy_count: (bytes.len() * 8) as libc::c_int,
        buf_size: bytes.len() as libc::c_int,
        buf: [0; *ENTROPY_BYTES.end()],
    };
    info.buf[..bytes.len()].copy_from_slice(bytes);
    add_entropy(&urandom, &info)?;
    reseed(&urandom)
}

#[allow(unsafe_code)]
fn add_entropy(urandom: &File, info: &RandPoolInfo) -> io::Result<()> {
    // SAFETY: RNDADDENTROPY reads a `struct rand_pool_info`: two ints,
    // then `buf_size` bytes. `info` is that layout (repr(C)), borrowed for
    // the call, and `buf_size` is at most `buf`'s length (checked by the
    // caller against ENTROPY_BYTES, which sizes `buf`). The kernel only
    // reads it. The descriptor is open for the borrow's length.
    let rc = unsafe {
        libc::ioctl(
            urandom.as_raw_fd(),
            RNDADDENTROPY,
            info as *const RandPoolInfo,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[allow(unsafe_code)]
fn reseed(urandom: &File) -> io::Result<()> {
    // SAFETY: RNDRESEEDCRNG takes no argument and touches no memory of
    // ours; the descriptor is open for the borrow's length.
    let rc = unsafe { libc::ioctl(urandom.as_raw_fd(), RNDRESEEDCRNG) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_codes_are_the_uapi_ones() {
        // _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr
        let iow = |nr: u32, size: u32| (1u32 << 30) | (size << 16) | (u32::from(b'R') << 8) | nr;
        assert_eq!(RNDADDENTROPY as u32, iow(0x03, 8));
        assert_eq!(RNDRESEEDCRNG as u32, (u32::from(b'R') << 8) | 0x07);
        assert_eq!(std::mem::offset_of!(RandPoolInfo, buf), 8);
    }

    #[test]
    fn a_wrong_amount_is_refused_before_the_kernel_sees_it() {
        for len in [0, 31, 513] {
            let e = mix_and_reseed(&vec![7; len]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{len}: {e}");
        }
    }
}
