//! NAT for a VM: masquerade what the guest sends out of the host through
//! anything but the bridge, and turn on IPv4 forwarding.
//!
//! Every rule carries the comment `banger:<vm>`, and banger only ever
//! deletes rules carrying its tag. With nft, banger's rules live in a table
//! of its own (`table ip banger`, chain `postrouting`), so no table of the
//! user's is ever touched; with iptables they are appended to the nat
//! table's POSTROUTING chain and deleted by their exact rule spec. The
//! same table holds the VM's isolation rules (other chains, same tag):
//! NAT reads and changes only its own chain.
//!
//! Forwarding is left on by [`disable_nat`]: other VMs, or other software
//! on the host, may rely on it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::NetError;
use crate::command::{find_tool, run};
use crate::naming::validate_ifname;
use crate::nft::{self, Family, NFT_TABLE, NftRule, delete_rule, list_rules, validate_vm, vm_tag};

/// The NAT chain of banger's `ip` table.
pub const NFT_CHAIN: &str = "postrouting";

/// The firewall tool NAT rules are made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatBackend {
    Nft,
    Iptables,
}

impl NatBackend {
    /// nft when the host has it, else iptables, else none.
    pub fn detect() -> Option<NatBackend> {
        [NatBackend::Nft, NatBackend::Iptables]
            .into_iter()
            .find(|b| b.tool().is_some())
    }

    fn tool(self) -> Option<PathBuf> {
        find_tool(match self {
            NatBackend::Nft => "nft",
            NatBackend::Iptables => "iptables",
        })
    }
}

/// The comment on every rule made for `vm` (NAT and isolation alike).
pub fn nat_tag(vm: &str) -> String {
    vm_tag(vm)
}

/// The VM's NAT rules: tagged for it, in the NAT chain.
fn nat_rules(nft: &Path, tag: &str) -> Result<Vec<NftRule>, NetError> {
    Ok(list_rules(nft, Family::Ip)?
        .into_iter()
        .filter(|r| r.chain == NFT_CHAIN && r.comment.as_deref() == Some(tag))
        .collect())
}

/// Masquerades traffic from `guest_ip` leaving through anything but
/// `bridge`, and enables `net.ipv4.ip_forward`; with nft when present,
/// else iptables. Idempotent: a rule for `vm` with another address or
/// bridge (the VM was re-leased) is replaced.
pub fn enable_nat(vm: &str, guest_ip: Ipv4Addr, bridge: &str) -> Result<(), NetError> {
    let backend = NatBackend::detect().ok_or(NetError::NoNatTool)?;
    enable_nat_with(backend, vm, guest_ip, bridge)
}

/// [`enable_nat`] with a chosen backend.
pub fn enable_nat_with(
    backend: NatBackend,
    vm: &str,
    guest_ip: Ipv4Addr,
    bridge: &str,
) -> Result<(), NetError> {
    validate_vm(vm)?;
    validate_ifname(bridge)?;
    let tool = backend.tool().ok_or(match backend {
        NatBackend::Nft => NetError::ToolMissing {
            tool: "nft",
            package: "nftables",
        },
        NatBackend::Iptables => NetError::ToolMissing {
            tool: "iptables",
            package: "iptables",
        },
    })?;
    let _guard = nft::lock();
    enable_forwarding()?;
    let tag = nat_tag(vm);
    match backend {
        NatBackend::Nft => {
            let ours = nat_rules(&tool, &tag)?;
            let wanted = |r: &NftRule| {
                r.saddr.as_deref() == Some(guest_ip.to_string().as_str())
                    && r.oifname_not.as_deref() == Some(bridge)
                    && r.masquerade
            };
            if ours.len() == 1 && wanted(&ours[0]) {
                return Ok(());
            }
            let stale: Vec<u64> = ours.iter().map(|r| r.handle).collect();
            let script = nft_script(&tag, guest_ip, bridge, &stale);
            run(&tool, &["-f", "-"], Some(&script)).map(drop)
        }
        NatBackend::Iptables => {
            let spec = iptables_spec(&tag, guest_ip, bridge);
            let ours = iptables_rules(&tool, &tag)?;
            if ours.len() == 1 && ours[0] == spec {
                return Ok(());
            }
            for rule in &ours {
                iptables_change(&tool, "-D", rule)?;
            }
            iptables_change(&tool, "-A", &spec)
        }
    }
}

/// Removes every NAT rule tagged for `vm`, from nft and from iptables
/// (whichever the host has); Ok when there are none. The VM's isolation
/// rules stay: see [`crate::remove_isolation`].
pub fn disable_nat(vm: &str) -> Result<(), NetError> {
    validate_vm(vm)?;
    let tag = nat_tag(vm);
    let _guard = nft::lock();
    if let Some(nft) = NatBackend::Nft.tool() {
        let stale = nat_rules(&nft, &tag)?;
        if !stale.is_empty() {
            let script: String = stale
                .iter()
                .map(|r| delete_rule(Family::Ip, NFT_CHAIN, r.handle))
                .collect();
            run(&nft, &["-f", "-"], Some(&script))?;
        }
    }
    if let Some(iptables) = NatBackend::Iptables.tool() {
        for rule in iptables_rules(&iptables, &tag)? {
            iptables_change(&iptables, "-D", &rule)?;
        }
    }
    Ok(())
}

/// Whether any NAT rule tagged for `vm` exists, in nft or iptables.
pub fn nat_enabled(vm: &str) -> Result<bool, NetError> {
    validate_vm(vm)?;
    let tag = nat_tag(vm);
    if let Some(nft) = NatBackend::Nft.tool()
        && !nat_rules(&nft, &tag)?.is_empty()
    {
        return Ok(true);
    }
    if let Some(iptables) = NatBackend::Iptables.tool()
        && !iptables_rules(&iptables, &tag)?.is_empty()
    {
        return Ok(true);
    }
    Ok(false)
}

fn enable_forwarding() -> Result<(), NetError> {
    let path = Path::new("/proc/sys/net/ipv4/ip_forward");
    let current =
        std::fs::read_to_string(path).map_err(|source| NetError::Forwarding { source })?;
    if current.trim() == "1" {
        return Ok(());
    }
    std::fs::write(path, "1\n").map_err(|source| NetError::Forwarding { source })
}

// ---- nft ----

/// The nft script that (re)creates banger's table and chain, deletes the
/// `stale` rules (chain, handle) and adds the masquerade rule. One `nft -f`
/// run is one transaction: either all of it applies or none.
pub fn nft_script(tag: &str, guest_ip: Ipv4Addr, bridge: &str, stale: &[u64]) -> String {
    let mut script = format!(
        "table ip {NFT_TABLE} {{\n\
         \tchain {NFT_CHAIN} {{\n\
         \t\ttype nat hook postrouting priority 100; policy accept;\n\
         \t}}\n\
         }}\n"
    );
    for handle in stale {
        script.push_str(&delete_rule(Family::Ip, NFT_CHAIN, *handle));
    }
    script.push_str(&format!(
        "add rule ip {NFT_TABLE} {NFT_CHAIN} ip saddr {guest_ip} oifname != \"{bridge}\" counter masquerade comment \"{tag}\"\n"
    ));
    script
}

// ---- iptables ----

/// The POSTROUTING rule spec for a VM, in the order `iptables -S` prints
/// it back, so the listed rule can be compared and deleted as is.
pub fn iptables_spec(tag: &str, guest_ip: Ipv4Addr, bridge: &str) -> Vec<String> {
    [
        "-s",
        &format!("{guest_ip}/32"),
        "!",
        "-o",
        bridge,
        "-m",
        "comment",
        "--comment",
        tag,
        "-j",
        "MASQUERADE",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn iptables_change(iptables: &Path, op: &str, spec: &[String]) -> Result<(), NetError> {
    let mut args = vec!["-w", "-t", "nat", op, "POSTROUTING"];
    args.extend(spec.iter().map(String::as_str));
    run(iptables, &args, None).map(drop)
}

/// The specs (after `-A POSTROUTING`) of the nat POSTROUTING rules whose
/// comment is exactly `tag`.
fn iptables_rules(iptables: &Path, tag: &str) -> Result<Vec<Vec<String>>, NetError> {
    let listing = run(iptables, &["-w", "-t", "nat", "-S", "POSTROUTING"], None)?;
    parse_iptables_rules(&listing, tag).map_err(|detail| NetError::Parse {
        command: "iptables -t nat -S POSTROUTING".into(),
        detail,
    })
}

/// The rules of `iptables -S CHAIN` output whose `--comment` is exactly
/// `tag`, each as its spec without the leading `-A CHAIN`.
pub fn parse_iptables_rules(listing: &str, tag: &str) -> Result<Vec<Vec<String>>, String> {
    let mut out = Vec::new();
    for line in listing.lines() {
        let words = split_iptables_line(line)?;
        if words.first().map(String::as_str) != Some("-A") || words.len() < 2 {
            continue;
        }
        let tagged = words.windows(2).any(|w| w[0] == "--comment" && w[1] == tag);
        if tagged {
            out.push(words[2..].to_vec());
        }
    }
    Ok(out)
}

/// Splits one line of `iptables -S` output into words the way
/// iptables-save quotes them: double quotes group, a backslash escapes the
/// next character inside them.
pub fn split_iptables_line(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(escaped) => word.push(escaped),
                            None => return Err(format!("a dangling backslash in {line:?}")),
                        },
                        Some(other) => word.push(other),
                        None => return Err(format!("an unclosed quote in {line:?}")),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_rules_carry_the_vm_tag() {
        assert_eq!(nat_tag("sandbox"), "banger:sandbox");
    }

    #[test]
    fn nft_script_declares_the_table_deletes_stale_and_adds_the_rule() {
        let script = nft_script("banger:vm1", "172.16.0.5".parse().unwrap(), "banger0", &[7]);
        assert_eq!(
            script,
            "table ip banger {\n\
             \tchain postrouting {\n\
             \t\ttype nat hook postrouting priority 100; policy accept;\n\
             \t}\n\
             }\n\
             delete rule ip banger postrouting handle 7\n\
             add rule ip banger postrouting ip saddr 172.16.0.5 oifname != \"banger0\" counter masquerade comment \"banger:vm1\"\n"
        );
    }

    #[test]
    fn iptables_spec_matches_what_iptables_prints() {
        let listing = "-P POSTROUTING ACCEPT\n\
            -A POSTROUTING -s 172.16.0.5/32 ! -o banger0 -m comment --comment \"banger:vm1\" -j MASQUERADE\n\
            -A POSTROUTING -s 172.16.0.6/32 ! -o banger0 -m comment --comment \"banger:vm10\" -j MASQUERADE\n\
            -A POSTROUTING -s 10.0.0.0/8 -m comment --comment \"user rule, banger:vm1 mentioned\" -j MASQUERADE\n";
        let ours = parse_iptables_rules(listing, "banger:vm1").unwrap();
        assert_eq!(
            ours,
            vec![iptables_spec(
                "banger:vm1",
                "172.16.0.5".parse().unwrap(),
                "banger0"
            )]
        );
        assert_eq!(
            parse_iptables_rules(listing, "banger:vm10").unwrap().len(),
            1
        );
        assert!(
            parse_iptables_rules(listing, "banger:vm2")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn iptables_lines_are_split_like_iptables_save_quotes_them() {
        assert_eq!(
            split_iptables_line(r#"-A X -m comment --comment "a \"b\" c" -j ACCEPT"#).unwrap(),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(split_iptables_line("  ").unwrap(), Vec::<String>::new());
        assert_eq!(
            split_iptables_line(r#"--comment """#).unwrap(),
            ["--comment", ""]
        );
        assert!(split_iptables_line(r#"--comment "open"#).is_err());
    }
}
