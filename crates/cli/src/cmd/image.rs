use anyhow::Result;
use banger_api::Client;
use banger_model::ImageRecord;

use crate::ExitCode;
use crate::args::ImageCommand;
use crate::output::{age, client_error, print_json, print_table, table};

pub async fn run(cmd: ImageCommand, client: &Client) -> Result<ExitCode> {
    match cmd {
        ImageCommand::List(flag) => {
            let images: Vec<ImageRecord> = client.get("/v1/images").await.map_err(client_error)?;
            if flag.json {
                print_json(&images)?;
            } else if images.is_empty() {
                println!("no images yet: the default one is built when first needed");
            } else {
                let mut t = table(&["name", "kernel", "source", "created"]);
                for i in &images {
                    t.add_row(vec![
                        i.name.clone(),
                        i.kernel.clone(),
                        i.source.clone(),
                        age(i.created_at),
                    ]);
                }
                print_table(&t);
            }
        }
        ImageCommand::Show { name, json } => {
            let image: ImageRecord = client
                .get(&format!("/v1/images/{}", crate::path_segment(&name)))
                .await
                .map_err(client_error)?;
            if json.json {
                print_json(&image)?;
            } else {
                println!("name:    {}", image.name);
                println!("kernel:  {}", image.kernel);
                println!("source:  {}", image.source);
                println!("created: {}", age(image.created_at));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
