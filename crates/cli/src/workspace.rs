//! Workspace mode of `vm run PATH`: the files are chosen here, on the
//! user's side (banger_guest::workspace), and streamed as one tar archive
//! over the VM's multiplexed ssh connection into `/root/NAME`, where the
//! command then runs.

use std::io::Write;
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use banger_guest::SshTarget;
use banger_guest::workspace::{self, RevisionRequest, SelectOptions, Selection};

use crate::args::WorkspaceArgs;
use crate::output::human_bytes;

/// Chooses the files, saying on stderr which mode was used and what was
/// left out.
pub fn select(path: &std::path::Path, args: &WorkspaceArgs) -> Result<Selection> {
    let sel = if args.branch.is_some() || args.from.is_some() {
        if args.include_untracked {
            bail!(
                "--include-untracked sends files of the working tree, --branch and --from check out                  a commit: give one or the other"
            );
        }
        workspace::select_revision(
            path,
            &RevisionRequest {
                branch: args.branch.clone(),
                from: args.from.clone(),
            },
        )?
    } else {
        workspace::select(
            path,
            &SelectOptions {
                include_untracked: args.include_untracked,
            },
        )?
    };
    eprintln!(
        "workspace: {} ({} files, {}) -> {}",
        sel.mode,
        sel.entries.len(),
        human_bytes(sel.total_bytes),
        sel.guest_root()
    );
    if let Some(h) = &sel.history {
        eprintln!(
            "workspace: checking out {} ({}), {} commit{} of history",
            h.label,
            h.commit.get(..12).unwrap_or(&h.commit),
            h.commits,
            if h.commits == 1 { "" } else { "s" }
        );
    }
    for w in &sel.warnings {
        eprintln!("warning: {w}");
    }
    Ok(sel)
}

/// Sends the selection to bangerd as one tar stream (`POST
/// /v1/workspaces`), which unpacks it on the host for the new VM's
/// workspace disk. Files are read as they are sent; a file that changed
/// or vanished since it was selected fails the upload with its name.
pub async fn stage(
    client: &banger_api::Client,
    sel: &Selection,
    disk_size: Option<banger_model::Size>,
) -> Result<banger_api::StagedWorkspace> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(16);
    let sel2 = sel.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let out = std::io::BufWriter::with_capacity(256 * 1024, ChannelWriter(tx.clone()));
        let written = workspace::write_tar(&sel2, out);
        if let Err(e) = &written {
            // Ends the request: the daemon drops what it unpacked.
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
        written
    });
    // The name is letters, digits, '.', '_' and '-' (`repo_name`), the
    // size digits and a unit: nothing to escape.
    let mut query = format!("dir={}&bytes={}", sel.repo_name, sel.total_bytes);
    if let Some(size) = disk_size {
        query.push_str(&format!("&disk_size={}", String::from(size)));
    }
    let staged = client
        .post_stream::<banger_api::StagedWorkspace>(
            &format!("/v1/workspaces?{query}"),
            "application/x-tar",
            rx,
        )
        .await;
    // The archive's own error says more than the daemon's view of it.
    writer.await.context("writing the workspace archive")??;
    staged.map_err(crate::output::client_error)
}

/// A `Write` into a channel of chunks, from a blocking thread.
struct ChannelWriter(tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::other("bangerd stopped reading the workspace"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Streams the selection into the guest over the VM's ssh connection: a
/// tar archive unpacked by `tar -x`, or for a checkout the commit's
/// history as a git bundle, checked out by the guest's git.
pub fn ship(target: &SshTarget, sel: &Selection) -> Result<()> {
    let remote = match &sel.history {
        Some(h) => workspace::checkout_command(sel, h),
        None => ["tar", "-x", "-C", "/root"].map(String::from).to_vec(),
    };
    let mut child = target
        .command(&remote, false)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run ssh (apt-get install openssh-client)")?;
    let stdin = std::io::BufWriter::new(child.stdin.take().context("ssh's stdin")?);
    let written = match &sel.history {
        Some(h) => workspace::write_bundle(&sel.root, h, stdin),
        None => workspace::write_tar(sel, stdin),
    };
    let out = child.wait_with_output().context("waiting for ssh")?;
    if !out.status.success() {
        bail!(
            "copying the workspace into the VM failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    written?;
    Ok(())
}

/// The command that starts `mise install` in the background for a
/// workspace that pins its tools (`.mise.toml`, `mise.toml`,
/// `.tool-versions`), logging to `/root/.cache/banger/`; `None` for one
/// that pins nothing.
pub fn tooling_command(sel: &Selection) -> Option<Vec<String>> {
    let pinned = sel.entries.iter().any(|e| {
        matches!(
            e.path.to_str(),
            Some(".mise.toml" | "mise.toml" | ".tool-versions")
        )
    });
    if !pinned {
        return None;
    }
    // In its own session (setsid), so nothing that ends with the command
    // that started it (the agent's process group, an ssh session) ends it;
    // the log says that it ran and how it ended.
    let script = "log=/root/.cache/banger/vm-run-tooling-$1.log; mkdir -p /root/.cache/banger; \
                  if command -v mise >/dev/null 2>&1; then \
                  cd \"/root/$1\" && setsid sh -c \
                  'echo \"banger: running mise install in $PWD\"; mise install; \
                  echo \"banger: mise install exited with status $?\"' \
                  >\"$log\" 2>&1 </dev/null & \
                  else echo 'mise not in image, skipped' >\"$log\"; fi";
    Some(vec![
        "sh".into(),
        "-c".into(),
        script.into(),
        "sh".into(),
        sel.repo_name.clone(),
    ])
}

/// Starts [`tooling_command`] over ssh, not waiting for it.
pub fn bootstrap_tooling(target: &SshTarget, sel: &Selection) {
    let Some(remote) = tooling_command(sel) else {
        return;
    };
    let _ = target
        .command(&remote, false)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The remote words that run `command` (or a login shell) in `dir`.
pub fn in_dir(dir: &str, command: &[String]) -> Vec<String> {
    let mut words: Vec<String> = vec!["sh".into(), "-c".into()];
    if command.is_empty() {
        words.push("cd \"$1\" && exec \"${SHELL:-/bin/sh}\" -l".into());
        words.extend(["sh".into(), dir.to_string()]);
    } else {
        words.push("cd \"$1\" && shift && exec \"$@\"".into());
        words.extend(["sh".into(), dir.to_string()]);
        words.extend(command.iter().cloned());
    }
    words
}

/// `--dry-run`: the list of files and their total size, on stdout.
pub fn print_dry_run(sel: &Selection) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(workspace::dry_run_listing(sel).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_run_in_the_workspace() {
        let w = in_dir("/root/repo", &["make".into(), "test".into()]);
        assert_eq!(w[0..2], ["sh", "-c"]);
        assert_eq!(w[3..], ["sh", "/root/repo", "make", "test"]);
        let shell = in_dir("/root/repo", &[]);
        assert!(shell[2].contains("exec \"${SHELL:-/bin/sh}\" -l"));
        // The directory and the command are arguments, never spliced into
        // the script.
        assert!(!w[2].contains("repo") && !w[2].contains("make"));
    }
}
