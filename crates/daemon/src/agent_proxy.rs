//! `bangerd --agent-proxy`: one VM's proxy to its guest agent
//! (`banger_guest::agent::serve_proxy`), run by the daemon as a process
//! of its own so that the commands it carries outlive a daemon restart.
//! It ends when the VM's hypervisor does.

use std::path::PathBuf;
use std::process::ExitCode;

use banger_agent_proto::AgentChannel;
use clap::Parser;

/// Serves a VM's guest agent to its clients; bangerd starts it.
#[derive(Parser)]
#[command(name = "bangerd --agent-proxy")]
struct ProxyArgs {
    /// The proxy's socket.
    #[arg(long)]
    listen: PathBuf,
    /// The agent's channel: the hypervisor's Unix socket (QEMU's
    /// virtio-serial port, or Firecracker's vsock socket with --vsock-port).
    #[arg(long)]
    agent: PathBuf,
    /// The agent's vsock port behind a Firecracker vsock socket.
    #[arg(long)]
    vsock_port: Option<u32>,
    /// The hypervisor, as PID:START_TIME: the proxy ends with it.
    #[arg(long, value_parser = parse_watch)]
    watch: (u32, u64),
}

fn parse_watch(text: &str) -> Result<(u32, u64), String> {
    let (pid, start) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not PID:START_TIME"))?;
    Ok((
        pid.parse().map_err(|e| format!("pid {pid:?}: {e}"))?,
        start
            .parse()
            .map_err(|e| format!("start time {start:?}: {e}"))?,
    ))
}

/// Runs the proxy named by the arguments after the flag.
pub fn main(args: impl Iterator<Item = std::ffi::OsString>) -> ExitCode {
    let args = match ProxyArgs::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
    // One thread is plenty for one VM's clients, and keeps the process small.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bangerd --agent-proxy: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (pid, start_time) = args.watch;
    let alive = move || banger_vmm::process::is_alive(pid, start_time);
    let channel = match args.vsock_port {
        Some(port) => AgentChannel::Vsock {
            uds: args.agent,
            port,
        },
        None => AgentChannel::Serial(args.agent),
    };
    tracing::info!(listen = %args.listen.display(), agent = %channel, "agent proxy serving");
    match runtime.block_on(banger_guest::agent::serve_proxy(
        &args.listen,
        channel,
        alive,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "bangerd --agent-proxy: cannot serve {}: {e}",
                args.listen.display()
            );
            ExitCode::FAILURE
        }
    }
}
