//! The image config blob (`application/vnd.oci.image.config.v1+json`):
//! only what a VM needs to run the image as its author meant, and the
//! layers' uncompressed digests (checked to line up with the manifest).

use serde::Deserialize;

use super::OciError;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// How many layers the config lists (`rootfs.diff_ids`).
    pub diff_ids: usize,
}

#[derive(Deserialize)]
struct Raw {
    architecture: Option<String>,
    os: Option<String>,
    #[serde(default)]
    config: Option<RawRun>,
    rootfs: Option<RawRootfs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawRun {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

impl ImageConfig {
    /// Parses the config of `reference`; a config for another platform
    /// than linux/amd64 is refused.
    pub fn parse(reference: &str, bytes: &[u8]) -> Result<Self, OciError> {
        let bad = |why: String| OciError::Config {
            reference: reference.to_string(),
            why,
        };
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if let (Some(os), Some(arch)) = (&raw.os, &raw.architecture)
            && (os != "linux" || arch != "amd64")
        {
            return Err(bad(format!(
                "it is for {os}/{arch}; banger boots linux/amd64 guests"
            )));
        }
        let run = raw.config.unwrap_or_default();
        Ok(Self {
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            env: run.env.unwrap_or_default(),
            workdir: run.working_dir.filter(|w| !w.is_empty()),
            user: run.user.filter(|u| !u.is_empty()),
            diff_ids: raw.rootfs.map(|r| r.diff_ids.len()).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_a_vm_needs() {
        let c = ImageConfig::parse(
            "r",
            br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/sh","-c"],
            "Cmd":["echo hi"],"Env":["PATH=/bin"],"WorkingDir":"/srv","User":""},
            "rootfs":{"type":"layers","diff_ids":["sha256:a","sha256:b"]}}"#,
        )
        .unwrap();
        assert_eq!(c.entrypoint, ["/bin/sh", "-c"]);
        assert_eq!(c.cmd, ["echo hi"]);
        assert_eq!(c.env, ["PATH=/bin"]);
        assert_eq!(c.workdir.as_deref(), Some("/srv"));
        assert_eq!(c.user, None);
        assert_eq!(c.diff_ids, 2);
        let bare = ImageConfig::parse("r", br#"{"rootfs":{"diff_ids":[]}}"#).unwrap();
        assert_eq!(bare, ImageConfig::default());
    }

    #[test]
    fn other_platforms_and_garbage_are_refused() {
        let err = ImageConfig::parse("r", br#"{"architecture":"arm64","os":"linux"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux/arm64"), "{err}");
        assert!(ImageConfig::parse("r", b"nope").is_err());
    }
}
