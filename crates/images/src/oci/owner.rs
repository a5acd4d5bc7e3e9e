//! Flattening when bangerd is not root. The [`Flattener`] sets each
//! entry's owner to the image's own ids (`lchown`), which only root can;
//! so, as the owner, the same code runs in a helper process that is root
//! of the owner's user namespace ([`crate::userns`]): the image's ids
//! land on the owner (for 0) and its subordinate ids, `mkfs.ext4 -d` in
//! the same namespace reads them back as the image's, and the checks on
//! hostile layers are the ones root runs, with less power behind them.
//!
//! Why a process rather than a thread: a multi-threaded process cannot
//! enter a user namespace, and forking the daemon to run Rust code in the
//! child is unsound. The helper is the caller's own binary run with
//! [`HELPER_FLAG`] (bangerd; a test binary in tests), which calls
//! [`helper_main`]. The job goes in on stdin as JSON; each layer's
//! outcome comes back as one line on stdout, marked, so a test
//! harness's own output around it is ignored.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use serde::{Deserialize, Serialize};

use super::flatten::{Compression, FlattenOptions, Flattener, LayerStats};
use super::{OciError, TreeOwner};
use crate::host_command::{self, CommandError};

/// The argument that makes bangerd the flattening helper.
pub const HELPER_FLAG: &str = "--flatten-helper";

/// Prefix of the helper's report lines on stdout.
const REPORT: &str = "banger-flatten ";

/// The most a job may be: far more than 128 layers' paths and digests.
const MAX_JOB: u64 = 16 << 20;

/// One layer to apply: its digest, compression and cached blob.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobLayer {
    pub digest: String,
    pub compression: Compression,
    pub blob: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Job {
    root: PathBuf,
    options: FlattenOptions,
    layers: Vec<JobLayer>,
}

#[derive(Serialize, Deserialize)]
enum Report {
    Layer(LayerStats),
    Failed(Failure),
}

/// An [`OciError`] across the process boundary: its message, and what the
/// caller acts on (a corrupt cache entry is evicted).
#[derive(Serialize, Deserialize)]
struct Failure {
    message: String,
    cache_corrupt: Option<(String, PathBuf, String)>,
}

impl From<OciError> for Failure {
    fn from(e: OciError) -> Self {
        match e {
            OciError::CacheCorrupt {
                layer,
                path,
                actual,
            } => Failure {
                message: String::new(),
                cache_corrupt: Some((layer, path, actual)),
            },
            other => Failure {
                message: other.to_string(),
                cache_corrupt: None,
            },
        }
    }
}

impl From<Failure> for OciError {
    fn from(f: Failure) -> Self {
        match f.cache_corrupt {
            Some((layer, path, actual)) => OciError::CacheCorrupt {
                layer,
                path,
                actual,
            },
            None => OciError::Flatten(f.message),
        }
    }
}

/// Applies `layers` in order into `root` as the tree's `owner`, calling
/// `on_layer` with each layer's index and stats: in this process as root,
/// else in `helper` (a command that ends in [`helper_main`]) as root of
/// the owner's namespace.
pub fn flatten_layers(
    owner: &TreeOwner,
    helper: Command,
    root: &Path,
    options: FlattenOptions,
    layers: &[JobLayer],
    on_layer: &mut dyn FnMut(usize, &LayerStats),
) -> Result<(), OciError> {
    let ns = match owner {
        TreeOwner::Root => {
            let mut flattener = Flattener::new(root, options);
            for (i, layer) in layers.iter().enumerate() {
                let stats = flattener.apply_layer(&layer.digest, layer.compression, &layer.blob)?;
                on_layer(i, &stats);
            }
            return Ok(());
        }
        TreeOwner::Namespace(ns) => ns,
    };
    if options.allow_devices {
        return Err(OciError::DevicesNeedRoot);
    }
    let job = serde_json::to_vec(&Job {
        root: root.to_owned(),
        options,
        layers: layers.to_vec(),
    })
    .map_err(|e| OciError::Flatten(format!("cannot encode the flatten job: {e}")))?;
    let ran = ns.run_in(helper, |command| run_helper(command, &job, on_layer))?;
    match ran {
        Ok(None) => Ok(()),
        Ok(Some(failure)) => Err(failure.into()),
        Err(e) => Err(OciError::Flatten(format!(
            "the flattening helper failed: {e}"
        ))),
    }
}

/// Spawns the helper, hands it the job and reads its reports; `Some` with
/// what it said failed.
fn run_helper(
    command: &mut Command,
    job: &[u8],
    on_layer: &mut dyn FnMut(usize, &LayerStats),
) -> Result<Option<Failure>, CommandError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CommandError::Spawn {
            program: program.clone(),
            source,
        })?;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (failure, stderr) = std::thread::scope(|scope| {
        // Read beside stdout, so a chatty stderr cannot fill its pipe
        // and stall the helper.
        let stderr = scope.spawn(move || {
            let mut text = String::new();
            if let Some(mut e) = stderr {
                let _ = e.read_to_string(&mut text);
            }
            text
        });
        if let Some(mut stdin) = stdin {
            // A helper that died early is reported by its exit below.
            let _ = stdin.write_all(job);
        }
        let mut failure = None;
        let mut layers = 0;
        for line in stdout
            .map(BufReader::new)
            .into_iter()
            .flat_map(|r| r.lines())
        {
            let Ok(line) = line else { break };
            // Anywhere in the line: a test harness prints a test's name
            // without a newline before the test's own output.
            let Some((_, report)) = line.split_once(REPORT) else {
                continue;
            };
            match serde_json::from_str(report) {
                Ok(Report::Layer(stats)) => {
                    on_layer(layers, &stats);
                    layers += 1;
                }
                Ok(Report::Failed(f)) => failure = Some(f),
                Err(_) => {}
            }
        }
        (failure, stderr.join().unwrap_or_default())
    });
    let status = child.wait().map_err(|source| CommandError::Spawn {
        program: program.clone(),
        source,
    })?;
    match failure {
        Some(f) => Ok(Some(f)),
        None if status.success() => Ok(None),
        None => Err(CommandError::Failed {
            program,
            status: status.to_string(),
            stderr_tail: host_command::tail(&stderr),
        }),
    }
}

/// The helper's side: reads the job from stdin, flattens, reports each
/// layer on stdout. Run as root of the owner's namespace by
/// [`flatten_layers`]; what it refuses is refused as under real root.
pub fn helper_main() -> ExitCode {
    let report = |r: &Report| {
        let line = serde_json::to_string(r).unwrap_or_default();
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{REPORT}{line}");
        let _ = out.flush();
    };
    let fail = |e: OciError| {
        report(&Report::Failed(e.into()));
        ExitCode::FAILURE
    };
    let mut input = Vec::new();
    if let Err(e) = io::stdin().take(MAX_JOB).read_to_end(&mut input) {
        return fail(OciError::Flatten(format!(
            "cannot read the flatten job: {e}"
        )));
    }
    let job: Job = match serde_json::from_slice(&input) {
        Ok(job) => job,
        Err(e) => return fail(OciError::Flatten(format!("not a flatten job: {e}"))),
    };
    let mut flattener = Flattener::new(&job.root, job.options);
    for layer in &job.layers {
        match flattener.apply_layer(&layer.digest, layer.compression, &layer.blob) {
            Ok(stats) => report(&Report::Layer(stats)),
            Err(e) => return fail(e),
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::oci::Limits;
    use crate::userns::{IdMapper, NewIdMap};

    const OPTIONS: FlattenOptions = FlattenOptions {
        limits: Limits {
            unpacked: 1 << 30,
            manifest: 4 << 20,
            tar_header: 1 << 20,
            layers: 128,
            layer_entries: 1_000_000,
            image_entries: 2_000_000,
        },
        allow_devices: false,
    };

    /// Two layers: files of root, `_apt` (42), a user (1000) and nobody,
    /// a set-uid binary, a hard link, a symlink of the user's; then a
    /// whiteout and a file replaced under another owner.
    fn layers() -> [Vec<u8>; 2] {
        let layer = |entries: &[(&str, tar::EntryType, u32, u64, &str)]| {
            let mut b = tar::Builder::new(Vec::new());
            for (path, kind, mode, id, data) in entries {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(*kind);
                h.set_mode(*mode);
                h.set_uid(*id);
                h.set_gid(*id);
                h.set_mtime(1_700_000_000);
                match kind {
                    tar::EntryType::Symlink | tar::EntryType::Link => {
                        h.set_size(0);
                        b.append_link(&mut h, path, data).unwrap();
                    }
                    _ => {
                        h.set_size(data.len() as u64);
                        b.append_data(&mut h, path, data.as_bytes()).unwrap();
                    }
                }
            }
            b.into_inner().unwrap()
        };
        use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as S};
        [
            layer(&[
                ("./", D, 0o755, 0, ""),
                ("bin/", D, 0o755, 0, ""),
                ("bin/su", F, 0o4755, 0, "su"),
                ("bin/su-link", H, 0o4755, 0, "bin/su"),
                ("var/cache/apt/archives/partial/", D, 0o700, 42, ""),
                ("var/cache/apt/archives/partial/x", F, 0o600, 42, "x"),
                ("home/user/", D, 0o700, 1000, ""),
                ("home/user/link", S, 0o777, 1000, "../../bin/su"),
                ("gone", F, 0o644, 0, "gone"),
                ("replaced", F, 0o644, 0, "v1"),
            ]),
            layer(&[
                (".wh.gone", F, 0o644, 0, ""),
                ("replaced", F, 0o640, 65534, "v2"),
            ]),
        ]
    }

    /// As root (CI), the pull's flatten-and-pack steps run as `nobody`
    /// (below): the image must hold the layers' owners, belong to the
    /// owner, and the tree must be gone.
    #[test]
    fn an_unprivileged_owner_flattens_keeping_the_layers_owners() {
        if !crate::debian::running_as_root() {
            return banger_testkit::skip("needs root to run a part of it as nobody");
        }
        if !banger_testkit::have_tools(&["newuidmap", "newgidmap", "mkfs.ext4", "du"]) {
            return;
        }
        use banger_testkit::owner::{OWNER_GID, OWNER_UID};
        let scratch = tempfile::tempdir().unwrap();
        let work = scratch.path().join("work");
        fs::create_dir(&work).unwrap();
        for (i, tar) in layers().iter().enumerate() {
            fs::write(work.join(format!("layer{i}.tar")), tar).unwrap();
        }
        for entry in fs::read_dir(&work).unwrap() {
            std::os::unix::fs::chown(entry.unwrap().path(), Some(OWNER_UID), Some(OWNER_GID))
                .unwrap();
        }
        std::os::unix::fs::chown(&work, Some(OWNER_UID), Some(OWNER_GID)).unwrap();
        let out = banger_testkit::owner::run_ignored_test_as_owner(
            "oci::owner::tests::owner_side_of_flattening",
            scratch.path(),
            banger_testkit::owner::AsOwner::SET_UP,
            &[("BANGER_TEST_OWNER_DIR", &work)],
        );
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.contains("1 passed"),
            "the owner's side failed:\n{said}"
        );

        let image = work.join("rootfs.ext4");
        let meta = fs::metadata(&image).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (OWNER_UID, OWNER_GID));
        assert!(!work.join("root").exists(), "the tree is removed");
        let fs4 = ext4_view::Ext4::load_from_path(&image).unwrap();
        let owners = |path: &str| {
            let m = fs4.symlink_metadata(path).unwrap();
            (m.uid(), m.gid(), m.mode() & 0o7777)
        };
        assert_eq!(owners("/"), (0, 0, 0o755));
        assert_eq!(owners("/bin/su"), (0, 0, 0o4755));
        assert_eq!(owners("/bin/su-link"), (0, 0, 0o4755));
        assert_eq!(owners("/var/cache/apt/archives/partial"), (42, 42, 0o700));
        assert_eq!(owners("/var/cache/apt/archives/partial/x"), (42, 42, 0o600));
        assert_eq!(owners("/home/user"), (1000, 1000, 0o700));
        assert_eq!(owners("/home/user/link").0, 1000);
        assert_eq!(owners("/replaced"), (65534, 65534, 0o640));
        assert_eq!(fs4.read("/replaced").unwrap(), b"v2");
        assert!(!fs4.exists("/gone").unwrap());
    }

    #[test]
    #[ignore = "run as an unprivileged owner by an_unprivileged_owner_flattens_keeping_the_layers_owners"]
    fn owner_side_of_flattening() {
        let work = PathBuf::from(std::env::var_os("BANGER_TEST_OWNER_DIR").unwrap());
        assert!(!crate::debian::running_as_root());
        let mapper: Arc<dyn IdMapper> = Arc::new(NewIdMap);
        let owner = TreeOwner::for_this_process(&mapper).unwrap_or_else(|e| panic!("{e}"));
        let root = work.join("root");
        fs::create_dir(&root).unwrap();
        let layers: Vec<JobLayer> = (0..2)
            .map(|i| {
                let blob = work.join(format!("layer{i}.tar"));
                let digest = format!(
                    "sha256:{}",
                    hex::encode(Sha256::digest(fs::read(&blob).unwrap()))
                );
                JobLayer {
                    digest,
                    compression: Compression::None,
                    blob,
                }
            })
            .collect();
        let mut seen = Vec::new();
        flatten_layers(
            &owner,
            helper(),
            &root,
            OPTIONS,
            &layers,
            &mut |i, stats| seen.push((i, stats.entries)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(seen, [(0, 10), (1, 2)]);

        // Devices cannot be made in a user namespace: refused up front.
        let devices = FlattenOptions {
            allow_devices: true,
            ..OPTIONS
        };
        let err = flatten_layers(&owner, helper(), &root, devices, &layers, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--allow-devices needs bangerd to run as root"),
            "{err}"
        );

        // A hostile layer is refused as under root, and says so.
        let evil = work.join("evil.tar");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        let name = b"../escape";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        fs::write(&evil, b.into_inner().unwrap()).unwrap();
        let digest = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(fs::read(&evil).unwrap()))
        );
        let bad = [JobLayer {
            digest: digest.clone(),
            compression: Compression::None,
            blob: evil,
        }];
        let scratch = work.join("scratch");
        fs::create_dir(&scratch).unwrap();
        let err = flatten_layers(&owner, helper(), &scratch, OPTIONS, &bad, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&digest) && err.contains("has a '..' component"),
            "{err}"
        );
        assert!(!work.join("escape").exists());
        super::super::remove_tree(&owner, &scratch).unwrap();

        super::super::write_rootfs(&owner, &root, &work.join("rootfs.ext4"), &layers[0].digest)
            .unwrap_or_else(|e| panic!("{e}"));
        super::super::remove_tree(&owner, &root).unwrap_or_else(|e| panic!("{e}"));
    }

    /// This test binary as the helper: the test below, by exact name.
    fn helper() -> Command {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.args([
            "--ignored",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "oci::owner::tests::helper_side",
        ]);
        command
    }

    #[test]
    #[ignore = "run as the flattening helper by owner_side_of_flattening"]
    fn helper_side() {
        assert_eq!(helper_main(), ExitCode::SUCCESS);
    }
}
