//! banger's own nft tables, `table ip banger` (NAT, and what guests may
//! reach through the host) and `table bridge banger` (what a guest may
//! send on the bridge): listing the rules banger tagged, deleting them by
//! handle, and the one lock every change takes.
//!
//! A rule belongs to a VM when its comment is exactly `banger:<vm>`;
//! rules of other tables are never read for changes, whatever their
//! comment says.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

use crate::NetError;
use crate::command::{failed, output};

/// The name of banger's nft tables (one per family).
pub const NFT_TABLE: &str = "banger";

/// Serializes changes to banger's tables within the process: each is a
/// list-then-change over host state that two concurrent VM operations
/// could interleave (a handle listed by one, deleted by the other).
static FIREWALL_LOCK: Mutex<()> = Mutex::new(());

pub(crate) fn lock() -> MutexGuard<'static, ()> {
    FIREWALL_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The nft families banger keeps a table in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Layer 3: NAT, and traffic the host routes or receives.
    Ip,
    /// Layer 2: frames as they enter the bridge from a TAP.
    Bridge,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Bridge => "bridge",
        }
    }
}

/// The comment on every rule made for `vm`.
pub fn vm_tag(vm: &str) -> String {
    format!("banger:{vm}")
}

/// VM names are DNS labels; this guards the tag, which lands inside a
/// quoted comment of an nft script.
pub(crate) fn validate_vm(vm: &str) -> Result<(), NetError> {
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

/// One rule of a banger table, as far as banger reads it.
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

/// The nft command that deletes one rule of banger's table.
pub(crate) fn delete_rule(family: Family, chain: &str, handle: u64) -> String {
    format!(
        "delete rule {} {NFT_TABLE} {chain} handle {handle}\n",
        family.as_str()
    )
}

/// The rules of banger's table of `family`; none when it does not exist.
pub(crate) fn list_rules(nft: &Path, family: Family) -> Result<Vec<NftRule>, NetError> {
    let args = ["-j", "list", "table", family.as_str(), NFT_TABLE];
    let out = output(nft, &args, None)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No such file or directory") {
            return Ok(Vec::new());
        }
        return Err(failed(nft, &args, &out));
    }
    parse_nft_rules(&String::from_utf8_lossy(&out.stdout), family).map_err(|detail| {
        NetError::Parse {
            command: format!("nft -j list table {} {NFT_TABLE}", family.as_str()),
            detail,
        }
    })
}

/// The rules in `nft -j list ...` output that belong to banger's table of
/// `family`.
pub fn parse_nft_rules(json: &str, family: Family) -> Result<Vec<NftRule>, String> {
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
        if rule.get("family").and_then(Value::as_str) != Some(family.as_str())
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

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "banger", "handle": 1}}, {"chain": {"family": "ip", "table": "banger", "name": "postrouting", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}, {"rule": {"family": "ip", "table": "banger", "chain": "postrouting", "handle": 2, "comment": "banger:vm1", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "172.16.0.5"}}, {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "banger0"}}, {"counter": {"packets": 0, "bytes": 0}}, {"masquerade": null}]}}, {"rule": {"family": "ip", "table": "banger", "chain": "postrouting", "handle": 3, "expr": [{"accept": null}]}}]}"#;

    #[test]
    fn nft_listing_is_parsed() {
        let rules = parse_nft_rules(LISTING, Family::Ip).unwrap();
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
    fn nft_rules_of_other_tables_and_families_are_ignored() {
        let other = LISTING.replace("\"table\": \"banger\"", "\"table\": \"nat\"");
        assert!(parse_nft_rules(&other, Family::Ip).unwrap().is_empty());
        let inet = LISTING.replace("\"family\": \"ip\"", "\"family\": \"inet\"");
        assert!(parse_nft_rules(&inet, Family::Ip).unwrap().is_empty());
        assert!(parse_nft_rules(LISTING, Family::Bridge).unwrap().is_empty());
        let bridge = LISTING.replace("\"family\": \"ip\"", "\"family\": \"bridge\"");
        assert_eq!(parse_nft_rules(&bridge, Family::Bridge).unwrap().len(), 2);
    }

    #[test]
    fn bad_nft_output_is_an_error() {
        assert!(parse_nft_rules("table ip banger {", Family::Ip).is_err());
        assert!(parse_nft_rules("{}", Family::Ip).is_err());
        let no_handle = LISTING.replace("\"handle\": 2,", "");
        assert!(parse_nft_rules(&no_handle, Family::Ip).is_err());
    }

    #[test]
    fn tags_name_the_vm_and_vm_names_are_checked() {
        assert_eq!(vm_tag("sandbox"), "banger:sandbox");
        validate_vm("sandbox-1").unwrap();
        for bad in ["", "a b", "a\"b", "a;b", &"x".repeat(101)] {
            assert!(validate_vm(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deletes_name_the_family_and_handle() {
        assert_eq!(
            delete_rule(Family::Bridge, "guests", 9),
            "delete rule bridge banger guests handle 9\n"
        );
    }
}
