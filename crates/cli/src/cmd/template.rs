//! `banger template list|delete` and `banger image warm`: the templates
//! new VMs resume from (docs/templates.md).

use anyhow::{Result, bail};
use banger_api::{Client, WarmRequest};
use banger_model::{Size, TemplateRecord};

use crate::ExitCode;
use crate::args::TemplateCommand;
use crate::output::{age, client_error, follow, human_bytes, print_json, print_table, table};
use crate::path_segment;

pub async fn run(cmd: TemplateCommand, client: &Client) -> Result<ExitCode> {
    match cmd {
        TemplateCommand::List(flag) => {
            let templates: Vec<TemplateRecord> =
                client.get("/v1/templates").await.map_err(client_error)?;
            if flag.json {
                print_json(&templates)?;
            } else if templates.is_empty() {
                println!(
                    "no templates yet: the first cold boot of a shape makes one, \
                     or 'banger image warm IMAGE'"
                );
            } else {
                let mut t = table(&[
                    "id", "image", "vcpu", "memory", "backend", "state", "on disk", "created",
                ]);
                for tp in &templates {
                    t.add_row(vec![
                        tp.id.clone(),
                        tp.image.clone(),
                        tp.vcpu.to_string(),
                        format!("{} MiB", tp.memory_mib),
                        tp.backend.clone(),
                        tp.state.as_str().to_string(),
                        human_bytes(tp.bytes),
                        age(tp.created_at),
                    ]);
                }
                print_table(&t);
            }
        }
        TemplateCommand::Delete { ids, all } => {
            let ids = if all {
                let templates: Vec<TemplateRecord> =
                    client.get("/v1/templates").await.map_err(client_error)?;
                templates.into_iter().map(|t| t.id).collect()
            } else {
                ids
            };
            for id in ids {
                client
                    .delete::<serde_json::Value>(&format!("/v1/templates/{}", path_segment(&id)))
                    .await
                    .map_err(client_error)?;
                println!("deleted template {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `banger image warm NAME`.
pub async fn warm(
    client: &Client,
    image: String,
    vcpu: Option<u32>,
    memory: Option<Size>,
    json: bool,
) -> Result<ExitCode> {
    let memory_mib = match memory {
        Some(m) if !m.bytes().is_multiple_of(1 << 20) => {
            bail!("--memory {m} is not a whole number of MiB: write it like 1536M or 2G")
        }
        Some(m) => Some(m.mib()),
        None => None,
    };
    let req = WarmRequest {
        image,
        vcpu,
        memory_mib,
    };
    let events = client
        .stream("/v1/templates", &req)
        .await
        .map_err(client_error)?;
    let template: TemplateRecord = serde_json::from_value(follow(events).await?)?;
    if json {
        print_json(&template)?;
    } else {
        println!(
            "template {} of {} ({} vCPU, {} MiB) is ready: {} on disk",
            template.id,
            template.image,
            template.vcpu,
            template.memory_mib,
            human_bytes(template.bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}
