//! `banger ssh-config --install/--uninstall`: the one edit banger makes to
//! the user's `~/.ssh/config`, and only when asked. The edit is a block
//! fenced by marker lines, put first in the file (ssh takes the first
//! value it finds for an option, and an `Include` inside a `Host` block
//! would apply to that block only):
//!
//! ```text
//! # >>> banger ssh-config >>> (managed by 'banger ssh-config'; --uninstall removes it)
//! Include /home/me/.config/banger/ssh_config
//! # <<< banger ssh-config <<<
//! ```
//!
//! Everything else is kept byte for byte: uninstalling after installing
//! gives back the very bytes that were there. A block that is not exactly
//! this shape (markers unbalanced, lines added) was edited by hand and is
//! refused, as is a config that is a symlink; the file is replaced by
//! rename, never truncated in place.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::SshError;
use crate::openssh::config_path;
use crate::ssh_config::write_atomically;

pub const BEGIN: &str = "# >>> banger ssh-config >>>";
pub const END: &str = "# <<< banger ssh-config <<<";
const BEGIN_LINE: &str =
    "# >>> banger ssh-config >>> (managed by 'banger ssh-config'; --uninstall removes it)\n";

/// What an install or uninstall did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The file was written.
    Changed,
    /// It already was as asked; nothing was written.
    Unchanged,
}

/// The `Include` line for `target`, as ssh parses it.
pub fn include_line(target: &Path) -> String {
    let mut value = config_path("Include", target).as_bytes().to_vec();
    // `config_path` writes `Include=...`; the config file reads the same
    // either way, and a space is what people write by hand.
    if let Some(eq) = value.iter().position(|&b| b == b'=') {
        value[eq] = b' ';
    }
    String::from_utf8_lossy(&value).into_owned()
}

fn block(target: &Path) -> Vec<u8> {
    format!("{BEGIN_LINE}{}\n{END}\n", include_line(target)).into_bytes()
}

/// Where banger's block is: the byte range of its lines.
fn find_block(config: &[u8], path: &Path) -> Result<Option<std::ops::Range<usize>>, SshError> {
    let mut begins = Vec::new();
    let mut ends = Vec::new();
    let mut offset = 0;
    let lines: Vec<(usize, &[u8])> = config
        .split_inclusive(|&b| b == b'\n')
        .map(|l| {
            let at = offset;
            offset += l.len();
            (at, l)
        })
        .collect();
    for (i, (_, line)) in lines.iter().enumerate() {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if text.starts_with(BEGIN) {
            begins.push(i);
        } else if text.starts_with(END) {
            ends.push(i);
        }
    }
    let hand_edited = |why: &str| SshError::UserConfig {
        path: path.to_path_buf(),
        why: format!(
            "{why}: banger's block was edited by hand; remove the lines from '{BEGIN}' to \
             '{END}' yourself, then run this again"
        ),
    };
    match (begins.as_slice(), ends.as_slice()) {
        ([], []) => Ok(None),
        ([b], [e]) if e == &(b + 2) => {
            let inner = String::from_utf8_lossy(lines[b + 1].1);
            if !inner.trim_start().starts_with("Include ") {
                return Err(hand_edited(&format!("line {} is not an Include", b + 2)));
            }
            let start = lines[*b].0;
            let end = lines[*e].0 + lines[*e].1.len();
            Ok(Some(start..end))
        }
        ([b], [e]) if e > b => Err(hand_edited(&format!(
            "lines {}-{} hold more than the Include line",
            b + 1,
            e + 1
        ))),
        _ => Err(hand_edited("its marker lines are unbalanced")),
    }
}

/// `config` with banger's block including `target`; None when it is
/// already there as it should be.
pub fn with_block(config: &[u8], target: &Path, path: &Path) -> Result<Option<Vec<u8>>, SshError> {
    let wanted = block(target);
    match find_block(config, path)? {
        Some(range) => {
            let mut current = config[range.clone()].to_vec();
            if !current.ends_with(b"\n") {
                current.push(b'\n');
            }
            if current == wanted {
                return Ok(None);
            }
            // Another path (BANGER_HOME moved): replaced where it is.
            let mut out = config[..range.start].to_vec();
            out.extend_from_slice(&wanted);
            out.extend_from_slice(&config[range.end..]);
            Ok(Some(out))
        }
        None => {
            let mut out = wanted;
            out.extend_from_slice(config);
            Ok(Some(out))
        }
    }
}

/// `config` without banger's block; None when it has none.
pub fn without_block(config: &[u8], path: &Path) -> Result<Option<Vec<u8>>, SshError> {
    Ok(find_block(config, path)?.map(|range| {
        let mut out = config[..range.start].to_vec();
        out.extend_from_slice(&config[range.end..]);
        out
    }))
}

/// Reads the user's config, refusing a symlink or anything but a file.
/// None when it does not exist.
fn read_config(path: &Path) -> Result<Option<(Vec<u8>, u32)>, SshError> {
    let refuse = |why: String| SshError::UserConfig {
        path: path.to_path_buf(),
        why,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(refuse(format!("cannot read it ({e}); nothing was changed"))),
    };
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        return Err(refuse(format!(
            "it is a symlink (to {target}) and banger does not write through symlinks; \
             add the Include line shown by 'banger ssh-config' to the real file yourself"
        )));
    }
    if !meta.is_file() {
        return Err(refuse(
            "it is not a regular file; nothing was changed".into(),
        ));
    }
    let bytes =
        fs::read(path).map_err(|e| refuse(format!("cannot read it ({e}); nothing was changed")))?;
    Ok(Some((bytes, meta.permissions().mode() & 0o7777)))
}

/// Adds the block including `target` to the ssh config at `path`,
/// creating it (0600, its directory 0700) if absent.
pub fn install(path: &Path, target: &Path) -> Result<Outcome, SshError> {
    let (current, mode) = match read_config(path)? {
        Some(found) => found,
        None => {
            if let Some(dir) = path.parent() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| SshError::io(format!("creating {}", dir.display()), e))?;
            }
            (Vec::new(), 0o600)
        }
    };
    match with_block(&current, target, path)? {
        None => Ok(Outcome::Unchanged),
        Some(bytes) => write_atomically(path, &bytes, mode).map(|()| Outcome::Changed),
    }
}

/// Removes banger's block from the ssh config at `path`, and nothing else.
pub fn uninstall(path: &Path) -> Result<Outcome, SshError> {
    let Some((current, mode)) = read_config(path)? else {
        return Ok(Outcome::Unchanged);
    };
    match without_block(&current, path)? {
        None => Ok(Outcome::Unchanged),
        Some(bytes) => write_atomically(path, &bytes, mode).map(|()| Outcome::Changed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str = "/home/me/.config/banger/ssh_config";

    fn target() -> &'static Path {
        Path::new(TARGET)
    }

    /// Odd but legal content: CRLF, no final newline, tabs, non-UTF-8,
    /// a Host block and a Match.
    fn foreign() -> Vec<u8> {
        let mut v = b"# mine\r\nHost work\n\tHostName 10.1.2.3\n".to_vec();
        v.extend_from_slice(
            b"Match host *.corp\n  User me \xff\n\nHost *\n  ServerAliveInterval 5",
        );
        v
    }

    #[test]
    fn install_then_uninstall_is_byte_exact_and_idempotent() {
        let p = Path::new("cfg");
        for original in [foreign(), Vec::new(), b"\n".to_vec()] {
            let installed = with_block(&original, target(), p).unwrap().unwrap();
            assert!(installed.starts_with(BEGIN.as_bytes()), "first in the file");
            assert!(installed.ends_with(&original));
            assert_eq!(
                with_block(&installed, target(), p).unwrap(),
                None,
                "idempotent"
            );
            let removed = without_block(&installed, p).unwrap().unwrap();
            assert_eq!(removed, original);
            assert_eq!(without_block(&removed, p).unwrap(), None);
        }
        let text = String::from_utf8(block(target())).unwrap();
        assert_eq!(
            text.lines().nth(1),
            Some("Include /home/me/.config/banger/ssh_config")
        );
    }

    /// A target path with spaces is quoted, and ssh follows the Include.
    #[test]
    fn ssh_follows_the_include_even_through_odd_paths() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("my banger/ssh_config");
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::write(&target, "Host *.vm\n    User banger-test-user\n").unwrap();
        let line = include_line(&target);
        assert!(line.starts_with("Include \""), "{line}");
        let config = dir.path().join("config");
        fs::write(&config, b"Host other\n    User someone\n").unwrap();
        install(&config, &target).unwrap();
        let Ok(out) = std::process::Command::new("ssh")
            .args(["-G", "-F"])
            .arg(&config)
            .arg("web.vm")
            .output()
        else {
            banger_testkit::skip("ssh is not installed");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.lines().any(|l| l == "user banger-test-user"), "{text}");
    }

    #[test]
    fn a_moved_target_is_replaced_in_place() {
        let p = Path::new("cfg");
        let mut config = b"Host a\n".to_vec();
        config.extend(block(Path::new("/old/ssh_config")));
        config.extend_from_slice(b"Host b\n");
        let new = with_block(&config, target(), p).unwrap().unwrap();
        let mut expected = b"Host a\n".to_vec();
        expected.extend(block(target()));
        expected.extend_from_slice(b"Host b\n");
        assert_eq!(new, expected);
        assert_eq!(
            without_block(&new, p).unwrap().unwrap(),
            b"Host a\nHost b\n"
        );
    }

    #[test]
    fn hand_edited_blocks_are_refused() {
        let p = Path::new("cfg");
        let b = String::from_utf8(block(target())).unwrap();
        let only_begin = format!("{BEGIN}\nInclude x\n");
        let extra = b.replace("Include", "User me\nInclude");
        let not_include = b.replace("Include", "User");
        let twice = format!("{b}{b}");
        let reversed = format!("{END}\nInclude x\n{BEGIN}\n");
        for text in [only_begin, extra, not_include, twice, reversed] {
            for result in [
                with_block(text.as_bytes(), target(), p).map(|_| ()),
                without_block(text.as_bytes(), p).map(|_| ()),
            ] {
                let e = result.unwrap_err().to_string();
                assert!(e.contains("edited by hand"), "{text:?}: {e}");
            }
        }
    }

    #[test]
    fn files_are_created_0600_and_replaced_never_truncated() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home/.ssh/config");
        assert_eq!(uninstall(&path).unwrap(), Outcome::Unchanged);
        assert_eq!(install(&path, target()).unwrap(), Outcome::Changed);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let ssh_dir = fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(ssh_dir.mode() & 0o777, 0o700);
        assert_eq!(install(&path, target()).unwrap(), Outcome::Unchanged);
        assert_eq!(uninstall(&path).unwrap(), Outcome::Changed);
        assert_eq!(fs::read(&path).unwrap(), b"");

        // An existing file keeps its mode, and its old inode is untouched.
        fs::write(&path, foreign()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let mut old = fs::File::open(&path).unwrap();
        install(&path, target()).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
        let mut seen = Vec::new();
        io::Read::read_to_end(&mut old, &mut seen).unwrap();
        assert_eq!(seen, foreign(), "the old file was replaced, not rewritten");
        uninstall(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), foreign());
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["config"], "no temporary file left");
    }

    #[test]
    fn symlinks_and_unreadable_configs_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::write(&real, b"Host x\n").unwrap();
        let link = dir.path().join("config");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = install(&link, target()).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        assert!(uninstall(&link).is_err());
        assert_eq!(fs::read(&real).unwrap(), b"Host x\n");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );

        let sub = dir.path().join("dir");
        fs::create_dir(&sub).unwrap();
        let e = install(&sub, target()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
