use std::path::Path;

use anyhow::{Context, Result, bail};
use banger_api::{BuildImageRequest, Client, PullImageRequest, RegisterImageRequest, VerifiedFile};
use banger_model::{Artifact, ImageFacts, ImageRecord, OciImageConfig};

use crate::ExitCode;
use crate::args::{BuildArgs, ImageCommand};
use crate::output::{age, client_error, follow, human_bytes, print_json, print_table, table};
use crate::path_segment;

pub async fn run(cmd: ImageCommand, client: &Client) -> Result<ExitCode> {
    match cmd {
        ImageCommand::List(flag) => {
            let images: Vec<ImageRecord> = client.get("/v1/images").await.map_err(client_error)?;
            if flag.json {
                print_json(&images)?;
            } else if images.is_empty() {
                println!(
                    "no images yet: 'banger image build' makes the default one \
                     (vm run builds it when first needed)"
                );
            } else {
                let mut t = table(&["name", "kernel", "state", "size", "source", "created"]);
                for i in &images {
                    let size: u64 = i.artifacts.iter().map(|a| a.size).sum();
                    t.add_row(vec![
                        i.name.clone(),
                        i.kernel.clone(),
                        i.state.as_str().to_string(),
                        human_bytes(size),
                        i.source.clone(),
                        age(i.created_at),
                    ]);
                }
                print_table(&t);
            }
        }
        ImageCommand::Show { name, json } => {
            let image: ImageRecord = client
                .get(&format!("/v1/images/{}", path_segment(&name)))
                .await
                .map_err(client_error)?;
            if json.json {
                print_json(&image)?;
            } else {
                println!("name:    {}", image.name);
                println!("kernel:  {}", image.kernel);
                println!("source:  {}", image.source);
                println!("state:   {}", image.state.as_str());
                println!("created: {}", age(image.created_at));
                if let Some(facts) = &image.facts {
                    print_facts(facts);
                }
                print_artifacts(&image.artifacts);
                if let Some(oci) = &image.oci {
                    print_oci(oci);
                }
            }
        }
        ImageCommand::Build(args) => {
            let image = build(client, &args).await?;
            if args.json.json {
                print_json(&image)?;
            } else {
                if let Some(facts) = &image.facts {
                    print_facts(facts);
                }
                println!("image {} is ready (kernel {})", image.name, image.kernel);
            }
        }
        ImageCommand::Register {
            rootfs,
            kernel,
            name,
        } => {
            let rootfs = std::path::absolute(&rootfs)
                .with_context(|| format!("cannot resolve {}", rootfs.display()))?;
            let name = match name {
                Some(n) => n,
                None => default_name(&rootfs)?,
            };
            let req = RegisterImageRequest {
                name,
                rootfs,
                kernel,
            };
            let events = client
                .stream("/v1/images/register", &req)
                .await
                .map_err(client_error)?;
            let image: ImageRecord = serde_json::from_value(follow(events).await?)?;
            println!("image {} is ready (kernel {})", image.name, image.kernel);
        }
        ImageCommand::Pull {
            entry,
            name,
            insecure,
            allow_devices,
            list,
            json,
        } => {
            if list {
                let entries: serde_json::Value =
                    client.get("/v1/catalog").await.map_err(client_error)?;
                if json.json {
                    print_json(&entries)?;
                } else {
                    let mut t = table(&["name", "source", "description"]);
                    for e in entries.as_array().into_iter().flatten() {
                        t.add_row(vec![
                            e["name"].as_str().unwrap_or_default().to_string(),
                            e["source"]["kind"].as_str().unwrap_or_default().to_string(),
                            e["description"].as_str().unwrap_or_default().to_string(),
                        ]);
                    }
                    print_table(&t);
                }
                return Ok(ExitCode::SUCCESS);
            }
            let Some(entry) = entry else {
                bail!("name a catalog entry, or use --list");
            };
            let events = client
                .stream(
                    "/v1/images/pull",
                    &PullImageRequest {
                        entry,
                        name,
                        insecure,
                        allow_devices,
                    },
                )
                .await
                .map_err(client_error)?;
            let image: ImageRecord = serde_json::from_value(follow(events).await?)?;
            if json.json {
                print_json(&image)?;
            } else {
                println!("image {} is ready (kernel {})", image.name, image.kernel);
            }
        }
        ImageCommand::Verify { name, json } => {
            let files: Vec<VerifiedFile> = client
                .post(
                    &format!("/v1/images/{}/verify", path_segment(&name)),
                    &serde_json::json!({}),
                )
                .await
                .map_err(client_error)?;
            if json.json {
                print_json(&files)?;
            } else {
                for f in &files {
                    println!("ok  {} {} {}", f.owner, f.role, f.path.display());
                }
                println!("image {name}: every file matches its SHA-256 pin");
            }
        }
        ImageCommand::Delete { name } => {
            client
                .delete::<serde_json::Value>(&format!("/v1/images/{}", path_segment(&name)))
                .await
                .map_err(client_error)?;
            println!("deleted image {name}");
        }
        ImageCommand::Warm {
            name,
            vcpu,
            memory,
            json,
        } => {
            return crate::cmd::template::warm(client, name, vcpu, memory, json.json).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn build(client: &Client, args: &BuildArgs) -> Result<ImageRecord> {
    let (recipe, recipe_origin) = match &args.from_config {
        Some(path) => (
            Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read recipe {}", path.display()))?,
            ),
            Some(path.display().to_string()),
        ),
        None => (None, None),
    };
    let req = BuildImageRequest {
        name: args.name.clone(),
        packages: args.packages.clone(),
        recipe,
        recipe_origin,
        no_docker: args.no_docker,
        no_mise: args.no_mise,
    };
    let events = client
        .stream("/v1/images/build", &req)
        .await
        .map_err(client_error)?;
    Ok(serde_json::from_value(follow(events).await?)?)
}

/// `tools.ext4` → `tools`.
fn default_name(rootfs: &Path) -> Result<String> {
    let stem = rootfs
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty());
    match stem {
        Some(s) => Ok(s.to_string()),
        None => bail!(
            "cannot derive an image name from {}: give --name",
            rootfs.display()
        ),
    }
}

/// Sizes, packages and tool versions of a built image.
fn print_facts(facts: &ImageFacts) {
    println!(
        "size:    {} ({} on disk, {} used)",
        human_bytes(facts.size_bytes),
        human_bytes(facts.disk_bytes),
        human_bytes(facts.used_bytes)
    );
    println!("packages: {}", facts.packages);
    println!(
        "docker:  {}",
        facts.docker.as_deref().unwrap_or("not in the image")
    );
    println!(
        "mise:    {}",
        facts.mise.as_deref().unwrap_or("not in the image")
    );
    for b in &facts.binaries {
        println!("  {} from {} (sha256 {})", b.name, b.source, b.sha256);
    }
}

pub fn print_artifacts(artifacts: &[Artifact]) {
    if artifacts.is_empty() {
        return;
    }
    println!("files:");
    let mut t = table(&["role", "file", "size", "sha256"]);
    for a in artifacts {
        t.add_row(vec![
            a.role.to_string(),
            a.file.clone(),
            human_bytes(a.size),
            a.sha256.clone(),
        ]);
    }
    for line in t.to_string().lines() {
        println!("  {}", line.trim());
    }
}

fn print_oci(oci: &OciImageConfig) {
    let words = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            shlex::try_join(v.iter().map(String::as_str)).unwrap_or_else(|_| v.join(" "))
        }
    };
    println!("oci:");
    println!("  reference:  {}", oci.reference);
    println!("  manifest:   {}", oci.manifest_digest);
    println!("  entrypoint: {}", words(&oci.entrypoint));
    println!("  cmd:        {}", words(&oci.cmd));
    println!("  workdir:    {}", oci.workdir.as_deref().unwrap_or("-"));
    println!("  user:       {}", oci.user.as_deref().unwrap_or("-"));
    for env in &oci.env {
        println!("  env:        {env}");
    }
    println!("  layers:");
    let mut t = table(&["digest", "size"]);
    for l in &oci.layers {
        t.add_row(vec![l.digest.clone(), human_bytes(l.size)]);
    }
    for line in t.to_string().lines() {
        println!("    {}", line.trim());
    }
}
