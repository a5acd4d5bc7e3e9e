//! NAT for a VM: masquerade what the guest sends out of the host through
//! anything but the bridge, and turn on IPv4 forwarding.
//!
//! Every rule carries the comment `banger:<vm>`, and banger only ever
//! deletes rules carrying its tag. With nft, banger's rules live in a table
//! of its own (`table ip banger`, chain `postrouting`), so no table of the
//! user's is ever touched; with iptables they are appended to the nat
//! table's POSTROUTING chain and deleted by their exact rule spec.
//!
//! Forwarding is left on by [`disable_nat`]: other VMs, or other software
//! on the host, may rely on it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use crate::NetError;
use crate::command::{failed, find_tool, output, run};
use crate::naming::validate_ifname;

/// banger's own nft table (family `ip`) and its NAT chain.
pub const NFT_TABLE: &str = "banger";
pub const NFT_CHAIN: &str = "postrouting";

/// Serializes NAT changes within the process: each is a list-then-change
/// over host state that two concurrent VM operations could interleave.
static NAT_LOCK: Mutex<()> = Mutex::new(());

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

/// The comment on every rule made for `vm`.
pub fn nat_tag(vm: &str) -> String {
    format!("banger:{vm}")
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
    let _guard = NAT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    enable_forwarding()?;
    let tag = nat_tag(vm);
    match backend {
        NatBackend::Nft => {
            let rules = nft_rules(&tool)?;
            let ours: Vec<&NftRule> = rules
                .iter()
                .filter(|r| r.comment.as_deref() == Some(tag.as_str()))
                .collect();
            let wanted = |r: &NftRule| {
                r.chain == NFT_CHAIN
                    && r.saddr.as_deref() == Some(guest_ip.to_string().as_str())
                    && r.oifname_not.as_deref() == Some(bridge)
                    && r.masquerade
            };
            if ours.len() == 1 && wanted(ours[0]) {
                return Ok(());
            }
            let stale: Vec<(&str, u64)> =
                ours.iter().map(|r| (r.chain.as_str(), r.handle)).collect();
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

/// Removes every rule tagged for `vm`, from nft and from iptables
/// (whichever the host has); Ok when there are none.
pub fn disable_nat(vm: &str) -> Result<(), NetError> {
    validate_vm(vm)?;
    let tag = nat_tag(vm);
    let _guard = NAT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(nft) = NatBackend::Nft.tool() {
        let stale: Vec<(String, u64)> = nft_rules(&nft)?
            .into_iter()
            .filter(|r| r.comment.as_deref() == Some(tag.as_str()))
            .map(|r| (r.chain, r.handle))
            .collect();
        if !stale.is_empty() {
            let script: String = stale
                .iter()
                .map(|(chain, handle)| nft_delete(chain, *handle))
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

/// Whether any rule tagged for `vm` exists, in nft or iptables.
pub fn nat_enabled(vm: &str) -> Result<bool, NetError> {
    validate_vm(vm)?;
    let tag = nat_tag(vm);
    if let Some(nft) = NatBackend::Nft.tool()
        && nft_rules(&nft)?
            .iter()
            .any(|r| r.comment.as_deref() == Some(tag.as_str()))
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

/// VM names are DNS labels; this guards the tag, which lands inside a
/// quoted comment of an nft script.
fn validate_vm(vm: &str) -> Result<(), NetError> {
    let ok = !vm.is_empty()
        && vm.len() <= 100
        && vm
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(NetError::InvalidVmName {
            name: vm.to_string(),
        })
    }
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

/// One rule of banger's nft table, as far as banger reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftRule {
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
    /// `ip saddr X` when the rule matches on it.
    pub saddr: Option<String>,
    /// `oifname != X` when the rule matches on it.
    pub oifname_not: Option<String>,
    pub masquerade: bool,
}

/// The nft script that (re)creates banger's table and chain, deletes the
/// `stale` rules (chain, handle) and adds the masquerade rule. One `nft -f`
/// run is one transaction: either all of it applies or none.
pub fn nft_script(tag: &str, guest_ip: Ipv4Addr, bridge: &str, stale: &[(&str, u64)]) -> String {
    let mut script = format!(
        "table ip {NFT_TABLE} {{\n\
         \tchain {NFT_CHAIN} {{\n\
         \t\ttype nat hook postrouting priority 100; policy accept;\n\
         \t}}\n\
         }}\n"
    );
    for (chain, handle) in stale {
        script.push_str(&nft_delete(chain, *handle));
    }
    script.push_str(&format!(
        "add rule ip {NFT_TABLE} {NFT_CHAIN} ip saddr {guest_ip} oifname != \"{bridge}\" counter masquerade comment \"{tag}\"\n"
    ));
    script
}

fn nft_delete(chain: &str, handle: u64) -> String {
    format!("delete rule ip {NFT_TABLE} {chain} handle {handle}\n")
}

/// The rules of banger's table; none when the table does not exist.
fn nft_rules(nft: &Path) -> Result<Vec<NftRule>, NetError> {
    let args = ["-j", "list", "table", "ip", NFT_TABLE];
    let out = output(nft, &args, None)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No such file or directory") {
            return Ok(Vec::new());
        }
        return Err(failed(nft, &args, &out));
    }
    parse_nft_rules(&String::from_utf8_lossy(&out.stdout)).map_err(|detail| NetError::Parse {
        command: "nft -j list table ip banger".into(),
        detail,
    })
}

/// The rules in `nft -j list ...` output that belong to banger's table.
pub fn parse_nft_rules(json: &str) -> Result<Vec<NftRule>, String> {
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("no \"nftables\" array")?;
    let mut rules = Vec::new();
    for item in items {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        if rule.get("family").and_then(Value::as_str) != Some("ip")
            || rule.get("table").and_then(Value::as_str) != Some(NFT_TABLE)
        {
            continue;
        }
        let chain = rule
            .get("chain")
            .and_then(Value::as_str)
            .ok_or("a rule without a chain")?;
        let handle = rule
            .get("handle")
            .and_then(Value::as_u64)
            .ok_or("a rule without a handle")?;
        let mut parsed = NftRule {
            chain: chain.to_string(),
            handle,
            comment: rule
                .get("comment")
                .and_then(Value::as_str)
                .map(String::from),
            saddr: None,
            oifname_not: None,
            masquerade: false,
        };
        for expr in rule
            .get("expr")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if expr.get("masquerade").is_some() {
                parsed.masquerade = true;
            }
            let Some(m) = expr.get("match") else {
                continue;
            };
            let op = m.get("op").and_then(Value::as_str);
            let left = m.get("left");
            let right = m.get("right").and_then(Value::as_str).map(String::from);
            let payload_field = left
                .and_then(|l| l.get("payload"))
                .and_then(|p| p.get("field"))
                .and_then(Value::as_str);
            let meta_key = left
                .and_then(|l| l.get("meta"))
                .and_then(|p| p.get("key"))
                .and_then(Value::as_str);
            match (op, payload_field, meta_key) {
                (Some("=="), Some("saddr"), _) => parsed.saddr = right,
                (Some("!="), _, Some("oifname")) => parsed.oifname_not = right,
                _ => {}
            }
        }
        rules.push(parsed);
    }
    Ok(rules)
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

    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "banger", "handle": 1}}, {"chain": {"family": "ip", "table": "banger", "name": "postrouting", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}, {"rule": {"family": "ip", "table": "banger", "chain": "postrouting", "handle": 2, "comment": "banger:vm1", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "172.16.0.5"}}, {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "banger0"}}, {"counter": {"packets": 0, "bytes": 0}}, {"masquerade": null}]}}, {"rule": {"family": "ip", "table": "banger", "chain": "postrouting", "handle": 3, "expr": [{"accept": null}]}}]}"#;

    #[test]
    fn nft_listing_is_parsed() {
        let rules = parse_nft_rules(LISTING).unwrap();
        assert_eq!(
            rules,
            vec![
                NftRule {
                    chain: "postrouting".into(),
                    handle: 2,
                    comment: Some("banger:vm1".into()),
                    saddr: Some("172.16.0.5".into()),
                    oifname_not: Some("banger0".into()),
                    masquerade: true,
                },
                NftRule {
                    chain: "postrouting".into(),
                    handle: 3,
                    comment: None,
                    saddr: None,
                    oifname_not: None,
                    masquerade: false,
                },
            ]
        );
    }

    #[test]
    fn nft_rules_of_other_tables_are_ignored() {
        let other = LISTING.replace("\"table\": \"banger\"", "\"table\": \"nat\"");
        assert!(parse_nft_rules(&other).unwrap().is_empty());
        let inet = LISTING.replace("\"family\": \"ip\"", "\"family\": \"inet\"");
        assert!(parse_nft_rules(&inet).unwrap().is_empty());
    }

    #[test]
    fn bad_nft_output_is_an_error() {
        assert!(parse_nft_rules("table ip banger {").is_err());
        assert!(parse_nft_rules("{}").is_err());
        let no_handle = LISTING.replace("\"handle\": 2,", "");
        assert!(parse_nft_rules(&no_handle).is_err());
    }

    #[test]
    fn nft_script_declares_the_table_deletes_stale_and_adds_the_rule() {
        let script = nft_script(
            "banger:vm1",
            "172.16.0.5".parse().unwrap(),
            "banger0",
            &[("postrouting", 7)],
        );
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

    #[test]
    fn tags_name_the_vm_and_vm_names_are_checked() {
        assert_eq!(nat_tag("sandbox"), "banger:sandbox");
        validate_vm("sandbox-1").unwrap();
        for bad in ["", "a b", "a\"b", "a;b", &"x".repeat(101)] {
            assert!(validate_vm(bad).is_err(), "{bad:?}");
        }
    }
}
