//! Tar streams in and out, with the `tar` crate on a blocking thread and
//! bounded channels between it and the HTTP/2 body.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, lchown};
use std::path::{Component, Path, PathBuf};

use banger_agent_proto::{FrameKind, MAX_PAYLOAD, TarDone, TarInSpec, TarOutRequest};
use bytes::{Buf, Bytes};
use http::StatusCode;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::body::{ChannelBody, FrameReader, encode, encode_json};
use crate::server::{Reply, error, json, stream};
use crate::users;

/// Chunks of a tar-in stream between the body and the unpacker.
const TAR_IN_CHUNKS: usize = 4;

/// A failure and the status it answers with.
struct Failed(StatusCode, String);

impl Failed {
    fn bad(why: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, why.into())
    }
    fn io(what: impl std::fmt::Display, e: io::Error) -> Self {
        Self(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}"))
    }
}

pub async fn tar_in(body: Incoming) -> Reply {
    let mut frames = FrameReader::new(body);
    let spec: TarInSpec = match frames.next().await {
        Ok(Some(f)) if f.kind == FrameKind::Spec => match f.parse() {
            Ok(spec) => spec,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("tar-in spec: {e}")),
        },
        Ok(Some(f)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("a tar-in stream opens with a Spec frame, not {:?}", f.kind),
            );
        }
        Ok(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the tar-in stream ended before its Spec frame",
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let (tx, rx) = mpsc::channel(TAR_IN_CHUNKS);
    let unpacking = tokio::task::spawn_blocking(move || {
        unpack(
            &spec,
            ChannelReader {
                rx,
                cur: Bytes::new(),
            },
        )
    });
    // The body's frames into the unpacker. When it stops reading (the
    // archive's end, or an error), its side of the channel is dropped
    // and the sends fail: nothing more is read from the host.
    let fed: Result<(), String> = loop {
        let (item, outcome) = match frames.next().await {
            Ok(Some(f)) if f.kind == FrameKind::Data => (Ok(Bytes::from(f.payload)), None),
            Ok(Some(f)) if f.kind == FrameKind::End => break Ok(()),
            Ok(Some(f)) if f.kind == FrameKind::Error => {
                let why = format!("the host gave up: {}", String::from_utf8_lossy(&f.payload));
                (Err(io::Error::other(why.clone())), Some(why))
            }
            Ok(Some(f)) => {
                let why = format!("unexpected {:?} frame in a tar-in stream", f.kind);
                (Err(io::Error::other(why.clone())), Some(why))
            }
            Ok(None) => {
                let why = "the tar-in stream ended without its End frame".to_owned();
                (Err(io::Error::other(why.clone())), Some(why))
            }
            Err(e) => {
                let why = e.to_string();
                (Err(io::Error::other(why.clone())), Some(why))
            }
        };
        if tx.send(item).await.is_err() {
            break Ok(());
        }
        if let Some(why) = outcome {
            break Err(why);
        }
    };
    drop(tx);
    let unpacked = unpacking.await;
    match (fed, unpacked) {
        (Err(why), _) => error(StatusCode::BAD_REQUEST, why),
        (Ok(()), Ok(Ok(done))) => json(StatusCode::OK, &done),
        (Ok(()), Ok(Err(Failed(status, why)))) => error(status, why),
        (Ok(()), Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The blocking side of a tar-in.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.cur = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

fn unpack(spec: &TarInSpec, reader: impl Read) -> Result<TarDone, Failed> {
    let dir = Path::new(&spec.dir);
    if !dir.is_absolute() {
        return Err(Failed::bad(format!(
            "tar-in directory {:?} is not an absolute path",
            spec.dir
        )));
    }
    let owner = match &spec.user {
        Some(name) => {
            let user = users::lookup(Some(name)).map_err(Failed::bad)?;
            Some((user.uid, user.gid))
        }
        None => None,
    };
    if fs::symlink_metadata(dir).is_err() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| Failed::io(format_args!("creating {}", dir.display()), e))?;
        if let Some((uid, gid)) = owner {
            lchown(dir, Some(uid), Some(gid))
                .map_err(|e| Failed::io(format_args!("chown {}", dir.display()), e))?;
        }
    }
    if !dir.is_dir() {
        return Err(Failed::bad(format!("{} is not a directory", dir.display())));
    }
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(false);
    archive.set_overwrite(true);
    let mut done = TarDone::default();
    let reading = |e| Failed::bad(format!("reading the tar stream: {e}"));
    for entry in archive.entries().map_err(reading)? {
        let mut entry = entry.map_err(reading)?;
        let path = entry.path().map_err(reading)?.into_owned();
        let size = entry.size();
        let unpacked = entry.unpack_in(dir).map_err(|e| {
            Failed::io(
                format_args!("unpacking {} into {}", path.display(), dir.display()),
                e,
            )
        })?;
        if !unpacked {
            return Err(Failed::bad(format!(
                "refusing tar entry {}: it leads outside {}",
                path.display(),
                dir.display()
            )));
        }
        if let Some((uid, gid)) = owner {
            let target = inside(dir, &path);
            lchown(&target, Some(uid), Some(gid))
                .map_err(|e| Failed::io(format_args!("chown {}", target.display()), e))?;
        }
        done.entries += 1;
        done.bytes += size;
    }
    Ok(done)
}

/// Where `unpack_in` put an entry: `dir` joined with the entry's normal
/// components (it drops `/` and `.`, and refuses `..`).
fn inside(dir: &Path, entry: &Path) -> PathBuf {
    let mut out = dir.to_path_buf();
    for part in entry.components() {
        if let Component::Normal(name) = part {
            out.push(name);
        }
    }
    out
}

pub async fn tar_out(req: TarOutRequest) -> Reply {
    let path = PathBuf::from(&req.path);
    if !path.is_absolute() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("tar-out path {:?} is not an absolute path", req.path),
        );
    }
    let checked = path.clone();
    match tokio::task::spawn_blocking(move || fs::symlink_metadata(&checked)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
            return error(
                StatusCode::NOT_FOUND,
                format!("{} does not exist in the guest", path.display()),
            );
        }
        Ok(Err(e)) => {
            return error(StatusCode::BAD_REQUEST, format!("{}: {e}", path.display()));
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
    let (tx, body) = ChannelBody::channel();
    tokio::task::spawn_blocking(move || {
        let mut out = FrameWriter {
            tx,
            buf: Vec::with_capacity(MAX_PAYLOAD),
        };
        let last = match archive(&path, &mut out).and_then(|done| out.flush().map(|()| done)) {
            Ok(done) => encode_json(FrameKind::End, &done),
            Err(e) => {
                let why = format!("archiving {}: {e}", path.display());
                eprintln!("banger-agent: tar-out: {why}");
                encode(FrameKind::Error, why.as_bytes())
            }
        };
        let _ = out.tx.blocking_send(last);
    });
    stream(body)
}

/// Writes `path` as a tar under its own name (a directory with
/// everything under it, symlinks as symlinks); what it wrote.
fn archive(path: &Path, out: &mut FrameWriter) -> io::Result<TarDone> {
    let name = match path.file_name() {
        Some(name) => PathBuf::from(name),
        None => PathBuf::from("."),
    };
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut done = TarDone::default();
    // Depth first, without recursion: a deep tree must not exhaust the
    // blocking thread's stack.
    let mut todo = vec![(path.to_path_buf(), name)];
    while let Some((fs_path, name)) = todo.pop() {
        let meta = fs::symlink_metadata(&fs_path)?;
        let kind = meta.file_type();
        if std::os::unix::fs::FileTypeExt::is_socket(&kind) {
            continue;
        }
        builder.append_path_with_name(&fs_path, &name)?;
        done.entries += 1;
        if kind.is_file() {
            done.bytes += meta.len();
        }
        if kind.is_dir() {
            let mut children: Vec<_> = fs::read_dir(&fs_path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?;
            // Reversed, so they come off the stack in name order.
            children.sort_unstable_by(|a, b| b.cmp(a));
            for child in children {
                todo.push((fs_path.join(&child), name.join(&child)));
            }
        }
    }
    builder.finish()?;
    Ok(done)
}

/// Cuts what the tar builder writes into `Data` frames on a bounded
/// channel (blocking: it runs on a blocking thread).
struct FrameWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl Write for FrameWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_PAYLOAD - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_PAYLOAD {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let frame = encode(FrameKind::Data, &self.buf);
        self.buf.clear();
        self.tx
            .blocking_send(frame)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the host stopped reading"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_land_where_unpack_in_puts_them() {
        let dir = Path::new("/work");
        assert_eq!(inside(dir, Path::new("./a/b")), Path::new("/work/a/b"));
        assert_eq!(inside(dir, Path::new("/a")), Path::new("/work/a"));
        assert_eq!(inside(dir, Path::new(".")), Path::new("/work"));
    }

    #[test]
    fn parent_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // set_path refuses "..": write the name by hand.
        header.as_old_mut().name[..9].copy_from_slice(b"../escape");
        header.set_cksum();
        tar.append(&header, &b"x"[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        let spec = TarInSpec {
            dir: dir.path().join("in").display().to_string(),
            user: None,
        };
        let Err(Failed(status, why)) = unpack(&spec, &bytes[..]) else {
            panic!("unpacked ../escape");
        };
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(why.contains("leads outside"), "{why}");
        assert!(!dir.path().join("escape").exists());
    }
}
