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
                "--include-untracked sends files of the working tree, --branch and --from check out \
                 a commit: give one or the other"
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

/// [`stage`]s a selection for a new VM; a checkout (`--branch`/`--from`)
/// is made on the host first ([`workspace::check_out_here`], in a private
/// scratch folder removed afterwards) and staged whole, `.git` included.
pub async fn stage_selection(
    client: &banger_api::Client,
    sel: &Selection,
    disk_size: Option<banger_model::Size>,
) -> Result<banger_api::StagedWorkspace> {
    let Some(history) = &sel.history else {
        return stage(client, sel, disk_size).await;
    };
    let scratch = tempfile::Builder::new()
        .prefix("banger-checkout-")
        .tempdir()
        .context("making a scratch folder for the checkout")?;
    let (sel2, h2, dir) = (sel.clone(), history.clone(), scratch.path().to_path_buf());
    let made = tokio::task::spawn_blocking(move || workspace::check_out_here(&sel2, &h2, &dir))
        .await
        .context("checking out")??;
    for w in made.warnings.iter().skip(sel.warnings.len()) {
        eprintln!("warning: {w}");
    }
    stage(client, &made, disk_size).await
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(16);
    let cancel = Arc::new(AtomicBool::new(false));
    let sel2 = sel.clone();
    let writer = {
        let (tx, cancel) = (tx.clone(), cancel.clone());
        tokio::task::spawn_blocking(move || {
            let out = std::io::BufWriter::with_capacity(
                256 * 1024,
                ChannelWriter {
                    tx: tx.clone(),
                    cancel,
                },
            );
            let written = workspace::write_tar(&sel2, out);
            if let Err(e) = &written {
                // Ends the request: the daemon drops what it unpacked.
                let _ = tx.try_send(Err(std::io::Error::other(e.to_string())));
            }
            written
        })
    };
    drop(tx);
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
    // Answered: whatever is still being written is not wanted.
    cancel.store(true, Ordering::SeqCst);
    let written = writer.await.context("writing the workspace archive")?;
    match (staged, written) {
        (Ok(staged), Ok(())) => Ok(staged),
        // bangerd's refusal (too large, a bad name) says why.
        (Err(e @ banger_api::ClientError::Api(_)), _) => Err(crate::output::client_error(e)),
        // A file that changed while it was read says more than a broken
        // upload.
        (_, Err(e)) => Err(e.into()),
        (Err(e), Ok(())) => Err(crate::output::client_error(e)),
    }
}

/// A `Write` into a channel of chunks, from a blocking thread, that gives
/// up once `cancel` is set (bangerd answered before reading everything).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use tokio::sync::mpsc::error::TrySendError;
        let mut chunk = Ok(bytes::Bytes::copy_from_slice(buf));
        loop {
            if self.cancel.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(std::io::Error::other(
                    "bangerd stopped reading the workspace",
                ));
            }
            match self.tx.try_send(chunk) {
                Ok(()) => return Ok(buf.len()),
                // Back-pressure: the daemon unpacks at its own pace.
                Err(TrySendError::Full(back)) => {
                    chunk = back;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(TrySendError::Closed(_)) => {
                    return Err(std::io::Error::other(
                        "bangerd stopped reading the workspace",
                    ));
                }
            }
        }
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
