//! `banger image pull` of OCI images against a real registry on loopback
//! (Debian's docker-registry, distribution v2), with images the test
//! builds itself: regular layers made by umoci from real trees (owners,
//! modes, hard links, symlinks, an xattr, a deletion umoci turns into a
//! whiteout), and hand-written tar layers (an opaque directory, hostile
//! entries) added with `umoci raw add-layer`, all pushed with skopeo. The
//! flattened result is read back out of the ext4 with debugfs, no mounting.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use banger_model::{ArtifactRole, ImageRecord};
use common::registry::{Layout, Registry, run};
use common::*;

const TOOLS: &[&str] = &[
    "docker-registry",
    "skopeo",
    "umoci",
    "debugfs",
    "mkfs.ext4",
    "patchelf",
];
/// The daemon's guest tools cache, below its cache folder.
const GUEST_TOOLS_CACHE: &str = "guest-tools";

/// One raw tar entry: name, type, and content (or link target).
type RawEntry<'a> = (&'a str, tar::EntryType, &'a str);

/// A tar whose names are written raw (hostile layers need `..` and `/`).
fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, content_or_target) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(if *kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let field = &mut h.as_old_mut().name;
        field[..name.len()].copy_from_slice(name.as_bytes());
        let data = match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let link = &mut h.as_old_mut().linkname;
                link[..content_or_target.len()].copy_from_slice(content_or_target.as_bytes());
                &[][..]
            }
            _ => content_or_target.as_bytes(),
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `debugfs stat` facts: (mode, uid, gid, links, inode).
fn stat(image: &Path, path: &str) -> (String, u32, u32, u32, u64) {
    let text = debugfs(image, &format!("stat {path}"));
    let field = |name: &str| -> String {
        let at = text
            .find(&format!("{name}:"))
            .unwrap_or_else(|| panic!("no {name} for {path}: {text}"));
        text[at + name.len() + 1..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    (
        field("Mode"),
        field("User").parse().unwrap(),
        field("Group").parse().unwrap(),
        field("Links").parse().unwrap(),
        field("Inode").parse().unwrap(),
    )
}

struct Setup {
    home: TestHome,
    init: PathBuf,
}

impl Setup {
    fn new() -> Option<Self> {
        if !banger_testkit::have_tools(TOOLS) {
            return None;
        }
        if !banger_testkit::running_as_root() {
            banger_testkit::skip("OCI pulls need root (bangerd keeps the layers' owners)");
            return None;
        }
        // The kernel OCI images boot: Debian's, fetched into the test
        // cache here, before any test enters a namespace.
        banger_testkit::debian_kernel()?;
        let home = TestHome::new();
        let cache = home.root().join("cache");
        fs::create_dir_all(&cache).unwrap();
        std::os::unix::fs::symlink(
            banger_testkit::test_cache().join("debian-kernel"),
            cache.join("kernel-packages"),
        )
        .unwrap();
        // Every pull keeps banger's guest tools with its image: the shared
        // folder spares each test's daemon the two downloads, and the
        // first pull of a run fills it (it needs nothing filled before).
        let tools = banger_testkit::test_cache().join("guest-tools");
        fs::create_dir_all(&tools).unwrap();
        std::os::unix::fs::symlink(&tools, cache.join(GUEST_TOOLS_CACHE)).unwrap();
        let init = banger_testkit::static_guest_binaries().init.clone();
        Some(Self { home, init })
    }

    fn banger(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = self.home.banger(args);
        cmd.env("BANGER_INIT_BIN", &self.init)
            .timeout(Duration::from_secs(120));
        cmd
    }

    fn pull(&self, reference: &str, name: &str) -> std::process::Output {
        self.banger(&["image", "pull", reference, "--name", name])
            .output()
            .unwrap()
    }

    fn image(&self, name: &str) -> ImageRecord {
        let out = self
            .banger(&["image", "show", name, "--json"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("image show {name}: {e}: {}", stderr(&out)))
    }

    /// An image read straight from the store (the daemon is stopped).
    fn image_in(&self, store: &banger_store::Store, name: &str) -> ImageRecord {
        store.get_image(name).unwrap().expect(name)
    }

    fn rootfs(&self, name: &str) -> PathBuf {
        self.home
            .state()
            .join("images")
            .join(name)
            .join("rootfs.ext4")
    }

    fn names(&self) -> Vec<String> {
        let out = self.banger(&["image", "list", "--json"]).output().unwrap();
        let images: Vec<ImageRecord> = serde_json::from_slice(&out.stdout).unwrap();
        images.into_iter().map(|i| i.name).collect()
    }
}

/// The image the tests flatten: three layers over an empty base.
fn build_good(layout: &Layout) {
    layout.create("good");
    layout.layer("good", |root| {
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("gone")).unwrap();
        fs::create_dir_all(root.join("opq/sub")).unwrap();
        fs::write(root.join("etc/greeting"), "hello\n").unwrap();
        std::os::unix::fs::chown(root.join("etc/greeting"), Some(1000), Some(1001)).unwrap();
        fs::set_permissions(root.join("etc/greeting"), fs::Permissions::from_mode(0o640)).unwrap();
        xattr::set(root.join("etc/greeting"), "user.banger", b"kept").unwrap();
        fs::write(root.join("bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
        fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(root.join("bin/tool"), root.join("bin/alias")).unwrap();
        std::os::unix::fs::symlink("/etc/greeting", root.join("greeting-link")).unwrap();
        fs::write(root.join("gone/file"), "x").unwrap();
        fs::write(root.join("opq/old"), "old").unwrap();
        fs::write(root.join("opq/sub/deep"), "deep").unwrap();
    });
    // umoci writes the deletion as a whiteout (`.wh.gone`).
    layout.layer("good", |root| {
        fs::remove_dir_all(root.join("gone")).unwrap();
        fs::write(root.join("etc/second"), "two\n").unwrap();
    });
    // An opaque directory, written by hand (umoci never emits one).
    let tar = raw_tar(&[
        ("opq/", tar::EntryType::Directory, ""),
        ("opq/.wh..wh..opq", tar::EntryType::Regular, ""),
        ("opq/new", tar::EntryType::Regular, "new\n"),
    ]);
    layout.raw_layer("good", "good", &tar);
    layout.config(
        "good",
        &[
            "--config.entrypoint",
            "/bin/tool",
            "--config.cmd",
            "--flag",
            "--config.env",
            "GREETING=hello",
            "--config.workingdir",
            "/etc",
            "--config.user",
            "1000:1001",
        ],
    );
}

#[test]
fn pull_flattens_caches_and_refuses_what_is_unsafe() {
    let Some(s) = Setup::new() else {
        return;
    };
    let registry = Registry::start();
    let layout = Layout::new();
    build_good(&layout);
    layout.push("good", &registry, "test/good");
    let reference = format!("{}/test/good:good", registry.host());

    // --- the flattened tree, file by file ---
    let out = s.pull(&format!("oci://{reference}"), "good");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("image good is ready"),
        "{}",
        stdout(&out)
    );
    let image = s.image("good");
    let oci = image.oci.clone().expect("an OCI image records its config");
    assert_eq!(oci.reference, reference);
    assert!(image.source == format!("oci:{reference}@{}", oci.manifest_digest));
    assert_eq!(oci.layers.len(), 3);
    assert_eq!(oci.entrypoint, ["/bin/tool"]);
    assert_eq!(oci.cmd, ["--flag"]);
    assert!(
        oci.env.contains(&"GREETING=hello".to_string()),
        "{:?}",
        oci.env
    );
    assert_eq!(oci.workdir.as_deref(), Some("/etc"));
    assert_eq!(oci.user.as_deref(), Some("1000:1001"));
    let rootfs = s.rootfs("good");
    let (sha, _) = banger_images::digest::sha256_file(&rootfs).unwrap();
    assert_eq!(image.artifact(ArtifactRole::Rootfs).unwrap().sha256, sha);
    assert_eq!(
        fs::metadata(&rootfs).unwrap().permissions().mode() & 0o777,
        0o444
    );
    assert_eq!(debugfs(&rootfs, "cat /etc/greeting"), "hello\n");
    assert_eq!(debugfs(&rootfs, "cat /etc/second"), "two\n");
    assert_eq!(debugfs(&rootfs, "cat /opq/new"), "new\n");
    let (mode, uid, gid, _, _) = stat(&rootfs, "/etc/greeting");
    assert_eq!((mode.as_str(), uid, gid), ("0640", 1000, 1001));
    assert!(
        debugfs(&rootfs, "ea_list /etc/greeting").contains("user.banger"),
        "the xattr is kept: {}",
        debugfs(&rootfs, "ea_list /etc/greeting")
    );
    let (tool_mode, _, _, tool_links, tool_ino) = stat(&rootfs, "/bin/tool");
    let (_, _, _, _, alias_ino) = stat(&rootfs, "/bin/alias");
    assert_eq!(tool_mode, "04755");
    assert_eq!(
        (tool_links, tool_ino),
        (2, alias_ino),
        "a hard link stays one"
    );
    assert!(
        debugfs(&rootfs, "stat /greeting-link").contains("Fast link dest: \"/etc/greeting\""),
        "{}",
        debugfs(&rootfs, "stat /greeting-link")
    );
    let root = debugfs(&rootfs, "ls -p /");
    assert!(!root.contains("/gone/"), "whited out: {root}");
    assert!(!root.contains(".wh."), "no whiteout files: {root}");
    let opq = debugfs(&rootfs, "ls -p /opq");
    assert!(
        opq.contains("/new/") && !opq.contains("/old/") && !opq.contains("/sub/"),
        "{opq}"
    );
    let show = s.banger(&["image", "show", "good"]).output().unwrap();
    for needle in [
        &oci.manifest_digest,
        &oci.layers[2].digest,
        "entrypoint: /bin/tool",
    ] {
        assert!(
            stdout(&show).contains(needle),
            "{needle}: {}",
            stdout(&show)
        );
    }

    // --- cache reuse: a second pull downloads no blob ---
    let gets = |digest: &str| registry.blob_gets("test/good", digest);
    assert!(oci.layers.iter().all(|l| gets(&l.digest) == 1));
    let out = s.pull(&reference, "again");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("3 of 3 layers were already in the cache"),
        "{}",
        stderr(&out)
    );
    assert!(
        oci.layers.iter().all(|l| gets(&l.digest) == 1),
        "nothing re-fetched"
    );

    // --- hostile layers: refused, nothing recorded or left behind ---
    let hostile: &[(&str, Vec<RawEntry<'_>>, &str, &str)] = &[
        (
            "dotdot",
            vec![("../escape", tar::EntryType::Regular, "x")],
            "../escape",
            "has a '..' component",
        ),
        (
            "absolute",
            vec![("/etc/cron.d/evil", tar::EntryType::Regular, "x")],
            "/etc/cron.d/evil",
            "is an absolute path",
        ),
        (
            "symlink",
            vec![
                ("evil", tar::EntryType::Symlink, "/etc"),
                (
                    "evil/passwd",
                    tar::EntryType::Regular,
                    "root::0:0::/:/bin/sh\n",
                ),
            ],
            "evil/passwd",
            "is under \"evil\", a symlink",
        ),
        (
            "device",
            vec![("dev/sda", tar::EntryType::Block, "")],
            "dev/sda",
            "is a device node (pull with --allow-devices",
        ),
    ];
    for (tag, entries, entry, why) in hostile {
        layout.raw_layer("good", tag, &raw_tar(entries));
        layout.push(tag, &registry, "test/bad");
        let out = s.pull(&format!("{}/test/bad:{tag}", registry.host()), tag);
        assert_eq!(out.status.code(), Some(1), "{tag}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("entry {entry:?} {why}")) && err.contains("layer sha256:"),
            "{tag}: {err}"
        );
        assert!(!s.home.state().join("images").join(tag).exists(), "{tag}");
    }
    assert!(!Path::new("/etc/cron.d/evil").exists());
    assert_eq!(s.names(), ["again", "good"]);
    let out = s
        .banger(&[
            "image",
            "pull",
            &format!("{}/test/bad:device", registry.host()),
        ])
        .args(["--name", "device", "--allow-devices"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(debugfs(&s.rootfs("device"), "stat /dev/sda").contains("Type: block"));

    // --- a blob that does not match its digest ---
    let fresh = Layout::new();
    fresh.create("v1");
    fresh.layer("v1", |root| {
        fs::write(root.join("payload"), "original\n").unwrap()
    });
    fresh.push("v1", &registry, "test/corrupt");
    let index: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(fresh.dir.path().join("oci/index.json")).unwrap())
            .unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(
            fresh
                .dir
                .path()
                .join("oci/blobs/sha256")
                .join(manifest_digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let data = registry.blob_data(&layer);
    let mut bytes = fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&data, bytes).unwrap();
    let out = s.pull(&format!("{}/test/corrupt:v1", registry.host()), "corrupt");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "layer {layer}: the registry sent content whose digest is"
        )),
        "{err}"
    );
    assert!(!s.home.state().join("images/corrupt").exists());
    let cached = s.home.root().join("cache/oci/blobs/sha256");
    assert!(!cached.join(layer.trim_start_matches("sha256:")).exists());
    assert_eq!(s.names(), ["again", "device", "good"]);

    // --- the unpacked-size limit comes from the config ---
    s.banger(&["daemon", "stop"]).assert().success();
    s.home.write_config("oci_max_unpacked = \"4K\"\n");
    let out = s.pull(&reference, "limited");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unpacks to more than 4096 bytes (oci_max_unpacked"),
        "{}",
        stderr(&out)
    );
    assert!(!s.home.state().join("images/limited").exists());
}

/// The peak resident memory of process `pid`, in KiB (`VmHWM`, which
/// `clear_refs` resets).
fn peak_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM for {pid}: {status}"))
}

/// A layer whose first record is a PAX extended header claiming 64 GiB,
/// followed by `zeros` bytes of zeros (which gzip packs a thousandfold):
/// a tar reader that reads the record whole keeps all of them in memory.
fn pax_bomb(path: &Path, zeros: u64) {
    use std::io::{Read, Write};
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path("PaxHeaders/bomb").unwrap();
    h.set_mode(0o644);
    h.set_size(64 << 30);
    h.set_cksum();
    let mut file = std::io::BufWriter::new(fs::File::create(path).unwrap());
    file.write_all(h.as_bytes()).unwrap();
    std::io::copy(&mut std::io::repeat(0).take(zeros), &mut file).unwrap();
    file.flush().unwrap();
}

/// What a hostile registry or image can make a pull spend is bounded
/// before it is spent: a tar header record claiming gigabytes, more
/// entries or layers than allowed, blobs and documents bigger than the
/// limits. Each is refused with the layer (or document) and the config
/// key named, and leaves no image folder (staging tree included) behind.
#[test]
fn pulls_are_bounded_before_memory_or_disk_is_spent() {
    let Some(s) = Setup::new() else {
        return;
    };
    let registry = Registry::start();
    let layout = Layout::new();
    let host = registry.host();
    let no_image = |name: &str| {
        assert!(
            !s.home.state().join("images").join(name).exists(),
            "{name}: its folder and staging tree are removed"
        );
    };

    // A small image first: the kernel and the guest tools are then in
    // place, and the daemon's peak memory has its baseline.
    layout.create("base");
    layout.layer("base", |root| {
        fs::write(root.join("hello"), "hi\n").unwrap()
    });
    layout.push("base", &registry, "test/base");
    let out = s.pull(&format!("{host}/test/base:base"), "base");
    assert!(out.status.success(), "{}", stderr(&out));

    // --- a PAX header record claiming 64 GiB, with 512 MiB behind it ---
    let bomb = layout.dir.path().join("pax-bomb.tar");
    pax_bomb(&bomb, 512 << 20);
    layout.create("paxbomb");
    layout.raw_layer_file("paxbomb", "paxbomb", &bomb);
    layout.push("paxbomb", &registry, "test/bomb");
    let pid = s.home.daemon_pid().expect("the daemon runs");
    // The high-water mark, reset to what the daemon holds now (the first
    // pull may have gone higher).
    fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = peak_kib(pid);
    let started = std::time::Instant::now();
    let out = s.pull(&format!("{host}/test/bomb:paxbomb"), "paxbomb");
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("layer {}:", layout.layer_digest("paxbomb")))
            && err.contains("more than 1048576 bytes (oci_max_tar_header"),
        "{err}"
    );
    assert_eq!(s.home.daemon_pid(), Some(pid), "the same daemon");
    let grown = peak_kib(pid).saturating_sub(before);
    println!("PAX bomb refused in {took:?}, bangerd's peak memory grew by {grown} KiB");
    assert!(
        grown < 128 << 10,
        "the daemon's peak memory grew by {grown} KiB"
    );
    assert!(took < Duration::from_secs(30), "refused in {took:?}");
    no_image("paxbomb");

    // --- limits from the config, low enough to test ---
    s.banger(&["daemon", "stop"]).assert().success();
    s.home.write_config(
        "oci_max_unpacked = \"1M\"\noci_max_manifest = \"2K\"\noci_max_layers = 2\n\
         oci_max_layer_entries = 4\noci_max_image_entries = 6\n",
    );
    let file = |name: &'static str| (name, tar::EntryType::Regular, "x");

    // More entries in one layer than oci_max_layer_entries.
    layout.create("wide");
    let five = [file("a"), file("b"), file("c"), file("d"), file("e")];
    layout.raw_layer("wide", "wide", &raw_tar(&five));
    layout.push("wide", &registry, "test/limits");
    let out = s.pull(&format!("{host}/test/limits:wide"), "wide");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("layer {}:", layout.layer_digest("wide")))
            && err.contains("more than 4 entries in one layer (oci_max_layer_entries"),
        "{err}"
    );
    no_image("wide");

    // Each layer within it, the image over oci_max_image_entries.
    layout.create("deep");
    let four = [file("a"), file("b"), file("c"), file("d")];
    layout.raw_layer("deep", "deep", &raw_tar(&four));
    layout.raw_layer("deep", "deep", &raw_tar(&four));
    layout.push("deep", &registry, "test/limits");
    let out = s.pull(&format!("{host}/test/limits:deep"), "deep");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("layer {}:", layout.layer_digest("deep")))
            && err.contains("more than 6 entries in the image (oci_max_image_entries"),
        "{err}"
    );
    no_image("deep");

    // More layers than oci_max_layers: nothing is downloaded, the config
    // included.
    layout.create("tall");
    for name in ["a", "b", "c"] {
        layout.raw_layer("tall", "tall", &raw_tar(&[file(name)]));
    }
    layout.push("tall", &registry, "test/limits");
    let out = s.pull(&format!("{host}/test/limits:tall"), "tall");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("has 3 layers, more than 2 (oci_max_layers"),
        "{err}"
    );
    let gets = |digest: &str| registry.blob_gets("test/limits", digest);
    assert_eq!(gets(&layout.config_digest("tall")), 0);
    for layer in layout.layer_digests("tall") {
        assert_eq!(gets(&layer), 0, "{layer}");
    }
    no_image("tall");

    // A layer declaring more bytes than the image may unpack to: refused
    // before its download starts (2 MiB that gzip cannot shrink).
    layout.create("big");
    layout.layer("big", |root| {
        let mut noise = vec![0u8; 2 << 20];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for b in &mut noise {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        fs::write(root.join("noise"), noise).unwrap();
    });
    layout.push("big", &registry, "test/limits");
    let big = layout.layer_digest("big");
    let out = s.pull(&format!("{host}/test/limits:big"), "big");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("layer {big}:"))
            && err.contains("more than the 1048576 bytes (oci_max_unpacked"),
        "{err}"
    );
    assert_eq!(gets(&big), 0, "no GET of the layer");
    no_image("big");

    // A registry that sends more than the manifest declares: the
    // download stops there, and nothing is cached.
    layout.create("longer");
    layout.raw_layer("longer", "longer", &raw_tar(&[file("a")]));
    layout.push("longer", &registry, "test/limits");
    let longer = layout.layer_digest("longer");
    let data = registry.blob_data(&longer);
    let mut bytes = fs::read(&data).unwrap();
    bytes.extend_from_slice(&[0u8; 64 << 10]);
    fs::write(&data, bytes).unwrap();
    let out = s.pull(&format!("{host}/test/limits:longer"), "longer");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("layer {longer}: the registry sent more than the")),
        "{err}"
    );
    let cached = s.home.root().join("cache/oci/blobs/sha256");
    assert!(!cached.join(longer.trim_start_matches("sha256:")).exists());
    no_image("longer");

    // A manifest over oci_max_manifest (a 3 KiB annotation).
    layout.create("fatmanifest");
    layout.raw_layer("fatmanifest", "fatmanifest", &raw_tar(&[file("a")]));
    let note = format!("note={}", "n".repeat(3 << 10));
    layout.config("fatmanifest", &["--manifest.annotation", &note]);
    layout.push("fatmanifest", &registry, "test/limits");
    let out = s.pull(&format!("{host}/test/limits:fatmanifest"), "fatmanifest");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("the manifest of") && err.contains("more than 2048 bytes (oci_max_manifest"),
        "{err}"
    );
    assert_eq!(gets(&layout.config_digest("fatmanifest")), 0);
    no_image("fatmanifest");

    // An image config over oci_max_manifest (a 3 KiB variable): refused
    // by its declared size, never fetched.
    layout.create("fatconfig");
    layout.raw_layer("fatconfig", "fatconfig", &raw_tar(&[file("a")]));
    let env = format!("BIG={}", "b".repeat(3 << 10));
    layout.config("fatconfig", &["--config.env", &env]);
    layout.push("fatconfig", &registry, "test/limits");
    let config = layout.config_digest("fatconfig");
    let out = s.pull(&format!("{host}/test/limits:fatconfig"), "fatconfig");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("config {config} is"))
            && err.contains("more than 2048 bytes (oci_max_manifest"),
        "{err}"
    );
    assert_eq!(gets(&config), 0, "no GET of the config");
    no_image("fatconfig");

    // Within every limit, an image is pulled as before.
    layout.create("fine");
    layout.raw_layer("fine", "fine", &raw_tar(&four));
    layout.raw_layer("fine", "fine", &raw_tar(&[file("e"), file("f")]));
    layout.push("fine", &registry, "test/limits");
    let out = s.pull(&format!("{host}/test/limits:fine"), "fine");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.names(), ["base", "fine"]);
}

#[test]
fn concurrent_pulls_download_each_layer_once() {
    let Some(s) = Setup::new() else {
        return;
    };
    let registry = Registry::start();
    let layout = Layout::new();
    layout.create("v1");
    for i in 0..3 {
        layout.layer("v1", |root| {
            fs::write(root.join(format!("file{i}")), vec![i as u8; 2 << 20]).unwrap();
        });
    }
    layout.push("v1", &registry, "test/multi");
    let reference = format!("{}/test/multi:v1", registry.host());

    let spawn = |name: &str| {
        let mut cmd = Command::new(TestHome::banger_bin());
        cmd.args(["image", "pull", &reference, "--name", name])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", s.home.root().join("home"))
            .env("BANGER_HOME", s.home.root())
            // No VMs of the daemon's own in the background (templates).
            .env("BANGER_VM_TEMPLATES", "0")
            .env("BANGER_INIT_BIN", &s.init)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    // Start the daemon first so both clients talk to the same one.
    s.banger(&["image", "list"]).assert().success();
    // Two names at once: both succeed, each layer is fetched once.
    let (a, b) = (spawn("one"), spawn("two"));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let oci = s.image("one").oci.unwrap();
    for layer in &oci.layers {
        assert_eq!(
            registry.blob_gets("test/multi", &layer.digest),
            1,
            "{}",
            layer.digest
        );
    }
    assert_eq!(
        debugfs(&s.rootfs("one"), "ls -p /"),
        debugfs(&s.rootfs("two"), "ls -p /")
    );

    // One name twice at once: one image, and a clear error for the other.
    let (a, b) = (spawn("same"), spawn("same"));
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let ok = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 1, "exactly one wins");
    let loser = outs.iter().find(|o| !o.status.success()).unwrap();
    assert!(
        stderr(loser).contains("image same already exists"),
        "{}",
        stderr(loser)
    );
    assert_eq!(s.image("same").state, banger_model::ObjectState::Ready);
    assert_eq!(s.names(), ["one", "same", "two"]);

    // A daemon killed mid-pull leaves a `building` record and a half-made
    // folder (staging tree included): the next daemon removes both.
    s.banger(&["daemon", "stop"]).assert().success();
    let store = banger_store::Store::open(&s.home.state().join("banger.db")).unwrap();
    store
        .insert_image(&ImageRecord {
            name: "crashed".into(),
            kernel: s.image_in(&store, "one").kernel,
            source: format!("oci:{}@{}", oci.reference, oci.manifest_digest),
            state: banger_model::ObjectState::Building,
            artifacts: vec![],
            created_at: 0,
            oci: Some(oci.clone()),
            facts: None,
        })
        .unwrap();
    drop(store);
    let staging = s.home.state().join("images/crashed/.rootfs/usr/bin");
    fs::create_dir_all(&staging).unwrap();
    fs::write(staging.join("half"), "x").unwrap();
    assert_eq!(s.names(), ["one", "same", "two"], "reconcile dropped it");
    assert!(!s.home.state().join("images/crashed").exists());
}

#[test]
fn bad_references_are_refused_up_front() {
    let home = TestHome::new();
    let banger = |args: &[&str]| {
        let mut cmd = home.banger(args);
        cmd.env("BANGER_INIT_BIN", "/nonexistent");
        cmd
    };
    let out = banger(&["image", "pull", "Ubuntu:24.04"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("repository \"library/Ubuntu\" is not valid"),
        "{}",
        stderr(&out)
    );
    let out = banger(&["image", "pull", "bare-word"]).output().unwrap();
    assert!(
        stderr(&out).contains("'banger image pull oci://docker.io/library/bare-word'"),
        "{}",
        stderr(&out)
    );
    let out = banger(&["image", "pull", "debian-bookworm", "--insecure"])
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("apply to OCI references"),
        "{}",
        stderr(&out)
    );
    let out = banger(&["image", "pull", "oci://x/y@sha256:12"])
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("is not sha256: and 64 lowercase hex"),
        "{}",
        stderr(&out)
    );
    let out = banger(&["image", "list", "--json"]).output().unwrap();
    assert_eq!(stdout(&out).trim(), "[]");
}

/// The whole path of an OCI image: a Debian (minbase) root filesystem
/// pushed to the loopback registry as one layer, pulled by banger outside
/// the namespace (the registry is on the host's loopback), then booted in
/// banger-init's minimal mode by a bangerd in a network namespace of the
/// test's own: `vm run --image REF` finds the pulled image by its
/// reference, runs a command with the image's environment through
/// banger's sshd and returns its status; `vm stop` powers the guest off
/// through the ACPI power button.
#[test]
fn a_pulled_debian_image_boots_runs_a_command_and_stops() {
    let Some(setup) = Setup::new() else { return };
    if !banger_testkit::have_tools(&["qemu-system-x86_64", "ssh", "ip", "patchelf"]) {
        return;
    }
    let Some(rootfs_tar) = banger_testkit::debian_minbase_tar() else {
        return;
    };
    let registry = Registry::start();
    let layout = Layout::new();
    layout.create("deb12");
    layout.raw_layer_file("deb12", "deb12", &rootfs_tar);
    layout.config(
        "deb12",
        &[
            "--config.env",
            "PATH=/opt/image/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--config.env",
            "GREETING=from the image config",
            "--config.cmd",
            "bash",
        ],
    );
    layout.push("deb12", &registry, "test/sandbox");
    let reference = format!("{}/test/sandbox:deb12", registry.host());
    let pulled = setup
        .banger(&["image", "pull", &reference])
        .timeout(Duration::from_secs(600))
        .output()
        .unwrap();
    assert!(pulled.status.success(), "pull: {}", stderr(&pulled));
    let tools = setup.image("sandbox-deb12");
    assert!(
        tools.artifact(ArtifactRole::GuestTools).is_some(),
        "the image keeps its guest tools: {tools:?}"
    );
    setup.banger(&["daemon", "stop"]).assert().success();
    // The VM is made with no mirror in reach and no tools cache at all:
    // everything it needs came with the image.
    fs::remove_file(setup.home.root().join("cache").join(GUEST_TOOLS_CACHE)).unwrap();

    let Some(ns) = Netns::new("banger-oci") else {
        return;
    };
    let b = |args: &[&str]| setup.home.banger_in(&ns, args, &[]);
    let out = b(&[
        "vm",
        "run",
        "--image",
        &reference,
        "--name",
        "oci",
        "--timings",
        "--",
        "sh",
        "-c",
        "cat /etc/debian_version; echo \"$GREETING\"; echo \"$PATH\"; \
         cat /proc/1/comm; id -un; pwd; exit 3",
    ]);
    let (out_text, err_text) = (stdout(&out), stderr(&out));
    if let Some(at) = err_text.find("timings:") {
        println!("vm run --image {}", &err_text[at..]);
    }
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout: {out_text}\nstderr: {err_text}\nconsole: {}",
        stdout(&b(&["vm", "logs", "oci"]))
    );
    assert!(
        err_text.contains("using image sandbox-deb12"),
        "found by its reference: {err_text}"
    );
    // Minimal mode has the agent too (banger-init's supervisor starts it):
    // the command went through it, with the image's environment.
    assert!(!err_text.contains("using ssh"), "{err_text}");
    let lines: Vec<&str> = out_text.lines().collect();
    assert!(lines[0].starts_with("12."), "Debian 12: {out_text}");
    assert_eq!(
        lines[1..],
        [
            "from the image config",
            "/opt/image/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "init",
            "root",
            "/root",
        ],
        "stderr: {err_text}"
    );

    // banger's own sshd serves the same environment.
    let out = b(&[
        "vm",
        "ssh",
        "--ssh",
        "oci",
        "--",
        "sh",
        "-c",
        "echo \"$GREETING\"",
    ]);
    assert_eq!(stdout(&out), "from the image config\n", "{}", stderr(&out));

    let stopped = b(&["vm", "stop", "oci"]);
    assert!(stopped.status.success(), "vm stop: {}", stderr(&stopped));
    let logs = stdout(&b(&["vm", "logs", "oci"]));
    assert!(
        logs.contains("banger-init supervising: SIGPWR: powering off"),
        "stopped through the power button, not killed: {logs}"
    );
    let deleted = b(&["vm", "delete", "oci"]);
    assert!(deleted.status.success(), "vm delete: {}", stderr(&deleted));
}

/// A pull that cannot fetch banger's guest tools (here: a daemon in a
/// namespace with no route to apt's mirror, and nothing cached) fails,
/// saying so, and records no image: an image that could not boot without
/// the network is never made.
#[test]
fn a_pull_without_the_guest_tools_fails_and_records_no_image() {
    let Some(setup) = Setup::new() else { return };
    let Some(ns) = Netns::new("banger-oci-tools") else {
        return;
    };
    // This test's own, empty tools cache, in place of the shared one.
    let cache = setup.home.root().join("cache").join(GUEST_TOOLS_CACHE);
    fs::remove_file(&cache).unwrap();
    let registry = Registry::start_in(Some(&ns));
    let layout = Layout::new();
    layout.create("tiny");
    layout.layer("tiny", |root| {
        fs::write(root.join("hello"), "hi\n").unwrap();
    });
    layout.push_in(Some(&ns), "tiny", &registry, "test/tiny");
    let reference = format!("{}/test/tiny:tiny", registry.host());

    let b = |args: &[&str]| setup.home.banger_in(&ns, args, &[]);
    let out = b(&["image", "pull", &reference, "--name", "tiny"]);
    assert_eq!(out.status.code(), Some(1), "stdout: {}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("guest tools: cannot download openssh-server"),
        "names what could not be fetched: {err}"
    );
    assert_eq!(
        registry.blob_gets("test/tiny", &layout.layer_digest("tiny")),
        0,
        "no layer is downloaded for an image that cannot be made"
    );
    let list = b(&["image", "list", "--json"]);
    assert_eq!(stdout(&list).trim(), "[]", "{}", stderr(&list));
    assert!(
        !setup.home.state().join("images/tiny").exists(),
        "nothing left in the state folder"
    );
}

/// `banger ARGS` in `ns`, spawned with its output to files in `dir`.
fn spawn_in(setup: &Setup, ns: &Netns, dir: &Path, tag: &str, args: &[&str]) -> Child {
    let out = fs::File::create(dir.join(format!("{tag}.out"))).unwrap();
    let err = fs::File::create(dir.join(format!("{tag}.err"))).unwrap();
    setup
        .home
        .banger_in_command(ns, args)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn banger")
}

/// Waits for `child` up to `secs`, killing it then; its exit code and
/// stderr (from `dir/TAG.err`).
fn finish(mut child: Child, dir: &Path, tag: &str, secs: u64) -> (Option<i32>, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let err = fs::read_to_string(dir.join(format!("{tag}.err"))).unwrap_or_default();
    (status.code(), err)
}

/// The parallel first use of an OCI reference, in a daemon: three `vm run
/// --rm --image REF` at once against a reference never pulled, by a
/// bangerd in a namespace of the test's own with the registry on its
/// loopback. One of them pulls (one download phase, each layer fetched
/// once, one image), the others wait for it; all three boot and run; afterwards nothing of the three VMs is
/// left (TAPs, leases, processes, folders, nft rules, sockets).
#[test]
fn parallel_first_uses_of_a_reference_pull_once_and_leave_nothing() {
    let Some(setup) = Setup::new() else { return };
    if !banger_testkit::have_tools(&["qemu-system-x86_64", "ip", "nft"]) {
        return;
    }
    let Some(rootfs_tar) = banger_testkit::debian_minbase_tar() else {
        return;
    };
    // The daemon in the namespace cannot reach Debian's mirror: banger's
    // guest tools are fetched into the shared cache here, first (nothing
    // when an earlier test did).
    let tools = banger_testkit::test_cache().join(GUEST_TOOLS_CACHE);
    banger_images::guest_tools::ensure(&tools).expect("fetch banger's guest tools");
    let Some(ns) = Netns::new("banger-oci-first") else {
        return;
    };
    // Three small guests fit at once.
    setup
        .home
        .write_config("[vm_defaults]\nvcpu = 1\nmemory_mib = 512\n");
    let registry = Registry::start_in(Some(&ns));
    let layout = Layout::new();
    layout.create("deb12");
    layout.raw_layer_file("deb12", "deb12", &rootfs_tar);
    layout.push_in(Some(&ns), "deb12", &registry, "test/first");
    let reference = format!("{}/test/first:deb12", registry.host());
    let layer = layout.layer_digest("deb12");

    // One daemon for all three.
    ok(
        setup.home.banger_in(&ns, &["vm", "list"], &[]),
        "start the daemon",
    );
    let before = Census::take(&setup.home, &ns, &[registry.pid()]);
    let logs = tempfile::tempdir().unwrap();
    let runs: Vec<(String, Child)> = (0..3)
        .map(|i| {
            let tag = format!("run{i}");
            let child = spawn_in(
                &setup,
                &ns,
                logs.path(),
                &tag,
                &["vm", "run", "--rm", "--image", &reference, "--", "true"],
            );
            (tag, child)
        })
        .collect();
    let started = std::time::Instant::now();
    let errs: Vec<String> = runs
        .into_iter()
        .map(|(tag, child)| {
            let (code, err) = finish(child, logs.path(), &tag, 900);
            assert_eq!(code, Some(0), "{tag}: {err}");
            println!("{tag} done after {:?}", started.elapsed());
            err
        })
        .collect();

    // One pull: one client went through the download, the others waited
    // for it (or found it made, had the scheduler run them late).
    let downloads = errs
        .iter()
        .filter(|e| e.contains("fetching 1 layers"))
        .count();
    assert_eq!(downloads, 1, "one download phase: {errs:#?}");
    println!("{}", errs.join("\n---\n"));
    for err in &errs {
        assert!(
            err.contains("fetching 1 layers")
                || err.contains("is being pulled by another command: waiting for it")
                || err.contains("pulled earlier from"),
            "{err}"
        );
    }
    assert_eq!(
        registry.blob_gets("test/first", &layer),
        1,
        "the layer is downloaded once"
    );
    let out = setup.home.banger_in(&ns, &["image", "list", "--json"], &[]);
    let images: Vec<ImageRecord> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["first-deb12"], "one image");
    assert_eq!(images[0].state, banger_model::ObjectState::Ready);

    assert_no_leaks(
        &setup.home,
        &ns,
        &[registry.pid()],
        &before,
        "after three vm run --rm",
    );
    let _ = setup.home.banger_in(&ns, &["daemon", "stop"], &[]);
}

/// bangerd killed (SIGKILL, `BANGER_CRASH_AT`) at each journaled step of
/// an OCI pull: the CLI fails in one line, and the next daemon's
/// reconcile leaves no image row, no image folder (staging tree
/// included) and no half download; a pull afterwards works.
#[test]
fn a_daemon_killed_during_a_pull_leaves_no_half_made_image() {
    let Some(s) = Setup::new() else {
        return;
    };
    let registry = Registry::start();
    let layout = Layout::new();
    layout.create("v1");
    layout.layer("v1", |root| {
        fs::write(root.join("hello"), "hi\n").unwrap();
    });
    layout.push("v1", &registry, "test/crash");
    let reference = format!("{}/test/crash:v1", registry.host());
    let images = s.home.state().join("images");
    let tmp = s.home.root().join("cache/oci/tmp");
    for step in ["image:recorded", "pull:fetched", "image:filled"] {
        let _ = s.banger(&["daemon", "stop"]).output();
        let out = s
            .banger(&["image", "pull", &reference, "--name", "crashed"])
            .env("BANGER_CRASH_AT", step)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{step}: {err}");
        assert!(
            err.trim()
                .lines()
                .last()
                .unwrap_or("")
                .starts_with("error: "),
            "{step}: one error line last: {err}"
        );
        let log = fs::read_to_string(s.home.log()).unwrap_or_default();
        assert!(
            log.lines()
                .any(|l| l.contains("killing bangerd") && l.contains(step)),
            "{step}: bangerd died there: {log}"
        );
        // The next command starts a daemon without the crash point.
        assert_eq!(s.names(), Vec::<String>::new(), "{step}: no image row");
        assert!(!images.join("crashed").exists(), "{step}: no image folder");
        let downloads = fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
        assert_eq!(downloads, 0, "{step}: no half download");
    }
    let out = s.pull(&reference, "crashed");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.names(), ["crashed"]);
}

/// A loop-mounted ext4 of `mib` MiB at `point`, unmounted on drop after
/// the daemon of the home at `home` is stopped (it holds the store open).
struct SmallFs {
    point: PathBuf,
    home: PathBuf,
}

impl SmallFs {
    fn mount(point: &Path, home: &Path, mib: u64) -> Option<Self> {
        let image = home.join("small.ext4");
        let file = fs::File::create(&image).unwrap();
        file.set_len(mib << 20).unwrap();
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        fs::create_dir_all(point).unwrap();
        let mounted = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(point)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            banger_testkit::skip("cannot loop-mount a small filesystem here");
            return None;
        }
        fs::set_permissions(point, fs::Permissions::from_mode(0o700)).unwrap();
        Some(Self {
            point: point.to_path_buf(),
            home: home.to_path_buf(),
        })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new(TestHome::banger_bin())
            .args(["daemon", "stop"])
            .env("BANGER_HOME", &self.home)
            .output();
        // `daemon stop` may return before the process has let go of the
        // store: a few tries, then a lazy unmount.
        for _ in 0..20 {
            let done = Command::new("umount").arg(&self.point).status();
            if done.is_ok_and(|s| s.success()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.point).status();
    }
}

/// The state filesystem full (a 160 MiB ext4 mounted there: the kernel
/// and a tiny image fit, little else): `vm create` is refused before
/// anything is made, and a pull whose image does not fit fails with one
/// error line saying so, leaving no image row, folder or staging tree.
#[test]
fn a_full_state_filesystem_fails_a_pull_and_a_create_in_one_line() {
    let Some(s) = Setup::new() else {
        return;
    };
    let Some(_small) = SmallFs::mount(&s.home.state(), s.home.root(), 160) else {
        return;
    };
    let registry = Registry::start();
    let layout = Layout::new();
    layout.create("tiny");
    layout.layer("tiny", |root| {
        fs::write(root.join("hello"), "hi\n").unwrap();
    });
    layout.push("tiny", &registry, "test/full");
    let out = s.pull(&format!("{}/test/full:tiny", registry.host()), "tiny");
    assert!(
        out.status.success(),
        "the tiny image fits: {}",
        stderr(&out)
    );

    // A VM's disks cannot fit: refused up front, nothing made.
    let out = s
        .banger(&["vm", "create", "--image", "tiny", "--name", "full"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "not enough space in {}",
            s.home.state().join("vms").display()
        )),
        "{err}"
    );
    assert!(!s.home.state().join("vms/full").exists());

    // 200 MiB that do not compress: the layer downloads (the blob cache
    // is elsewhere), its tree does not fit.
    layout.create("big");
    layout.layer("big", |root| {
        let mut noise = fs::File::create(root.join("noise")).unwrap();
        std::io::copy(
            &mut std::io::Read::take(fs::File::open("/dev/urandom").unwrap(), 200 << 20),
            &mut noise,
        )
        .unwrap();
    });
    layout.push("big", &registry, "test/full");
    let out = s.pull(&format!("{}/test/full:big", registry.host()), "big");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    let last = err.trim().lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: ") && last.contains("No space left on device"),
        "one line saying the disk is full: {err}"
    );
    assert_eq!(s.names(), ["tiny"], "no half-made image");
    let left: Vec<_> = fs::read_dir(s.home.state().join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["tiny"], "no folder or staging tree left");
    let out = s.banger(&["kernel", "list", "--json"]).output().unwrap();
    let kernels: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(kernels.iter().all(|k| k["state"] == "ready"), "{kernels:?}");
}
