//! Talking to a registry through `oci-client`: it does the distribution
//! protocol (token auth challenges, redirects, HTTPS); banger reads the
//! manifests itself and checks every digest and size as bytes arrive,
//! never trusting the client or the registry.

use std::sync::Once;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::cache::BlobCache;
use super::config::ImageConfig;
use super::reference::ImageRef;
use super::{OciError, io_err};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MANIFEST_TYPES: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];
/// Manifests and configs are small JSON documents; anything bigger is not one.
const MAX_JSON_BLOB: u64 = 16 << 20;

/// A blob as a manifest names it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct IndexEntry {
    digest: String,
    size: u64,
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

/// A resolved image: pinned by digest, with its config read.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Normalised, as asked for.
    pub reference: ImageRef,
    pub manifest_digest: String,
    pub config: ImageConfig,
    pub config_descriptor: Descriptor,
    /// In order, bottom first.
    pub layers: Vec<Descriptor>,
}

pub struct Registry {
    client: Client,
    auth: RegistryAuth,
}

impl Registry {
    /// A client for `image`'s registry: HTTPS, or plain HTTP when the
    /// registry is on loopback or `insecure` is given.
    pub fn new(image: &ImageRef, insecure: bool) -> Self {
        install_crypto_provider();
        let protocol = if insecure || image.is_loopback() {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(std::time::Duration::from_secs(20)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            platform_resolver: None,
            ..Default::default()
        });
        Self {
            client,
            auth: RegistryAuth::Anonymous,
        }
    }

    /// Resolves `image` to its linux/amd64 manifest and reads its config
    /// (through `cache`, like any blob).
    pub async fn resolve(&self, image: &ImageRef, cache: &BlobCache) -> Result<Resolved, OciError> {
        let (bytes, digest) = self.manifest(image, image.digest.as_deref()).await?;
        let mut raw = parse_manifest(image, &bytes)?;
        let mut manifest_digest = digest;
        if let Some(entries) = raw.manifests.take() {
            let entry = entries
                .iter()
                .find(|e| {
                    e.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .ok_or_else(|| OciError::NoPlatform {
                    reference: image.to_string(),
                    available: platforms(&entries),
                })?;
            let pinned = image.with_digest(&entry.digest);
            let (bytes, digest) = self.manifest(&pinned, Some(&entry.digest)).await?;
            if bytes.len() as u64 != entry.size {
                return Err(OciError::Blob {
                    what: "manifest",
                    digest: entry.digest.clone(),
                    why: format!(
                        "the registry sent {} bytes, the index says {}",
                        bytes.len(),
                        entry.size
                    ),
                });
            }
            raw = parse_manifest(image, &bytes)?;
            if raw.manifests.is_some() {
                return Err(registry_error(
                    image,
                    "an image index points at another index",
                ));
            }
            manifest_digest = digest;
        }
        let config_descriptor = raw
            .config
            .ok_or_else(|| registry_error(image, "the manifest names no config"))?;
        let pinned = image.with_digest(&manifest_digest);
        let config_bytes = self.small_blob(&pinned, &config_descriptor, cache).await?;
        let config = ImageConfig::parse(&image.to_string(), &config_bytes)?;
        for layer in &raw.layers {
            check_descriptor("layer", layer)?;
        }
        if config.diff_ids != raw.layers.len() {
            return Err(OciError::Config {
                reference: image.to_string(),
                why: format!(
                    "it lists {} layers, the manifest {}",
                    config.diff_ids,
                    raw.layers.len()
                ),
            });
        }
        Ok(Resolved {
            reference: image.clone(),
            manifest_digest,
            config,
            config_descriptor,
            layers: raw.layers,
        })
    }

    /// The manifest of `image` and its digest, computed here from the
    /// bytes; when `expected` is given the bytes must hash to it.
    async fn manifest(
        &self,
        image: &ImageRef,
        expected: Option<&str>,
    ) -> Result<(Vec<u8>, String), OciError> {
        let reference = client_reference(image);
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&reference, &self.auth, MANIFEST_TYPES)
            .await
            .map_err(|e| registry_error(image, &e.to_string()))?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if let Some(expected) = expected
            && digest != expected
        {
            return Err(OciError::Blob {
                what: "manifest",
                digest: expected.to_string(),
                why: format!("the registry sent a manifest whose digest is {digest}"),
            });
        }
        Ok((bytes.to_vec(), digest))
    }

    /// A config blob, through the cache, read whole.
    async fn small_blob(
        &self,
        image: &ImageRef,
        desc: &Descriptor,
        cache: &BlobCache,
    ) -> Result<Vec<u8>, OciError> {
        check_descriptor("config", desc)?;
        if desc.size > MAX_JSON_BLOB {
            return Err(OciError::Blob {
                what: "config",
                digest: desc.digest.clone(),
                why: format!("it is {} bytes, too big for an image config", desc.size),
            });
        }
        self.fetch_blob(image, "config", desc, cache, &|_| {})
            .await?;
        let path = cache.blob_path(&desc.digest);
        tokio::fs::read(&path).await.map_err(io_err("read", &path))
    }

    /// Makes sure the blob `desc` is in `cache`: downloads it (reporting
    /// bytes so far through `progress`) unless it is there already, or
    /// waits for a concurrent pull of the same blob. Returns whether this
    /// call downloaded it.
    pub async fn fetch_blob(
        &self,
        image: &ImageRef,
        what: &'static str,
        desc: &Descriptor,
        cache: &BlobCache,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<bool, OciError> {
        check_descriptor(what, desc)?;
        let (c, d) = (cache.clone(), desc.digest.clone());
        let lock = tokio::task::spawn_blocking(move || c.lock(&d))
            .await
            .map_err(|e| registry_error(image, &format!("lock task failed: {e}")))??;
        if cache.has(&desc.digest, desc.size) {
            progress(desc.size);
            return Ok(false);
        }
        let temp = cache.temp_path(&desc.digest)?;
        let result = self.download(image, what, desc, &temp, progress).await;
        let result = result.and_then(|()| cache.commit(&temp, &desc.digest));
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        drop(lock);
        result.map(|_| true)
    }

    async fn download(
        &self,
        image: &ImageRef,
        what: &'static str,
        desc: &Descriptor,
        dest: &std::path::Path,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), OciError> {
        let blob_err = |why: String| OciError::Blob {
            what,
            digest: desc.digest.clone(),
            why,
        };
        let descriptor = OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.clone(),
            size: i64::try_from(desc.size).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let mut stream = self
            .client
            .pull_blob_stream(&client_reference(image), &descriptor)
            .await
            .map_err(|e| blob_err(format!("the registry refused it: {e}")))?;
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(io_err("create", dest))?;
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        let mut last_report = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                // oci-client checks the digest itself at the end of the
                // stream; banger's own check says it in banger's words.
                Err(e) => {
                    let actual = format!("sha256:{}", hex::encode(hasher.clone().finalize()));
                    if received == desc.size && actual != desc.digest {
                        return Err(blob_err(format!(
                            "the registry sent content whose digest is {actual}"
                        )));
                    }
                    return Err(blob_err(format!("the download failed: {e}")));
                }
            };
            received += chunk.len() as u64;
            if received > desc.size {
                return Err(blob_err(format!(
                    "the registry sent more than the {} bytes the manifest says",
                    desc.size
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(io_err("write", dest))?;
            if received - last_report >= 1 << 20 {
                progress(received);
                last_report = received;
            }
        }
        file.flush().await.map_err(io_err("write", dest))?;
        file.sync_all().await.map_err(io_err("sync", dest))?;
        if received != desc.size {
            return Err(blob_err(format!(
                "the registry sent {received} bytes, the manifest says {}",
                desc.size
            )));
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != desc.digest {
            return Err(blob_err(format!(
                "the registry sent content whose digest is {actual}"
            )));
        }
        progress(received);
        Ok(())
    }
}

/// oci-client is built without a default TLS provider (its default pulls
/// in aws-lc's C build); ring it is, installed once per process.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another part of the process installed one first: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn client_reference(image: &ImageRef) -> Reference {
    let (registry, repository) = (image.registry.clone(), image.repository.clone());
    match (&image.tag, &image.digest) {
        (_, Some(digest)) => Reference::with_digest(registry, repository, digest.clone()),
        (Some(tag), None) => Reference::with_tag(registry, repository, tag.clone()),
        (None, None) => Reference::with_tag(registry, repository, "latest".into()),
    }
}

fn parse_manifest(image: &ImageRef, bytes: &[u8]) -> Result<RawManifest, OciError> {
    let raw: RawManifest = serde_json::from_slice(bytes)
        .map_err(|e| registry_error(image, &format!("its manifest is not valid JSON: {e}")))?;
    if let Some(media_type) = &raw.media_type
        && !MANIFEST_TYPES.contains(&media_type.as_str())
    {
        return Err(OciError::MediaType {
            what: format!("the manifest of {image}"),
            media_type: media_type.clone(),
        });
    }
    Ok(raw)
}

fn platforms(entries: &[IndexEntry]) -> String {
    let list: Vec<String> = entries
        .iter()
        .filter_map(|e| e.platform.as_ref())
        .map(|p| format!("{}/{}", p.os, p.architecture))
        .collect();
    if list.is_empty() {
        "no platforms listed".into()
    } else {
        list.join(", ")
    }
}

/// Digests name cache files: only `sha256:` and 64 lowercase hex digits.
fn check_descriptor(what: &'static str, desc: &Descriptor) -> Result<(), OciError> {
    let ok = desc.digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(OciError::Blob {
            what,
            digest: desc.digest.clone(),
            why: "this digest is not sha256: and 64 lowercase hex digits".into(),
        })
    }
}

fn registry_error(image: &ImageRef, message: &str) -> OciError {
    OciError::Registry {
        reference: image.to_string(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_must_be_sha256() {
        let mut d = Descriptor {
            media_type: String::new(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 1,
        };
        check_descriptor("layer", &d).unwrap();
        d.digest = "sha256:../../etc".into();
        assert!(check_descriptor("layer", &d).is_err());
        d.digest = format!("sha512:{}", "a".repeat(128));
        assert!(check_descriptor("layer", &d).is_err());
    }

    #[test]
    fn manifests_and_indexes_parse() {
        let image = ImageRef::parse("x/y").unwrap();
        let index = br#"{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"digest":"sha256:aa","size":1,"platform":{"architecture":"arm64","os":"linux"}}]}"#;
        let raw = parse_manifest(&image, index).unwrap();
        assert_eq!(platforms(raw.manifests.as_deref().unwrap()), "linux/arm64");
        let err = parse_manifest(&image, br#"{"mediaType":"text/html"}"#)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("text/html"), "{err}");
    }
}
