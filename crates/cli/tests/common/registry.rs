//! A docker-registry on loopback and OCI layouts made with umoci, pushed
//! with skopeo: what the tests of OCI images (oci.rs, and Docker in a
//! minimal-mode image in docker_mise_e2e.rs) pull from.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Netns, wait_for};

/// A docker-registry on 127.0.0.1 with its own storage and access log.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Registry {
    /// The registry's process id (the leak counts leave it out).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start() -> Self {
        Self::start_in(None)
    }

    /// A registry on the loopback of `ns` (the host's when `None`).
    pub fn start_in(ns: Option<&Netns>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = in_netns(ns, "docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start docker-registry");
        wait_for(
            "the registry to listen",
            Duration::from_secs(20),
            || match ns {
                None => std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
                Some(ns) => ns
                    .exec(&["bash", "-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}")])
                    .status
                    .success(),
            },
        );
        Self { child, dir, port }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many times a blob was fetched, from the access log.
    pub fn blob_gets(&self, repo: &str, digest: &str) -> usize {
        let log = fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        let needle = format!("\"GET /v2/{repo}/blobs/{digest} ");
        log.lines().filter(|l| l.contains(&needle)).count()
    }

    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program`, run inside `ns` when there is one (`ip netns exec` execs
/// it in place, so the child is the program itself).
pub fn in_netns(ns: Option<&Netns>, program: &str) -> Command {
    match ns {
        None => Command::new(program),
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &ns.0, program]);
            cmd
        }
    }
}

pub fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An OCI layout being built with umoci, one image (tag) at a time.
pub struct Layout {
    pub dir: tempfile::TempDir,
}

impl Layout {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(dir.path().join("oci")));
        Self { dir }
    }

    pub fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.dir.path().join("oci").display())
    }

    pub fn create(&self, tag: &str) {
        run(Command::new("umoci").args(["new", "--image", &self.image(tag)]));
    }

    /// A layer made by umoci from the tree `change` leaves: unpacked
    /// fresh, changed, repacked (umoci diffs against the unpacked tree).
    pub fn layer(&self, tag: &str, change: impl FnOnce(&Path)) {
        let bundle = self.dir.path().join("bundle");
        let _ = fs::remove_dir_all(&bundle);
        run(Command::new("umoci")
            .args(["unpack", "--image", &self.image(tag)])
            .arg(&bundle));
        change(&bundle.join("rootfs"));
        run(Command::new("umoci")
            .args(["repack", "--image", &self.image(tag)])
            .arg(&bundle));
        fs::remove_dir_all(&bundle).unwrap();
    }

    /// A hand-written tar as the next layer of `from`, tagged `tag`.
    pub fn raw_layer(&self, from: &str, tag: &str, tar: &[u8]) {
        let path = self.dir.path().join(format!("{tag}.tar"));
        fs::write(&path, tar).unwrap();
        self.raw_layer_file(from, tag, &path);
    }

    /// The tar at `path` as the next layer of `from`, tagged `tag`.
    pub fn raw_layer_file(&self, from: &str, tag: &str, path: &Path) {
        run(Command::new("umoci")
            .args(["raw", "add-layer", "--image", &self.image(from)])
            .arg(path)
            .args(["--tag", tag]));
    }

    /// The manifest of `tag`, from the layout.
    pub fn manifest(&self, tag: &str) -> serde_json::Value {
        let oci = self.dir.path().join("oci");
        let blob = |digest: &str| -> serde_json::Value {
            let hex = digest.trim_start_matches("sha256:");
            serde_json::from_slice(&fs::read(oci.join("blobs/sha256").join(hex)).unwrap()).unwrap()
        };
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(oci.join("index.json")).unwrap()).unwrap();
        let manifest = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .expect("the tag is in the layout");
        blob(manifest["digest"].as_str().unwrap())
    }

    /// The digests of the layers of `tag`, bottom first.
    pub fn layer_digests(&self, tag: &str) -> Vec<String> {
        let manifest = self.manifest(tag);
        let layers = manifest["layers"].as_array().unwrap();
        layers
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    }

    /// The digest of the last layer of `tag`.
    pub fn layer_digest(&self, tag: &str) -> String {
        self.layer_digests(tag).pop().unwrap()
    }

    /// The digest of the config of `tag`.
    pub fn config_digest(&self, tag: &str) -> String {
        self.manifest(tag)["config"]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn config(&self, tag: &str, args: &[&str]) {
        run(Command::new("umoci")
            .args(["config", "--image", &self.image(tag)])
            .args(args));
    }

    pub fn push(&self, tag: &str, registry: &Registry, repo: &str) {
        self.push_in(None, tag, registry, repo)
    }

    /// Pushes to a registry inside `ns`.
    pub fn push_in(&self, ns: Option<&Netns>, tag: &str, registry: &Registry, repo: &str) {
        run(in_netns(ns, "skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}", self.image(tag)))
            .arg(format!("docker://{}/{repo}:{tag}", registry.host())));
    }
}
