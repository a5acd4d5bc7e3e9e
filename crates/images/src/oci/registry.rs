//! Talking to a registry through `oci-client`: it does the distribution
//! protocol (token auth challenges, redirects, HTTPS); banger reads the
//! manifests itself and checks every digest and size as bytes arrive,
//! never trusting the client or the registry. Every size the registry
//! declares is checked against the [`Limits`] before anything is fetched:
//! the number of layers and their sizes together before any download,
//! a config's size before the config, an index entry's before its
//! manifest; a manifest fetched by tag is read with its size bounded.

use std::sync::Once;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::cache::BlobCache;
use super::config::ImageConfig;
use super::reference::ImageRef;
use super::{Limits, OciError, io_err};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MANIFEST_TYPES: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];
/// How much of an error response is read for its message.
const MAX_ERROR_BODY: usize = 16 << 10;

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
    /// For manifests, which oci-client reads whole ([`Registry::manifest`]).
    http: reqwest::Client,
    scheme: &'static str,
    auth: RegistryAuth,
    limits: Limits,
}

impl Registry {
    /// A client for `image`'s registry: HTTPS, or plain HTTP when the
    /// registry is on loopback or `insecure` is given.
    pub fn new(image: &ImageRef, insecure: bool, limits: Limits) -> Result<Self, OciError> {
        install_crypto_provider();
        let (protocol, scheme) = if insecure || image.is_loopback() {
            (ClientProtocol::Http, "http")
        } else {
            (ClientProtocol::Https, "https")
        };
        let (connect_timeout, read_timeout) = (
            std::time::Duration::from_secs(20),
            std::time::Duration::from_secs(60),
        );
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(connect_timeout),
            read_timeout: Some(read_timeout),
            platform_resolver: None,
            ..Default::default()
        });
        // As oci-client builds its own: the host's CA store, proxies from
        // the environment.
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .read_timeout(read_timeout)
            .user_agent(concat!("banger/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| registry_error(image, &format!("cannot make an HTTP client: {e}")))?;
        Ok(Self {
            client,
            http,
            scheme,
            auth: RegistryAuth::Anonymous,
            limits,
        })
    }

    /// Resolves `image` to its linux/amd64 manifest and reads its config
    /// (through `cache`, like any blob).
    pub async fn resolve(&self, image: &ImageRef, cache: &BlobCache) -> Result<Resolved, OciError> {
        let (bytes, digest) = self.manifest(image, image.digest.as_deref(), None).await?;
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
            let (bytes, digest) = self
                .manifest(&pinned, Some(&entry.digest), Some(entry.size))
                .await?;
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
        self.check_layers(image, &raw.layers)?;
        let pinned = image.with_digest(&manifest_digest);
        let config_bytes = self.small_blob(&pinned, &config_descriptor, cache).await?;
        let config = ImageConfig::parse(&image.to_string(), &config_bytes)?;
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

    /// Refuses, before any download, more layers than the limit, a digest
    /// that could not name a cache file, and layers that could not unpack
    /// within `oci_max_unpacked`: a gzip or zstd layer is never much
    /// bigger than the tar stream in it (a few bytes per 64 KiB stored
    /// uncompressed), and the tar streams together must stay under it.
    fn check_layers(&self, image: &ImageRef, layers: &[Descriptor]) -> Result<(), OciError> {
        if layers.len() > self.limits.layers {
            return Err(OciError::TooManyLayers {
                reference: image.to_string(),
                count: layers.len(),
                limit: self.limits.layers,
            });
        }
        let mut total = 0u64;
        for layer in layers {
            check_descriptor("layer", layer)?;
            total = total.saturating_add(layer.size);
            if total > self.limits.unpacked {
                return Err(OciError::TooBigToFetch {
                    layer: layer.digest.clone(),
                    total,
                    limit: self.limits.unpacked,
                });
            }
        }
        Ok(())
    }

    /// The manifest of `image` and its digest, computed here from the
    /// bytes; when `expected` is given the bytes must hash to it. At most
    /// `oci_max_manifest` bytes are read: `declared` (an index entry's
    /// size) and the response's length are checked before the body, and
    /// the body as it arrives (a registry may send no length, or lie).
    ///
    /// Fetched here rather than with oci-client's `pull_manifest_raw`,
    /// which reads the whole body into memory first; oci-client still does
    /// the token challenge ([`Client::auth`]) and gives the token.
    async fn manifest(
        &self,
        image: &ImageRef,
        expected: Option<&str>,
        declared: Option<u64>,
    ) -> Result<(Vec<u8>, String), OciError> {
        let what = match expected {
            Some(digest) => format!("manifest {digest}"),
            None => format!("the manifest of {image}"),
        };
        let limit = self.limits.manifest;
        let too_big = |size| OciError::DocumentTooBig {
            what: what.clone(),
            size,
            limit,
        };
        if let Some(size) = declared
            && size > limit
        {
            return Err(too_big(Some(size)));
        }
        let reference = client_reference(image);
        let token = self
            .client
            .auth(&reference, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| registry_error(image, &format!("cannot authenticate: {e}")))?;
        let url = format!(
            "{}://{}/v2/{}/manifests/{}",
            self.scheme,
            reference.resolve_registry(),
            reference.repository(),
            reference.digest().or(reference.tag()).unwrap_or("latest")
        );
        let mut request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, MANIFEST_TYPES.join(", "));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let fetch_err = |e: reqwest::Error| {
            registry_error(image, &format!("cannot fetch {what}: {}", error_chain(&e)))
        };
        let mut response = request.send().await.map_err(fetch_err)?;
        let status = response.status();
        if !status.is_success() {
            let detail = error_detail(&mut response).await;
            let hint = match status.as_u16() {
                404 => ": check the repository and the tag",
                401 | 403 => {
                    ": the image is private or not there (banger pulls anonymously), \
                     check the reference"
                }
                _ => "",
            };
            return Err(registry_error(
                image,
                &format!("the registry answered {status}{detail} for {what}{hint}"),
            ));
        }
        if let Some(size) = response.content_length()
            && size > limit
        {
            return Err(too_big(Some(size)));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(fetch_err)? {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(too_big(None));
            }
            bytes.extend_from_slice(&chunk);
        }
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
        Ok((bytes, digest))
    }

    /// A config blob, through the cache, read whole.
    async fn small_blob(
        &self,
        image: &ImageRef,
        desc: &Descriptor,
        cache: &BlobCache,
    ) -> Result<Vec<u8>, OciError> {
        check_descriptor("config", desc)?;
        if desc.size > self.limits.manifest {
            return Err(OciError::DocumentTooBig {
                what: format!("config {}", desc.digest),
                size: Some(desc.size),
                limit: self.limits.manifest,
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

/// The registry's own words for an error, if it sent the OCI error
/// envelope (`{"errors":[{"message":…}]}`); read with a bound, like any
/// body.
async fn error_detail(response: &mut reqwest::Response) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        errors: Vec<EnvelopeError>,
    }
    #[derive(Deserialize)]
    struct EnvelopeError {
        message: String,
    }
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk[..chunk.len().min(MAX_ERROR_BODY - body.len())]);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    match serde_json::from_slice::<Envelope>(&body) {
        Ok(envelope) if !envelope.errors.is_empty() => {
            let messages: Vec<String> = envelope
                .errors
                .into_iter()
                .map(|e| {
                    e.message
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(200)
                        .collect()
                })
                .collect();
            format!(" ({})", messages.join("; "))
        }
        _ => String::new(),
    }
}

/// reqwest's error and its causes, on one line ("error sending request"
/// alone says nothing).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn registry_error(image: &ImageRef, message: &str) -> OciError {
    OciError::Registry {
        reference: image.to_string(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::io::AsyncReadExt;

    use super::*;

    const LIMITS: Limits = Limits {
        unpacked: 1 << 30,
        manifest: 1 << 20,
        tar_header: 1 << 20,
        layers: 3,
        layer_entries: 1_000_000,
        image_entries: 2_000_000,
    };

    /// What the test registry sends for a manifest.
    #[derive(Clone, Copy)]
    enum Answer {
        /// 256 MiB, chunked: no length said up front.
        Endless,
        /// 256 MiB, with its length said up front.
        Declared,
        /// An index whose linux/amd64 entry says it is 16 MiB.
        BigEntry,
    }

    const ENDLESS: u64 = 256 << 20;

    /// A registry on loopback answering `/v2/` and, for every manifest,
    /// `answer`; it counts the manifest bytes it managed to send and the
    /// requests for manifests by digest. With `token`, it wants a bearer
    /// token for manifests, as Docker Hub does: `/v2/` answers with the
    /// challenge, `/token` gives one.
    async fn test_registry(
        answer: Answer,
        token: bool,
    ) -> (ImageRef, Arc<AtomicU64>, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sent, by_digest) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, d) = (sent.clone(), by_digest.clone());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (sent, by_digest) = (s.clone(), d.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    let path = text.split(' ').nth(1).unwrap_or("").to_string();
                    let authorized = !token || text.contains("\r\nauthorization: bearer t0k\r\n");
                    let reply = if path.starts_with("/token") {
                        Some(r#"{"token":"t0k"}"#.to_string())
                    } else if path.contains("/manifests/") && authorized {
                        None
                    } else if path == "/v2/" && !token {
                        Some(String::new())
                    } else {
                        let challenge = format!(
                            "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test\""
                        );
                        let _ = conn
                            .write_all(
                                format!(
                                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\n\
                                     Content-Length: 0\r\nConnection: close\r\n\r\n"
                                )
                                .as_bytes(),
                            )
                            .await;
                        return;
                    };
                    if let Some(body) = reply {
                        let _ = conn
                            .write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\
                                     Connection: close\r\n\r\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .await;
                        return;
                    }
                    if path.contains("/manifests/sha256:") {
                        by_digest.fetch_add(1, Ordering::SeqCst);
                    }
                    let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\
                                Content-Type: application/vnd.oci.image.manifest.v1+json\r\n";
                    let chunk = vec![b' '; 64 << 10];
                    match answer {
                        Answer::BigEntry => {
                            let index = format!(
                                r#"{{"mediaType":"{OCI_INDEX}","manifests":[{{"digest":"sha256:{}",
                                "size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
                                "a".repeat(64),
                                16 << 20
                            );
                            let reply =
                                format!("{head}Content-Length: {}\r\n\r\n{index}", index.len());
                            let _ = conn.write_all(reply.as_bytes()).await;
                        }
                        Answer::Endless | Answer::Declared => {
                            let declared = matches!(answer, Answer::Declared);
                            let length = if declared {
                                format!("Content-Length: {ENDLESS}\r\n\r\n")
                            } else {
                                "Transfer-Encoding: chunked\r\n\r\n".to_string()
                            };
                            if conn
                                .write_all(format!("{head}{length}").as_bytes())
                                .await
                                .is_err()
                            {
                                return;
                            }
                            while sent.load(Ordering::SeqCst) < ENDLESS {
                                let framed = if declared {
                                    chunk.clone()
                                } else {
                                    [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"]
                                        .concat()
                                };
                                if conn.write_all(&framed).await.is_err() {
                                    return;
                                }
                                sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                            }
                        }
                    }
                });
            }
        });
        let image = ImageRef::parse(&format!("127.0.0.1:{port}/x/y:latest")).unwrap();
        (image, sent, by_digest)
    }

    async fn resolve(image: &ImageRef) -> OciError {
        let cache = tempfile::tempdir().unwrap();
        let registry = Registry::new(image, false, LIMITS).unwrap();
        registry
            .resolve(image, &BlobCache::new(cache.path()))
            .await
            .expect_err("refused")
    }

    #[tokio::test]
    async fn manifests_are_read_with_a_bound() {
        // No length up front: the read stops at the limit, not at the
        // 256 MiB the registry would send.
        let (image, sent, _) = test_registry(Answer::Endless, false).await;
        let err = resolve(&image).await.to_string();
        assert!(
            err.contains(&format!(
                "the manifest of {image} is more than 1048576 bytes"
            )) && err.contains("(oci_max_manifest in config.toml)"),
            "{err}"
        );
        let sent = sent.load(Ordering::SeqCst);
        assert!(sent < 64 << 20, "the registry got to send {sent} bytes");

        // A length up front: refused before the body is read.
        let (image, _, _) = test_registry(Answer::Declared, false).await;
        let err = resolve(&image).await.to_string();
        assert!(
            err.contains(&format!(
                "is {ENDLESS} bytes, more than 1048576 bytes (oci_max_manifest"
            )),
            "{err}"
        );

        // An index entry declaring more: its manifest is never fetched.
        let (image, _, by_digest) = test_registry(Answer::BigEntry, false).await;
        let err = resolve(&image).await.to_string();
        assert!(
            err.contains(&format!(
                "manifest sha256:{} is 16777216 bytes",
                "a".repeat(64)
            )),
            "{err}"
        );
        assert_eq!(by_digest.load(Ordering::SeqCst), 0);
    }

    /// The manifest is fetched outside oci-client, with the token
    /// oci-client got from the registry's challenge.
    #[tokio::test]
    async fn manifests_are_fetched_with_the_registrys_token() {
        let (image, _, _) = test_registry(Answer::Declared, true).await;
        let err = resolve(&image).await.to_string();
        assert!(
            err.contains(&format!("is {ENDLESS} bytes, more than")),
            "authorized: {err}"
        );
        // It did take the token: without one, the registry says 401.
        let registry = Registry::new(&image, false, LIMITS).unwrap();
        let response = registry
            .http
            .get(format!("http://{}/v2/x/y/manifests/latest", image.registry))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }

    #[test]
    fn layers_are_counted_and_sized_before_any_download() {
        let image = ImageRef::parse("127.0.0.1:1/x/y:latest").unwrap();
        let registry = Registry::new(
            &image,
            false,
            Limits {
                unpacked: 100,
                ..LIMITS
            },
        )
        .unwrap();
        let layer = |hex: char, size| Descriptor {
            media_type: String::new(),
            digest: format!("sha256:{}", hex.to_string().repeat(64)),
            size,
        };
        registry
            .check_layers(&image, &[layer('a', 50), layer('b', 50)])
            .unwrap();
        let err = registry
            .check_layers(&image, &[layer('a', 60), layer('b', 60)])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "layer sha256:{}: the layers up to this one are 120 bytes",
                "b".repeat(64)
            )) && err.contains("more than the 100 bytes (oci_max_unpacked in config.toml)"),
            "{err}"
        );
        let four = [layer('a', 1), layer('b', 1), layer('c', 1), layer('d', 1)];
        let err = registry
            .check_layers(&image, &four)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("has 4 layers, more than 3 (oci_max_layers in config.toml)"),
            "{err}"
        );
    }

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
