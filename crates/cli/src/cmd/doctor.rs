use anyhow::Result;
use banger_config::Config;
use banger_doctor::{HostProbe, Status, diagnose};

use crate::ExitCode;
use crate::connect::Located;
use crate::output::print_json;

pub fn run(located: &Located, json: bool) -> Result<ExitCode> {
    let paths = &located.paths;
    let config = Config::load(&paths.config_file());
    let report = diagnose(&HostProbe::gather(paths, config, located.install.clone()));
    if json {
        print_json(&report)?;
    } else {
        for check in &report.checks {
            let mark = match check.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            println!("{mark}  {:<20} {}", check.name, check.detail);
            if let Some(fix) = &check.fix {
                println!("      {:<20} fix: {fix}", "");
            }
        }
        let d = &report.vm_defaults;
        println!(
            "\nvm defaults: {} vcpu ({}) · {} MiB ({}) · {} disk ({})",
            d.vcpu.value,
            d.vcpu.provenance,
            d.memory_mib.value,
            d.memory_mib.provenance,
            d.disk_size.value,
            d.disk_size.provenance
        );
        println!("config:      {}", report.config_file.display());
        println!("state:       {}", paths.state_dir.display());
        if report.ok {
            println!("\nbanger can run VMs on this host.");
        } else {
            println!("\nbanger cannot run VMs here yet: fix the FAIL lines above.");
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
