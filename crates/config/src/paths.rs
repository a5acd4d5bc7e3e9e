use std::env;
use std::path::{Path, PathBuf};

/// The directories banger uses, resolved once from the environment.
///
/// `BANGER_HOME=/some/dir` puts everything under that one folder
/// (`config/`, `state/`, `cache/`, `run/`): tests and side-by-side
/// installs use it. Otherwise the XDG base directories apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub home: PathBuf,
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub runtime_dir: PathBuf,
    /// The system install's layout ([`Paths::system`]): the daemon runs as
    /// the owner under systemd and cannot write the owner's home.
    pub system: bool,
}

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum PathsError {
    #[error("HOME is not set: set HOME, or BANGER_HOME to choose where banger keeps its files")]
    NoHome,
    #[error("{var}={value:?} is not an absolute path: set it to an absolute path or unset it")]
    NotAbsolute { var: &'static str, value: String },
    #[error(
        "socket path {0} is longer than {MAX_SOCKET_PATH} bytes, the limit for Unix sockets: \
         point XDG_RUNTIME_DIR or BANGER_HOME at a shorter directory"
    )]
    SocketPathTooLong(PathBuf),
}

impl Paths {
    pub fn from_env() -> Result<Self, PathsError> {
        Self::from_vars(|k| env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Resolution with the environment injected, for tests.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, PathsError> {
        let abs = |name: &'static str| -> Result<Option<PathBuf>, PathsError> {
            match var(name) {
                None => Ok(None),
                Some(v) if Path::new(&v).is_absolute() => Ok(Some(PathBuf::from(v))),
                Some(v) => Err(PathsError::NotAbsolute {
                    var: name,
                    value: v,
                }),
            }
        };
        let home = abs("HOME")?;
        let paths = if let Some(root) = abs("BANGER_HOME")? {
            Paths {
                home: home.unwrap_or_else(|| root.clone()),
                config_dir: root.join("config"),
                state_dir: root.join("state"),
                cache_dir: root.join("cache"),
                runtime_dir: root.join("run"),
                system: false,
            }
        } else {
            let home = home.ok_or(PathsError::NoHome)?;
            let xdg = |name: &'static str, fallback: &str| -> Result<PathBuf, PathsError> {
                Ok(abs(name)?.unwrap_or_else(|| home.join(fallback)))
            };
            let state_dir = xdg("XDG_STATE_HOME", ".local/state")?.join("banger");
            let runtime_dir = match abs("XDG_RUNTIME_DIR")? {
                Some(dir) => dir.join("banger"),
                None => state_dir.join("run"),
            };
            Paths {
                config_dir: xdg("XDG_CONFIG_HOME", ".config")?.join("banger"),
                cache_dir: xdg("XDG_CACHE_HOME", ".cache")?.join("banger"),
                state_dir,
                runtime_dir,
                home,
                system: false,
            }
        };
        let sock = paths.socket();
        if sock.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(PathsError::SocketPathTooLong(sock));
        }
        Ok(paths)
    }

    /// The system install's layout (DESIGN.md, "State"): the owner's
    /// config stays in their home, read-only to the daemon; state, caches
    /// and sockets are in `/var/lib/banger`, `/var/cache/banger` and
    /// `/run/banger`.
    pub fn system(owner_home: &Path) -> Self {
        Paths {
            home: owner_home.to_path_buf(),
            config_dir: owner_home.join(".config").join("banger"),
            state_dir: PathBuf::from(crate::install::SYSTEM_STATE_DIR),
            cache_dir: PathBuf::from(crate::install::SYSTEM_CACHE_DIR),
            runtime_dir: PathBuf::from(crate::install::SYSTEM_RUNTIME_DIR),
            system: true,
        }
    }

    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }
    pub fn database(&self) -> PathBuf {
        self.state_dir.join("banger.db")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.state_dir.join("bangerd.log")
    }
    /// Held (flock) by the running daemon; holds its pid.
    pub fn daemon_lock(&self) -> PathBuf {
        self.state_dir.join("bangerd.lock")
    }
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir.join("bangerd.sock")
    }
    /// One folder per kernel: its bzImage, vmlinux and initramfs.
    pub fn kernels_dir(&self) -> PathBuf {
        self.state_dir.join("kernels")
    }
    /// One folder per image: its read-only base rootfs.
    pub fn images_dir(&self) -> PathBuf {
        self.state_dir.join("images")
    }
    /// The log of `image build NAME`.
    pub fn image_build_log(&self, image: &str) -> PathBuf {
        self.state_dir
            .join("image-build")
            .join(format!("{image}.log"))
    }
    /// Built images by recipe hash, reused by later builds.
    pub fn image_cache(&self) -> PathBuf {
        self.cache_dir.join("images")
    }
    /// Debian packages downloaded by builds, shared between them.
    pub fn apt_cache(&self) -> PathBuf {
        self.cache_dir.join("apt")
    }
    /// Prebuilt binaries image recipes pin (mise), by SHA-256.
    pub fn download_cache(&self) -> PathBuf {
        self.cache_dir.join("downloads")
    }
    /// OCI blobs (layers, configs) by digest, shared by every pulled image.
    pub fn oci_cache(&self) -> PathBuf {
        self.cache_dir.join("oci")
    }
    /// banger's guest tools (sshd, busybox, libraries) for images that
    /// bring no sshd of their own (crates/images/src/guest_tools.rs).
    pub fn guest_tools_cache(&self) -> PathBuf {
        self.cache_dir.join("guest-tools")
    }
    /// Debian kernel packages unpacked for images that bring no kernel.
    pub fn kernel_package_cache(&self) -> PathBuf {
        self.cache_dir.join("kernel-packages")
    }
    /// The user's own image catalog, merged over the built-in one.
    pub fn user_catalog(&self) -> PathBuf {
        self.config_dir.join("catalog.toml")
    }
    /// banger's `Host *.vm` ssh settings, which bangerd keeps current and
    /// `banger ssh-config --install` includes from the user's ssh config.
    /// Under the system install it is with the state: the daemon cannot
    /// write the owner's home.
    pub fn ssh_config(&self) -> PathBuf {
        if self.system {
            return self.state_dir.join("ssh_config");
        }
        self.config_dir.join("ssh_config")
    }
    /// The user's own ssh config, edited only by `banger ssh-config
    /// --install/--uninstall`.
    pub fn user_ssh_config(&self) -> PathBuf {
        self.home.join(".ssh").join("config")
    }
    pub fn default_ssh_key(&self) -> PathBuf {
        self.state_dir.join("ssh").join("id_ed25519")
    }

    /// Expands a leading `~/` against the user's home directory.
    pub fn expand_home(&self, path: &str) -> Option<PathBuf> {
        if path == "~" {
            Some(self.home.clone())
        } else {
            path.strip_prefix("~/").map(|rest| self.home.join(rest))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(vars: &[(&str, &str)]) -> Result<Paths, PathsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Paths::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn xdg_defaults_under_home() {
        let p = resolve(&[("HOME", "/home/u")]).unwrap();
        assert_eq!(
            p.config_file(),
            Path::new("/home/u/.config/banger/config.toml")
        );
        assert_eq!(
            p.database(),
            Path::new("/home/u/.local/state/banger/banger.db")
        );
        assert_eq!(
            p.daemon_log(),
            Path::new("/home/u/.local/state/banger/bangerd.log")
        );
        assert_eq!(p.cache_dir, Path::new("/home/u/.cache/banger"));
        // No XDG_RUNTIME_DIR: the socket falls back under the state dir.
        assert_eq!(
            p.socket(),
            Path::new("/home/u/.local/state/banger/run/bangerd.sock")
        );
    }

    #[test]
    fn xdg_variables_are_honoured() {
        let p = resolve(&[
            ("HOME", "/home/u"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("XDG_CONFIG_HOME", "/cfg"),
            ("XDG_STATE_HOME", "/st"),
            ("XDG_CACHE_HOME", "/ca"),
        ])
        .unwrap();
        assert_eq!(p.socket(), Path::new("/run/user/1000/banger/bangerd.sock"));
        assert_eq!(p.config_dir, Path::new("/cfg/banger"));
        assert_eq!(p.state_dir, Path::new("/st/banger"));
        assert_eq!(p.cache_dir, Path::new("/ca/banger"));
    }

    #[test]
    fn banger_home_overrides_everything() {
        let p = resolve(&[
            ("HOME", "/home/u"),
            ("BANGER_HOME", "/tmp/t"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ])
        .unwrap();
        assert_eq!(p.socket(), Path::new("/tmp/t/run/bangerd.sock"));
        assert_eq!(p.config_file(), Path::new("/tmp/t/config/config.toml"));
        assert_eq!(p.home, Path::new("/home/u"));
    }

    #[test]
    fn bad_environment_is_reported() {
        assert!(matches!(resolve(&[]), Err(PathsError::NoHome)));
        assert!(matches!(
            resolve(&[("HOME", "/h"), ("XDG_STATE_HOME", "rel")]),
            Err(PathsError::NotAbsolute {
                var: "XDG_STATE_HOME",
                ..
            })
        ));
        let long = format!("/{}", "x".repeat(120));
        assert!(matches!(
            resolve(&[("HOME", "/h"), ("BANGER_HOME", &long)]),
            Err(PathsError::SocketPathTooLong(_))
        ));
    }

    #[test]
    fn expands_tilde() {
        let p = resolve(&[("HOME", "/home/u")]).unwrap();
        assert_eq!(p.expand_home("~/k"), Some(PathBuf::from("/home/u/k")));
        assert_eq!(p.expand_home("~"), Some(PathBuf::from("/home/u")));
        assert_eq!(p.expand_home("~other/k"), None);
        assert_eq!(p.expand_home("/abs"), None);
    }
}
