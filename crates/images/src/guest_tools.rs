//! banger's guest tools: what a VM needs from banger when its image brings
//! no init and no sshd of its own (OCI images, busybox-only and distroless
//! ones included). Laid out as the guest's `/.banger`:
//!
//!   bin/sshd   OpenSSH's sshd, its interpreter and library path pointing
//!              into /.banger/lib, so it runs whatever libc the image has
//!              (or none)
//!   bin/sh     busybox (static): the login shell when the image has none
//!   lib/       sshd's shared libraries and the dynamic loader, copied from
//!              the host
//!   sshd_config  per VM, from [`sshd_config`] (the daemon adds it)
//!   agent-env    per VM, from [`agent_env`]: the same environment for
//!              the guest agent's commands (the daemon adds it)
//!
//! The daemon puts the tree on a VM's system disk (`banger/tools/`) and
//! banger-init's minimal mode mounts it read-only at `/.banger`.
//!
//! sshd comes from Debian's `openssh-server` package and busybox from
//! `busybox-static`, downloaded with apt and unpacked (never installed: a
//! host sshd service is not wanted). The libraries come from the host,
//! found with `ldd`: the package was built for this host's release, so the
//! host has exactly the libraries it links against. `patchelf` (the usual
//! tool for this) rewrites the interpreter and the library path. The
//! result is cached by the package versions and the libraries' identity.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::host_command::{self, CommandError};
use crate::kernel::package::{self, PackageError};

/// Where the tools live in the guest.
pub const GUEST_DIR: &str = "/.banger";
const GUEST_LIB: &str = "/.banger/lib";
const SSHD_PACKAGE: &str = "openssh-server";
const BUSYBOX_PACKAGE: &str = "busybox-static";
const COMPLETE_MARKER: &str = ".banger-complete";

#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error("guest tools: {0}")]
    Package(Box<PackageError>),
    #[error(
        "guest tools: {binary} needs {library}, which this host lacks: install the package that provides it (on Debian usually: apt-get install {hint})"
    )]
    MissingLibrary {
        binary: String,
        library: String,
        hint: String,
    },
    #[error("guest tools: {binary} {why}")]
    Unusable { binary: PathBuf, why: String },
    #[error("guest tools: {0}")]
    Command(Box<CommandError>),
    #[error("guest tools: {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<PackageError> for ToolsError {
    fn from(e: PackageError) -> Self {
        ToolsError::Package(Box::new(e))
    }
}

impl From<CommandError> for ToolsError {
    fn from(e: CommandError) -> Self {
        ToolsError::Command(Box::new(e))
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ToolsError {
    let path = path.to_owned();
    move |source| ToolsError::Io {
        action,
        path,
        source,
    }
}

/// An assembled tools tree, laid out as the guest's `/.banger`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestTools {
    pub root: PathBuf,
}

impl GuestTools {
    /// Every file of the tree: its path below [`GUEST_DIR`] (e.g.
    /// `bin/sshd`), contents and mode.
    pub fn files(&self) -> Result<Vec<ToolFile>, ToolsError> {
        let mut out = Vec::new();
        for sub in ["bin", "lib"] {
            let dir = self.root.join(sub);
            let mut entries: Vec<_> = fs::read_dir(&dir)
                .map_err(io("cannot list", &dir))?
                .filter_map(Result::ok)
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let path = entry.path();
                let meta = fs::metadata(&path).map_err(io("cannot read", &path))?;
                let bytes = fs::read(&path).map_err(io("cannot read", &path))?;
                out.push((
                    format!("{sub}/{}", entry.file_name().to_string_lossy()),
                    bytes,
                    meta.permissions().mode() & 0o777,
                ));
            }
        }
        Ok(out)
    }
}

/// What an image keeps of the tools: one tar of the tree, written when the
/// image is pulled (while the network is there) and pinned with the
/// image's other files, so a VM of it boots with no mirror in reach.
pub const ARCHIVE: &str = "guest-tools.tar";
/// The tree is a few MiB (sshd, its libraries, busybox); anything much
/// larger is not an archive banger wrote.
const ARCHIVE_MAX: u64 = 256 << 20;

/// One file of the tree: its path below [`GUEST_DIR`], contents and mode.
pub type ToolFile = (String, Vec<u8>, u32);

/// Writes the tree as the tar an image keeps ([`ARCHIVE`]): regular files
/// only, owned by root, with no timestamps, so the same tools make the
/// same bytes.
pub fn write_archive(tools: &GuestTools, dest: &Path) -> Result<(), ToolsError> {
    let file = fs::File::create(dest).map_err(io("cannot create", dest))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    for (path, bytes, mode) in tools.files()? {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        builder
            .append_data(&mut header, &path, bytes.as_slice())
            .map_err(io("cannot write", dest))?;
    }
    builder
        .into_inner()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(io("cannot write", dest))
}

/// The files of an archive [`write_archive`] made, read back only if its
/// SHA-256 is still `sha256` (the image's pin): checked on the bytes
/// that are then parsed, so nothing changed after the check is used.
pub fn read_archive(path: &Path, sha256: &str) -> Result<Vec<ToolFile>, ToolsError> {
    use std::io::Read;
    let bad = |why: String| ToolsError::Unusable {
        binary: path.to_owned(),
        why,
    };
    let file = fs::File::open(path).map_err(io("cannot open", path))?;
    let mut bytes = Vec::new();
    file.take(ARCHIVE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(io("cannot read", path))?;
    if bytes.len() as u64 > ARCHIVE_MAX {
        return Err(bad(format!("is larger than {ARCHIVE_MAX} bytes")));
    }
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != sha256 {
        return Err(bad(format!(
            "changed since the image was pulled (SHA-256 {actual}, pinned {sha256}): re-pull the image"
        )));
    }
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(bytes.as_slice());
    for entry in archive.entries().map_err(io("cannot read", path))? {
        let mut entry = entry.map_err(io("cannot read", path))?;
        let name = entry
            .path()
            .map_err(io("cannot read", path))?
            .to_string_lossy()
            .into_owned();
        let valid = matches!(name.split_once('/'), Some(("bin" | "lib", file))
            if !file.is_empty() && !file.contains('/') && file != "." && file != "..");
        if entry.header().entry_type() != tar::EntryType::Regular || !valid {
            return Err(bad(format!(
                "holds {name:?}, which banger never writes there"
            )));
        }
        let mode = entry.header().mode().map_err(io("cannot read", path))? & 0o777;
        let mut contents = Vec::new();
        entry
            .read_to_end(&mut contents)
            .map_err(io("cannot read", path))?;
        out.push((name, contents, mode));
    }
    Ok(out)
}

/// One shared library `ldd` reported.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Library {
    /// The name the binary asks for (`libc.so.6`), or the loader's file
    /// name.
    name: String,
    path: PathBuf,
}

/// The tools under `cache`, assembled first if they are not there.
/// Downloads two Debian packages the first time (`cache/packages`).
/// Asking apt for the versions takes about a second, so the answer is
/// kept for the life of the process (a daemon picks up an upgraded
/// openssh-server when it restarts).
pub fn ensure(cache: &Path) -> Result<GuestTools, ToolsError> {
    static KNOWN: Mutex<Option<(PathBuf, GuestTools)>> = Mutex::new(None);
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((dir, tools)) = known.as_ref()
        && dir == cache
        && tools.root.join(COMPLETE_MARKER).exists()
    {
        return Ok(tools.clone());
    }
    let tools = assemble_or_find(cache)?;
    *known = Some((cache.to_owned(), tools.clone()));
    Ok(tools)
}

fn assemble_or_find(cache: &Path) -> Result<GuestTools, ToolsError> {
    let sshd_version = package::candidate_version(SSHD_PACKAGE)?;
    let busybox_version = package::candidate_version(BUSYBOX_PACKAGE)?;
    let packages = cache.join("packages");
    let sshd_root = package::fetch_unpacked(SSHD_PACKAGE, &sshd_version, &packages)?;
    let busybox_root = package::fetch_unpacked(BUSYBOX_PACKAGE, &busybox_version, &packages)?;
    let sshd = sshd_root.join("usr/sbin/sshd");
    let busybox = busybox_root.join("bin/busybox");
    let libraries = shared_libraries(&sshd)?;
    check_static(&busybox)?;

    let mut key = Sha256::new();
    key.update(format!(
        "{SSHD_PACKAGE}={sshd_version}\n{BUSYBOX_PACKAGE}={busybox_version}\n"
    ));
    for lib in &libraries {
        let meta = fs::metadata(&lib.path).map_err(io("cannot read", &lib.path))?;
        key.update(format!(
            "{} {} {} {:?}\n",
            lib.name,
            lib.path.display(),
            meta.len(),
            meta.modified().ok()
        ));
    }
    let key = hex::encode(key.finalize());
    let root = cache.join(&key[..16]);
    if root.join(COMPLETE_MARKER).exists() {
        return Ok(GuestTools { root });
    }
    fs::create_dir_all(cache).map_err(io("cannot create", cache))?;
    let lock_path = cache.join(".lock");
    let lock = fs::File::create(&lock_path).map_err(io("cannot create", &lock_path))?;
    lock.lock().map_err(io("cannot lock", &lock_path))?;
    if root.join(COMPLETE_MARKER).exists() {
        return Ok(GuestTools { root });
    }
    let staging = cache.join(format!(".{}.partial", &key[..16]));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io("cannot remove stale", &staging))?;
    }
    let built = assemble(&staging, &sshd, &busybox, &libraries);
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    if root.exists() {
        fs::remove_dir_all(&root).map_err(io("cannot remove incomplete", &root))?;
    }
    fs::rename(&staging, &root).map_err(io("cannot move into place", &root))?;
    fs::write(root.join(COMPLETE_MARKER), b"").map_err(io("cannot write", &root))?;
    Ok(GuestTools { root })
}

fn assemble(
    dir: &Path,
    sshd: &Path,
    busybox: &Path,
    libraries: &[Library],
) -> Result<(), ToolsError> {
    let (bin, lib) = (dir.join("bin"), dir.join("lib"));
    for d in [&bin, &lib] {
        fs::create_dir_all(d).map_err(io("cannot create", d))?;
    }
    let copy = |from: &Path, to: &Path, mode: u32| -> Result<(), ToolsError> {
        // fs::copy reads through symlinks: the guest gets real files.
        fs::copy(from, to).map_err(io("cannot copy", from))?;
        fs::set_permissions(to, fs::Permissions::from_mode(mode)).map_err(io("cannot chmod", to))
    };
    for l in libraries {
        copy(&l.path, &lib.join(&l.name), 0o755)?;
    }
    copy(busybox, &bin.join("sh"), 0o755)?;
    let guest_sshd = bin.join("sshd");
    copy(sshd, &guest_sshd, 0o755)?;
    let interpreter = libraries
        .iter()
        .find(|l| l.name.starts_with("ld-linux"))
        .ok_or_else(|| ToolsError::Unusable {
            binary: sshd.to_owned(),
            why: "has no dynamic loader in ldd's answer".into(),
        })?;
    host_command::run(
        Command::new("patchelf")
            .arg("--set-interpreter")
            .arg(format!("{GUEST_LIB}/{}", interpreter.name))
            // DT_RPATH (not RUNPATH) also applies to the libraries' own
            // dependencies, so every lookup stays in /.banger/lib.
            .args(["--force-rpath", "--set-rpath", GUEST_LIB])
            .arg(&guest_sshd),
    )?;
    Ok(())
}

/// The shared libraries `binary` loads, the loader included, as `ldd`
/// (glibc's; it runs the loader in list mode) reports them.
fn shared_libraries(binary: &Path) -> Result<Vec<Library>, ToolsError> {
    let out = host_command::run(Command::new("ldd").arg(binary))?;
    parse_ldd(&String::from_utf8_lossy(&out.stdout)).map_err(|library| ToolsError::MissingLibrary {
        binary: binary.display().to_string(),
        hint: library_package_hint(&library),
        library,
    })
}

/// `ldd`'s lines as libraries; `Err(name)` for one it could not find.
fn parse_ldd(text: &str) -> Result<Vec<Library>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        let without_address = line.rsplit_once(" (").map_or(line, |(l, _)| l);
        if let Some((name, path)) = without_address.split_once(" => ") {
            let path = path.trim();
            if path == "not found" {
                return Err(name.trim().to_owned());
            }
            libs.push(Library {
                name: name.trim().to_owned(),
                path: PathBuf::from(path),
            });
        } else if without_address.starts_with('/') {
            // The loader: `/lib64/ld-linux-x86-64.so.2 (0x…)`.
            let path = PathBuf::from(without_address);
            if let Some(name) = path.file_name() {
                libs.push(Library {
                    name: name.to_string_lossy().into_owned(),
                    path,
                });
            }
        }
        // `linux-vdso.so.1 (0x…)` is the kernel's: nothing to copy.
    }
    Ok(libs)
}

/// Debian's usual package name for a library soname (policy 8.1):
/// `libwrap.so.0` → `libwrap0`, `libgssapi_krb5.so.2` →
/// `libgssapi-krb5-2`. A guess for the error message, not a lookup.
fn library_package_hint(library: &str) -> String {
    match library.split_once(".so.") {
        Some((base, version)) => {
            let base = base.replace('_', "-");
            let sep = if base.ends_with(|c: char| c.is_ascii_digit()) {
                "-"
            } else {
                ""
            };
            format!(
                "{base}{sep}{}",
                version.split('.').next().unwrap_or(version)
            )
        }
        None => library.trim_end_matches(".so").to_owned(),
    }
}

/// busybox must need nothing from the image or the host.
fn check_static(binary: &Path) -> Result<(), ToolsError> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(io("cannot run ldd on", binary))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        Ok(())
    } else {
        Err(ToolsError::Unusable {
            binary: binary.to_owned(),
            why: "is not statically linked".into(),
        })
    }
}

/// The image's environment (`NAME=value` entries of its config) as
/// sessions get it: the entries sshd's configuration can carry, and the
/// others (a name that is not a shell identifier; a value with a double
/// quote, a backslash or a control character), for a warning.
fn session_env(env: &[String]) -> (Vec<(&str, &str)>, Vec<String>) {
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    for entry in env {
        let Some((name, value)) = entry.split_once('=') else {
            skipped.push(entry.clone());
            continue;
        };
        let name_ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let value_ok = !value
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control());
        if name_ok && value_ok {
            kept.push((name, value));
        } else {
            skipped.push(entry.clone());
        }
    }
    (kept, skipped)
}

/// The sshd configuration for a minimal guest: keys only, root allowed
/// with a key, the per-VM host key banger pinned, and the image's
/// environment set for every session. Entries sshd's configuration
/// cannot carry are left out and returned, for a warning.
pub fn sshd_config(env: &[String]) -> (String, Vec<String>) {
    let mut text = String::from(
        "# banger's sshd for images without one (docs/oci-import.md).\n\
         HostKey /etc/ssh/ssh_host_ed25519_key\n\
         AuthorizedKeysFile /root/.ssh/authorized_keys\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         PidFile /run/banger-sshd.pid\n\
         Subsystem sftp internal-sftp\n",
    );
    let (kept, skipped) = session_env(env);
    if !kept.is_empty() {
        let set: Vec<String> = kept
            .iter()
            .map(|(name, value)| format!("\"{name}={value}\""))
            .collect();
        text.push_str(&format!("SetEnv {}\n", set.join(" ")));
    }
    (text, skipped)
}

/// Where [`agent_env`]'s file goes in the tools tree; the guest sees it
/// as `/.banger/agent-env` (`banger_agent_proto::guest_paths::IMAGE_ENV`).
pub const AGENT_ENV: &str = "agent-env";
/// The most the agent reads of [`AGENT_ENV`] (crates/agent/src/image_env.rs).
pub const AGENT_ENV_MAX: usize = 64 * 1024;

/// The guest agent's copy of the image's environment: the entries
/// [`sshd_config`] sets, in its order, one `NAME=value` per line (none
/// holds a newline: control characters are left out for sshd already).
/// Entries past [`AGENT_ENV_MAX`] bytes are left out and returned, for a
/// warning; those sshd cannot carry are [`sshd_config`]'s to report.
pub fn agent_env(env: &[String]) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut too_big = Vec::new();
    for (name, value) in session_env(env).0 {
        let line = format!("{name}={value}\n");
        if text.len() + line.len() > AGENT_ENV_MAX {
            too_big.push(format!("{name}={value}"));
        } else {
            text.push_str(&line);
        }
    }
    (text, too_big)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) -> GuestTools {
        for sub in ["bin", "lib"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        fs::write(dir.join("bin/sshd"), b"sshd bytes").unwrap();
        fs::set_permissions(dir.join("bin/sshd"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join("lib/libc.so.6"), b"libc bytes").unwrap();
        fs::set_permissions(dir.join("lib/libc.so.6"), fs::Permissions::from_mode(0o644)).unwrap();
        GuestTools {
            root: dir.to_owned(),
        }
    }

    #[test]
    fn an_archive_gives_back_the_tree_only_while_its_pin_holds() {
        let dir = tempfile::tempdir().unwrap();
        let tools = tree(&dir.path().join("tools"));
        let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
        write_archive(&tools, &a).unwrap();
        write_archive(&tools, &b).unwrap();
        let bytes = fs::read(&a).unwrap();
        assert_eq!(
            bytes,
            fs::read(&b).unwrap(),
            "the same tree, the same bytes"
        );
        let pin = hex::encode(Sha256::digest(&bytes));
        assert_eq!(read_archive(&a, &pin).unwrap(), tools.files().unwrap());

        let mut changed = bytes.clone();
        let at = changed.len() / 3;
        changed[at] ^= 1;
        fs::write(&a, &changed).unwrap();
        let err = read_archive(&a, &pin).unwrap_err().to_string();
        assert!(err.contains("changed since the image was pulled"), "{err}");
    }

    #[test]
    fn an_archive_with_anything_but_bin_and_lib_files_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["etc/passwd", "bin/../../x", "bin/a/b", "bin/"] {
            let path = dir.path().join("bad.tar");
            let mut builder = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_gnu();
            header.set_size(1);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            // Raw name bytes: the builder's own path checks would refuse
            // `..`, and a hostile file is not made by this builder.
            header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_cksum();
            builder.append(&header, &b"x"[..]).unwrap();
            let bytes = builder.into_inner().unwrap();
            fs::write(&path, &bytes).unwrap();
            let pin = hex::encode(Sha256::digest(&bytes));
            let err = read_archive(&path, &pin).unwrap_err().to_string();
            assert!(
                err.contains("which banger never writes there"),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn reads_ldd_s_answer() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibcrypt.so.1 => /lib/x86_64-linux-gnu/libcrypt.so.1 (0x00007f13)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f12)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f14)\n";
        let libs = parse_ldd(text).unwrap();
        let names: Vec<_> = libs.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            ["libcrypt.so.1", "libc.so.6", "ld-linux-x86-64.so.2"]
        );
        assert_eq!(libs[2].path, Path::new("/lib64/ld-linux-x86-64.so.2"));
        assert_eq!(
            parse_ldd("\tlibwrap.so.0 => not found\n").unwrap_err(),
            "libwrap.so.0"
        );
    }

    #[test]
    fn names_the_usual_package_of_a_library() {
        assert_eq!(library_package_hint("libwrap.so.0"), "libwrap0");
        assert_eq!(library_package_hint("libcrypto.so.3"), "libcrypto3");
        assert_eq!(
            library_package_hint("libgssapi_krb5.so.2"),
            "libgssapi-krb5-2"
        );
        assert_eq!(library_package_hint("libnsl2.so.2"), "libnsl2-2");
    }

    #[test]
    fn the_image_environment_goes_into_setenv_when_sshd_can_carry_it() {
        let env = [
            "PATH=/usr/local/go/bin:/usr/bin:/bin".to_owned(),
            "GREETING=hello world".to_owned(),
            "BAD NAME=x".to_owned(),
            "QUOTED=say \"hi\"".to_owned(),
            "NOEQUALS".to_owned(),
        ];
        let (text, skipped) = sshd_config(&env);
        assert!(
            text.ends_with(
                "SetEnv \"PATH=/usr/local/go/bin:/usr/bin:/bin\" \"GREETING=hello world\"\n"
            ),
            "{text}"
        );
        assert!(text.contains("UsePAM no\n") && text.contains("PasswordAuthentication no\n"));
        assert_eq!(skipped, ["BAD NAME=x", "QUOTED=say \"hi\"", "NOEQUALS"]);
        assert!(!sshd_config(&[]).0.contains("SetEnv"));
    }

    #[test]
    fn the_agent_gets_what_sshd_sets_one_entry_a_line() {
        let env = [
            "PATH=/opt/image/bin:/usr/bin".to_owned(),
            "BAD NAME=x".to_owned(),
            "MULTI=line\nbreak".to_owned(),
            "EMPTY=".to_owned(),
            "GREETING=from the image config".to_owned(),
        ];
        let (text, too_big) = agent_env(&env);
        assert_eq!(
            text,
            "PATH=/opt/image/bin:/usr/bin\nEMPTY=\nGREETING=from the image config\n"
        );
        assert!(too_big.is_empty());
        assert_eq!(agent_env(&[]).0, "");

        let huge = vec![
            format!("BIG={}", "x".repeat(AGENT_ENV_MAX)),
            "SMALL=1".to_owned(),
        ];
        let (text, too_big) = agent_env(&huge);
        assert_eq!(text, "SMALL=1\n");
        assert_eq!(too_big.len(), 1);
        assert!(too_big[0].starts_with("BIG="));
    }
}
