//! The accounts banger's sshd needs in an image that was not made for it
//! (an OCI image): `root` with a shell that exists, and an unprivileged
//! `sshd` user for privilege separation. Pure text in, text out, so every
//! case is tested without a guest; `minimal` writes the results.

/// The image's `/etc/passwd` with what sshd needs. `root` keeps its entry
/// unless its shell is missing from the image (distroless images have
/// none), which then becomes `fallback_shell`; a missing `root` entry is
/// added. A missing `sshd` user is added with the first free uid from
/// 900. Every other line is kept byte for byte.
pub fn passwd_for_sshd(
    existing: &str,
    shell_exists: impl Fn(&str) -> bool,
    fallback_shell: &str,
) -> String {
    let mut out = String::new();
    let mut have_root = false;
    let mut have_sshd = false;
    let mut uids = Vec::new();
    for line in existing.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if let Some(uid) = fields.get(2).and_then(|u| u.parse::<u32>().ok()) {
            uids.push(uid);
        }
        match fields.first() {
            Some(&"root") if fields.len() == 7 && !have_root => {
                have_root = true;
                let shell = fields[6];
                if shell.is_empty() || !shell_exists(shell) {
                    let mut fixed = fields.clone();
                    fixed[6] = fallback_shell;
                    if fixed[5].is_empty() {
                        fixed[5] = "/root";
                    }
                    out.push_str(&fixed.join(":"));
                    out.push('\n');
                    continue;
                }
            }
            Some(&"sshd") => have_sshd = true,
            _ => {}
        }
        out.push_str(line);
        out.push('\n');
    }
    if !have_root {
        let shell = if shell_exists("/bin/sh") {
            "/bin/sh"
        } else {
            fallback_shell
        };
        out.insert_str(0, &format!("root:x:0:0:root:/root:{shell}\n"));
    }
    if !have_sshd {
        let uid = (900..).find(|u| !uids.contains(u)).unwrap_or(65533);
        out.push_str(&format!(
            "sshd:x:{uid}:65534:banger sshd privilege separation:/run/sshd:/nonexistent\n"
        ));
    }
    out
}

/// The image's `/etc/shadow` with root's account usable for key logins:
/// sshd (without PAM) refuses a locked account, which is a password field
/// starting with `!`; `*` (no password, not locked) replaces it. `None`
/// when nothing needs changing.
pub fn shadow_unlocked(existing: &str) -> Option<String> {
    let mut changed = false;
    let mut out = String::new();
    for line in existing.lines() {
        let mut fields: Vec<&str> = line.split(':').collect();
        if fields.first() == Some(&"root") && fields.get(1).is_some_and(|p| p.starts_with('!')) {
            fields[1] = "*";
            changed = true;
            out.push_str(&fields.join(":"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SH: &str = "/.banger/bin/sh";

    #[test]
    fn a_debian_passwd_only_gains_the_sshd_user() {
        let debian =
            "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n";
        let out = passwd_for_sshd(debian, |s| s == "/bin/bash", SH);
        assert_eq!(
            out,
            format!(
                "{debian}sshd:x:900:65534:banger sshd privilege separation:/run/sshd:/nonexistent\n"
            )
        );
        // Already there: unchanged.
        assert_eq!(passwd_for_sshd(&out, |_| true, SH), out);
    }

    #[test]
    fn a_missing_shell_becomes_banger_s() {
        let distroless = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\nsshd:x:74:74::/run/sshd:/sbin/nologin\n";
        let out = passwd_for_sshd(distroless, |_| false, SH);
        assert_eq!(
            out.lines().next(),
            Some("root:x:0:0:root:/root:/.banger/bin/sh")
        );
        assert_eq!(out.lines().count(), 3, "{out}");
        let busybox = "root:x:0:0:root::\n";
        assert_eq!(
            passwd_for_sshd(busybox, |_| true, SH).lines().next(),
            Some("root:x:0:0:root:/root:/.banger/bin/sh")
        );
    }

    #[test]
    fn no_root_entry_or_no_file_gets_one() {
        let out = passwd_for_sshd("", |s| s == "/bin/sh", SH);
        assert_eq!(
            out,
            "root:x:0:0:root:/root:/bin/sh\nsshd:x:900:65534:banger sshd privilege separation:/run/sshd:/nonexistent\n"
        );
        let taken = "app:x:900:900::/app:/bin/sh\n";
        let out = passwd_for_sshd(taken, |_| false, SH);
        assert!(
            out.starts_with("root:x:0:0:root:/root:/.banger/bin/sh\n"),
            "{out}"
        );
        assert!(out.contains("\nsshd:x:901:"), "{out}");
    }

    #[test]
    fn a_locked_root_is_unlocked_for_keys() {
        assert_eq!(
            shadow_unlocked("root:!:19000:0:99999:7:::\nbin:!:19000::::::\n").as_deref(),
            Some("root:*:19000:0:99999:7:::\nbin:!:19000::::::\n")
        );
        assert_eq!(shadow_unlocked("root:*:19000::::::\n"), None);
        assert_eq!(shadow_unlocked(""), None);
    }
}
