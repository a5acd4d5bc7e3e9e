//! The command line, as clap types. `--help` text is written for people:
//! every command says what it does and, where it matters, what it needs.

use std::path::PathBuf;

use banger_model::Size;
use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::ArgValueCompleter;

use crate::complete;

/// One-command development sandboxes on microVMs.
///
/// `banger vm run -- make test` boots a fresh Linux VM with its own kernel,
/// runs the command there and exits with its status. A daemon (bangerd)
/// keeps VMs, images and kernels: the system service after `sudo banger
/// system install --owner "$USER"`, else one started on first use.
#[derive(Parser, Debug)]
#[command(
    name = "banger",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, run and inspect VMs
    #[command(subcommand)]
    Vm(VmCommand),
    /// List and inspect images (root filesystems VMs boot from)
    #[command(subcommand)]
    Image(ImageCommand),
    /// List and inspect kernels
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// List and delete templates: booted guests new VMs resume from
    ///
    /// A template holds the memory, devices and disks of a VM booted until
    /// its services were up, for one image, kernel, vCPU count, memory size
    /// and hypervisor. `vm create` and `vm run` resume the matching one
    /// instead of booting (--cold boots anyway). The first cold boot of a
    /// shape makes its template in the background; `banger image warm`
    /// makes one now. A template whose image or kernel changed is stale and
    /// made again; one whose files changed is refused and deleted.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// See and steer VMs in a terminal UI: a live table, logs, ssh, actions
    ///
    /// A table of your VMs (state, address, image, vCPUs, memory, CPU %,
    /// resident memory, uptime) refreshed every second, with tabs for images
    /// and kernels. Keys: Enter opens a shell in the selected VM (the TUI
    /// steps aside and comes back when it ends), s start, x stop, r restart,
    /// d delete (asks first), l follows its console in a pane, c create (a
    /// form with the defaults filled in); on the images tab, b builds the
    /// default image and p pulls one. q or ctrl-c quits. docs/tui.md has
    /// the details.
    Tui,
    /// The web UI bangerd serves when `web_listen_addr` is set
    #[command(subcommand)]
    Web(WebCommand),
    /// Check whether this host can run banger's VMs, and what to install if not
    ///
    /// Exits non-zero when something that `banger vm run` needs is missing;
    /// every failing line says how to fix it.
    Doctor(JsonFlag),
    /// Control the banger daemon (bangerd)
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Install banger as system services, so daily commands need no sudo
    ///
    /// `sudo banger system install --owner "$USER"` puts banger, bangerd and
    /// the guest's init under /usr/local and starts two systemd units:
    /// bangerd.service, the daemon, running as you (state in /var/lib/banger,
    /// its socket /run/banger/bangerd.sock open to you alone), and
    /// bangerd-root.service, a small root helper that does only the
    /// privileged network work (bridge, TAP devices, NAT and isolation rules)
    /// and answers only your daemon. From then on `banger` talks to that
    /// daemon and never starts one of its own. Without an install (or with
    /// BANGER_HOME set) banger runs in dev mode: it starts bangerd itself,
    /// and networking needs root. docs/system-install.md has the details.
    #[command(subcommand)]
    System(SystemCommand),
    /// Reach VMs with plain ssh as NAME.vm: print, install or remove the Include line
    ///
    /// bangerd keeps ~/.config/banger/ssh_config current: a `Host *.vm` block
    /// with banger's key, banger's known_hosts and strict host key checking,
    /// so `ssh root@NAME.vm` works once NAME.vm resolves (see `banger dns`).
    /// Without flags this prints the `Include` line for ~/.ssh/config.
    /// --install adds it there, first in the file, between two marker lines;
    /// everything else is kept byte for byte, the file is replaced by rename
    /// (created 0600 if absent), and running it twice changes nothing.
    /// --uninstall removes exactly that block. banger never edits
    /// ~/.ssh/config otherwise, and refuses a symlinked config or a marker
    /// block edited by hand.
    SshConfig(SshConfigArgs),
    /// Route the host's lookups of .vm names to bangerd's DNS server
    ///
    /// bangerd answers `NAME.vm` for every running VM, on the bridge address
    /// port 53 (dns_listen_addr). On systemd-resolved hosts `install` makes
    /// the bridge link send .vm lookups there, and only those (resolvectl
    /// dns/domain ~vm/default-route false); run it as root, after the first
    /// VM has made the bridge. For dnsmasq, NetworkManager and plain
    /// resolv.conf hosts, `banger doctor` prints the recipe, and
    /// docs/dns-routing.md explains each.
    #[command(subcommand)]
    Dns(DnsCommand),
    /// Print a shell completion script
    ///
    /// Completion covers commands, flags and the names of your VMs, images
    /// and kernels (asked from the daemon when it is running).
    ///
    /// Load it from your shell's start-up file:
    ///
    ///   bash:        echo 'source <(banger completion bash)' >> ~/.bashrc
    ///
    ///   zsh:         echo 'source <(banger completion zsh)' >> ~/.zshrc
    ///
    ///   fish:        echo 'banger completion fish | source' >> ~/.config/fish/config.fish
    ///
    ///   powershell:  Add-Content $PROFILE 'banger completion powershell | Out-String | Invoke-Expression'
    #[command(verbatim_doc_comment)]
    Completion { shell: CompletionShell },
}

#[derive(Subcommand, Debug)]
pub enum WebCommand {
    /// Print the web UI's link, with this install's token
    ///
    /// The token is the web UI's password: anyone with the link can do
    /// what you can with your VMs. The page keeps it in a cookie, so the
    /// link is needed once per browser. Set `web_listen_addr` (for example
    /// "127.0.0.1:7878") in config.toml and restart bangerd to turn the
    /// web UI on; docs/web.md has the details.
    Url(JsonFlag),
}

#[derive(Args, Debug, Clone, Copy)]
pub struct SshConfigArgs {
    /// Add the Include line to ~/.ssh/config (idempotent)
    #[arg(long, conflicts_with = "uninstall")]
    pub install: bool,
    /// Remove the block --install added, and nothing else
    #[arg(long)]
    pub uninstall: bool,
}

#[derive(Subcommand, Debug, Clone, Copy)]
pub enum DnsCommand {
    /// Send the host's .vm lookups to bangerd (systemd-resolved, as root)
    Install {
        /// Print the resolvectl commands instead of running them
        #[arg(long)]
        dry_run: bool,
    },
    /// Undo `install`: the bridge link's DNS settings back to none
    Uninstall {
        /// Print the resolvectl commands instead of running them
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
    Powershell,
}

#[derive(Args, Debug, Clone, Copy)]
pub struct JsonFlag {
    /// Print JSON instead of a table, for scripts
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Create a VM, boot it and run a command in it (or open a shell)
    ///
    /// With `-- COMMAND...` the command runs in the guest (as root, in /root)
    /// and banger exits with its status (128+N when a signal killed it);
    /// without, you get an interactive ssh shell, and leaving it leaves the
    /// VM running. The default image is built first if it does not exist.
    Run(RunArgs),
    /// Create a VM from an image and boot it
    Create(CreateArgs),
    /// Boot a stopped VM
    Start(StartArgs),
    /// Stop a VM gracefully (its disks are kept)
    Stop(VmName),
    /// Stop and start a VM
    Restart(StartArgs),
    /// Send a signal to a VM's hypervisor process (default KILL)
    Kill {
        #[command(flatten)]
        vm: VmName,
        /// Signal name or number: KILL, TERM, INT, 9...
        #[arg(long, short = 's', default_value = "KILL")]
        signal: String,
    },
    /// Freeze a running VM: it keeps its memory and address but uses no host CPU
    ///
    /// The VM's vCPUs stop where they are; its hypervisor process, memory,
    /// network and disks stay, and `vm list` shows it `paused`. `banger vm
    /// resume NAME` lets it run on from there: its processes, open files and
    /// connections are as they were (peers may have timed out meanwhile).
    /// A paused VM takes no commands (`vm ssh` says to resume it first);
    /// `vm stop` and `vm restart` resume it before asking it to power off,
    /// `vm kill` and `vm delete --force` end it as it is.
    Pause(ShowVm),
    /// Let a paused VM run again where it left off
    Resume(ShowVm),
    /// Copy a running VM, processes and all, into a new VM
    ///
    /// NAME is paused while its memory is saved and its disks are copied
    /// (about a second here), then runs on. The new VM resumes that saved
    /// state on its own copies, so it has NAME's processes and files as
    /// they were at that moment, with its own name, address, MAC, host
    /// keys, machine-id and random seed. Commands NAME was running through
    /// the guest agent end (its ssh sessions do not).
    Fork(ForkArgs),
    /// Delete a VM and its disks
    Delete {
        #[command(flatten)]
        vm: VmName,
        /// Delete it even if it is running (it is killed first)
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// List VMs
    List(JsonFlag),
    /// Show one VM
    Show(ShowVm),
    /// Host-side CPU time and memory of a VM's hypervisor, and its disks' usage
    Stats(ShowVm),
    /// Open a shell in a running VM, or run a command there
    ///
    /// Through the guest agent when it answers (docs/agent.md), else
    /// through OpenSSH, which `ssh NAME.vm` always uses.
    Ssh {
        #[command(flatten)]
        vm: VmName,
        /// Use OpenSSH even where the guest agent answers
        #[arg(long)]
        ssh: bool,
        /// Command to run instead of a shell (after `--`)
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Print a VM's console log (kernel, init and systemd output)
    ///
    /// The guest writes this log, so on a terminal its control characters
    /// (escape sequences included) are shown as placeholders like `^[`,
    /// never acted on. Piped output, and --raw, is the bytes as written.
    Logs {
        #[command(flatten)]
        vm: VmName,
        /// Keep printing new output as it comes
        #[arg(long, short = 'f')]
        follow: bool,
        /// Write the guest's bytes as they are, even to a terminal (colours,
        /// and whatever else the guest's escape sequences make it do)
        #[arg(long)]
        raw: bool,
    },
    /// Change a stopped VM: vCPUs, memory, a bigger work disk, NAT
    Set(SetArgs),
    /// Copy a repository or directory into a running VM
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
}

#[derive(Subcommand, Debug)]
pub enum WorkspaceCommand {
    /// Copy PATH's files into /root/NAME of a running VM (as `vm run PATH` does)
    Prepare {
        #[command(flatten)]
        vm: VmName,
        /// The repository or directory
        #[arg(value_hint = clap::ValueHint::DirPath)]
        path: PathBuf,
        #[command(flatten)]
        workspace: WorkspaceArgs,
    },
}

#[derive(Args, Debug, Clone)]
pub struct VmName {
    /// The VM's name
    #[arg(value_parser = parse_vm_name, add = ArgValueCompleter::new(complete::vms))]
    pub name: String,
}

#[derive(Args, Debug, Clone)]
pub struct StartArgs {
    #[command(flatten)]
    pub vm: VmName,
    /// Print how long each phase took
    #[arg(long)]
    pub timings: bool,
}

#[derive(Args, Debug, Clone)]
pub struct SetArgs {
    #[command(flatten)]
    pub vm: VmName,
    /// Number of virtual CPUs
    #[arg(long)]
    pub vcpu: Option<u32>,
    /// Guest memory, like 2G or 1536M
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<Size>,
    /// Grow the work disk to this size (it never shrinks)
    #[arg(long, value_parser = parse_size)]
    pub disk_size: Option<Size>,
    /// Give the VM outbound network access (NAT through the host)
    #[arg(long, conflicts_with = "no_nat")]
    pub nat: bool,
    /// Remove the VM's outbound network access
    #[arg(long)]
    pub no_nat: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Name of the VM, a DNS label (a-z, 0-9, '-'); it becomes NAME.vm [default: generated, like brisk-otter]
    #[arg(long, value_parser = parse_vm_name)]
    pub name: Option<String>,
    /// Image to boot: a local image name, or an OCI reference (docker.io/library/debian:bookworm,
    /// oci://127.0.0.1:5000/app:1), pulled first if absent [default: debian-bookworm, or
    /// default_image_name from config]
    #[arg(long, add = ArgValueCompleter::new(complete::images))]
    pub image: Option<String>,
    /// Number of virtual CPUs
    #[arg(long)]
    pub vcpu: Option<u32>,
    /// Guest memory, like 2G or 1536M
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<Size>,
    /// Size of the persistent work disk mounted at /root, like 8G
    #[arg(long, value_parser = parse_size)]
    pub disk_size: Option<Size>,
    /// Give the VM outbound network access (NAT through the host)
    #[arg(long)]
    pub nat: bool,
    /// Print how long each phase took
    #[arg(long)]
    pub timings: bool,
    /// How far the guest boots before the VM counts as running: `sysinit`
    /// (the guest agent answers and systemd has passed sysinit.target, so
    /// mounts are up and boot-time cleanups of /tmp are done; the default
    /// of `vm run`), `multi-user` (the image's services are started too),
    /// or `ssh` (sshd answers; the default of `vm create`, and of `vm run
    /// --ssh`).
    /// Images without the agent always wait for ssh.
    #[arg(long, value_enum)]
    pub wait: Option<WaitArg>,
    /// Boot the kernel even where a template of this shape could be resumed
    /// (a new VM resumes the template of its image, vCPUs and memory when
    /// one is ready: see 'banger template list')
    #[arg(long)]
    pub cold: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// `--wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WaitArg {
    Sysinit,
    MultiUser,
    Ssh,
}

impl From<WaitArg> for banger_api::ReadyWait {
    fn from(w: WaitArg) -> Self {
        match w {
            WaitArg::Sysinit => Self::Sysinit,
            WaitArg::MultiUser => Self::MultiUser,
            WaitArg::Ssh => Self::Ssh,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// A repository or directory to copy into the VM, at /root/NAME; the
    /// command runs there. A git repository sends its tracked files as they
    /// are in the working tree (uncommitted edits included, ignored files
    /// never); another directory is sent as is, minus what .gitignore files
    /// exclude.
    #[arg(value_hint = clap::ValueHint::DirPath)]
    pub path: Option<PathBuf>,
    #[command(flatten)]
    pub workspace: WorkspaceArgs,
    #[command(flatten)]
    pub create: CreateArgs,
    /// Delete the VM when the command or shell exits
    #[arg(long)]
    pub rm: bool,
    /// Copy the workspace and run the command through OpenSSH, not the
    /// guest agent (the boot then waits for sshd, unless --wait says
    /// otherwise)
    #[arg(long)]
    pub ssh: bool,
    /// Command to run in the guest (after `--`)
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct WorkspaceArgs {
    /// Also send untracked files that git does not ignore
    #[arg(long)]
    pub include_untracked: bool,
    /// Print the files that would be sent, and their total size, and exit
    #[arg(long)]
    pub dry_run: bool,
    /// Check out this local branch in the guest, which gets a git repository
    /// with the branch's history instead of the working tree; with --from,
    /// the name of a new branch made at REF
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,
    /// Check out REF (a branch, tag, remote branch or commit id) in the guest,
    /// detached unless --branch names a new branch for it
    #[arg(long, value_name = "REF")]
    pub from: Option<String>,
}

impl WorkspaceArgs {
    pub fn any(&self) -> bool {
        self.include_untracked || self.dry_run || self.branch.is_some() || self.from.is_some()
    }
}

#[derive(Args, Debug)]
pub struct ForkArgs {
    /// The VM to copy
    #[arg(value_parser = parse_vm_name, add = ArgValueCompleter::new(complete::vms))]
    pub vm: String,
    /// Name of the new VM [default: generated, like brisk-otter]
    #[arg(long, value_parser = parse_vm_name)]
    pub name: Option<String>,
    /// Print how long each phase took
    #[arg(long)]
    pub timings: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Args, Debug)]
pub struct ShowVm {
    #[arg(value_parser = parse_vm_name, add = ArgValueCompleter::new(complete::vms))]
    pub name: String,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build an image from Debian packages (the default debian-bookworm recipe
    /// unless --from-config names another)
    ///
    /// Runs mmdebstrap against the Debian mirror of this host's apt sources,
    /// then writes a read-only ext4 root filesystem, and prepares the
    /// kernel inside it (vmlinux and banger's initramfs). The default image
    /// has Docker Engine (socket-activated: dockerd starts on first use) and
    /// mise (pinned by SHA-256); --no-docker and --no-mise leave them out,
    /// --package adds Debian packages. A build with the same recipe reuses
    /// the cached result. The build log goes to
    /// ~/.local/state/banger/image-build/NAME.log.
    Build(BuildArgs),
    /// Adopt your own ext4 root filesystem file as an image
    Register {
        /// The ext4 file; it is copied, and the copy pinned by SHA-256
        #[arg(long, value_name = "FILE")]
        rootfs: PathBuf,
        /// Kernel to boot it with (see 'banger kernel list')
        #[arg(long, add = ArgValueCompleter::new(complete::kernels))]
        kernel: String,
        /// Name of the image [default: the file name without .ext4]
        #[arg(long)]
        name: Option<String>,
    },
    /// Make an image from a catalog entry, or pull one from an OCI registry
    ///
    /// A bare word is a catalog entry (built-in, or ~/.config/banger/catalog.toml);
    /// every file it names is checked against its SHA-256 before the image is
    /// recorded.
    ///
    /// Anything with `oci://`, `/`, `:` or `@` is an OCI image reference,
    /// normalised as docker does: `ubuntu:24.04` is
    /// docker.io/library/ubuntu:24.04, `oci://ghcr.io/org/app@sha256:…` is
    /// pinned by digest. The linux/amd64 image is pulled over HTTPS (plain
    /// HTTP only for a registry on loopback, or with --insecure), every
    /// layer checked against its digest and cached by it in
    /// ~/.cache/banger/oci/, the layers flattened and written as a
    /// read-only ext4. Unsafe layer entries (`..`, absolute paths, writes
    /// through symlinks, device nodes) fail the pull. The image boots the
    /// default image's kernel.
    #[command(verbatim_doc_comment)]
    Pull {
        /// Catalog entry, or OCI reference (oci://REGISTRY/REPO[:TAG|@DIGEST], REPO:TAG...)
        #[arg(required_unless_present = "list")]
        entry: Option<String>,
        /// Name of the image [default: the entry's name; for OCI, the
        /// repository's last part and the tag, like ubuntu-24.04]
        #[arg(long)]
        name: Option<String>,
        /// OCI: allow plain HTTP to a registry that is not on loopback
        #[arg(long)]
        insecure: bool,
        /// OCI: keep device nodes found in the layers instead of refusing them
        #[arg(long)]
        allow_devices: bool,
        /// List the catalog's entries instead
        #[arg(long, conflicts_with_all = ["name", "insecure", "allow_devices"])]
        list: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List images
    List(JsonFlag),
    /// Show one image, its files and their SHA-256 pins (and, for an OCI
    /// image, its reference, manifest digest, layers and run config)
    Show {
        #[arg(add = ArgValueCompleter::new(complete::images))]
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Check that an image's files (and its kernel's) still match their pins
    Verify {
        #[arg(add = ArgValueCompleter::new(complete::images))]
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Delete an image and its files (refused while a VM uses it); its
    /// templates go with it
    Delete {
        #[arg(add = ArgValueCompleter::new(complete::images))]
        name: String,
    },
    /// Make the template new VMs of this image resume from, now
    ///
    /// Boots a hidden VM of the image until its services are up, saves its
    /// memory, devices and disks as a template, and deletes it. A new VM of
    /// the same image, vCPUs and memory then resumes the template in about a
    /// second instead of booting, and gets its own name, address, MAC, host
    /// keys, machine-id, random seed, clock and disk size. Without this, the
    /// first cold boot of a shape makes its template in the background
    /// (vm_templates = false turns both off). A ready, unchanged template is
    /// kept as it is.
    Warm {
        #[arg(add = ArgValueCompleter::new(complete::images))]
        name: String,
        /// vCPUs of the VMs that will resume it [default: vm_defaults]
        #[arg(long)]
        vcpu: Option<u32>,
        /// Memory of the VMs that will resume it, like 2G [default: vm_defaults]
        #[arg(long, value_parser = parse_size)]
        memory: Option<Size>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Subcommand, Debug)]
pub enum TemplateCommand {
    /// List templates: their image, shape, state and size on disk
    List(JsonFlag),
    /// Delete templates and their files (VMs resumed from them are not
    /// touched: their disks are their own)
    Delete {
        /// Template ids, as 'banger template list' shows them
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Delete every template
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// Name of the image [default: the recipe's name, debian-bookworm]
    #[arg(long)]
    pub name: Option<String>,
    /// A recipe file (TOML) instead of the default recipe
    #[arg(long, value_name = "FILE")]
    pub from_config: Option<PathBuf>,
    /// An extra Debian package to install (repeatable)
    #[arg(long = "package", value_name = "PACKAGE")]
    pub packages: Vec<String>,
    /// Leave Docker Engine out (a smaller image, a little less to build)
    #[arg(long)]
    pub no_docker: bool,
    /// Leave mise out
    #[arg(long)]
    pub no_mise: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Subcommand, Debug)]
pub enum KernelCommand {
    /// List kernels
    List(JsonFlag),
    /// Show one kernel and its files
    Show {
        #[arg(add = ArgValueCompleter::new(complete::kernels))]
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Delete a kernel and its files (refused while an image uses it)
    Delete {
        #[arg(add = ArgValueCompleter::new(complete::kernels))]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum DaemonCommand {
    /// Say whether bangerd runs, and its pid, socket, log and version
    ///
    /// Exits 1 when the daemon is not running. Does not start it.
    Status(JsonFlag),
    /// Stop bangerd (VMs keep running; a later command starts it again)
    Stop,
    /// Print the path of bangerd's API socket
    Socket,
}

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Install (or upgrade in place) the system services, as root
    ///
    /// Copies banger, bangerd (from beside this banger) and banger-init,
    /// writes /etc/banger/install.toml and the two units in
    /// /etc/systemd/system, gives the owner a subordinate uid/gid range if
    /// they have none (for image builds without root), adds them to the kvm
    /// group if the host has one, and (re)starts both units. Running it
    /// again upgrades the binaries and keeps VMs, images and state. Needs
    /// systemd as PID 1.
    Install {
        /// The user whose daemon it is: the only one who can use it
        #[arg(long, value_name = "USER")]
        owner: String,
        /// Where the binaries go (PREFIX/bin) and the guest's files (PREFIX/lib/banger)
        #[arg(long, value_name = "DIR", default_value = "/usr/local", value_hint = clap::ValueHint::DirPath)]
        prefix: PathBuf,
    },
    /// Show the install: owner, versions, both units and their sockets
    ///
    /// Needs no root. Exits 1 when banger is not installed, or when a unit
    /// is not active or a socket does not answer.
    Status(JsonFlag),
    /// Restart both services, as root (VMs keep running)
    Restart,
    /// Remove the services, the binaries and /etc/banger, as root
    ///
    /// Refused while VMs run, unless --force, which stops them first.
    /// Your VMs, images and state in /var/lib/banger stay unless --purge;
    /// your ~/.config/banger always stays.
    Uninstall {
        /// Also remove /var/lib/banger, /var/cache/banger, /run/banger and
        /// /run/banger-root: every VM, image and cached download
        #[arg(long)]
        purge: bool,
        /// Stop running VMs first instead of refusing
        #[arg(long)]
        force: bool,
    },
}

fn parse_vm_name(s: &str) -> Result<String, String> {
    banger_model::VmName::parse(s)
        .map(|n| n.to_string())
        .map_err(|e| e.to_string())
}

fn parse_size(s: &str) -> Result<Size, String> {
    Size::parse(s).map_err(|e| e.to_string())
}
