//! The user key and per-VM host keys, made with the real `ssh-keygen`.

mod support;

use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::thread;

use banger_guest::{HOST_KEY_FILE, SshError, ensure_user_key, generate_host_key};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn keygen(args: &[&str]) {
    let ok = Command::new("ssh-keygen")
        .args(args)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "ssh-keygen {args:?}");
}

#[test]
fn the_managed_key_is_made_once_and_kept() {
    if support::missing(&["ssh-keygen"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("state/banger/ssh/id_ed25519");
    let line = ensure_user_key(&key, true).unwrap();
    assert!(line.starts_with("ssh-ed25519 AAAA"), "{line}");
    assert!(line.ends_with(" banger"), "{line}");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(key.parent().unwrap()), 0o700);
    assert_eq!(
        fs::read_to_string(key.with_extension("pub")).unwrap(),
        format!("{line}\n")
    );
    assert_eq!(
        names(key.parent().unwrap()),
        ["id_ed25519", "id_ed25519.lock", "id_ed25519.pub"]
    );

    // Found again, not remade; a loosened mode is repaired; a lost .pub
    // is rebuilt from the private key.
    fs::set_permissions(&key, Permissions::from_mode(0o644)).unwrap();
    assert_eq!(ensure_user_key(&key, true).unwrap(), line);
    assert_eq!(mode(&key), 0o600);
    fs::remove_file(key.with_extension("pub")).unwrap();
    assert_eq!(ensure_user_key(&key, true).unwrap(), line);
    assert_eq!(
        fs::read_to_string(key.with_extension("pub")).unwrap(),
        format!("{line}\n")
    );
}

#[test]
fn concurrent_first_uses_agree_on_one_key() {
    if support::missing(&["ssh-keygen"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ssh/id_ed25519");
    let lines: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| ensure_user_key(&key, true).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(lines.iter().all(|l| *l == lines[0]), "{lines:?}");
    assert_eq!(
        fs::read_to_string(key.with_extension("pub"))
            .unwrap()
            .trim(),
        lines[0]
    );
    let derived = Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&key)
        .output()
        .unwrap();
    let derived = String::from_utf8_lossy(&derived.stdout);
    assert!(
        lines[0].starts_with(derived.trim()),
        "private and public halves differ"
    );
}

#[test]
fn a_user_configured_key_is_never_created_or_modified() {
    if support::missing(&["ssh-keygen"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();

    // Missing: an error, and nothing is created.
    let missing = dir.path().join("nope/id_ed25519");
    let err = ensure_user_key(&missing, false).unwrap_err();
    assert!(matches!(err, SshError::KeyMissing { .. }), "{err}");
    assert!(!dir.path().join("nope").exists());

    // Readable by others: refused (ssh would ignore it), mode untouched.
    let key = dir.path().join("mine");
    keygen(&[
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        "me@laptop",
        "-f",
        key.to_str().unwrap(),
    ]);
    fs::set_permissions(&key, Permissions::from_mode(0o644)).unwrap();
    let err = ensure_user_key(&key, false).unwrap_err();
    assert!(
        matches!(err, SshError::KeyPermissions { mode: 0o644, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");
    assert_eq!(mode(&key), 0o644);

    // Fine: its .pub line is returned as is.
    fs::set_permissions(&key, Permissions::from_mode(0o600)).unwrap();
    let public = fs::read_to_string(dir.path().join("mine.pub")).unwrap();
    assert_eq!(ensure_user_key(&key, false).unwrap(), public.trim());

    // Without .pub: derived from the private key, no .pub written.
    fs::remove_file(dir.path().join("mine.pub")).unwrap();
    let line = ensure_user_key(&key, false).unwrap();
    assert!(public.starts_with(&line), "{line} vs {public}");
    assert!(!dir.path().join("mine.pub").exists());
    assert_eq!(names(dir.path()), ["mine"]);

    // With a passphrase and no .pub: an error saying what to do, no prompt.
    let locked = dir.path().join("locked");
    keygen(&[
        "-q",
        "-t",
        "ed25519",
        "-N",
        "secret",
        "-f",
        locked.to_str().unwrap(),
    ]);
    fs::remove_file(dir.path().join("locked.pub")).unwrap();
    let err = ensure_user_key(&locked, false).unwrap_err();
    assert!(matches!(err, SshError::KeyNeedsPublicHalf { .. }), "{err}");
}

#[test]
fn host_keys_are_generated_per_vm_and_replaced_whole() {
    if support::missing(&["ssh-keygen"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vm = dir.path().join("vms/web");
    let line = generate_host_key(&vm, "banger web").unwrap();
    assert!(
        line.starts_with("ssh-ed25519 ") && line.ends_with(" banger web"),
        "{line}"
    );
    let private = vm.join(HOST_KEY_FILE);
    let public = vm.join(format!("{HOST_KEY_FILE}.pub"));
    assert_eq!(mode(&private), 0o600);
    assert_eq!(mode(&public), 0o644);
    assert_eq!(fs::read_to_string(&public).unwrap().trim(), line);
    assert_eq!(
        names(&vm),
        [HOST_KEY_FILE.to_string(), format!("{HOST_KEY_FILE}.pub")]
    );

    let again = generate_host_key(&vm, "banger web").unwrap();
    assert_ne!(again, line, "a new pair must replace the old one");
    assert_eq!(fs::read_to_string(&public).unwrap().trim(), again);
    assert_eq!(
        names(&vm).len(),
        2,
        "temporary files left: {:?}",
        names(&vm)
    );

    let err = generate_host_key(&vm, "bad\ncomment").unwrap_err();
    assert!(matches!(err, SshError::Invalid { .. }), "{err}");
}
