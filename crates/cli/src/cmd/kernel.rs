use anyhow::Result;
use banger_api::Client;
use banger_model::KernelRecord;

use crate::ExitCode;
use crate::args::KernelCommand;
use crate::cmd::image::print_artifacts;
use crate::output::{age, client_error, print_json, print_table, table};
use crate::path_segment;

pub async fn run(cmd: KernelCommand, client: &Client) -> Result<ExitCode> {
    match cmd {
        KernelCommand::List(flag) => {
            let kernels: Vec<KernelRecord> =
                client.get("/v1/kernels").await.map_err(client_error)?;
            if flag.json {
                print_json(&kernels)?;
            } else if kernels.is_empty() {
                println!("no kernels yet: one comes with the first image");
            } else {
                let mut t = table(&["name", "version", "state", "source", "created"]);
                for k in &kernels {
                    t.add_row(vec![
                        k.name.clone(),
                        k.version.clone(),
                        k.state.as_str().to_string(),
                        k.source.clone(),
                        age(k.created_at),
                    ]);
                }
                print_table(&t);
            }
        }
        KernelCommand::Show { name, json } => {
            let kernel: KernelRecord = client
                .get(&format!("/v1/kernels/{}", path_segment(&name)))
                .await
                .map_err(client_error)?;
            if json.json {
                print_json(&kernel)?;
            } else {
                println!("name:    {}", kernel.name);
                println!("version: {}", kernel.version);
                println!("source:  {}", kernel.source);
                println!("state:   {}", kernel.state.as_str());
                println!("created: {}", age(kernel.created_at));
                print_artifacts(&kernel.artifacts);
            }
        }
        KernelCommand::Delete { name } => {
            client
                .delete::<serde_json::Value>(&format!("/v1/kernels/{}", path_segment(&name)))
                .await
                .map_err(client_error)?;
            println!("deleted kernel {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
