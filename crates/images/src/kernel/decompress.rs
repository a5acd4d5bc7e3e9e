//! The compressed kernel payload: which format its magic says, and the
//! decompression, all in Rust so extraction needs no host tools.

use std::fmt;
use std::io::Read;

use super::KernelError;

/// Largest vmlinux we accept; Debian's cloud kernel is about 53 MiB.
/// Guards against a corrupt size trailer asking for gigabytes.
const MAX_VMLINUX: usize = 512 << 20;

/// The LZ4 *legacy* frame magic (`lz4 -l`), as the kernel build writes it.
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
/// Each LZ4 legacy block decompresses to at most 8 MiB.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// The compression formats a bzImage payload can use (CONFIG_KERNEL_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Bzip2,
    Lzma,
    Xz,
    Lzo,
    Lz4,
    Zstd,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Lzma => "lzma",
            Compression::Xz => "xz",
            Compression::Lzo => "lzo",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        })
    }
}

/// Names the format from the payload's first bytes.
pub fn detect(payload: &[u8]) -> Result<Compression, KernelError> {
    const MAGICS: &[(&[u8], Compression)] = &[
        (&[0x1f, 0x8b], Compression::Gzip),
        (b"BZh", Compression::Bzip2),
        (&[0x5d, 0x00, 0x00], Compression::Lzma),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Compression::Xz),
        (&[0x89, b'L', b'Z', b'O'], Compression::Lzo),
        (&[0x02, 0x21, 0x4c, 0x18], Compression::Lz4),
        (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
    ];
    MAGICS
        .iter()
        .find(|(magic, _)| payload.starts_with(magic))
        .map(|(_, format)| *format)
        .ok_or_else(|| KernelError::UnknownCompression {
            magic: payload
                .iter()
                .take(6)
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
        })
}

/// Decompresses a bzImage payload and checks the result against the size
/// the kernel build appended.
///
/// Every payload ends with the uncompressed size as a little-endian u32:
/// the build appends it for all formats but gzip, whose own trailer (ISIZE)
/// is the same number. The stream proper is everything before it for the
/// formats that had it appended.
pub fn decompress(payload: &[u8], format: Compression) -> Result<Vec<u8>, KernelError> {
    if payload.len() < 8 {
        return Err(KernelError::Truncated(format!(
            "the {format} payload is only {} bytes",
            payload.len()
        )));
    }
    let (stream, trailer) = payload.split_at(payload.len() - 4);
    let expected = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]) as usize;
    if expected > MAX_VMLINUX {
        return Err(KernelError::Decompress {
            format,
            reason: format!(
                "the size trailer claims {expected} bytes, more than the {MAX_VMLINUX} a kernel may have (corrupt or truncated payload)"
            ),
        });
    }
    let fail = |reason: String| KernelError::Decompress { format, reason };
    let limit = expected as u64 + 1;
    let mut out = Vec::with_capacity(expected);
    let read = |reader: &mut dyn Read, out: &mut Vec<u8>| {
        reader
            .take(limit)
            .read_to_end(out)
            .map(|_| ())
            .map_err(|e| fail(e.to_string()))
    };
    match format {
        Compression::Gzip => read(&mut flate2::read::GzDecoder::new(payload), &mut out)?,
        Compression::Bzip2 => read(&mut bzip2::read::BzDecoder::new(stream), &mut out)?,
        Compression::Xz => read(&mut liblzma::read::XzDecoder::new(stream), &mut out)?,
        Compression::Lzma => {
            let decoder = liblzma::stream::Stream::new_lzma_decoder(u64::MAX)
                .map_err(|e| fail(e.to_string()))?;
            read(
                &mut liblzma::read::XzDecoder::new_stream(stream, decoder),
                &mut out,
            )?
        }
        Compression::Zstd => {
            let mut decoder =
                ruzstd::decoding::StreamingDecoder::new(stream).map_err(|e| fail(e.to_string()))?;
            read(&mut decoder, &mut out)?
        }
        Compression::Lz4 => lz4_legacy(stream, &mut out, expected).map_err(fail)?,
        Compression::Lzo => {
            return Err(KernelError::UnsupportedCompression {
                format,
                hint: "rebuild the kernel with another CONFIG_KERNEL_* compression",
            });
        }
    }
    if out.len() != expected {
        return Err(KernelError::SizeMismatch {
            format,
            expected,
            actual: out.len(),
        });
    }
    Ok(out)
}

/// The LZ4 legacy frame: the magic, then blocks of `[u32 LE compressed
/// size][LZ4 block]`, each decompressing to at most 8 MiB. A repeated magic
/// starts a new frame (concatenated `lz4 -l` output).
fn lz4_legacy(stream: &[u8], out: &mut Vec<u8>, expected: usize) -> Result<(), String> {
    let mut pos = 4; // after the magic, which detect() has checked
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    while pos < stream.len() {
        let Some(header) = stream.get(pos..pos + 4) else {
            return Err(format!("truncated block header at byte {pos}"));
        };
        let size = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        pos += 4;
        if size == LZ4_LEGACY_MAGIC {
            continue;
        }
        let size = size as usize;
        let Some(compressed) = stream.get(pos..pos.saturating_add(size)) else {
            return Err(format!(
                "block at byte {} claims {size} bytes but only {} remain (truncated?)",
                pos - 4,
                stream.len() - pos
            ));
        };
        let n = lz4_flex::block::decompress_into(compressed, &mut block)
            .map_err(|e| format!("block at byte {}: {e}", pos - 4))?;
        if out.len() + n > expected {
            return Err(format!(
                "decompresses to more than the {expected} bytes the size trailer declares"
            ));
        }
        out.extend_from_slice(&block[..n]);
        pos += size;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    /// Compresses `data` the way the kernel build does for `format`,
    /// including the appended size trailer.
    pub(crate) fn kernel_compress(data: &[u8], format: Compression) -> Vec<u8> {
        let mut out = match format {
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                e.write_all(data).unwrap();
                return e.finish().unwrap();
            }
            Compression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Lzma => {
                let opts = liblzma::stream::LzmaOptions::new_preset(6).unwrap();
                let stream = liblzma::stream::Stream::new_lzma_encoder(&opts).unwrap();
                let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => {
                ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
            }
            Compression::Lz4 => {
                let mut out = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
                for chunk in data.chunks(LZ4_LEGACY_BLOCK) {
                    let block = lz4_flex::block::compress(chunk);
                    out.extend_from_slice(&(block.len() as u32).to_le_bytes());
                    out.extend_from_slice(&block);
                }
                out
            }
            Compression::Lzo => panic!("no lzo encoder"),
        };
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    const ALL: [Compression; 6] = [
        Compression::Gzip,
        Compression::Bzip2,
        Compression::Lzma,
        Compression::Xz,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_format_round_trips_with_its_magic_detected() {
        let data = sample();
        for format in ALL {
            let payload = kernel_compress(&data, format);
            assert_eq!(detect(&payload).unwrap(), format);
            let out = decompress(&payload, format).unwrap_or_else(|e| panic!("{format}: {e}"));
            assert!(out == data, "{format}: output differs");
        }
    }

    #[test]
    fn lz4_legacy_spans_several_blocks_and_frames() {
        let data: Vec<u8> = (0..(LZ4_LEGACY_BLOCK + 1000))
            .map(|i| (i % 7) as u8)
            .collect();
        let mut payload = kernel_compress(&data, Compression::Lz4);
        // A second frame: strip the trailer, append magic + one more block.
        payload.truncate(payload.len() - 4);
        payload.extend_from_slice(&LZ4_LEGACY_MAGIC.to_le_bytes());
        let block = lz4_flex::block::compress(b"tail");
        payload.extend_from_slice(&(block.len() as u32).to_le_bytes());
        payload.extend_from_slice(&block);
        payload.extend_from_slice(&((data.len() + 4) as u32).to_le_bytes());
        let out = decompress(&payload, Compression::Lz4).unwrap();
        assert_eq!(out.len(), data.len() + 4);
        assert_eq!(&out[data.len()..], b"tail");
    }

    #[test]
    fn truncated_payloads_fail_with_a_reason_in_every_format() {
        let data = sample();
        for format in ALL {
            let payload = kernel_compress(&data, format);
            // Cut the stream in half but keep a plausible size trailer.
            let mut cut = payload[..payload.len() / 2].to_vec();
            cut.extend_from_slice(&(data.len() as u32).to_le_bytes());
            let err = decompress(&cut, format).unwrap_err().to_string();
            assert!(err.contains(&format.to_string()), "{format}: {err}");
        }
    }

    #[test]
    fn a_wrong_size_trailer_is_a_mismatch() {
        let mut payload = kernel_compress(b"hello kernel, hello kernel", Compression::Zstd);
        let n = payload.len();
        payload[n - 4..].copy_from_slice(&99u32.to_le_bytes());
        let err = decompress(&payload, Compression::Zstd).unwrap_err();
        assert!(
            matches!(
                err,
                KernelError::SizeMismatch {
                    expected: 99,
                    actual: 26,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_and_unsupported_magics_are_named() {
        let err = detect(b"\x00\x01\x02\x03garbage").unwrap_err().to_string();
        assert!(err.contains("00 01 02 03"), "{err}");
        let err = decompress(b"\x89LZO\x00\x00\x00\x00\x10\x00\x00\x00", Compression::Lzo)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lzo"), "{err}");
    }

    #[test]
    fn a_huge_size_trailer_is_refused_before_decompressing() {
        let mut payload = kernel_compress(b"x", Compression::Xz);
        let n = payload.len();
        payload[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = decompress(&payload, Compression::Xz)
            .unwrap_err()
            .to_string();
        assert!(err.contains("claims"), "{err}");
    }
}
