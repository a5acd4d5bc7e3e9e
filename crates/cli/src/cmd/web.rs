//! `banger web url`: the web UI's link, asked from the daemon (which
//! holds the token and knows the address it listens on).

use anyhow::{Result, bail};
use banger_api::{Client, WebInfo};

use crate::ExitCode;
use crate::args::WebCommand;
use crate::output::{client_error, print_json};

pub async fn run(cmd: WebCommand, client: &Client) -> Result<ExitCode> {
    match cmd {
        WebCommand::Url(flag) => {
            let info: WebInfo = client.get("/v1/web").await.map_err(client_error)?;
            if flag.json {
                print_json(&info)?;
                return Ok(ExitCode::SUCCESS);
            }
            match info.url {
                Some(url) => println!("{url}"),
                None => bail!(
                    "{}",
                    info.reason
                        .unwrap_or_else(|| "the web UI is off: set web_listen_addr".into())
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
