use std::io;
use std::path::PathBuf;

/// What can go wrong choosing a workspace's files or archiving them. Each
/// message is one line for the operator, naming the path at fault and
/// saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("workspace path {path} does not exist: check the PATH given to 'banger vm run'")]
    NotFound { path: PathBuf },

    #[error(
        "workspace path {path} is not a directory: give the repository's directory, not a file in it"
    )]
    NotADirectory { path: PathBuf },

    #[error(
        "{path} is inside a git repository but git is not installed: install git (apt install git)"
    )]
    GitMissing { path: PathBuf },

    #[error(
        "{path} is not in a git repository: --branch and --from check out a commit of one (drop them to copy the directory as it is)"
    )]
    NotARepository { path: PathBuf },

    #[error(
        "{repo} has no local branch {branch}: give an existing branch, or make one from another ref with --from REF --branch {branch} (e.g. --from origin/{branch})"
    )]
    UnknownBranch { branch: String, repo: PathBuf },

    #[error("--from {rev} names no commit in {repo}: give a branch, tag or commit id")]
    UnknownRevision { rev: String, repo: PathBuf },

    #[error("a checkout needs --branch, --from or both")]
    NoRevision,

    #[error("--branch {branch:?} is not a valid git branch name (see git check-ref-format)")]
    BadBranchName { branch: String },

    #[error("{action} failed ({status}): {stderr}")]
    GitFailed {
        action: String,
        status: String,
        stderr: String,
    },

    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },

    #[error(
        "file name {path} cannot be copied into the guest: {why}; rename it (or, if it is untracked, ignore it)"
    )]
    UnrepresentableName { path: String, why: &'static str },

    #[error(
        "symbolic link {path} cannot be copied into the guest: its target {target} {why}; change or remove the link"
    )]
    UnrepresentableLink {
        path: String,
        target: String,
        why: &'static str,
    },

    #[error(
        "{path} lies under {link}, a symbolic link in the working tree, and banger does not follow links out of the tree: make {link} a directory again (git checkout -- {link}) or remove {path} from the index (git rm --cached)"
    )]
    ThroughSymlink { path: PathBuf, link: PathBuf },

    #[error(
        "{path} changed while the workspace was being archived ({what}): run the command again"
    )]
    Changed { path: PathBuf, what: &'static str },
}

impl WorkspaceError {
    pub(crate) fn io(action: impl Into<String>, source: io::Error) -> Self {
        WorkspaceError::Io {
            action: action.into(),
            source,
        }
    }
}
