//! Firecracker's host side of a guest vsock port: a connection to the VM's
//! vsock Unix socket asks for a port with `CONNECT <port>\n`, and
//! Firecracker answers `OK <host port>\n` once the guest accepted, or
//! closes the connection when nothing in the guest listens there (an agent
//! not started yet). After the answer the stream is the guest's.

use std::io::{self, Read, Write};

/// Longest answer read: `OK 4294967295\n` is 14 bytes; more is not
/// Firecracker.
const MAX_REPLY: usize = 32;

/// Why Firecracker did not open the port. Every kind means the agent is
/// not reachable now, not that a command failed.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("Firecracker closed the connection: nothing in the guest listens on the port yet")]
    Closed,
    #[error("Firecracker answered {0:?} instead of `OK <port>`")]
    Reply(String),
    #[error("Firecracker sent {MAX_REPLY} bytes without ending its answer")]
    TooLong,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Asks for guest `port` on a fresh connection to Firecracker's vsock
/// socket and returns the host-side port it assigned. Reads only up to
/// the answer's newline, so whatever follows is left for the caller. The
/// caller bounds the time (timeouts on the stream).
pub fn request_port(stream: &mut (impl Read + Write), port: u32) -> Result<u32, VsockError> {
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .and_then(|()| stream.flush())
        .map_err(closed_or_io)?;
    let mut line = Vec::with_capacity(MAX_REPLY);
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return Err(VsockError::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(closed_or_io(e)),
        }
        if byte[0] == b'\n' {
            break;
        }
        if line.len() + 1 >= MAX_REPLY {
            return Err(VsockError::TooLong);
        }
        line.push(byte[0]);
    }
    parse_ok(&line).ok_or_else(|| VsockError::Reply(printable(&line)))
}

/// `OK <decimal u32>`, nothing else.
fn parse_ok(line: &[u8]) -> Option<u32> {
    let digits = line.strip_prefix(b"OK ")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Firecracker resets a connection it drops with our bytes unread.
fn closed_or_io(e: io::Error) -> VsockError {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => VsockError::Closed,
        _ => VsockError::Io(e),
    }
}

/// The answer with control characters shown as `?` (it is at most
/// [`MAX_REPLY`] bytes).
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that reads `input` and records what is written.
    struct Fake {
        input: io::Cursor<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Fake {
        fn new(input: &[u8]) -> Self {
            Self {
                input: io::Cursor::new(input.to_vec()),
                written: Vec::new(),
            }
        }
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn asks_for_the_port_and_leaves_what_follows() {
        let mut s = Fake::new(b"OK 1073741824\nBANGER");
        assert_eq!(request_port(&mut s, 1024).unwrap(), 1_073_741_824);
        assert_eq!(s.written, b"CONNECT 1024\n");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"BANGER");
    }

    #[test]
    fn a_closed_connection_is_nobody_listening() {
        assert!(matches!(
            request_port(&mut Fake::new(b""), 1024),
            Err(VsockError::Closed)
        ));
        assert!(matches!(
            request_port(&mut Fake::new(b"OK 12"), 1024),
            Err(VsockError::Closed)
        ));
    }

    #[test]
    fn anything_but_ok_and_a_port_is_refused() {
        for reply in [
            &b"NO 1\n"[..],
            b"OK\n",
            b"OK \n",
            b"OK 1 \n",
            b"OK -1\n",
            b"OK 4294967296\n",
            b"ok 1\n",
            b"OK 1\r\n",
        ] {
            let e = request_port(&mut Fake::new(reply), 1024).unwrap_err();
            assert!(matches!(e, VsockError::Reply(_)), "{reply:?}: {e}");
        }
        let e = request_port(&mut Fake::new(b"\x1b[2J\n"), 1024).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Firecracker answered \"?[2J\" instead of `OK <port>`"
        );
    }

    #[test]
    fn a_long_answer_is_cut_short() {
        let mut s = Fake::new(&[b'9'; 1 << 20]);
        assert!(matches!(
            request_port(&mut s, 1024),
            Err(VsockError::TooLong)
        ));
        assert!(s.input.position() <= MAX_REPLY as u64);
    }
}
