//! The default image, `debian-bookworm`, built locally from Debian's
//! packages: mmdebstrap into a directory, banger's adjustments (sshd
//! policy, no host keys, no machine-id), the kernel taken out of the same
//! packages (bzImage, vmlinux and optionally banger's initramfs), and the
//! tree packed into a read-only ext4 base with `mkfs.ext4 -d`, no mounting.
//!
//! A recipe hash (SHA-256 of the recipe's canonical text) names the output
//! directory, so a second build of the same recipe is a lookup. The mirror
//! is not part of the hash: it says where packages come from, not what the
//! image is. apt's downloaded packages are kept in a cache directory shared
//! by all builds.
//!
//! The tree's file owners must be real for `mkfs.ext4 -d`. As root the
//! build runs mmdebstrap in root mode, as it always has. As anyone else
//! (bangerd as its owner user) the steps that make, read or remove files
//! of the image's users run as root of a user namespace mapping the owner
//! to 0 and its subordinate ids above ([`crate::userns`]): mmdebstrap in
//! unshare mode, `du`, `mkfs.ext4 -d` and `rm`. The image's root is then
//! the owner on the host, so banger's own adjustments, the kernel copy and
//! the output files need no namespace, and the daemon owns what it built.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::binary::{self, PinnedBinary};
use crate::digest::{self, Artifact, DigestError};
use crate::ext4;
use crate::host_command::CommandError;
use crate::initramfs::{self, GUEST_MODULES, InitramfsError, InitramfsSpec};
use crate::kernel::{self, KernelError, package::CLOUD_KERNEL_META};
use banger_model::{BinaryOrigin, ImageFacts};

use crate::userns::{IdMapper, NewIdMap, TreeError, TreeOwner, UsernsError};

/// Bumped whenever the build steps change what an image contains, so old
/// cache entries are not reused for a new recipe.
const RECIPE_FORMAT: u32 = 5;

pub const DEFAULT_SUITE: &str = "bookworm";

/// What `debian-bookworm` holds, beyond Debian's minbase and the kernel.
/// Recommends are not installed, so what systemd, sshd and logins need is
/// named here (udev for device units, dbus for logind).
pub const DEFAULT_PACKAGES: &[&str] = &[
    "build-essential",
    "ca-certificates",
    "curl",
    "dbus",
    "git",
    "iproute2",
    "iputils-ping",
    "jq",
    "kmod",
    "less",
    "libpam-systemd",
    "netbase",
    "openssh-server",
    "openssh-sftp-server",
    "procps",
    "sudo",
    "systemd",
    "systemd-sysv",
    "udev",
];

/// Docker Engine as Debian packages it: `docker.io` (dockerd and the
/// CLI; containerd, runc and iptables come as its dependencies) and
/// `docker-compose` (compose v1, which banger also offers as the `docker
/// compose` plugin, [`COMPOSE_PLUGIN`]); and `apparmor`, a Recommends of
/// docker.io: Debian's kernel has AppArmor on, and then dockerd refuses
/// to run a container unless `apparmor_parser` can load its
/// `docker-default` profile.
pub const DOCKER_PACKAGES: &[&str] = &["apparmor", "docker-compose", "docker.io"];

/// sshd policy, as a drop-in (`/etc/ssh/sshd_config.d/banger.conf`).
pub const SSHD_CONFIG: &str = "\
# banger: keys only; host keys are supplied per VM at boot.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
StrictModes yes
";

/// The free space the base gets beyond its content.
const HEADROOM_BYTES: u64 = 256 << 20;

pub const ROOTFS: &str = "rootfs.ext4";
pub const BZIMAGE: &str = "vmlinuz";
pub const VMLINUX: &str = "vmlinux";
pub const INITRAMFS: &str = "initramfs.cpio.gz";
pub const RECIPE_FILE: &str = "recipe.txt";
pub const RELEASE_FILE: &str = "kernel-release";
/// The image's facts ([`ImageFacts`]) as JSON.
pub const FACTS_FILE: &str = "facts.json";

#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error(
        "no Debian apt source found in /etc/apt: set the image mirror in banger's config (e.g. http://deb.debian.org/debian)"
    )]
    NoMirror,
    #[error("{path}: {reason}")]
    BadSources { path: PathBuf, reason: String },
    #[error("{0:?} is not a Debian package name (lowercase letters, digits, '+', '-', '.')")]
    BadPackage(String),
    #[error(transparent)]
    Binary(#[from] crate::binary::BinaryError),
    /// A recipe value that would reach mmdebstrap's arguments or an apt
    /// sources line, refused before anything runs.
    #[error("recipe {field} {value:?} is not valid: {why}")]
    BadRecipe {
        field: &'static str,
        value: String,
        why: &'static str,
    },
    /// Not root, and no user namespace for the owner (see
    /// [`crate::userns`]): the message says what to set up.
    #[error(transparent)]
    Namespace(#[from] UsernsError),
    #[error(
        "cache path {0} contains whitespace, which mmdebstrap's hooks cannot take: choose another cache directory"
    )]
    BadCachePath(PathBuf),
    #[error("{0}")]
    Bootstrap(CommandError),
    #[error("the bootstrapped tree has no kernel in /boot (is {0} in the package list?)")]
    NoKernel(String),
    #[error("mkfs.ext4 failed to make the base rootfs: {0}")]
    Filesystem(CommandError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DebianError {
    let path = path.to_owned();
    move |source| DebianError::Io {
        action,
        path,
        source,
    }
}

/// One apt source: a repository URI, its suites and components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
}

/// Everything that decides what a Debian image contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianRecipe {
    pub suite: String,
    pub sources: Vec<AptSource>,
    /// Sorted, without duplicates.
    pub packages: Vec<String>,
    pub kernel_package: String,
    pub sshd_config: String,
    /// Docker Engine ([`DOCKER_PACKAGES`], socket-activated, its data on
    /// the system disk).
    pub docker: bool,
    /// Prebuilt binaries put into the tree (mise), each pinned.
    pub binaries: Vec<PinnedBinary>,
}

impl DebianRecipe {
    /// The default `debian-bookworm` recipe from the given sources.
    pub fn bookworm(sources: Vec<AptSource>) -> Self {
        DebianRecipe {
            suite: DEFAULT_SUITE.to_owned(),
            sources,
            packages: DEFAULT_PACKAGES.iter().map(|p| (*p).to_owned()).collect(),
            kernel_package: CLOUD_KERNEL_META.to_owned(),
            sshd_config: SSHD_CONFIG.to_owned(),
            docker: true,
            binaries: vec![PinnedBinary::default_mise()],
        }
        .normalized()
    }

    /// Without Docker (`image build --no-docker`).
    pub fn without_docker(mut self) -> Self {
        self.docker = false;
        self
    }

    /// Without mise (`image build --no-mise`).
    pub fn without_mise(mut self) -> Self {
        self.binaries.retain(|b| b.name != "mise");
        self
    }

    /// Puts `binary` in place of the one of its name (a recipe's own mise).
    pub fn with_binary(mut self, binary: PinnedBinary) -> Self {
        self.binaries.retain(|b| b.name != binary.name);
        self.binaries.push(binary);
        self.binaries.sort_by(|a, b| a.name.cmp(&b.name));
        self
    }

    /// Every package mmdebstrap installs, the kernel's aside: the recipe's
    /// and, with Docker, [`DOCKER_PACKAGES`].
    pub fn all_packages(&self) -> Vec<String> {
        let mut all = self.packages.clone();
        if self.docker {
            all.extend(DOCKER_PACKAGES.iter().map(|p| (*p).to_owned()));
        }
        all.sort();
        all.dedup();
        all
    }

    /// Adds packages (`image build --package`), checking their names.
    pub fn with_packages<S: AsRef<str>>(mut self, extra: &[S]) -> Result<Self, DebianError> {
        for name in extra {
            let name = name.as_ref();
            validate_package(name)?;
            self.packages.push(name.to_owned());
        }
        Ok(self.normalized())
    }

    fn normalized(mut self) -> Self {
        self.packages.sort();
        self.packages.dedup();
        self
    }

    /// The recipe as stable text: what the hash covers.
    pub fn canonical(&self) -> String {
        let mut suites: Vec<&str> = self
            .sources
            .iter()
            .flat_map(|s| s.suites.iter().map(String::as_str))
            .collect();
        suites.sort();
        suites.dedup();
        let mut components: Vec<&str> = self
            .sources
            .iter()
            .flat_map(|s| s.components.iter().map(String::as_str))
            .collect();
        components.sort();
        components.dedup();
        let mut text = format!(
            "banger-debian-recipe {RECIPE_FORMAT}\nsuite {}\nvariant minbase\nsuites {}\ncomponents {}\nkernel {}\n",
            self.suite,
            suites.join(" "),
            components.join(" "),
            self.kernel_package
        );
        for package in self.all_packages() {
            text.push_str(&format!("package {package}\n"));
        }
        for line in self.sshd_config.lines() {
            text.push_str(&format!("sshd {line}\n"));
        }
        text.push_str(&format!(
            "docker {}\n",
            if self.docker { "yes" } else { "no" }
        ));
        for b in &self.binaries {
            text.push_str(&format!(
                "binary {} {} sha256:{} {}\n",
                b.name, b.source, b.sha256, b.install_path
            ));
        }
        text
    }

    /// SHA-256 of [`canonical`](Self::canonical), lowercase hex.
    pub fn hash(&self) -> String {
        digest::sha256_str(&self.canonical())
    }
}

impl DebianRecipe {
    /// Checks every value that reaches mmdebstrap's argument vector or an
    /// apt sources line (`deb URI SUITE COMPONENTS`), where a space, a
    /// newline or a leading `-` would become another word, line or option.
    /// [`build_image`] calls it before anything runs; callers with a
    /// better place to report from call it earlier.
    pub fn validate(&self) -> Result<(), DebianError> {
        validate_suite(&self.suite)?;
        for package in self.packages.iter().chain([&self.kernel_package]) {
            validate_package(package)?;
        }
        for binary in &self.binaries {
            binary.validate()?;
        }
        for source in &self.sources {
            validate_uri(&source.uri)?;
            for suite in &source.suites {
                validate_word("source suite", suite)?;
            }
            for component in &source.components {
                validate_word("component", component)?;
            }
        }
        Ok(())
    }
}

/// A suite (`bookworm`, `trixie`, `unstable`): lowercase letters, digits,
/// `.` and `-`, starting with a letter or digit.
pub fn validate_suite(suite: &str) -> Result<(), DebianError> {
    let bad = |why| DebianError::BadRecipe {
        field: "suite",
        value: suite.to_owned(),
        why,
    };
    if suite.is_empty() || suite.len() > 64 {
        return Err(bad("give 1 to 64 characters, like bookworm"));
    }
    if !suite.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        || !suite
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    {
        return Err(bad(
            "use lowercase letters, digits, '.' and '-', starting with a letter or digit, like bookworm",
        ));
    }
    Ok(())
}

/// A suite or component of an apt source (`bookworm-security`, `main`,
/// `non-free-firmware`, old-style `updates/main`).
fn validate_word(field: &'static str, word: &str) -> Result<(), DebianError> {
    let ok = !word.is_empty()
        && word.len() <= 64
        && word.starts_with(|c: char| c.is_ascii_alphanumeric())
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    if ok {
        Ok(())
    } else {
        Err(DebianError::BadRecipe {
            field,
            value: word.to_owned(),
            why: "use letters, digits, '.', '_', '-' and '/', starting with a letter or digit",
        })
    }
}

/// A mirror: a URL that parses, of scheme http, https or file, written
/// without anything a sources line would split on.
pub fn validate_uri(uri: &str) -> Result<(), DebianError> {
    let bad = |why| DebianError::BadRecipe {
        field: "mirror",
        value: uri.to_owned(),
        why,
    };
    if uri
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "\"'[]".contains(c))
    {
        return Err(bad(
            "a URL has no spaces, quotes, brackets or control characters",
        ));
    }
    let parsed =
        url::Url::parse(uri).map_err(|_| bad("not a URL, like http://deb.debian.org/debian"))?;
    match parsed.scheme() {
        "http" | "https" | "file" => Ok(()),
        _ => Err(bad("use an http://, https:// or file:/ URL")),
    }
}

fn validate_package(name: &str) -> Result<(), DebianError> {
    let ok = name.len() >= 2
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(DebianError::BadPackage(name.to_owned()))
    }
}

/// The host's apt sources for `suite` (e.g. bookworm, bookworm-updates,
/// bookworm-security) from `/etc/apt`; if the host runs another release,
/// its main Debian archive with `suite`.
pub fn host_sources(suite: &str) -> Result<Vec<AptSource>, DebianError> {
    let mut all = Vec::new();
    let list = Path::new("/etc/apt/sources.list");
    if let Ok(text) = fs::read_to_string(list) {
        all.extend(parse_one_line(&text));
    }
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            match path.extension().and_then(|e| e.to_str()) {
                Some("sources") => {
                    all.extend(
                        parse_deb822(&text).map_err(|reason| DebianError::BadSources {
                            path: path.clone(),
                            reason,
                        })?,
                    )
                }
                Some("list") => all.extend(parse_one_line(&text)),
                _ => {}
            }
        }
    }
    sources_for_suite(&all, suite).ok_or(DebianError::NoMirror)
}

/// Keeps the sources of `suite`'s family; failing that, reuses the first
/// non-security Debian archive for `suite`.
fn sources_for_suite(all: &[AptSource], suite: &str) -> Option<Vec<AptSource>> {
    let in_family = |s: &str| s == suite || s.starts_with(&format!("{suite}-"));
    let matching: Vec<AptSource> = all
        .iter()
        .filter_map(|source| {
            let suites: Vec<String> = source
                .suites
                .iter()
                .filter(|s| in_family(s))
                .cloned()
                .collect();
            (!suites.is_empty()).then(|| AptSource {
                suites,
                ..source.clone()
            })
        })
        .collect();
    if !matching.is_empty() {
        return Some(matching);
    }
    all.iter()
        .find(|s| !s.uri.contains("security") && !s.suites.iter().any(|x| x.ends_with("-security")))
        .map(|s| {
            vec![AptSource {
                uri: s.uri.clone(),
                suites: vec![suite.to_owned()],
                components: vec!["main".to_owned()],
            }]
        })
}

/// deb822 `.sources` paragraphs of type `deb`.
fn parse_deb822(text: &str) -> Result<Vec<AptSource>, String> {
    let mut sources = Vec::new();
    for paragraph in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in paragraph.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if let Some(last) = fields.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            let (key, value) = line
                .split_once(':')
                .ok_or_else(|| format!("expected 'Field: value', found {line:?}"))?;
            fields.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        if !get("types").iter().any(|t| t == "deb") {
            continue;
        }
        if get("enabled").first().is_some_and(|e| e == "no") {
            continue;
        }
        for uri in get("uris") {
            sources.push(AptSource {
                uri,
                suites: get("suites"),
                components: get("components"),
            });
        }
    }
    Ok(sources)
}

/// One-line `deb [options] uri suite components…` entries.
fn parse_one_line(text: &str) -> Vec<AptSource> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let rest = line.strip_prefix("deb ")?.trim_start();
            let rest = if rest.starts_with('[') {
                rest.split_once(']')?.1.trim_start()
            } else {
                rest
            };
            let mut words = rest.split_whitespace();
            let uri = words.next()?.to_owned();
            let suite = words.next()?.to_owned();
            Some(AptSource {
                uri,
                suites: vec![suite],
                components: words.map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// Phases of a build, for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildPhase {
    /// Downloading the recipe's pinned binaries (mise), before anything
    /// else, so a wrong pin fails at once.
    Fetch,
    Bootstrap,
    Configure,
    Kernel,
    Initramfs,
    Filesystem,
    Pin,
}

/// Where a build reads and writes.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Built images live in `<images_cache>/<recipe hash>/`.
    pub images_cache: PathBuf,
    /// apt's downloaded packages, shared by builds.
    pub apt_cache: PathBuf,
    /// The recipe's pinned binaries, by SHA-256, shared by builds.
    pub downloads: PathBuf,
    /// Tool output goes here (appended).
    pub log: PathBuf,
    /// banger-init; when given, the build also makes the initramfs.
    pub init: Option<PathBuf>,
    /// Who writes the id maps of the user namespace a build not run as
    /// root uses; `None` is [`NewIdMap`] (newuidmap and newgidmap).
    pub id_mapper: Option<Arc<dyn IdMapper>>,
}

/// A built (or reused) image.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub dir: PathBuf,
    pub recipe_hash: String,
    pub kernel_release: String,
    /// Pins of every artifact in `dir` (rootfs, kernel files, recipe).
    pub artifacts: Vec<Artifact>,
    /// True when the cache already had this recipe.
    pub reused: bool,
    /// Its size, packages and tool versions (`image show`).
    pub facts: ImageFacts,
}

impl BuiltImage {
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join(ROOTFS)
    }
    pub fn bzimage(&self) -> PathBuf {
        self.dir.join(BZIMAGE)
    }
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join(VMLINUX)
    }
    /// Present when the build was given banger-init.
    pub fn initramfs(&self) -> Option<PathBuf> {
        let path = self.dir.join(INITRAMFS);
        path.exists().then_some(path)
    }
    /// The base filesystem's UUID, for `banger.base=UUID=…`.
    pub fn rootfs_uuid(&self) -> String {
        ext4::uuid_from_hash(&self.recipe_hash)
    }
}

/// Builds `recipe` unless the cache has it. On failure nothing is left
/// behind but the log.
pub fn build_image(
    recipe: &DebianRecipe,
    options: &BuildOptions,
    progress: &mut dyn FnMut(BuildPhase),
) -> Result<BuiltImage, DebianError> {
    recipe.validate()?;
    let hash = recipe.hash();
    let dir = options.images_cache.join(&hash);
    if dir.join(digest::SUMS_FILE).exists() {
        let kernel_release = fs::read_to_string(dir.join(RELEASE_FILE))
            .map_err(io_err("read", &dir.join(RELEASE_FILE)))?
            .trim()
            .to_owned();
        return Ok(BuiltImage {
            artifacts: digest::read_pins(&dir)?,
            facts: read_facts(&dir)?,
            dir,
            recipe_hash: hash,
            kernel_release,
            reused: true,
        });
    }
    let mapper = options
        .id_mapper
        .clone()
        .unwrap_or_else(|| Arc::new(NewIdMap));
    let owner = TreeOwner::for_this_process(&mapper)?;
    if options
        .apt_cache
        .to_string_lossy()
        .contains(char::is_whitespace)
    {
        return Err(DebianError::BadCachePath(options.apt_cache.clone()));
    }
    for d in [
        &options.images_cache,
        &options.apt_cache,
        &options.downloads,
    ] {
        fs::create_dir_all(d).map_err(io_err("create", d))?;
    }
    if let Some(parent) = options.log.parent() {
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    }
    let staging = options.images_cache.join(format!(".{hash}.partial"));
    // A stale one may hold files of the image's users: the tree's owner
    // removes it.
    owner
        .remove_tree(&staging)
        .map_err(|e| tree_err(e, DebianError::Filesystem))?;
    fs::create_dir(&staging).map_err(io_err("create", &staging))?;
    let result = build_into(recipe, options, &owner, &staging, progress);
    let built = match result {
        Ok(release) => release,
        Err(e) => {
            let _ = owner.remove_tree(&staging);
            return Err(e);
        }
    };
    fs::rename(&staging, &dir).map_err(io_err("move into place", &dir))?;
    Ok(BuiltImage {
        artifacts: digest::read_pins(&dir)?,
        facts: read_facts(&dir)?,
        dir,
        recipe_hash: hash,
        kernel_release: built,
        reused: false,
    })
}

/// The build proper, into `out`; returns the kernel release.
fn build_into(
    recipe: &DebianRecipe,
    options: &BuildOptions,
    owner: &TreeOwner,
    out: &Path,
    progress: &mut dyn FnMut(BuildPhase),
) -> Result<String, DebianError> {
    let root = out.join("root");
    progress(BuildPhase::Fetch);
    let mut downloads = Vec::new();
    for b in &recipe.binaries {
        downloads.push(binary::fetch(b, &options.downloads)?);
    }
    progress(BuildPhase::Bootstrap);
    let mode = match owner {
        TreeOwner::Root => Mode::Root,
        TreeOwner::Namespace(_) => Mode::Unshare,
    };
    let mut mmdebstrap = Command::new("mmdebstrap");
    mmdebstrap.args(mmdebstrap_args(recipe, mode, &root, &options.apt_cache));
    owner
        .run_logged(mmdebstrap, &options.log)
        .map_err(|e| tree_err(e, DebianError::Bootstrap))?;

    progress(BuildPhase::Configure);
    configure_tree(&root, &recipe.sshd_config)?;
    if recipe.docker {
        configure_docker(&root)?;
    }
    for (b, file) in recipe.binaries.iter().zip(&downloads) {
        binary::install(b, file, &root)?;
    }
    let mut facts = tree_facts(&root, recipe)?;

    progress(BuildPhase::Kernel);
    let release = find_kernel(&root, &recipe.kernel_package)?;
    let bzimage = root.join("boot").join(format!("vmlinuz-{release}"));
    fs::copy(&bzimage, out.join(BZIMAGE)).map_err(io_err("copy", &bzimage))?;
    kernel::extract_vmlinux_file(&bzimage, &out.join(VMLINUX))?;
    fs::write(out.join(RELEASE_FILE), format!("{release}\n"))
        .map_err(io_err("write", &out.join(RELEASE_FILE)))?;

    let mut pinned = vec![ROOTFS, BZIMAGE, VMLINUX, RECIPE_FILE];
    if let Some(init) = &options.init {
        progress(BuildPhase::Initramfs);
        let modules_dir = root.join("lib/modules").join(&release);
        let spec = InitramfsSpec {
            init,
            modules_dir: &modules_dir,
            modules: GUEST_MODULES,
        };
        initramfs::build_initramfs(&spec, &out.join(INITRAMFS))?;
        pinned.push(INITRAMFS);
    }

    progress(BuildPhase::Filesystem);
    facts.used_bytes = pack_rootfs(
        owner,
        &root,
        &out.join(ROOTFS),
        &ext4::uuid_from_hash(&recipe.hash()),
        &options.log,
    )?;
    let meta = fs::metadata(out.join(ROOTFS)).map_err(io_err("read", &out.join(ROOTFS)))?;
    facts.size_bytes = meta.len();
    facts.disk_bytes = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;

    progress(BuildPhase::Pin);
    fs::write(out.join(RECIPE_FILE), recipe.canonical())
        .map_err(io_err("write", &out.join(RECIPE_FILE)))?;
    let facts_json = serde_json::to_vec_pretty(&facts).map_err(|e| DebianError::Io {
        action: "write",
        path: out.join(FACTS_FILE),
        source: io::Error::other(e),
    })?;
    fs::write(out.join(FACTS_FILE), facts_json).map_err(io_err("write", &out.join(FACTS_FILE)))?;
    pinned.push(FACTS_FILE);
    digest::pin(out, &pinned)?;
    Ok(release)
}

/// Writes the tree at `root` as the read-only base `image` and removes
/// the tree, both as the tree's owner (reading and removing files of the
/// image's users); the image belongs to the owner. Returns the bytes the
/// tree's files take.
fn pack_rootfs(
    owner: &TreeOwner,
    root: &Path,
    image: &Path,
    uuid: &str,
    log: &Path,
) -> Result<u64, DebianError> {
    let (used, inodes) = owner
        .tree_usage(root)
        .map_err(|e| tree_err(e, DebianError::Filesystem))?;
    let (size, inode_count) = ext4::filesystem_size(used, inodes, HEADROOM_BYTES);
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(ext4::mkfs_args(root, image, size, inode_count, uuid));
    owner
        .run_logged(mkfs, log)
        .map_err(|e| tree_err(e, DebianError::Filesystem))?;
    owner
        .remove_tree(root)
        .map_err(|e| tree_err(e, DebianError::Filesystem))?;
    Ok(used)
}

/// A step run as the tree's owner as a [`DebianError`]: a tool's failure
/// as `tool` says (which step it was), the rest as they are.
fn tree_err(e: TreeError, tool: fn(CommandError) -> DebianError) -> DebianError {
    match e {
        TreeError::Tool(e) => tool(e),
        TreeError::Namespace(e) => DebianError::Namespace(e),
        TreeError::Io {
            action,
            path,
            source,
        } => DebianError::Io {
            action,
            path,
            source,
        },
    }
}

/// How mmdebstrap makes its chroot: `root` as real root, `unshare` as
/// root of banger's user namespace (where it makes no namespace or id
/// mapping of its own, only mount and pid namespaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Root,
    Unshare,
}

/// mmdebstrap's arguments: into a directory, no Recommends, the
/// package cache synced in and out (`sync-in`/`sync-out` are mmdebstrap's
/// own hook commands; the one shell hook is a fixed string).
fn mmdebstrap_args(
    recipe: &DebianRecipe,
    mode: Mode,
    root: &Path,
    apt_cache: &Path,
) -> Vec<OsString> {
    let mut packages = recipe.all_packages();
    packages.push(recipe.kernel_package.clone());
    let cache = apt_cache.to_string_lossy();
    let mode = match mode {
        Mode::Root => "--mode=root",
        Mode::Unshare => "--mode=unshare",
    };
    let mut args: Vec<OsString> = [
        mode.to_owned(),
        "--variant=minbase".to_owned(),
        "--format=directory".to_owned(),
        format!("--include={}", packages.join(",")),
        "--skip=essential/unlink".to_owned(),
        r#"--setup-hook=mkdir -p "$1/var/cache/apt/archives""#.to_owned(),
        format!("--setup-hook=sync-in {cache} /var/cache/apt/archives/"),
        format!("--customize-hook=sync-out /var/cache/apt/archives {cache}"),
        recipe.suite.clone(),
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    args.push(root.as_os_str().to_owned());
    for source in &recipe.sources {
        for suite in &source.suites {
            args.push(format!("deb {} {suite} {}", source.uri, source.components.join(" ")).into());
        }
    }
    args
}

/// banger's changes to the bootstrapped tree: the sshd policy, and nothing
/// that must differ per VM (host keys, machine-id, hostname) baked in.
fn configure_tree(root: &Path, sshd_config: &str) -> Result<(), DebianError> {
    let ssh_dir = root.join("etc/ssh");
    let dropin_dir = ssh_dir.join("sshd_config.d");
    fs::create_dir_all(&dropin_dir).map_err(io_err("create", &dropin_dir))?;
    let dropin = dropin_dir.join("banger.conf");
    fs::write(&dropin, sshd_config).map_err(io_err("write", &dropin))?;
    fs::set_permissions(&dropin, fs::Permissions::from_mode(0o644))
        .map_err(io_err("chmod", &dropin))?;
    if let Ok(entries) = fs::read_dir(&ssh_dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
                fs::remove_file(entry.path()).map_err(io_err("remove", &entry.path()))?;
            }
        }
    }
    for unit in MASKED_UNITS {
        mask_unit(root, unit)?;
    }
    for generator in MASKED_GENERATORS {
        mask_generator(root, generator)?;
    }
    for (path, contents) in DROP_INS {
        add_drop_in(root, path, contents)?;
    }
    // An empty machine-id makes systemd generate one at first boot.
    replace_file(&root.join("etc/machine-id"), b"")?;
    for leftover in ["var/lib/dbus/machine-id", "etc/hostname"] {
        remove_if_present(&root.join(leftover))?;
    }
    // Debian's own initramfs is never used: banger boots its own.
    if let Ok(entries) = fs::read_dir(root.join("boot")) {
        for entry in entries.filter_map(Result::ok) {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("initrd.img")
            {
                remove_if_present(&entry.path())?;
            }
        }
    }
    let archives = root.join("var/cache/apt/archives");
    if let Ok(entries) = fs::read_dir(&archives) {
        for entry in entries.filter_map(Result::ok) {
            if entry.path().extension().is_some_and(|e| e == "deb") {
                remove_if_present(&entry.path())?;
            }
        }
    }
    Ok(())
}

/// Docker's place in the image:
///
/// - **Socket-activated**: `docker.socket` stays enabled (sockets.target),
///   while the `multi-user.target` links of `docker.service` and
///   `containerd.service` that the packages made are removed, so neither
///   daemon starts at boot: the first client on `/run/docker.sock` starts
///   dockerd, and dockerd's `Wants=containerd.service` starts containerd.
/// - **Data on ext4**: overlay2 cannot stack on the overlayfs root, so
///   `/var/lib/docker` is made here, empty, as the place banger-init
///   bind-mounts a directory of the system disk (ext4) over at every boot
///   (docs/guest-init.md); `daemon.json` names `overlay2`, so dockerd fails
///   rather than fall back to `vfs` should that ever not hold.
/// - **AppArmor** is there for dockerd's `docker-default` profile only:
///   `apparmor.service` is masked (no profiles parsed at boot).
/// - **`docker compose`**: Debian packages compose v1 as `docker-compose`;
///   [`COMPOSE_PLUGIN`] makes `docker compose ...` run it.
fn configure_docker(root: &Path) -> Result<(), DebianError> {
    // apparmor.service parses every profile in /etc/apparmor.d at boot;
    // the one this image needs, docker-default, dockerd loads itself
    // when it starts.
    mask_unit(root, "apparmor.service")?;
    for unit in ["docker.service", "containerd.service"] {
        remove_if_present(
            &root
                .join("etc/systemd/system/multi-user.target.wants")
                .join(unit),
        )?;
    }
    let socket = root.join("etc/systemd/system/sockets.target.wants/docker.socket");
    if fs::symlink_metadata(&socket).is_err() {
        if let Some(dir) = socket.parent() {
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        }
        std::os::unix::fs::symlink("/lib/systemd/system/docker.socket", &socket)
            .map_err(io_err("link", &socket))?;
    }
    let data = root.join(DOCKER_DATA);
    fs::create_dir_all(&data).map_err(io_err("create", &data))?;
    fs::set_permissions(&data, fs::Permissions::from_mode(0o710))
        .map_err(io_err("chmod", &data))?;
    add_drop_in(root, "etc/docker/daemon.json", DOCKER_DAEMON_JSON)?;
    let plugin = root.join("usr/local/lib/docker/cli-plugins/docker-compose");
    add_drop_in(
        root,
        "usr/local/lib/docker/cli-plugins/docker-compose",
        COMPOSE_PLUGIN,
    )?;
    fs::set_permissions(&plugin, fs::Permissions::from_mode(0o755))
        .map_err(io_err("chmod", &plugin))
}

/// Where dockerd keeps its data; banger-init bind-mounts the system
/// disk's `docker/` there in images that have this directory.
pub const DOCKER_DATA: &str = "var/lib/docker";

/// dockerd's configuration: overlay2 or nothing.
pub const DOCKER_DAEMON_JSON: &str = "{\n  \"storage-driver\": \"overlay2\"\n}\n";

/// A docker CLI plugin (the CLI asks it for its metadata, then runs it
/// with `compose` and the arguments) that runs Debian's compose v1.
pub const COMPOSE_PLUGIN: &str = "#!/bin/sh\n\
# banger: `docker compose` runs Debian's docker-compose (compose v1).\n\
if [ \"$1\" = docker-cli-plugin-metadata ]; then\n\
  echo '{\"SchemaVersion\":\"0.1.0\",\"Vendor\":\"banger\",\"ShortDescription\":\"Docker Compose (Debian docker-compose)\"}'\n\
  exit 0\n\
fi\n\
shift\n\
exec docker-compose \"$@\"\n";

/// What the tree holds, from dpkg's database and the recipe: the count
/// of installed packages, docker's and mise's versions, and where each
/// pinned binary came from. Sizes are added once the base is written.
fn tree_facts(root: &Path, recipe: &DebianRecipe) -> Result<ImageFacts, DebianError> {
    let status = root.join("var/lib/dpkg/status");
    let text = fs::read_to_string(&status).map_err(io_err("read", &status))?;
    let (packages, versions) = installed_packages(&text);
    let docker = recipe
        .docker
        .then(|| versions.iter().find(|(p, _)| p == "docker.io"))
        .flatten()
        .map(|(_, v)| v.clone());
    let mise = recipe
        .binaries
        .iter()
        .find(|b| b.name == "mise")
        .map(|b| b.version.clone().unwrap_or_else(|| "unknown".into()));
    Ok(ImageFacts {
        packages,
        docker,
        mise,
        binaries: recipe
            .binaries
            .iter()
            .map(|b| BinaryOrigin {
                name: b.name.clone(),
                version: b.version.clone(),
                source: b.source.to_string(),
                sha256: b.sha256.clone(),
            })
            .collect(),
        ..ImageFacts::default()
    })
}

/// The count of installed packages in a dpkg status file, and each one's
/// version.
fn installed_packages(status: &str) -> (u64, Vec<(String, String)>) {
    let mut versions = Vec::new();
    for paragraph in status.split("\n\n") {
        let field = |name: &str| {
            paragraph
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        if field("Status:").is_some_and(|s| s.ends_with(" installed"))
            && let (Some(p), Some(v)) = (field("Package:"), field("Version:"))
        {
            versions.push((p, v));
        }
    }
    (versions.len() as u64, versions)
}

/// The facts of a built image; an image built before they were recorded
/// has none (all zero).
fn read_facts(dir: &Path) -> Result<ImageFacts, DebianError> {
    let path = dir.join(FACTS_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| DebianError::Io {
            action: "read",
            path,
            source: io::Error::other(e),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ImageFacts::default()),
        Err(e) => Err(io_err("read", &path)(e)),
    }
}

/// Units masked in the image: what a sandbox does not use, and what its
/// boot would wait for or spend its (emulated) CPU on. Each was measured in
/// a booted default-image guest under TCG (docs/debian-image.md).
///
/// - `e2scrub_reap.service` removes stale LVM snapshots of e2scrub;
///   banger's guests have no LVM. It runs with `CPUSchedulingPolicy=idle`,
///   and `multi-user.target` waits for it: in an emulated guest on a busy
///   host the vCPU is never idle, so it never ran and the guest never
///   reached multi-user (seen under TCG with the host's cores all busy;
///   6.9 s of boot on an idle host).
/// - Timers that would start work in the middle of someone's session:
///   apt's daily download and upgrade, dpkg's database backup, e2scrub's
///   and fstrim's weekly runs (the disks are sparse files on the host),
///   and man-db's and logrotate's, which `--package` extras may bring.
/// - `getty@.service` (so every VT getty, and `autovt@`, its alias) and
///   `getty-static.service`: nobody logs in on a VT of a headless VM;
///   `serial-getty@ttyS0` stays for the console.
/// - `systemd-repart.service` and `systemd-pstore.service`: nothing to
///   repartition or archive, but each pulled in `modprobe@` units (loop,
///   dm_mod, efi_pstore), one process each at boot.
/// - `systemd-sysusers.service`: the image's system users were made when
///   its packages were installed, and with no `systemd-update-done` to
///   stamp `/etc`, its `ConditionNeedsUpdate` let it run at every boot, on
///   the critical chain to `sysinit.target`; a package installed later
///   runs `systemd-sysusers` from its own postinst.
/// - `systemd-remount-fs.service`: the image's fstab is empty and `/` is
///   the overlay banger-init mounted read-write; it too was on the chain.
/// - `systemd-update-utmp.service` (and its `-runlevel` twin): the boot
///   record in wtmp, for `last`; on the chain to `sysinit.target` too.
/// - `systemd-journal-flush.service`: with the journal volatile (below)
///   there is nothing to flush to `/var`, but it ran and sat on the chain.
/// - `user@.service`: a per-user systemd for root, which the first ssh
///   login waited for (its session scope is ordered after it): 1-2 s of
///   every first command over ssh. Without it there is no `systemctl
///   --user`; logind sessions and `/run/user/0` remain.
const MASKED_UNITS: &[&str] = &[
    "apt-daily-upgrade.timer",
    "apt-daily.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "getty-static.service",
    "getty@.service",
    "logrotate.timer",
    "man-db.timer",
    "systemd-journal-flush.service",
    "systemd-pstore.service",
    "systemd-remount-fs.service",
    "systemd-repart.service",
    "systemd-sysusers.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-update-utmp.service",
    "user@.service",
];

/// systemd generators masked in the image: systemd runs every generator,
/// one process each, before it starts its first unit, and under TCG each
/// costs a visible share of that wait. These have nothing to find in a
/// banger guest: no encrypted, integrity-checked or verity volumes, no
/// GPT partitions to mount automatically, no hibernation image, no
/// offline system update, and no `systemd.debug_shell`/`systemd.run` on
/// the kernel command line banger writes. In a booted guest on a loaded
/// host, systemd's first unit started at 1.4-1.5 s into userspace with
/// them masked against 2.0-2.5 s without, and `sysinit.target` came
/// 0.8-1 s sooner (docs/debian-image.md). The fstab, getty, sysv and
/// rc-local generators stay: a user's fstab, the serial console, and
/// packages that ship only an init script or use /etc/rc.local.
const MASKED_GENERATORS: &[&str] = &[
    "systemd-cryptsetup-generator",
    "systemd-debug-generator",
    "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator",
    "systemd-integritysetup-generator",
    "systemd-run-generator",
    "systemd-system-update-generator",
    "systemd-veritysetup-generator",
];

/// Configuration drop-ins banger adds to the image, by path in the tree.
///
/// - journald keeps the journal in `/run` (volatile): its flush to
///   `/var/log/journal` was on the critical chain to `sysinit.target` at
///   every boot (its unit is masked above). A boot's journal is gone after the next (no `journalctl
///   -b -1`); the console (`banger vm logs`) is kept on the host.
/// - sshd starts without checking its config first (`sshd -t` in
///   `ExecStartPre`): the config is banger's, and sshd refuses a broken
///   one itself. One process less: `ssh.service` took 1.4-1.7 s against
///   2.2-3.1 s on a loaded host under TCG (the same 1.3 s on a quiet one).
const DROP_INS: &[(&str, &str)] = &[
    (
        "etc/systemd/journald.conf.d/banger.conf",
        "# banger: the journal in /run, not flushed to /var at boot.\n\
         [Journal]\nStorage=volatile\n",
    ),
    (
        "etc/systemd/system/ssh.service.d/banger.conf",
        "# banger: no `sshd -t` before sshd, one process less at boot.\n\
         [Service]\nExecStartPre=\n",
    ),
];

/// Masks `unit` as `systemctl mask` does: a link to /dev/null in
/// /etc/systemd/system, which wins over the package's unit.
fn mask_unit(root: &Path, unit: &str) -> Result<(), DebianError> {
    let dir = root.join("etc/systemd/system");
    fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let link = dir.join(unit);
    remove_if_present(&link)?;
    std::os::unix::fs::symlink("/dev/null", &link).map_err(io_err("link", &link))
}

/// Masks the generator `name`: a link to /dev/null of its name in
/// /etc/systemd/system-generators, which wins over the package's
/// (systemd.generator(7)).
fn mask_generator(root: &Path, name: &str) -> Result<(), DebianError> {
    let dir = root.join("etc/systemd/system-generators");
    fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let link = dir.join(name);
    remove_if_present(&link)?;
    std::os::unix::fs::symlink("/dev/null", &link).map_err(io_err("link", &link))
}

/// Writes the drop-in `path` (relative to `root`) with mode 0644, making
/// its directory.
fn add_drop_in(root: &Path, path: &str, contents: &str) -> Result<(), DebianError> {
    let file = root.join(path);
    if let Some(dir) = file.parent() {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    remove_if_present(&file)?;
    fs::write(&file, contents).map_err(io_err("write", &file))?;
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).map_err(io_err("chmod", &file))
}

/// Writes `path` anew with `contents`, keeping the mode it had (0644 if
/// new). Removed and made again rather than truncated: the owner building
/// without root owns the image's root files but has no override for a
/// read-only mode (bookworm's machine-id is 0644, but systemd makes it
/// 0444 elsewhere).
fn replace_file(path: &Path, contents: &[u8]) -> Result<(), DebianError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mode = match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => m.permissions().mode() & 0o7777,
        _ => 0o644,
    };
    remove_if_present(path)?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("create", path))?;
    io::Write::write_all(&mut file, contents).map_err(io_err("write", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
}

fn remove_if_present(path: &Path) -> Result<(), DebianError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// The release of the one kernel in the tree's /boot.
fn find_kernel(root: &Path, kernel_package: &str) -> Result<String, DebianError> {
    crate::kernel::package::newest_release(root)
        .ok()
        .flatten()
        .ok_or_else(|| DebianError::NoKernel(kernel_package.to_owned()))
}

pub(crate) fn running_as_root() -> bool {
    // The effective uid is the second field of Uid: in /proc/self/status.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST_SOURCES: &str = "\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
";

    fn host() -> Vec<AptSource> {
        sources_for_suite(&parse_deb822(HOST_SOURCES).unwrap(), "bookworm").unwrap()
    }

    #[test]
    fn reads_deb822_sources() {
        let sources = host();
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[0].uri, "http://deb.debian.org/debian");
        assert_eq!(sources[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(sources[1].suites, ["bookworm-security"]);
        assert!(
            parse_deb822("Types deb\n")
                .unwrap_err()
                .contains("Field: value")
        );
    }

    #[test]
    fn reads_one_line_sources_and_falls_back_on_other_releases() {
        let list = "# comment\ndeb [signed-by=/k.gpg] http://mirror.example/debian trixie main contrib\n\
                    deb http://security.debian.org/debian-security trixie-security main\ndeb-src http://x/debian trixie main\n";
        let all = parse_one_line(list);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].components, ["main", "contrib"]);
        let sources = sources_for_suite(&all, "bookworm").unwrap();
        assert_eq!(
            sources,
            [AptSource {
                uri: "http://mirror.example/debian".into(),
                suites: vec!["bookworm".into()],
                components: vec!["main".into()],
            }]
        );
        assert_eq!(sources_for_suite(&[], "bookworm"), None);
    }

    #[test]
    fn the_hash_covers_what_the_image_holds_not_where_it_came_from() {
        let a = DebianRecipe::bookworm(host());
        let b = DebianRecipe::bookworm(host())
            .with_packages(&["git", "curl"])
            .unwrap();
        assert_eq!(a.hash(), b.hash(), "duplicates and order do not matter");
        let mut other_mirror = host();
        other_mirror[0].uri = "http://mirror.example/debian".into();
        assert_eq!(a.hash(), DebianRecipe::bookworm(other_mirror).hash());
        let c = a.clone().with_packages(&["htop"]).unwrap();
        assert_ne!(a.hash(), c.hash());
        assert!(c.canonical().contains("package htop\n"));
        let mut d = a.clone();
        d.sshd_config.push_str("X11Forwarding no\n");
        assert_ne!(a.hash(), d.hash());
        assert_eq!(a.hash().len(), 64);
    }

    #[test]
    fn the_hash_covers_docker_and_mise_choices() {
        let full = DebianRecipe::bookworm(host());
        let lean = full.clone().without_docker();
        let no_mise = full.clone().without_mise();
        let other_mise = full.clone().with_binary(PinnedBinary {
            source: binary::BinarySource::Url("https://example.org/mise".into()),
            sha256: "cd".repeat(32),
            ..PinnedBinary::default_mise()
        });
        let hashes = [&full, &lean, &no_mise, &other_mise].map(|r| r.hash());
        for (i, a) in hashes.iter().enumerate() {
            for b in &hashes[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert!(full.canonical().contains("docker yes\n"));
        assert!(lean.canonical().contains("docker no\n"));
        assert!(full.canonical().contains(
            "binary mise npm:@jdxcode/mise-linux-x64@2026.9.15 sha256:b51f2463bc4fcdc3b0959b1454792f64be3612e73d856cbca4a062e39e070e74 usr/local/bin/mise\n"
        ));
        assert!(!no_mise.canonical().contains("binary "));
        assert_eq!(other_mise.binaries.len(), 1, "replaced, not added");
        let include = |r: &DebianRecipe| {
            mmdebstrap_args(r, Mode::Root, Path::new("/r"), Path::new("/a"))
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .find(|a| a.starts_with("--include="))
                .unwrap()
        };
        assert!(include(&full).contains("docker.io,"), "{}", include(&full));
        assert!(include(&full).contains("docker-compose,"));
        assert!(!include(&lean).contains("docker"), "{}", include(&lean));
    }

    #[test]
    fn docker_is_socket_activated_with_its_data_dir_and_compose() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let wants = root.join("etc/systemd/system/multi-user.target.wants");
        fs::create_dir_all(&wants).unwrap();
        for unit in ["docker.service", "containerd.service", "ssh.service"] {
            std::os::unix::fs::symlink(format!("/lib/systemd/system/{unit}"), wants.join(unit))
                .unwrap();
        }
        configure_docker(root).unwrap();
        assert!(fs::symlink_metadata(wants.join("docker.service")).is_err());
        assert!(fs::symlink_metadata(wants.join("containerd.service")).is_err());
        assert!(fs::symlink_metadata(wants.join("ssh.service")).is_ok());
        assert_eq!(
            fs::read_link(root.join("etc/systemd/system/apparmor.service")).unwrap(),
            Path::new("/dev/null")
        );
        assert_eq!(
            fs::read_link(root.join("etc/systemd/system/sockets.target.wants/docker.socket"))
                .unwrap(),
            Path::new("/lib/systemd/system/docker.socket")
        );
        let data = fs::metadata(root.join(DOCKER_DATA)).unwrap();
        assert!(data.is_dir());
        assert_eq!(data.permissions().mode() & 0o777, 0o710);
        assert!(
            fs::read_to_string(root.join("etc/docker/daemon.json"))
                .unwrap()
                .contains("\"storage-driver\": \"overlay2\"")
        );
        let plugin = root.join("usr/local/lib/docker/cli-plugins/docker-compose");
        assert_eq!(
            fs::metadata(&plugin).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert!(
            fs::read_to_string(&plugin)
                .unwrap()
                .contains("exec docker-compose \"$@\"")
        );
    }

    #[test]
    fn facts_count_installed_packages_and_find_docker() {
        let status = "Package: docker.io\nStatus: install ok installed\nVersion: 20.10.24+dfsg1-1\n\n\
                      Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                      Package: git\nStatus: install ok installed\nVersion: 1:2.39.5-0+deb12u2\n";
        let (count, versions) = installed_packages(status);
        assert_eq!(count, 2);
        assert_eq!(versions[0], ("docker.io".into(), "20.10.24+dfsg1-1".into()));
    }

    #[test]
    fn package_names_are_checked() {
        let r = DebianRecipe::bookworm(host());
        for bad in ["", "a", "Foo", "pkg;rm", "-x", "a b", "pkg=1.0"] {
            let err = r.clone().with_packages(&[bad]).unwrap_err().to_string();
            assert!(err.contains("not a Debian package name"), "{bad}: {err}");
        }
        r.with_packages(&["g++", "libstdc++6", "python3.11"])
            .unwrap();
    }

    #[test]
    fn the_default_recipe_has_the_issue_s_packages_and_sshd_policy() {
        let r = DebianRecipe::bookworm(host());
        for p in [
            "systemd",
            "openssh-server",
            "ca-certificates",
            "git",
            "curl",
            "jq",
            "iproute2",
            "sudo",
            "less",
            "procps",
            "build-essential",
        ] {
            assert!(r.packages.iter().any(|x| x == p), "{p}");
        }
        assert_eq!(r.kernel_package, "linux-image-cloud-amd64");
        for line in [
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "StrictModes yes",
        ] {
            assert!(r.sshd_config.contains(line), "{line}");
        }
    }

    #[test]
    fn mmdebstrap_gets_packages_kernel_cache_and_every_source() {
        let r = DebianRecipe::bookworm(host());
        let args: Vec<String> =
            mmdebstrap_args(&r, Mode::Root, Path::new("/c/x/root"), Path::new("/c/apt"))
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect();
        assert_eq!(args[0], "--mode=root");
        let unshare = mmdebstrap_args(&r, Mode::Unshare, Path::new("/r"), Path::new("/a"));
        assert_eq!(unshare[0], "--mode=unshare");
        assert_eq!(
            unshare[1..],
            args[1..]
                .iter()
                .map(|a| { OsString::from(a.replace("/c/x/root", "/r").replace("/c/apt", "/a")) })
                .collect::<Vec<_>>()[..]
        );
        let include = args.iter().find(|a| a.starts_with("--include=")).unwrap();
        assert!(include.contains(",linux-image-cloud-amd64"), "{include}");
        assert!(args.contains(&"--setup-hook=sync-in /c/apt /var/cache/apt/archives/".into()));
        assert!(args.contains(&"--customize-hook=sync-out /var/cache/apt/archives /c/apt".into()));
        let tail = &args[args.len() - 5..];
        assert_eq!(
            tail,
            [
                "bookworm",
                "/c/x/root",
                "deb http://deb.debian.org/debian bookworm main",
                "deb http://deb.debian.org/debian bookworm-updates main",
                "deb http://deb.debian.org/debian-security bookworm-security main",
            ]
        );
    }

    #[test]
    fn configuring_removes_per_vm_identity_and_adds_sshd_policy() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["etc/ssh", "var/lib/dbus", "boot", "var/cache/apt/archives"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_ed25519_key.pub",
            "etc/ssh/sshd_config",
            "etc/machine-id",
            "var/lib/dbus/machine-id",
            "etc/hostname",
            "boot/vmlinuz-6.1.0-9-cloud-amd64",
            "boot/initrd.img-6.1.0-9-cloud-amd64",
            "var/cache/apt/archives/git_1_amd64.deb",
        ] {
            fs::write(root.join(f), "x").unwrap();
        }
        configure_tree(root, SSHD_CONFIG).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("etc/ssh/sshd_config.d/banger.conf")).unwrap(),
            SSHD_CONFIG
        );
        assert!(!root.join("etc/ssh/ssh_host_ed25519_key").exists());
        assert!(!root.join("etc/ssh/ssh_host_ed25519_key.pub").exists());
        assert!(root.join("etc/ssh/sshd_config").exists());
        assert_eq!(fs::read_to_string(root.join("etc/machine-id")).unwrap(), "");
        assert!(!root.join("var/lib/dbus/machine-id").exists());
        assert!(!root.join("etc/hostname").exists());
        for unit in [
            "e2scrub_reap.service",
            "apt-daily.timer",
            "apt-daily-upgrade.timer",
            "getty@.service",
            "user@.service",
        ] {
            assert_eq!(
                fs::read_link(root.join("etc/systemd/system").join(unit)).unwrap(),
                Path::new("/dev/null"),
                "{unit} masked"
            );
        }
        for generator in ["systemd-gpt-auto-generator", "systemd-cryptsetup-generator"] {
            assert_eq!(
                fs::read_link(root.join("etc/systemd/system-generators").join(generator)).unwrap(),
                Path::new("/dev/null"),
                "{generator} masked"
            );
        }
        assert!(
            !root
                .join("etc/systemd/system-generators/systemd-fstab-generator")
                .exists()
        );
        // The serial console keeps its getty; sshd and logind stay.
        for unit in [
            "serial-getty@.service",
            "ssh.service",
            "systemd-logind.service",
        ] {
            assert!(!MASKED_UNITS.contains(&unit), "{unit} must not be masked");
        }
        let journald = root.join("etc/systemd/journald.conf.d/banger.conf");
        assert!(
            fs::read_to_string(&journald)
                .unwrap()
                .contains("\nStorage=volatile\n")
        );
        let ssh = root.join("etc/systemd/system/ssh.service.d/banger.conf");
        assert!(
            fs::read_to_string(&ssh)
                .unwrap()
                .ends_with("[Service]\nExecStartPre=\n")
        );
        assert_eq!(
            fs::metadata(&ssh).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(!root.join("boot/initrd.img-6.1.0-9-cloud-amd64").exists());
        assert!(!root.join("var/cache/apt/archives/git_1_amd64.deb").exists());
        assert_eq!(find_kernel(root, "k").unwrap(), "6.1.0-9-cloud-amd64");
        let empty = tempfile::tempdir().unwrap();
        assert!(
            find_kernel(empty.path(), "linux-image-cloud-amd64")
                .unwrap_err()
                .to_string()
                .contains("linux-image-cloud-amd64")
        );
    }

    /// The tree as mmdebstrap leaves it: files of root and of other
    /// users, restrictive modes (machine-id read-only, _apt's 0700
    /// directory), a set-gid directory.
    fn fixture_tree_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add =
            |path: &str, kind: tar::EntryType, mode: u32, uid: u64, gid: u64, data: &[u8]| {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(kind);
                h.set_mode(mode);
                h.set_uid(uid);
                h.set_gid(gid);
                h.set_mtime(1_700_000_000);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data).unwrap();
            };
        use tar::EntryType::{Directory as D, Regular as F};
        add("etc/", D, 0o755, 0, 0, b"");
        add("etc/machine-id", F, 0o444, 0, 0, b"uninitialized\n");
        add("etc/shadow", F, 0o640, 0, 42, b"root:*:1::::::\n");
        add("etc/ssh/", D, 0o755, 0, 0, b"");
        add("etc/ssh/ssh_host_ed25519_key", F, 0o600, 0, 0, b"secret");
        add("var/", D, 0o755, 0, 0, b"");
        add("var/cache/", D, 0o755, 0, 0, b"");
        add("var/cache/apt/", D, 0o755, 0, 0, b"");
        add("var/cache/apt/archives/", D, 0o755, 0, 0, b"");
        add("var/cache/apt/archives/partial/", D, 0o700, 42, 0, b"");
        add(
            "var/cache/apt/archives/partial/x.deb",
            F,
            0o600,
            42,
            0,
            b"x",
        );
        add("var/log/", D, 0o755, 0, 0, b"");
        add("var/log/journal/", D, 0o2755, 0, 101, b"");
        add("home/", D, 0o755, 0, 0, b"");
        add("home/user/", D, 0o700, 1000, 1000, b"");
        add("home/user/notes", F, 0o600, 1000, 1000, b"n");
        add("nobody-file", F, 0o644, 65534, 65534, b"");
        b.into_inner().unwrap()
    }

    /// As root (CI), the owner's side below as `nobody` with subordinate
    /// ids of its own: the tree's owners must reach the ext4 as they were,
    /// the image must belong to the owner, and the tree must be gone.
    #[test]
    fn an_unprivileged_owner_packs_the_tree_keeping_its_owners() {
        if !running_as_root() {
            return banger_testkit::skip("needs root to run a part of it as nobody");
        }
        if !banger_testkit::have_tools(&["newuidmap", "newgidmap", "mkfs.ext4", "tar", "du"]) {
            return;
        }
        let scratch = tempfile::tempdir().unwrap();
        let work = scratch.path().join("work");
        fs::create_dir(&work).unwrap();
        fs::write(work.join("tree.tar"), fixture_tree_tar()).unwrap();
        use banger_testkit::owner::{OWNER_GID, OWNER_UID};
        std::os::unix::fs::chown(&work, Some(OWNER_UID), Some(OWNER_GID)).unwrap();
        let out = banger_testkit::owner::run_ignored_test_as_owner(
            "debian::tests::owner_side_of_packing_the_tree",
            scratch.path(),
            banger_testkit::owner::AsOwner::SET_UP,
            &[("BANGER_TEST_OWNER_DIR", &work)],
        );
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "the owner's side failed:\n{said}");
        assert!(
            said.contains("1 passed"),
            "the owner's side did not run:\n{said}"
        );

        use std::os::unix::fs::MetadataExt;
        let image = work.join(ROOTFS);
        let meta = fs::metadata(&image).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (OWNER_UID, OWNER_GID),
            "the owner's"
        );
        assert!(!work.join("root").exists(), "the tree is removed");

        let fs4 = ext4_view::Ext4::load_from_path(&image).unwrap();
        let owners = |path: &str| {
            let m = fs4.symlink_metadata(path).unwrap();
            (m.uid(), m.gid(), m.mode() & 0o7777)
        };
        assert_eq!(owners("/"), (0, 0, 0o755));
        assert_eq!(
            owners("/etc/machine-id"),
            (0, 0, 0o444),
            "rewritten, mode kept"
        );
        assert_eq!(fs4.read("/etc/machine-id").unwrap(), b"");
        assert_eq!(owners("/etc/shadow"), (0, 42, 0o640));
        assert_eq!(owners("/etc/ssh/sshd_config.d/banger.conf"), (0, 0, 0o644));
        assert!(!fs4.exists("/etc/ssh/ssh_host_ed25519_key").unwrap());
        assert_eq!(owners("/var/cache/apt/archives/partial"), (42, 0, 0o700));
        assert_eq!(owners("/var/log/journal"), (0, 101, 0o2755));
        assert_eq!(owners("/home/user"), (1000, 1000, 0o700));
        assert_eq!(owners("/home/user/notes"), (1000, 1000, 0o600));
        assert_eq!(owners("/nobody-file"), (65534, 65534, 0o644));
        assert_eq!(owners("/etc/systemd/system/e2scrub_reap.service").0, 0);
    }

    /// Run by the test above as the owner: the namespace-side steps of a
    /// build (a tool making files of the image's users, then `du`,
    /// `mkfs.ext4 -d` and `rm`) and banger's adjustments outside it.
    #[test]
    #[ignore = "run as an unprivileged owner by an_unprivileged_owner_packs_the_tree_keeping_its_owners"]
    fn owner_side_of_packing_the_tree() {
        let work = PathBuf::from(std::env::var_os("BANGER_TEST_OWNER_DIR").unwrap());
        assert!(!running_as_root());
        let mapper: Arc<dyn IdMapper> = Arc::new(NewIdMap);
        let owner = TreeOwner::for_this_process(&mapper).unwrap_or_else(|e| panic!("{e}"));
        let root = work.join("root");
        fs::create_dir(&root).unwrap();
        // What mmdebstrap does in the namespace: files of several users.
        let mut untar = Command::new("tar");
        untar
            .args([
                "--extract",
                "--numeric-owner",
                "--same-owner",
                "--same-permissions",
                "-f",
            ])
            .arg(work.join("tree.tar"))
            .arg("-C")
            .arg(&root);
        owner.run(untar).unwrap_or_else(|e| panic!("{e}"));
        configure_tree(&root, SSHD_CONFIG).unwrap_or_else(|e| panic!("{e}"));
        pack_rootfs(
            &owner,
            &root,
            &work.join(ROOTFS),
            &ext4::uuid_from_hash("ab"),
            &work.join("log"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// An owner without subordinate ids is told, in one line, how to get
    /// them, before anything runs.
    #[test]
    fn an_owner_without_subordinate_ids_is_told_what_to_run() {
        if !running_as_root() {
            return banger_testkit::skip("needs root to run a part of it as nobody");
        }
        if !banger_testkit::have_tools(&["newuidmap", "newgidmap"]) {
            return;
        }
        let scratch = tempfile::tempdir().unwrap();
        let out = banger_testkit::owner::run_ignored_test_as_owner(
            "debian::tests::owner_side_without_subordinate_ids",
            scratch.path(),
            banger_testkit::owner::AsOwner {
                subordinate_ids: false,
                ..banger_testkit::owner::AsOwner::SET_UP
            },
            &[],
        );
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && said.contains("1 passed"), "{said}");
    }

    /// Under `NoNewPrivileges=yes` the setuid newuidmap cannot map ids:
    /// said up front, with the way out, rather than as newuidmap's EPERM.
    #[test]
    fn an_owner_under_no_new_privs_is_told_why_newuidmap_cannot_work() {
        if !running_as_root() {
            return banger_testkit::skip("needs root to run a part of it as nobody");
        }
        if !banger_testkit::have_tools(&["newuidmap", "newgidmap"]) {
            return;
        }
        let scratch = tempfile::tempdir().unwrap();
        let out = banger_testkit::owner::run_ignored_test_as_owner(
            "debian::tests::owner_side_under_no_new_privs",
            scratch.path(),
            banger_testkit::owner::AsOwner {
                no_new_privs: true,
                ..banger_testkit::owner::AsOwner::SET_UP
            },
            &[],
        );
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && said.contains("1 passed"), "{said}");
    }

    #[test]
    #[ignore = "run as an unprivileged owner by an_owner_under_no_new_privs_is_told_why_newuidmap_cannot_work"]
    fn owner_side_under_no_new_privs() {
        let mapper: Arc<dyn IdMapper> = Arc::new(NewIdMap);
        let err = TreeOwner::for_this_process(&mapper)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no_new_privs (systemd NoNewPrivileges=yes)")
                && err.contains("drop NoNewPrivileges"),
            "{err}"
        );
    }

    /// newuidmap maps only a process of its user's primary group: a
    /// bangerd run with another (a unit's `Group=`) is told so.
    #[test]
    fn an_owner_in_another_group_is_told_to_use_its_primary_group() {
        if !running_as_root() {
            return banger_testkit::skip("needs root to run a part of it as nobody");
        }
        let scratch = tempfile::tempdir().unwrap();
        let out = banger_testkit::owner::run_ignored_test_as_owner(
            "debian::tests::owner_side_in_another_group",
            scratch.path(),
            banger_testkit::owner::AsOwner {
                group: Some(100),
                ..banger_testkit::owner::AsOwner::SET_UP
            },
            &[],
        );
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && said.contains("1 passed"), "{said}");
    }

    #[test]
    #[ignore = "run as an unprivileged owner by an_owner_in_another_group_is_told_to_use_its_primary_group"]
    fn owner_side_in_another_group() {
        let mapper: Arc<dyn IdMapper> = Arc::new(NewIdMap);
        let err = TreeOwner::for_this_process(&mapper)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "this process runs with group 100, not nobody's primary group 65534, and newuidmap \
             maps only a process of its user's primary group: run bangerd with nobody's primary \
             group (in its unit, no Group= or Group=65534)"
        );
    }

    #[test]
    #[ignore = "run as an unprivileged owner by an_owner_without_subordinate_ids_is_told_what_to_run"]
    fn owner_side_without_subordinate_ids() {
        let dir = tempfile::tempdir().unwrap();
        let options = BuildOptions {
            images_cache: dir.path().join("images"),
            apt_cache: dir.path().join("apt"),
            downloads: dir.path().join("downloads"),
            log: dir.path().join("log"),
            init: None,
            id_mapper: None,
        };
        let recipe = DebianRecipe::bookworm(host());
        let err = build_image(&recipe, &options, &mut |_| panic!("nothing may run"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "building images as nobody needs subordinate uids of at least 65536 ids in \
             /etc/subuid, and nobody has none: run 'sudo banger system install --owner nobody', \
             or 'sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 nobody'"
        );
        assert!(!dir.path().join("images").exists(), "nothing was made");
    }

    #[test]
    fn hostile_recipe_values_are_refused_naming_the_field() {
        for suite in ["bookworm", "trixie", "12.5", "bookworm-backports"] {
            validate_suite(suite).unwrap();
        }
        for (suite, why) in [
            (
                "--setup-hook=touch /tmp/x",
                "starting with a letter or digit",
            ),
            ("bookworm\ndeb http://evil/ x main", "lowercase letters"),
            ("book worm", "lowercase letters"),
            ("Bookworm", "lowercase letters"),
            ("", "1 to 64"),
        ] {
            let err = validate_suite(suite).unwrap_err().to_string();
            assert!(err.starts_with("recipe suite "), "{suite:?}: {err}");
            assert!(err.contains(why), "{suite:?}: {err}");
        }
        for uri in [
            "http://deb.debian.org/debian",
            "https://mirror.example/debian/",
            "file:/srv/mirror",
        ] {
            validate_uri(uri).unwrap();
        }
        for uri in [
            "http://x/ bookworm main\ndeb http://evil/",
            "[trusted=yes] http://x/",
            "ftp://x/debian",
            "deb.debian.org/debian",
            "--option",
        ] {
            let err = validate_uri(uri).unwrap_err().to_string();
            assert!(err.starts_with("recipe mirror "), "{uri:?}: {err}");
        }
        let mut recipe = DebianRecipe::bookworm(vec![AptSource {
            uri: "http://deb.debian.org/debian".into(),
            suites: vec!["bookworm".into()],
            components: vec!["main".into()],
        }]);
        recipe.validate().unwrap();
        recipe.sources[0].components.push("main contrib".into());
        let err = recipe.validate().unwrap_err().to_string();
        assert!(err.contains("recipe component \"main contrib\""), "{err}");
        recipe.sources[0].components.pop();
        recipe.suite = "-x".into();
        let err = build_image(
            &recipe,
            &BuildOptions {
                images_cache: "/nonexistent/images".into(),
                apt_cache: "/nonexistent/apt".into(),
                downloads: "/nonexistent/downloads".into(),
                log: "/nonexistent/log".into(),
                init: None,
                id_mapper: None,
            },
            &mut |_| panic!("nothing may run"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("recipe suite \"-x\""), "{err}");
    }
}
