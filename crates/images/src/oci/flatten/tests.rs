use std::os::unix::fs::MetadataExt;

use super::*;

/// One entry of a hand-made layer; names are written raw, so `..` and
/// absolute names reach the flattener as a hostile layer would send them.
enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32, u32),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str),
}

fn header(kind: EntryType, name: &[u8], mode: u32, uid: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid.into());
    h.set_gid(uid.into());
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name);
    h.set_cksum();
    h
}

fn layer_tar(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::Dir(name, mode) => {
                let h = header(EntryType::Directory, name.as_bytes(), *mode, 0, 0);
                b.append(&h, io::empty()).unwrap();
            }
            E::File(name, data, mode, uid) if name.len() > 100 => {
                // A GNU long-name record, as real tools write one.
                let mut h = header(EntryType::Regular, b"", *mode, *uid, data.len() as u64);
                b.append_data(&mut h, name, *data).unwrap();
            }
            E::File(name, data, mode, uid) => {
                let h = header(
                    EntryType::Regular,
                    name.as_bytes(),
                    *mode,
                    *uid,
                    data.len() as u64,
                );
                b.append(&h, *data).unwrap();
            }
            E::Symlink(name, target) | E::Hardlink(name, target) => {
                let kind = if matches!(e, E::Symlink(..)) {
                    EntryType::Symlink
                } else {
                    EntryType::Link
                };
                let mut h = header(kind, name.as_bytes(), 0o777, 0, 0);
                let field = &mut h.as_old_mut().linkname;
                field.fill(0);
                field[..target.len()].copy_from_slice(target.as_bytes());
                h.set_cksum();
                b.append(&h, io::empty()).unwrap();
            }
            E::Char(name) => {
                let h = header(EntryType::Char, name.as_bytes(), 0o666, 0, 0);
                b.append(&h, io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

struct Blob {
    path: PathBuf,
    digest: String,
}

fn blob(dir: &Path, name: &str, bytes: &[u8]) -> Blob {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    Blob {
        path,
        digest: format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

const LIMITS: Limits = Limits {
    unpacked: 1 << 30,
    manifest: 4 << 20,
    tar_header: 1 << 20,
    layers: 128,
    layer_entries: 1_000_000,
    image_entries: 2_000_000,
};

const OPTIONS: FlattenOptions = FlattenOptions {
    limits: LIMITS,
    allow_devices: false,
};

fn with_limits(limits: Limits) -> FlattenOptions {
    FlattenOptions { limits, ..OPTIONS }
}

struct Fixture {
    dir: tempfile::TempDir,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    Fixture { dir, root }
}

fn apply(f: &mut Flattener, fx: &Fixture, name: &str, tar: &[u8]) -> Result<LayerStats, OciError> {
    let b = blob(fx.dir.path(), name, &gzip(tar));
    f.apply_layer(&b.digest, Compression::Gzip, &b.path)
}

#[test]
fn whiteouts_and_opaque_directories_hide_lower_layers_only() {
    let fx = fixture();
    let mut f = Flattener::new(&fx.root, OPTIONS);
    apply(
        &mut f,
        &fx,
        "l1",
        &layer_tar(&[
            E::Dir("a/", 0o755),
            E::File("a/x", b"x", 0o644, 0),
            E::File("a/y", b"y", 0o644, 0),
            E::Dir("b/", 0o755),
            E::File("b/old", b"1", 0o644, 0),
            E::Dir("b/sub/", 0o755),
            E::File("b/sub/deep", b"d", 0o644, 0),
            E::File("c", b"c", 0o644, 0),
        ]),
    )
    .unwrap();
    let stats = apply(
        &mut f,
        &fx,
        "l2",
        &layer_tar(&[
            E::File("a/.wh.x", b"", 0o644, 0),
            // A sibling written by this layer before the opaque marker stays.
            E::File("b/new", b"2", 0o644, 0),
            E::File("b/.wh..wh..opq", b"", 0o644, 0),
            E::File(".wh.c", b"", 0o644, 0),
            E::File(".wh.never-was", b"", 0o644, 0),
        ]),
    )
    .unwrap();
    assert_eq!(stats.whiteouts, 4);
    let r = &fx.root;
    assert!(!r.join("a/x").exists());
    assert_eq!(fs::read(r.join("a/y")).unwrap(), b"y");
    assert_eq!(fs::read(r.join("b/new")).unwrap(), b"2");
    assert!(!r.join("b/old").exists() && !r.join("b/sub").exists());
    assert!(!r.join("c").exists());
    assert!(!r.join("a/.wh.x").exists() && !r.join("b/.wh..wh..opq").exists());
}

#[test]
fn links_modes_owners_and_replacement() {
    let fx = fixture();
    let mut f = Flattener::new(&fx.root, OPTIONS);
    apply(
        &mut f,
        &fx,
        "l1",
        &layer_tar(&[
            E::Dir("./", 0o755),
            E::File("./bin/tool", b"#!/bin/sh\n", 0o4755, 1000),
            E::Hardlink("bin/alias", "./bin/tool"),
            E::Symlink("etc-passwd", "/etc/passwd"),
            E::Symlink("rel", "../../outside"),
            E::File("was-file", b"f", 0o600, 0),
            E::Dir("was-dir/", 0o700),
            E::File("was-dir/x", b"x", 0o600, 0),
        ]),
    )
    .unwrap();
    apply(
        &mut f,
        &fx,
        "l2",
        &layer_tar(&[
            E::Dir("was-file/", 0o750),
            E::File("was-dir", b"now a file", 0o640, 0),
            E::File("bin/tool", b"v2", 0o755, 0),
        ]),
    )
    .unwrap();
    let r = &fx.root;
    let alias = fs::metadata(r.join("bin/alias")).unwrap();
    assert_eq!(alias.mode() & 0o7777, 0o4755);
    assert_eq!((alias.uid(), alias.gid()), (1000, 1000));
    assert_eq!(alias.mtime(), 1_700_000_000);
    assert_eq!(
        alias.nlink(),
        1,
        "bin/tool was replaced, so the link is alone"
    );
    assert_eq!(fs::read(r.join("bin/alias")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(fs::read(r.join("bin/tool")).unwrap(), b"v2");
    assert_eq!(
        fs::read_link(r.join("etc-passwd")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::read_link(r.join("rel")).unwrap(),
        Path::new("../../outside")
    );
    assert!(fs::symlink_metadata(r.join("was-file")).unwrap().is_dir());
    assert_eq!(fs::read(r.join("was-dir")).unwrap(), b"now a file");
    assert_eq!(
        fs::metadata(r.join("was-file")).unwrap().mode() & 0o777,
        0o750
    );
}

#[test]
fn hard_links_in_one_layer_share_an_inode() {
    let fx = fixture();
    let mut f = Flattener::new(&fx.root, OPTIONS);
    apply(
        &mut f,
        &fx,
        "l1",
        &layer_tar(&[E::File("a", b"same", 0o644, 0), E::Hardlink("b", "a")]),
    )
    .unwrap();
    let (a, b) = (
        fs::metadata(fx.root.join("a")).unwrap(),
        fs::metadata(fx.root.join("b")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
}

#[test]
fn unsafe_entries_are_refused_and_name_layer_and_entry() {
    let long = "n".repeat(256);
    let cases: Vec<(Vec<E<'_>>, &str, &str)> = vec![
        (
            vec![E::File("../escape", b"x", 0o644, 0)],
            "../escape",
            "has a '..' component",
        ),
        (
            vec![E::File("a/../../escape", b"x", 0o644, 0)],
            "a/../../escape",
            "'..'",
        ),
        (
            vec![E::File("/etc/evil", b"x", 0o644, 0)],
            "/etc/evil",
            "is an absolute path",
        ),
        (
            vec![
                E::Symlink("evil", "/etc"),
                E::File("evil/passwd", b"x", 0o644, 0),
            ],
            "evil/passwd",
            "is under \"evil\", a symlink",
        ),
        (
            vec![
                E::Dir("real/", 0o755),
                E::Symlink("inner", "real"),
                E::File("inner/x", b"x", 0o644, 0),
            ],
            "inner/x",
            "a symlink",
        ),
        (
            vec![E::Symlink("up", "../.."), E::Hardlink("h", "up/etc/shadow")],
            "h",
            "a symlink",
        ),
        (vec![E::Hardlink("h", "../../etc/shadow")], "h", "'..'"),
        (vec![E::Hardlink("h", "/etc/shadow")], "h", "absolute"),
        (
            vec![E::Hardlink("h", "missing")],
            "h",
            "which no layer so far has",
        ),
        (vec![E::Char("dev/null")], "dev/null", "is a device node"),
        (
            vec![E::File(&long, b"x", 0o644, 0)],
            &long,
            "ext4 holds at most 255",
        ),
        (
            vec![E::File("f", b"x", 0o644, 0), E::File("f/x", b"x", 0o644, 0)],
            "f/x",
            "not a directory",
        ),
    ];
    for (entries, entry, why) in cases {
        let fx = fixture();
        let mut f = Flattener::new(&fx.root, OPTIONS);
        let b = blob(fx.dir.path(), "bad", &layer_tar(&entries));
        let err = f
            .apply_layer(&b.digest, Compression::None, &b.path)
            .expect_err(entry);
        let msg = err.to_string();
        assert!(
            msg.contains(&b.digest) && msg.contains(&format!("{entry:?}")) && msg.contains(why),
            "{entry}: {msg}"
        );
        assert!(!fx.dir.path().join("escape").exists());
    }
}

#[test]
fn device_nodes_only_when_allowed() {
    if !crate::debian::running_as_root() {
        return banger_testkit::skip("mknod needs root");
    }
    let fx = fixture();
    let mut f = Flattener::new(
        &fx.root,
        FlattenOptions {
            allow_devices: true,
            ..OPTIONS
        },
    );
    let b = blob(fx.dir.path(), "dev", &layer_tar(&[E::Char("dev/null")]));
    f.apply_layer(&b.digest, Compression::None, &b.path)
        .unwrap();
    use std::os::unix::fs::FileTypeExt;
    let m = fs::symlink_metadata(fx.root.join("dev/null")).unwrap();
    assert!(m.file_type().is_char_device());
}

#[test]
fn bombs_stop_at_the_limit_and_changed_blobs_are_caught() {
    let fx = fixture();
    let zeros = vec![0u8; 8 << 20];
    let tar = layer_tar(&[E::File("big", &zeros, 0o644, 0)]);
    let small = with_limits(Limits {
        unpacked: 1 << 20,
        ..LIMITS
    });
    let mut f = Flattener::new(&fx.root, small);
    let b = blob(fx.dir.path(), "bomb", &gzip(&tar));
    assert!(
        fs::metadata(&b.path).unwrap().len() < 100 << 10,
        "compresses well"
    );
    let err = f
        .apply_layer(&b.digest, Compression::Gzip, &b.path)
        .unwrap_err();
    assert!(matches!(err, OciError::TooBig { .. }), "{err}");
    assert!(err.to_string().contains("oci_max_unpacked"), "{err}");

    let fx = fixture();
    let mut f = Flattener::new(&fx.root, OPTIONS);
    let b = blob(
        fx.dir.path(),
        "ok",
        &gzip(&layer_tar(&[E::File("a", b"a", 0o644, 0)])),
    );
    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = f
        .apply_layer(&wrong, Compression::Gzip, &b.path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&wrong) && err.contains("changed on disk"),
        "{err}"
    );
}

#[test]
fn zstd_and_plain_layers() {
    let fx = fixture();
    let mut f = Flattener::new(&fx.root, OPTIONS);
    let tar = layer_tar(&[E::File("z", b"zstd", 0o644, 0)]);
    let z =
        ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest);
    let b = blob(fx.dir.path(), "z", &z);
    f.apply_layer(&b.digest, Compression::Zstd, &b.path)
        .unwrap();
    assert_eq!(fs::read(fx.root.join("z")).unwrap(), b"zstd");
    assert_eq!(
        Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
        Some(Compression::Gzip)
    );
    assert_eq!(Compression::from_media_type("application/x-foo"), None);
}

/// A header of type `kind` (PAX `x`, GNU `L`/`K`), ustar or GNU, that
/// claims `size` bytes follow.
fn record_header(kind: EntryType, gnu: bool, size: u64) -> tar::Header {
    let mut h = if gnu {
        tar::Header::new_gnu()
    } else {
        tar::Header::new_ustar()
    };
    h.set_entry_type(kind);
    h.set_path("././@LongLink").unwrap();
    h.set_mode(0o644);
    h.set_size(size);
    h.set_cksum();
    h
}

/// A layer whose first record claims 64 GiB, with `zeros` bytes of
/// zeros behind it, gzipped (a thousandfold smaller).
fn record_bomb(kind: EntryType, gnu: bool, zeros: usize) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(record_header(kind, gnu, 64 << 30).as_bytes())
        .unwrap();
    let block = vec![0u8; 1 << 20];
    for _ in 0..zeros / block.len() {
        enc.write_all(&block).unwrap();
    }
    enc.finish().unwrap()
}

#[test]
fn huge_header_records_are_refused_before_they_are_read() {
    // 256 MiB behind each: the tar crate alone would read all of it into
    // one Vec before returning an entry.
    for (kind, gnu) in [
        (EntryType::XHeader, false),
        (EntryType::GNULongName, true),
        (EntryType::GNULongLink, true),
    ] {
        let fx = fixture();
        let mut f = Flattener::new(&fx.root, OPTIONS);
        let b = blob(fx.dir.path(), "bomb", &record_bomb(kind, gnu, 256 << 20));
        let started = std::time::Instant::now();
        let err = f
            .apply_layer(&b.digest, Compression::Gzip, &b.path)
            .unwrap_err();
        assert!(
            matches!(err, OciError::TarHeader { entry: 1, .. }),
            "{kind:?}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&b.digest) && msg.contains("more than 1048576 bytes (oci_max_tar_header"),
            "{msg}"
        );
        // It stopped at the limit: 256 MiB would take much longer in a
        // debug build.
        assert!(f.read < 4 << 20, "{kind:?}: read {} bytes", f.read);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}

#[test]
fn a_sparse_map_counts_as_header_records() {
    // A GNU sparse file whose map goes on for extension block after
    // extension block: the tar crate keeps every block it lists.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(EntryType::GNUSparse);
    h.set_path("sparse").unwrap();
    h.set_mode(0o644);
    h.set_size(0);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.isextended[0] = 1;
    gnu.realsize = *b"77777777777\0";
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    let mut offset = 0u64;
    for _ in 0..8192 {
        let mut ext = [0u8; 512];
        for slot in 0..21 {
            offset += 2;
            let field = format!("{offset:011o}\0");
            ext[slot * 24..slot * 24 + 12].copy_from_slice(field.as_bytes());
            ext[slot * 24 + 12..slot * 24 + 24].copy_from_slice(b"00000000000\0");
        }
        ext[504] = 1;
        tar.extend_from_slice(&ext);
    }
    let fx = fixture();
    let small = with_limits(Limits {
        tar_header: 64 << 10,
        ..LIMITS
    });
    let mut f = Flattener::new(&fx.root, small);
    let err = apply(&mut f, &fx, "sparse", &tar).unwrap_err();
    assert!(matches!(err, OciError::TarHeader { .. }), "{err}");
}

#[test]
fn long_names_and_pax_records_within_the_limit_are_read() {
    let fx = fixture();
    // Just over a 4 KiB path's records, the smallest limit a long name
    // fits in.
    let small = with_limits(Limits {
        tar_header: 8 << 10,
        ..LIMITS
    });
    let mut f = Flattener::new(&fx.root, small);
    let long = format!("{}/{}", "d".repeat(200), "f".repeat(200));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(EntryType::Regular, b"", 0o644, 0, 3);
    b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
    let h = header(EntryType::Regular, b"pax", 0o600, 0, 2 << 20);
    let xattr = ("SCHILY.xattr.user.note", &b"kept"[..]);
    b.append_pax_extensions([xattr]).unwrap();
    // The data of an entry is no header: 2 MiB, over the header limit.
    b.append(&h, &vec![7u8; 2 << 20][..]).unwrap();
    let stats = apply(&mut f, &fx, "long", &b.into_inner().unwrap()).unwrap();
    assert_eq!(stats.entries, 2);
    assert_eq!(fs::read(fx.root.join(&long)).unwrap(), b"abc");
    assert_eq!(fs::metadata(fx.root.join("pax")).unwrap().len(), 2 << 20);
}

#[test]
fn entries_are_capped_per_layer_and_per_image() {
    let three = layer_tar(&[
        E::Dir("d/", 0o755),
        E::File("d/a", b"a", 0o644, 0),
        E::File("d/b", b"b", 0o644, 0),
    ]);
    let limits = Limits {
        layer_entries: 3,
        image_entries: 5,
        ..LIMITS
    };
    let fx = fixture();
    let mut f = Flattener::new(
        &fx.root,
        with_limits(Limits {
            image_entries: 100,
            ..limits
        }),
    );
    assert_eq!(apply(&mut f, &fx, "l1", &three).unwrap().entries, 3);
    let four = layer_tar(&[
        E::File("a", b"a", 0o644, 0),
        E::File("b", b"b", 0o644, 0),
        E::File("c", b"c", 0o644, 0),
        E::File("d", b"d", 0o644, 0),
    ]);
    let err = apply(&mut f, &fx, "l2", &four).unwrap_err().to_string();
    assert!(
        err.contains("more than 3 entries in one layer (oci_max_layer_entries in config.toml)"),
        "{err}"
    );
    let fx = fixture();
    let mut f = Flattener::new(&fx.root, with_limits(limits));
    apply(&mut f, &fx, "l1", &three).unwrap();
    let err = apply(&mut f, &fx, "l2", &three).unwrap_err().to_string();
    assert!(
        err.contains("more than 5 entries in the image (oci_max_image_entries in config.toml)"),
        "{err}"
    );
}
