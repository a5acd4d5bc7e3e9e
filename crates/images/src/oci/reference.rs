//! Image references as people type them, normalised as docker does:
//! `ubuntu` is `docker.io/library/ubuntu:latest`, `me/tool:1` is
//! `docker.io/me/tool:1`, and a first component with a `.` or `:` (or
//! `localhost`) names the registry.
//!
//! `banger image pull` takes catalog names too, so [`is_oci_reference`]
//! draws the line: `oci://…`, or anything with `/`, `:` or `@`, is an OCI
//! reference; a bare word is a catalog entry.

use std::fmt;

use super::OciError;

pub const DOCKER_HUB: &str = "docker.io";
pub const SCHEME: &str = "oci://";
const DEFAULT_TAG: &str = "latest";

/// A normalised reference: always a registry and a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    /// `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

/// Whether `input` is an OCI reference rather than a catalog entry name.
pub fn is_oci_reference(input: &str) -> bool {
    input.starts_with(SCHEME) || input.contains(['/', ':', '@'])
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<Self, OciError> {
        let bad = |why: &str| OciError::BadReference {
            reference: input.to_string(),
            why: why.to_string(),
        };
        let rest = input.strip_prefix(SCHEME).unwrap_or(input);
        if rest.is_empty() {
            return Err(bad("it is empty"));
        }
        let (rest, digest) = match rest.split_once('@') {
            Some((name, digest)) => {
                validate_digest(digest).map_err(|why| bad(&why))?;
                (name, Some(digest.to_string()))
            }
            None => (rest, None),
        };
        // A tag follows the last ':' after the last '/' (a registry may
        // have a port: `127.0.0.1:5000/x`).
        let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|why| bad(&why))?;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        validate_registry(&registry).map_err(|why| bad(&why))?;
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        validate_repository(&repository).map_err(|why| bad(&why))?;
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Whether plain HTTP is allowed without `--insecure`: the registry is
    /// on this machine's loopback.
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => self.registry.as_str(),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The same image, pinned to `digest`.
    pub fn with_digest(&self, digest: &str) -> Self {
        Self {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// A default image name: the repository's last part and the tag,
    /// e.g. `ubuntu-24.04`; the digest's first 12 hex digits without one.
    pub fn default_name(&self) -> String {
        let base = self.repository.rsplit('/').next().unwrap_or("image");
        let suffix = match (&self.tag, &self.digest) {
            (Some(tag), _) => tag.clone(),
            (None, Some(d)) => d.trim_start_matches("sha256:").chars().take(12).collect(),
            (None, None) => DEFAULT_TAG.to_string(),
        };
        let name: String = format!("{base}-{suffix}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        name
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn validate_digest(digest: &str) -> Result<(), String> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "digest {digest:?} is not sha256: and 64 lowercase hex digits"
        )),
    }
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} is not valid (letters, digits, '_', '.', '-', at most 128)"
        ))
    }
}

fn validate_registry(registry: &str) -> Result<(), String> {
    let port_ok = match registry.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => {
            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
        }
        _ => true,
    };
    let ok = !registry.is_empty()
        && port_ok
        && !registry.contains("..")
        && registry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if ok {
        Ok(())
    } else {
        Err(format!("registry {registry:?} is not a host[:port]"))
    }
}

/// The distribution spec's path components: lowercase alphanumerics
/// separated by `.`, `_`, `__` or runs of `-`.
fn validate_repository(repository: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.chars().all(|ch| {
                ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
            })
            && !c.contains("..")
            && !c.contains("___")
    };
    if repository.len() <= 255 && repository.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(format!(
            "repository {repository:?} is not valid (lowercase letters, digits and . _ - between \
             '/'-separated parts)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_hub_defaults_like_docker() {
        assert_eq!(norm("ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(norm("ubuntu:24.04"), "docker.io/library/ubuntu:24.04");
        assert_eq!(norm("me/tool:1"), "docker.io/me/tool:1");
        assert_eq!(
            norm("oci://docker.io/library/ubuntu:24.04"),
            "docker.io/library/ubuntu:24.04"
        );
        assert_eq!(
            norm("index.docker.io/debian"),
            "docker.io/library/debian:latest"
        );
        assert_eq!(
            norm("oci://docker.io/debian"),
            "docker.io/library/debian:latest"
        );
    }

    #[test]
    fn registries_ports_tags_and_digests() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = ImageRef::parse(&format!("oci://127.0.0.1:5000/a/b:v1@{d}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert!(r.is_loopback());
        let r = ImageRef::parse(&format!("localhost:5000/x@{d}")).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.tag.as_deref()),
            ("localhost:5000", None)
        );
        assert!(r.is_loopback());
        let r = ImageRef::parse("ghcr.io/org/app").unwrap();
        assert_eq!(r.to_string(), "ghcr.io/org/app:latest");
        assert!(!r.is_loopback());
        assert!(!ImageRef::parse("localhostx/a").unwrap().is_loopback());
        assert!(ImageRef::parse("[::1]:5000/a").unwrap().is_loopback());
        assert_eq!(
            r.with_digest(&d).to_string(),
            format!("ghcr.io/org/app:latest@{d}")
        );
    }

    #[test]
    fn bad_references_say_why() {
        for (input, needle) in [
            ("oci://", "empty"),
            ("Ubuntu:1", "repository \"library/Ubuntu\""),
            ("ubuntu:", "tag \"\""),
            ("ubuntu:a/b", "registry \"ubuntu:a\""),
            ("ubuntu@sha256:12", "digest"),
            ("ubuntu@md5:00", "digest"),
            ("x/a..b", "repository"),
            ("a..b/c", "registry"),
            ("ubuntu:-x", "tag"),
        ] {
            let err = ImageRef::parse(input).expect_err(input).to_string();
            assert!(err.contains(needle), "{input}: {err}");
        }
    }

    #[test]
    fn the_catalog_rule() {
        assert!(!is_oci_reference("debian-bookworm"));
        assert!(is_oci_reference("ubuntu:24.04"));
        assert!(is_oci_reference("me/tool"));
        assert!(is_oci_reference("oci://ubuntu"));
        assert!(is_oci_reference("busybox@sha256:00"));
    }

    #[test]
    fn default_names_are_object_names() {
        let name = |s: &str| ImageRef::parse(s).unwrap().default_name();
        assert_eq!(name("ubuntu:24.04"), "ubuntu-24.04");
        assert_eq!(name("127.0.0.1:5000/a/tool"), "tool-latest");
        let d = format!("sha256:{}", "0123456789ab".repeat(6).get(..64).unwrap());
        assert_eq!(name(&format!("busybox@{d}")), "busybox-0123456789ab");
    }
}
