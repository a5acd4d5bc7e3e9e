//! `config.toml`: every key optional, unknown keys rejected by name.

use std::fmt;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use banger_model::DefaultsOverride;
use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize};

use crate::{DEFAULT_BRIDGE_CIDR, DEFAULT_BRIDGE_NAME, DEFAULT_IMAGE_NAME, Paths};

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub default_image_name: Option<String>,
    /// As written; see [`Config::ssh_key_path`] for the resolved path.
    pub ssh_key_path: Option<String>,
    pub hypervisor: Option<HypervisorChoice>,
    pub firecracker_bin: Option<PathBuf>,
    pub qemu_bin: Option<PathBuf>,
    pub log_level: Option<LogLevel>,
    pub bridge_name: Option<String>,
    pub bridge_cidr: Option<Ipv4Net>,
    /// Where bangerd answers the `.vm` zone; default: the bridge address,
    /// port 53.
    pub dns_listen_addr: Option<SocketAddr>,
    /// Where bangerd serves the web UI; absent (the default): no web UI.
    /// Port 0 takes a free port at each start (`banger web url` says
    /// which).
    pub web_listen_addr: Option<SocketAddr>,
    /// Debian mirror for image builds; default: the host's apt sources.
    pub debian_mirror: Option<String>,
    /// How many bytes an OCI image may unpack to before the pull is
    /// refused as a decompression bomb; default [`DEFAULT_OCI_MAX_UNPACKED`].
    pub oci_max_unpacked: Option<banger_model::Size>,
    /// The largest single file `[[file_sync]]` copies; default
    /// [`DEFAULT_FILE_SYNC_MAX_FILE`].
    pub file_sync_max_file: Option<banger_model::Size>,
    /// How much `[[file_sync]]` copies into one VM, all entries together;
    /// default [`DEFAULT_FILE_SYNC_MAX_TOTAL`].
    pub file_sync_max_total: Option<banger_model::Size>,
    /// The most bytes a manifest, image index or image config may have;
    /// default [`DEFAULT_OCI_MAX_MANIFEST`].
    pub oci_max_manifest: Option<banger_model::Size>,
    /// The most bytes of tar header records (PAX records, GNU long names
    /// and links, sparse maps) one layer entry may have; default
    /// [`DEFAULT_OCI_MAX_TAR_HEADER`].
    pub oci_max_tar_header: Option<banger_model::Size>,
    /// The most layers an image may have; default [`DEFAULT_OCI_MAX_LAYERS`].
    pub oci_max_layers: Option<u32>,
    /// The most tar entries one layer may have; default
    /// [`DEFAULT_OCI_MAX_LAYER_ENTRIES`].
    pub oci_max_layer_entries: Option<u64>,
    /// The most tar entries all layers of an image may have together;
    /// default [`DEFAULT_OCI_MAX_IMAGE_ENTRIES`].
    pub oci_max_image_entries: Option<u64>,
    /// How long a VM's console log may grow before it is rotated to
    /// `console.log.1`; default [`DEFAULT_CONSOLE_LOG_MAX`].
    pub console_log_max: Option<banger_model::Size>,
    /// Whether new VMs resume from templates, and a template is made in
    /// the background after a cold boot found none; default true.
    pub vm_templates: Option<bool>,
    #[serde(default)]
    pub vm_defaults: DefaultsOverride,
    #[serde(default)]
    pub file_sync: Vec<FileSyncEntry>,
}

/// The default of `oci_max_unpacked`: more than any sane image, less than
/// a full disk.
pub const DEFAULT_OCI_MAX_UNPACKED: banger_model::Size = banger_model::Size::from_gib(32);
/// The default of `oci_max_manifest`: real manifests and configs are a few
/// KiB, the biggest (long histories, many platforms) well under 1 MiB;
/// registries themselves refuse manifests over 4 MiB.
pub const DEFAULT_OCI_MAX_MANIFEST: banger_model::Size = banger_model::Size::from_mib(4);
/// The default of `oci_max_tar_header`: a path is at most 4 KiB, xattrs
/// a few KiB; these records are held in memory whole.
pub const DEFAULT_OCI_MAX_TAR_HEADER: banger_model::Size = banger_model::Size::from_mib(1);
/// The default of `oci_max_layers`: Docker builds stop at 127 layers.
pub const DEFAULT_OCI_MAX_LAYERS: u32 = 128;
/// The default of `oci_max_layer_entries`: the biggest real images (CUDA,
/// TeX Live) hold a few hundred thousand files.
pub const DEFAULT_OCI_MAX_LAYER_ENTRIES: u64 = 1_000_000;
/// The default of `oci_max_image_entries`.
pub const DEFAULT_OCI_MAX_IMAGE_ENTRIES: u64 = 2_000_000;

/// The default of `file_sync_max_file`: dotfiles and tool configs are
/// small; a file this big is more likely a mistake (or a swapped link)
/// than something a sandbox needs.
pub const DEFAULT_FILE_SYNC_MAX_FILE: banger_model::Size = banger_model::Size::from_mib(256);

/// The default of `file_sync_max_total`: the synced files pass through a
/// staging tree beside the VM's disk and onto the work disk, so their sum
/// is bounded too.
pub const DEFAULT_FILE_SYNC_MAX_TOTAL: banger_model::Size = banger_model::Size::from_gib(1);

/// The default of `console_log_max`: days of a chatty guest's boots, and
/// two of them (the log and the previous one) are a small part of a disk.
pub const DEFAULT_CONSOLE_LOG_MAX: banger_model::Size = banger_model::Size::from_mib(16);

/// The smallest `console_log_max`: below it the log would be rotated
/// for every few lines, and a boot's messages would not fit in two files.
pub const MIN_CONSOLE_LOG_MAX: banger_model::Size = banger_model::Size::from_bytes(64 << 10);

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSyncEntry {
    pub host: String,
    pub guest: String,
    /// Permission bits, written as `"0600"` or `0o600`.
    #[serde(default, deserialize_with = "de_mode")]
    pub mode: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HypervisorChoice {
    #[default]
    Auto,
    Firecracker,
    Qemu,
}

impl fmt::Display for HypervisorChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HypervisorChoice::Auto => "auto",
            HypervisorChoice::Firecracker => "firecracker",
            HypervisorChoice::Qemu => "qemu",
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "error" => Ok(LogLevel::Error),
            "warn" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            other => Err(format!(
                "log level {other:?} is not one of error, warn, info, debug, trace"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("config {path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("BANGER_LOG_LEVEL: {0}")]
    BadEnvLogLevel(String),
}

impl Config {
    /// Loads the config file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses and validates config text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            let mut message = humanize(e.message());
            // Value errors ("invalid IP address syntax") do not name the key;
            // the line they point at does.
            if let Some(key) = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && !message.contains(*k))
            {
                message = format!("`{key}`: {message}");
            }
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                message,
            }
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(p) = &self.ssh_key_path
            && !(p.starts_with('/') || p.starts_with("~/"))
        {
            return Err(format!(
                "ssh_key_path {p:?} is relative: write an absolute path or one starting with ~/"
            ));
        }
        for (key, bin) in [
            ("firecracker_bin", &self.firecracker_bin),
            ("qemu_bin", &self.qemu_bin),
        ] {
            if let Some(b) = bin
                && b.as_os_str().is_empty()
            {
                return Err(format!(
                    "{key} is empty: give a path or a program name, or remove the key"
                ));
            }
        }
        if let Some(name) = &self.bridge_name {
            validate_interface_name(name)?;
        }
        if let Some(net) = &self.bridge_cidr
            && (net.prefix_len() > 30
                || net.addr() == net.network()
                || net.addr() == net.broadcast())
        {
            return Err(format!(
                "bridge_cidr {net} must be a host address inside a network of /30 or larger, \
                 like {DEFAULT_BRIDGE_CIDR}"
            ));
        }
        if let Some(addr) = &self.dns_listen_addr
            && addr.port() == 0
        {
            return Err(format!(
                "dns_listen_addr {addr} has port 0: give a port, like {}:53",
                addr.ip()
            ));
        }
        if let Some(m) = &self.debian_mirror
            && !(m.starts_with("http://") || m.starts_with("https://") || m.starts_with("file:/"))
        {
            return Err(format!(
                "debian_mirror {m:?} must be an http://, https:// or file:/ URL, \
                 like http://deb.debian.org/debian"
            ));
        }
        if let Some(name) = &self.default_image_name
            && name.is_empty()
        {
            return Err("default_image_name is empty: name an image or remove the key".into());
        }
        for (key, value) in [
            ("oci_max_layers", self.oci_max_layers.map(u64::from)),
            ("oci_max_layer_entries", self.oci_max_layer_entries),
            ("oci_max_image_entries", self.oci_max_image_entries),
        ] {
            if value == Some(0) {
                return Err(format!(
                    "{key} is 0: no image could be pulled; give at least 1, or remove the key"
                ));
            }
        }
        if let Some(max) = self.console_log_max
            && max < MIN_CONSOLE_LOG_MAX
        {
            return Err(format!(
                "console_log_max {max} is too small: give at least {MIN_CONSOLE_LOG_MAX}, like \"16M\""
            ));
        }
        if self.vm_defaults.vcpu == Some(0) {
            return Err("vm_defaults.vcpu is 0: give at least 1".into());
        }
        if let Some(m) = self.vm_defaults.memory_mib
            && m < 128
        {
            return Err(format!(
                "vm_defaults.memory_mib is {m}: a guest needs at least 128 MiB"
            ));
        }
        for entry in &self.file_sync {
            if entry.host.is_empty() || entry.guest.is_empty() {
                return Err("a [[file_sync]] entry has an empty host or guest path".into());
            }
        }
        Ok(())
    }

    pub fn oci_max_unpacked(&self) -> banger_model::Size {
        self.oci_max_unpacked.unwrap_or(DEFAULT_OCI_MAX_UNPACKED)
    }

    pub fn vm_templates(&self) -> bool {
        self.vm_templates.unwrap_or(true)
    }

    pub fn file_sync_max_file(&self) -> banger_model::Size {
        self.file_sync_max_file
            .unwrap_or(DEFAULT_FILE_SYNC_MAX_FILE)
    }

    pub fn file_sync_max_total(&self) -> banger_model::Size {
        self.file_sync_max_total
            .unwrap_or(DEFAULT_FILE_SYNC_MAX_TOTAL)
    }

    pub fn oci_max_manifest(&self) -> banger_model::Size {
        self.oci_max_manifest.unwrap_or(DEFAULT_OCI_MAX_MANIFEST)
    }

    pub fn oci_max_tar_header(&self) -> banger_model::Size {
        self.oci_max_tar_header
            .unwrap_or(DEFAULT_OCI_MAX_TAR_HEADER)
    }

    pub fn oci_max_layers(&self) -> u32 {
        self.oci_max_layers.unwrap_or(DEFAULT_OCI_MAX_LAYERS)
    }

    pub fn oci_max_layer_entries(&self) -> u64 {
        self.oci_max_layer_entries
            .unwrap_or(DEFAULT_OCI_MAX_LAYER_ENTRIES)
    }

    pub fn oci_max_image_entries(&self) -> u64 {
        self.oci_max_image_entries
            .unwrap_or(DEFAULT_OCI_MAX_IMAGE_ENTRIES)
    }

    pub fn console_log_max(&self) -> banger_model::Size {
        self.console_log_max.unwrap_or(DEFAULT_CONSOLE_LOG_MAX)
    }

    pub fn default_image_name(&self) -> &str {
        self.default_image_name
            .as_deref()
            .unwrap_or(DEFAULT_IMAGE_NAME)
    }

    pub fn hypervisor(&self) -> HypervisorChoice {
        self.hypervisor.unwrap_or_default()
    }

    pub fn bridge_name(&self) -> &str {
        self.bridge_name.as_deref().unwrap_or(DEFAULT_BRIDGE_NAME)
    }

    pub fn bridge_cidr(&self) -> Ipv4Net {
        self.bridge_cidr.unwrap_or_else(|| {
            DEFAULT_BRIDGE_CIDR
                .parse()
                .expect("the built-in bridge CIDR parses")
        })
    }

    /// Where bangerd's `.vm` DNS server listens: `dns_listen_addr`, or the
    /// bridge address on port 53 (where guests and the host's resolver
    /// find it).
    pub fn dns_listen_addr(&self) -> SocketAddr {
        self.dns_listen_addr
            .unwrap_or_else(|| SocketAddr::from((self.bridge_cidr().addr(), 53)))
    }

    /// The SSH key banger uses: `ssh_key_path` (with `~/` expanded) or the
    /// managed key under the state dir.
    pub fn ssh_key_path(&self, paths: &Paths) -> PathBuf {
        match &self.ssh_key_path {
            Some(p) => paths.expand_home(p).unwrap_or_else(|| PathBuf::from(p)),
            None => paths.default_ssh_key(),
        }
    }

    /// The effective log level: `BANGER_LOG_LEVEL` wins over the config.
    pub fn log_level(&self, env: Option<&str>) -> Result<LogLevel, ConfigError> {
        match env {
            Some(v) => v.parse().map_err(ConfigError::BadEnvLogLevel),
            None => Ok(self.log_level.unwrap_or_default()),
        }
    }
}

/// Linux interface names: 1-15 bytes, no '/', whitespace or ':'.
fn validate_interface_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bridge_name {name:?} is not a valid interface name: use 1-15 characters from \
             a-z, A-Z, 0-9, '-', '_' and '.'"
        ))
    }
}

/// serde's messages say "field"; the user wrote a "key".
fn humanize(message: &str) -> String {
    message
        .replace("unknown field", "unknown key")
        .replace("missing field", "missing key")
        .trim_end()
        .to_string()
}

fn de_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Int(u32),
        Text(String),
    }
    let mode = match Option::<Mode>::deserialize(d)? {
        None => return Ok(None),
        Some(Mode::Int(m)) => m,
        Some(Mode::Text(s)) => {
            u32::from_str_radix(s.trim_start_matches("0o"), 8).map_err(|_| {
                serde::de::Error::custom(format!(
                    "mode {s:?} is not an octal permission like \"0600\""
                ))
            })?
        }
    };
    if mode > 0o7777 {
        return Err(serde::de::Error::custom(format!(
            "mode {mode:o} is not a permission: use at most 4 octal digits like \"0600\""
        )));
    }
    Ok(Some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_model::Size;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/c/config.toml"))
    }

    #[test]
    fn empty_config_has_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.default_image_name(), "debian-bookworm");
        assert_eq!(c.bridge_name(), "banger0");
        assert_eq!(c.bridge_cidr().to_string(), "172.16.0.1/24");
        assert_eq!(c.hypervisor(), HypervisorChoice::Auto);
        assert_eq!(c.log_level(None).unwrap(), LogLevel::Info);
        assert_eq!(c.dns_listen_addr().to_string(), "172.16.0.1:53");
    }

    #[test]
    fn full_config_parses() {
        let c = parse(
            r#"
default_image_name = "mine"
ssh_key_path = "~/.ssh/banger"
hypervisor = "qemu"
firecracker_bin = "/opt/fc/firecracker"
qemu_bin = "qemu-system-x86_64"
log_level = "debug"
bridge_name = "br-test"
bridge_cidr = "10.9.0.1/16"
dns_listen_addr = "127.0.0.1:5353"
debian_mirror = "http://deb.debian.org/debian"
oci_max_unpacked = "8G"
file_sync_max_file = "1M"
file_sync_max_total = "64M"
oci_max_manifest = "1M"
oci_max_tar_header = "64K"
oci_max_layers = 64
oci_max_layer_entries = 5000
oci_max_image_entries = 9000
console_log_max = "1M"

[vm_defaults]
vcpu = 2
memory_mib = 2048
disk_size = "16G"

[[file_sync]]
host = "~/.gitconfig"
guest = "~/.gitconfig"

[[file_sync]]
host = "~/.config/gh"
guest = "/root/.config/gh"
mode = "0700"
"#,
        )
        .unwrap();
        assert_eq!(c.hypervisor(), HypervisorChoice::Qemu);
        assert_eq!(c.vm_defaults.disk_size, Some(Size::from_gib(16)));
        assert_eq!(c.oci_max_unpacked(), Size::from_gib(8));
        assert_eq!(
            Config::default().oci_max_unpacked(),
            DEFAULT_OCI_MAX_UNPACKED
        );
        assert_eq!(c.file_sync_max_file(), Size::from_mib(1));
        assert_eq!(c.file_sync_max_total(), Size::from_mib(64));
        assert_eq!(
            Config::default().file_sync_max_total(),
            DEFAULT_FILE_SYNC_MAX_TOTAL
        );
        assert_eq!(c.oci_max_manifest(), Size::from_mib(1));
        assert_eq!(c.oci_max_tar_header(), Size::from_bytes(64 << 10));
        assert_eq!(c.oci_max_layers(), 64);
        assert_eq!(c.oci_max_layer_entries(), 5000);
        assert_eq!(c.oci_max_image_entries(), 9000);
        assert_eq!(c.console_log_max(), Size::from_mib(1));
        let d = Config::default();
        assert_eq!(d.oci_max_manifest(), DEFAULT_OCI_MAX_MANIFEST);
        assert_eq!(d.oci_max_tar_header(), DEFAULT_OCI_MAX_TAR_HEADER);
        assert_eq!(d.oci_max_layers(), DEFAULT_OCI_MAX_LAYERS);
        assert_eq!(d.oci_max_layer_entries(), DEFAULT_OCI_MAX_LAYER_ENTRIES);
        assert_eq!(d.oci_max_image_entries(), DEFAULT_OCI_MAX_IMAGE_ENTRIES);
        assert_eq!(d.console_log_max(), Size::from_mib(16));
        assert_eq!(c.file_sync.len(), 2);
        assert_eq!(c.file_sync[0].mode, None);
        assert_eq!(c.file_sync[1].mode, Some(0o700));
        assert_eq!(c.bridge_cidr().to_string(), "10.9.0.1/16");
        assert_eq!(c.dns_listen_addr().to_string(), "127.0.0.1:5353");
        let bridge_only = parse("bridge_cidr = \"10.9.0.1/16\"").unwrap();
        assert_eq!(bridge_only.dns_listen_addr().to_string(), "10.9.0.1:53");
        let paths = Paths::from_vars(|k| (k == "HOME").then(|| "/home/u".to_string())).unwrap();
        assert_eq!(c.ssh_key_path(&paths), PathBuf::from("/home/u/.ssh/banger"));
        assert_eq!(c.log_level(None).unwrap(), LogLevel::Debug);
        assert_eq!(c.log_level(Some("trace")).unwrap(), LogLevel::Trace);
        assert!(c.log_level(Some("loud")).is_err());
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = parse("hypervisor = \"qemu\"\nbrige_name = \"x\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Parse { line: 2, .. }), "{msg}");
        assert!(msg.contains("unknown key `brige_name`"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");

        let err = parse("[vm_defaults]\nvcpu = 1\nram = 3\n").unwrap_err();
        assert!(err.to_string().contains("unknown key `ram`"), "{err}");
        assert!(matches!(err, ConfigError::Parse { line: 3, .. }));
    }

    #[test]
    fn syntax_error_has_line() {
        let err = parse("a = 1\n\nhypervisor = \n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { line: 3, .. }), "{err}");
    }

    #[test]
    fn bad_values_are_rejected() {
        for (text, needle) in [
            ("ssh_key_path = \"keys/id\"", "relative"),
            ("hypervisor = \"vbox\"", "vbox"),
            ("log_level = \"loud\"", "loud"),
            (
                "bridge_name = \"this-name-is-way-too-long\"",
                "interface name",
            ),
            ("bridge_cidr = \"172.16.0.0/24\"", "host address"),
            ("bridge_cidr = \"not-a-net\"", "bridge_cidr"),
            ("[vm_defaults]\ndisk_size = \"8\"", "unit"),
            ("[vm_defaults]\nvcpu = 0", "at least 1"),
            ("debian_mirror = \"deb.debian.org\"", "http://"),
            ("dns_listen_addr = \"172.16.0.1\"", "dns_listen_addr"),
            ("dns_listen_addr = \"172.16.0.1:0\"", "port 0"),
            (
                "[[file_sync]]\nhost = \"a\"\nguest = \"b\"\nmode = \"0999\"",
                "octal",
            ),
            ("[[file_sync]]\nhost = \"a\"", "missing key `guest`"),
            ("oci_max_layers = 0", "oci_max_layers is 0"),
            ("oci_max_image_entries = 0", "at least 1"),
            ("oci_max_layer_entries = -1", "oci_max_layer_entries"),
            ("oci_max_manifest = \"4\"", "unit"),
            ("console_log_max = \"4K\"", "at least 64K"),
            ("console_log_max = \"16\"", "unit"),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn missing_file_is_empty_config() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(&dir.path().join("absent.toml")).unwrap();
        assert_eq!(c, Config::default());
    }
}
