//! Pure decisions of the VM lifecycle: the guest's kernel command line,
//! whether the host can give a VM what it asks, phase timings.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use banger_api::Timing;
use ipnet::Ipv4Net;

/// What banger-init needs to assemble the guest (docs/guest-init.md).
pub(crate) struct GuestParams<'a> {
    pub name: &'a str,
    pub base_uuid: &'a str,
    pub system_uuid: &'a str,
    pub work_uuid: &'a str,
    pub ip: Ipv4Addr,
    pub bridge: Ipv4Net,
    /// The guest's nameservers, bangerd's `.vm` zone (the bridge address)
    /// first: `banger_network::dns::guest_nameservers`.
    pub dns: &'a [IpAddr],
    /// Where the daemon answers the guest's question for the host's time.
    pub clock: Option<std::net::SocketAddr>,
    /// The image has no init or sshd (OCI): banger-init's minimal mode.
    pub minimal: bool,
    /// The workspace disk's filesystem UUID and its folder under `/root`.
    pub workspace: Option<(&'a str, &'a str)>,
}

/// banger's part of the kernel command line; the hypervisor adds the
/// console and its own flags.
pub(crate) fn guest_cmdline(p: &GuestParams<'_>) -> String {
    let gw = p.bridge.addr();
    let dns = if p.dns.is_empty() {
        gw.to_string()
    } else {
        p.dns
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut line = format!(
        "banger.base=UUID={} banger.system=UUID={} banger.work=UUID={} \
         banger.ip={}/{} banger.gw={gw} banger.dns={dns} banger.hostname={} quiet",
        p.base_uuid,
        p.system_uuid,
        p.work_uuid,
        p.ip,
        p.bridge.prefix_len(),
        p.name
    );
    if let Some(clock) = p.clock {
        line.push_str(&format!(" banger.clock={clock}"));
    }
    if p.minimal {
        line.push_str(" banger.minimal=1");
    }
    // The folder name is checked when the workspace is staged (letters,
    // digits, '.', '_', '-'): never a space or a quote here.
    if let Some((uuid, dir)) = p.workspace {
        line.push_str(&format!(
            " banger.workspace=UUID={uuid} banger.workspace_dir={dir}"
        ));
    }
    line
}

/// Refuses what the host cannot give: more vCPUs than it has, more memory
/// than it has available.
pub(crate) fn check_resources(
    vcpu: u32,
    memory_mib: u64,
    host_cpus: Option<u32>,
    available_mib: Option<u64>,
) -> Result<(), String> {
    if let Some(cpus) = host_cpus
        && vcpu > cpus
    {
        return Err(format!(
            "--vcpu {vcpu} is more than this host's {cpus} CPUs: give at most {cpus}"
        ));
    }
    if let Some(avail) = available_mib
        && memory_mib > avail
    {
        return Err(format!(
            "--memory {memory_mib} MiB is more than the {avail} MiB this host has available: \
             give less, or stop other VMs"
        ));
    }
    Ok(())
}

/// MemAvailable from /proc/meminfo, in MiB.
pub(crate) fn available_memory_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Wall-clock time of each phase of an operation, for `--timings`.
pub(crate) struct Timer {
    last: Instant,
    pub phases: Vec<Timing>,
}

impl Timer {
    pub fn new() -> Self {
        Self {
            last: Instant::now(),
            phases: Vec::new(),
        }
    }

    /// Ends the current phase under `name`.
    pub fn mark(&mut self, name: &str) {
        let now = Instant::now();
        self.phases.push(Timing {
            phase: name.to_string(),
            secs: (now - self.last).as_secs_f64(),
        });
        self.last = now;
    }

    /// Ends a phase measured elsewhere as `took`, the next one starting
    /// after it.
    pub fn mark_for(&mut self, name: &str, took: Duration) {
        self.phases.push(Timing {
            phase: name.to_string(),
            secs: took.as_secs_f64(),
        });
        self.last += took;
    }
}

/// `KILL`, `SIGKILL`, `kill`, `9` → 9.
pub(crate) fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(format!("signal {n} is out of range 1-64"))
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "CONT" => 18,
        "STOP" => 19,
        _ => {
            return Err(format!(
                "unknown signal {s:?}: use a name like KILL, TERM, INT or a number"
            ));
        }
    };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(minimal: bool) -> GuestParams<'static> {
        GuestParams {
            name: "web",
            base_uuid: "b",
            system_uuid: "s",
            work_uuid: "w",
            ip: "172.16.0.7".parse().unwrap(),
            bridge: "172.16.0.1/24".parse().unwrap(),
            dns: &[DNS_A, DNS_B],
            clock: Some("172.16.0.1:10123".parse().unwrap()),
            minimal,
            workspace: None,
        }
    }

    const DNS_A: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 0, 1));
    const DNS_B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn cmdline_carries_disks_network_and_name() {
        let line = guest_cmdline(&params(false));
        assert!(!line.contains("banger.minimal"));
        for word in [
            "banger.base=UUID=b",
            "banger.system=UUID=s",
            "banger.work=UUID=w",
            "banger.ip=172.16.0.7/24",
            "banger.gw=172.16.0.1",
            "banger.dns=172.16.0.1,10.0.0.2",
            "banger.hostname=web",
            "banger.clock=172.16.0.1:10123",
        ] {
            assert!(line.split(' ').any(|w| w == word), "{word} in {line}");
        }
        let oci = guest_cmdline(&params(true));
        assert!(oci.ends_with(" banger.minimal=1"), "{oci}");
        assert!(!line.contains("banger.workspace"));
        let ws = guest_cmdline(&GuestParams {
            workspace: Some(("u-1", "repo")),
            ..params(false)
        });
        assert!(
            ws.ends_with(" banger.workspace=UUID=u-1 banger.workspace_dir=repo"),
            "{ws}"
        );
    }

    #[test]
    fn resources_the_host_lacks_are_refused() {
        assert!(check_resources(2, 1024, Some(2), Some(4096)).is_ok());
        assert!(check_resources(2, 1024, None, None).is_ok());
        let e = check_resources(3, 1024, Some(2), Some(4096)).unwrap_err();
        assert!(e.contains("more than this host's 2 CPUs"), "{e}");
        let e = check_resources(1, 8192, Some(2), Some(4096)).unwrap_err();
        assert!(e.contains("4096 MiB"), "{e}");
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("KILL"), Ok(9));
        assert_eq!(parse_signal("sigterm"), Ok(15));
        assert_eq!(parse_signal("2"), Ok(2));
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("NOPE").is_err());
    }
}
