//! The guest's network from the command line: links up, the address, the
//! default route, over rtnetlink (the agent's `net`, which also gives a
//! resumed guest its new address); boot.rs writes `/etc/resolv.conf`,
//! `/etc/hostname` and the kernel hostname.

use std::fs;
use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use banger_agent::net::Rtnl;

use crate::cmdline::NetworkParams;
use crate::failure::{Context, Failure};

const POLL: Duration = Duration::from_millis(10);

/// Brings up `lo` and configures `net`'s interface, waiting up to
/// `timeout` for the interface to appear.
pub fn configure(net: &NetworkParams, timeout: Duration) -> Result<(), Failure> {
    let iface = wait_for_interface(&net.iface, timeout)?;
    let mut rtnl = Rtnl::open().context(|| "opening a netlink socket".into())?;
    let lo = interface_index("lo").context(|| "finding the loopback interface".into())?;
    rtnl.set_up(lo)
        .context(|| "bringing up the loopback interface".into())?;
    rtnl.set_up(iface)
        .context(|| format!("bringing up {}", net.iface))?;
    rtnl.add_address(iface, net.address, net.prefix)
        .context(|| format!("adding {}/{} to {}", net.address, net.prefix, net.iface))?;
    if let Some(gw) = net.gateway {
        rtnl.add_default_route(iface, gw)
            .context(|| format!("adding the default route via {gw}"))?;
    }
    Ok(())
}

fn wait_for_interface(name: &str, timeout: Duration) -> Result<u32, Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        match interface_index(name) {
            Ok(index) => return Ok(index),
            Err(e) if e.kind() == ErrorKind::NotFound && Instant::now() < deadline => sleep(POLL),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let present: Vec<String> = fs::read_dir("/sys/class/net")
                    .map(|d| {
                        d.filter_map(Result::ok)
                            .filter_map(|e| e.file_name().into_string().ok())
                            .collect()
                    })
                    .unwrap_or_default();
                return Err(Failure::new(
                    format!("waiting for network interface {name}"),
                    format!(
                        "not there after {:.1}s (interfaces: {})",
                        timeout.as_secs_f64(),
                        present.join(" ")
                    ),
                ));
            }
            Err(e) => return Err(Failure::new(format!("finding interface {name}"), e)),
        }
    }
}

fn interface_index(name: &str) -> std::io::Result<u32> {
    let text = fs::read_to_string(Path::new("/sys/class/net").join(name).join("ifindex"))?;
    text.trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("bad ifindex {text:?}")))
}

/// `/etc/resolv.conf` for the given nameservers.
pub fn resolv_conf(dns: &[IpAddr]) -> String {
    banger_agent::etc::resolv_conf(dns, "banger-init from the kernel command line")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lists_nameservers_in_order() {
        let text = resolv_conf(&["172.16.0.1".parse().unwrap(), "1.1.1.1".parse().unwrap()]);
        assert_eq!(
            text,
            "# written by banger-init from the kernel command line\n\
             nameserver 172.16.0.1\nnameserver 1.1.1.1\n"
        );
    }
}
