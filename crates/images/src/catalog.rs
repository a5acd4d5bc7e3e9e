//! The image catalog: named entries saying where an image comes from (a
//! local build recipe, or a rootfs file at a URL or path) with the SHA-256
//! and size of each file, checked before anything is recorded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

const BUILTIN: &str = include_str!("catalog.toml");

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {source_name}, line {line}: {message}")]
    Parse {
        source_name: String,
        line: usize,
        message: String,
    },
    #[error("catalog {source_name}: entry {entry:?}: {message}")]
    Invalid {
        source_name: String,
        entry: String,
        message: String,
    },
    #[error("cannot read catalog {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no catalog entry named {0:?}: see 'banger image pull --list', or pull it from Docker \
         Hub with 'banger image pull oci://docker.io/library/{0}'"
    )]
    NoEntry(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    image: Vec<RawEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    #[serde(default)]
    description: String,
    recipe: Option<String>,
    kernel: Option<String>,
    rootfs: Option<RawFile>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    url: Option<String>,
    path: Option<PathBuf>,
    sha256: String,
    size: u64,
}

/// Where a file comes from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    Url(String),
    Path(PathBuf),
}

/// A file pinned by the catalog.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PinnedFile {
    pub location: Location,
    pub sha256: String,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// Built locally by banger from this recipe.
    Recipe { recipe: String },
    /// A ready ext4 root filesystem; its kernel is `kernel` (an existing
    /// kernel's name) or, when absent, the one installed inside it.
    Rootfs {
        rootfs: PinnedFile,
        kernel: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub name: String,
    pub description: String,
    pub source: Source,
    /// Which catalog file it came from.
    pub origin: String,
}

/// Entries by name; later catalogs override earlier ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    entries: BTreeMap<String, Entry>,
}

impl Catalog {
    pub fn builtin() -> Self {
        let mut c = Catalog::default();
        c.merge_text(BUILTIN, "built-in")
            .expect("the built-in catalog is valid");
        c
    }

    /// The built-in catalog, overridden by `user` when that file exists.
    pub fn load(user: &Path) -> Result<Self, CatalogError> {
        let mut c = Self::builtin();
        match std::fs::read_to_string(user) {
            Ok(text) => c.merge_text(&text, &user.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CatalogError::Read {
                    path: user.to_path_buf(),
                    source,
                });
            }
        }
        Ok(c)
    }

    pub fn merge_text(&mut self, text: &str, source_name: &str) -> Result<(), CatalogError> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| CatalogError::Parse {
            source_name: source_name.to_string(),
            line: e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1),
            message: e.message().trim().replace("unknown field", "unknown key"),
        })?;
        let mut seen = std::collections::HashSet::new();
        for raw in file.image {
            let invalid = |message: String| CatalogError::Invalid {
                source_name: source_name.to_string(),
                entry: raw.name.clone(),
                message,
            };
            banger_model::validate_object_name("image", &raw.name)
                .map_err(|e| invalid(e.to_string()))?;
            if !seen.insert(raw.name.clone()) {
                return Err(invalid("appears twice".into()));
            }
            let source = match (&raw.recipe, &raw.rootfs) {
                (Some(recipe), None) => {
                    if raw.kernel.is_some() {
                        return Err(invalid(
                            "a recipe brings its own kernel: remove `kernel`".into(),
                        ));
                    }
                    Source::Recipe {
                        recipe: recipe.clone(),
                    }
                }
                (None, Some(file)) => Source::Rootfs {
                    rootfs: pinned(file).map_err(invalid)?,
                    kernel: raw.kernel.clone(),
                },
                _ => {
                    return Err(invalid(
                        "give exactly one of `recipe` or `rootfs = { url|path, sha256, size }`"
                            .into(),
                    ));
                }
            };
            self.entries.insert(
                raw.name.clone(),
                Entry {
                    name: raw.name,
                    description: raw.description,
                    source,
                    origin: source_name.to_string(),
                },
            );
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<&Entry, CatalogError> {
        self.entries
            .get(name)
            .ok_or_else(|| CatalogError::NoEntry(name.to_string()))
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }
}

fn pinned(file: &RawFile) -> Result<PinnedFile, String> {
    let location = match (&file.url, &file.path) {
        (Some(url), None) => {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(format!("url {url:?} must start with https:// or http://"));
            }
            Location::Url(url.clone())
        }
        (None, Some(path)) if path.is_absolute() => Location::Path(path.clone()),
        (None, Some(path)) => {
            return Err(format!("path {} must be absolute", path.display()));
        }
        _ => return Err("rootfs needs exactly one of `url` or `path`".into()),
    };
    if file.sha256.len() != 64
        || !file
            .sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "sha256 {:?} is not 64 lowercase hex digits",
            file.sha256
        ));
    }
    if file.size == 0 {
        return Err("size is 0".into());
    }
    Ok(PinnedFile {
        location,
        sha256: file.sha256.clone(),
        size: file.size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUM: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn parse(text: &str) -> Result<Catalog, CatalogError> {
        let mut c = Catalog::default();
        c.merge_text(text, "test.toml")?;
        Ok(c)
    }

    #[test]
    fn builtin_has_the_default_recipe() {
        let c = Catalog::builtin();
        let e = c.get("debian-bookworm").unwrap();
        assert_eq!(
            e.source,
            Source::Recipe {
                recipe: "debian-bookworm".into()
            }
        );
        assert!(matches!(c.get("nope"), Err(CatalogError::NoEntry(_))));
    }

    #[test]
    fn parses_rootfs_entries_and_overrides_by_name() {
        let mut c = Catalog::builtin();
        c.merge_text(
            &format!(
                r#"
[[image]]
name = "tools"
kernel = "6.1.0-37-cloud-amd64"
rootfs = {{ url = "https://example.org/tools.ext4", sha256 = "{SUM}", size = 4096 }}

[[image]]
name = "debian-bookworm"
rootfs = {{ path = "/srv/deb.ext4", sha256 = "{SUM}", size = 1 }}
"#
            ),
            "user.toml",
        )
        .unwrap();
        let tools = c.get("tools").unwrap();
        match &tools.source {
            Source::Rootfs { rootfs, kernel } => {
                assert_eq!(
                    rootfs.location,
                    Location::Url("https://example.org/tools.ext4".into())
                );
                assert_eq!(rootfs.size, 4096);
                assert_eq!(kernel.as_deref(), Some("6.1.0-37-cloud-amd64"));
            }
            other => panic!("{other:?}"),
        }
        let deb = c.get("debian-bookworm").unwrap();
        assert_eq!(deb.origin, "user.toml");
        assert!(matches!(deb.source, Source::Rootfs { kernel: None, .. }));
    }

    #[test]
    fn bad_entries_are_named() {
        for (text, needle) in [
            ("[[image]]\nname = \"a\"\n", "exactly one of `recipe`"),
            (
                "[[image]]\nname = \"a/b\"\nrecipe = \"x\"\n",
                "image name \"a/b\"",
            ),
            (
                "[[image]]\nname = \"a\"\nrecipe = \"x\"\nkernel = \"k\"\n",
                "remove `kernel`",
            ),
            (
                "[[image]]\nname = \"a\"\nrootfs = { path = \"rel.ext4\", sha256 = \"00\", size = 1 }\n",
                "must be absolute",
            ),
            (
                "[[image]]\nname = \"a\"\nrootfs = { path = \"/a.ext4\", sha256 = \"XYZ\", size = 1 }\n",
                "64 lowercase hex",
            ),
            (
                "[[image]]\nname = \"a\"\nrootfs = { url = \"ftp://x\", sha256 = \"00\", size = 1 }\n",
                "https://",
            ),
            (
                "[[image]]\nname = \"a\"\nrecipe = \"x\"\n[[image]]\nname = \"a\"\nrecipe = \"y\"\n",
                "twice",
            ),
            (
                "[[image]]\nname = \"a\"\nrecipe = \"x\"\nbogus = 1\n",
                "line 4: unknown key `bogus`",
            ),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text:?} gave {err}");
        }
    }
}
