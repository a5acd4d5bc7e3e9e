//! The one-line greeting before HTTP/2 (see the crate's docs). Blocking
//! reads and writes of a few bytes, so both sides run it on a plain stream
//! before handing the stream to their HTTP/2 side.

use std::io::{self, Read, Write};

use thiserror::Error;

use crate::PROTOCOL_VERSION;

const HELLO: &str = "BANGER-AGENT-HELLO";
const OK: &str = "BANGER-AGENT-OK";
const VERSION: &str = "BANGER-AGENT-VERSION";
/// A longer line is not a greeting: it is skipped unread.
const MAX_LINE: usize = 128;
/// How many stray bytes the host skips before it gives up.
const MAX_SKIPPED: usize = 4 << 20;

#[derive(Debug, Error)]
pub enum GreetingError {
    #[error(
        "the guest's agent speaks protocol {guest} and this banger speaks {host}: {}",
        if *guest > *host {
            "update banger on the host"
        } else {
            "the guest runs an older banger-init: restart the VM (banger rebuilds the initramfs) or update the image"
        }
    )]
    Version { guest: u32, host: u32 },
    #[error("the channel closed during the greeting")]
    Closed,
    #[error("no greeting among {0} bytes from the guest")]
    Garbage(usize),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads one line (without its newline). Lines longer than [`MAX_LINE`]
/// come back as `None` (read to their end and dropped). `Ok(None)` with
/// nothing consumed is impossible: EOF is [`GreetingError::Closed`].
fn read_line(r: &mut impl Read, consumed: &mut usize) -> Result<Option<String>, GreetingError> {
    let mut line = Vec::new();
    let mut too_long = false;
    let mut byte = [0u8; 1];
    loop {
        match r.read(&mut byte) {
            Ok(0) => return Err(GreetingError::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        *consumed += 1;
        if byte[0] == b'\n' {
            break;
        }
        if line.len() >= MAX_LINE {
            too_long = true;
            line.clear();
        }
        if !too_long {
            line.push(byte[0]);
        }
    }
    if too_long {
        return Ok(None);
    }
    Ok(String::from_utf8(line).ok())
}

/// Host side: greets with `nonce` and waits for the agent's answer,
/// skipping whatever else the channel holds. The caller bounds the time
/// (a read timeout on the stream).
pub fn host_greet(stream: &mut (impl Read + Write), nonce: u64) -> Result<(), GreetingError> {
    // The newline first ends any partial line an earlier host left.
    // Each line in one write: `write!` on an unbuffered stream makes a
    // system call of every piece, and the other side reads byte by byte.
    stream.write_all(format!("\n{HELLO} {PROTOCOL_VERSION} {nonce:016x}\n").as_bytes())?;
    stream.flush()?;
    let want = format!("{OK} {PROTOCOL_VERSION} {nonce:016x}");
    let mut consumed = 0;
    loop {
        if consumed > MAX_SKIPPED {
            return Err(GreetingError::Garbage(consumed));
        }
        let Some(line) = read_line(stream, &mut consumed)? else {
            continue;
        };
        if line == want {
            return Ok(());
        }
        if let Some(rest) = line.strip_prefix(VERSION)
            && let Ok(guest) = rest.trim().parse::<u32>()
        {
            return Err(GreetingError::Version {
                guest,
                host: PROTOCOL_VERSION,
            });
        }
    }
}

/// Guest side: waits for a host's greeting and answers it. Returns once
/// a host of this protocol greeted; a host of another protocol is told
/// this one's version, and the wait goes on.
pub fn agent_answer(stream: &mut (impl Read + Write)) -> Result<(), GreetingError> {
    let mut consumed = 0;
    loop {
        let Some(line) = read_line(stream, &mut consumed)? else {
            continue;
        };
        let Some(rest) = line.strip_prefix(HELLO) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(version), Some(nonce), None) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        if nonce.len() != 16 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        if version.parse::<u32>().ok() == Some(PROTOCOL_VERSION) {
            stream.write_all(format!("{OK} {PROTOCOL_VERSION} {nonce}\n").as_bytes())?;
            stream.flush()?;
            return Ok(());
        }
        stream.write_all(format!("{VERSION} {PROTOCOL_VERSION}\n").as_bytes())?;
        stream.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn host_and_agent_agree_across_stale_bytes() {
        let (mut host, mut guest) = UnixStream::pair().unwrap();
        let agent = std::thread::spawn(move || {
            // Stale bytes from an earlier host, and a too-long line.
            agent_answer(&mut guest).unwrap();
            guest
        });
        host.write_all(b"\x00\x01garbage").unwrap();
        host.write_all(&[b'x'; 500]).unwrap();
        host_greet(&mut host, 0xfeed).unwrap();
        drop(agent.join().unwrap());
    }

    #[test]
    fn the_host_skips_an_old_hosts_answer() {
        let (mut host, mut guest) = UnixStream::pair().unwrap();
        // An answer to an earlier nonce is still in the channel.
        guest
            .write_all(b"BANGER-AGENT-OK 1 0000000000000001\n")
            .unwrap();
        let agent = std::thread::spawn(move || agent_answer(&mut guest).unwrap());
        host_greet(&mut host, 2).unwrap();
        agent.join().unwrap();
    }

    #[test]
    fn another_version_is_refused_with_who_to_update() {
        let (mut host, mut guest) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let mut consumed = 0;
            while let Ok(line) = read_line(&mut guest, &mut consumed) {
                if line.is_some_and(|l| l.starts_with(HELLO)) {
                    guest.write_all(b"BANGER-AGENT-VERSION 7\n").unwrap();
                }
            }
        });
        let err = host_greet(&mut host, 3).unwrap_err();
        assert!(matches!(err, GreetingError::Version { guest: 7, host: 1 }));
        assert!(
            err.to_string().contains("update banger on the host"),
            "{err}"
        );
    }

    #[test]
    fn the_agent_tells_an_old_host_its_version() {
        let (mut host, mut guest) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let _ = agent_answer(&mut guest);
        });
        host.write_all(b"BANGER-AGENT-HELLO 0 0123456789abcdef\n")
            .unwrap();
        let mut consumed = 0;
        let line = read_line(&mut host, &mut consumed).unwrap().unwrap();
        assert_eq!(line, format!("BANGER-AGENT-VERSION {PROTOCOL_VERSION}"));
    }
}
