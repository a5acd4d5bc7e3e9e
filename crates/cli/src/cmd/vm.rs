use anyhow::{Result, bail};
use banger_api::{Client, CreateVmRequest};
use banger_model::VmRecord;

use crate::ExitCode;
use crate::args::{CreateArgs, JsonFlag, RunArgs, VmCommand};
use crate::output::{age, client_error, follow, print_json, print_table, table};

pub async fn run(cmd: VmCommand, client: &Client) -> Result<ExitCode> {
    match cmd {
        VmCommand::List(JsonFlag { json }) => list(client, json).await,
        VmCommand::Show(show) => {
            let vm: VmRecord = client
                .get(&format!("/v1/vms/{}", show.name))
                .await
                .map_err(client_error)?;
            if show.json.json {
                print_json(&vm)?;
            } else {
                println!("name:    {}", vm.name);
                println!("state:   {}", vm.state);
                println!("image:   {}", vm.image);
                println!(
                    "spec:    {} vcpu · {} MiB · {} disk",
                    vm.vcpu, vm.memory_mib, vm.disk_size
                );
                println!("created: {}", age(vm.created_at));
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Create(args) => {
            create(client, &args).await?;
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Run(RunArgs { create: args, .. }) => {
            create(client, &args).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn list(client: &Client, json: bool) -> Result<ExitCode> {
    let vms: Vec<VmRecord> = client.get("/v1/vms").await.map_err(client_error)?;
    if json {
        print_json(&vms)?;
    } else if vms.is_empty() {
        println!("no VMs: start one with 'banger vm run'");
    } else {
        let mut t = table(&[
            "name", "state", "image", "vcpu", "memory", "disk", "created",
        ]);
        for v in &vms {
            t.add_row(vec![
                v.name.to_string(),
                v.state.to_string(),
                v.image.clone(),
                v.vcpu.to_string(),
                format!("{} MiB", v.memory_mib),
                v.disk_size.to_string(),
                age(v.created_at),
            ]);
        }
        print_table(&t);
    }
    Ok(ExitCode::SUCCESS)
}

fn request(args: &CreateArgs) -> Result<CreateVmRequest> {
    let memory_mib = match args.memory {
        Some(m) if !m.bytes().is_multiple_of(1 << 20) => {
            bail!("--memory {m} is not a whole number of MiB: write it like 1536M or 2G")
        }
        Some(m) => Some(m.mib()),
        None => None,
    };
    Ok(CreateVmRequest {
        name: args.name.clone(),
        image: args.image.clone(),
        vcpu: args.vcpu,
        memory_mib,
        disk_size: args.disk_size,
        nat: args.nat,
    })
}

async fn create(client: &Client, args: &CreateArgs) -> Result<VmRecord> {
    let req = request(args)?;
    let events = client.stream("/v1/vms", &req).await.map_err(client_error)?;
    let result = follow(events).await?;
    Ok(serde_json::from_value(result)?)
}
