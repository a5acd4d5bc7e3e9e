//! Subordinate ids (`/etc/subuid`, `/etc/subgid`): the ranges a user may
//! map into a user namespace. Image builds without root map the owner to 0
//! and one such range to 1..; the root helper computes the same map from
//! the same files when it writes it for the owner's build, so both read
//! them here.

/// Ids a build's namespace maps beyond 0: the owner's subordinate range
/// must hold this many. Debian's own ids go up to 65534 (`nobody`).
pub const SUBORDINATE_COUNT: u32 = 65536;

/// The start of the first range of `user` (by name or uid, as shadow
/// reads them) of at least [`SUBORDINATE_COUNT`] ids; else what was found,
/// for the message.
pub fn first_range(text: &str, user: &str, uid: u32) -> Result<u32, String> {
    let uid = uid.to_string();
    let mut smaller = Vec::new();
    for line in text.lines() {
        let mut fields = line.trim().split(':');
        let (Some(name), Some(start), Some(count)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if name != user && name != uid {
            continue;
        }
        let (Ok(start), Ok(count)) = (start.parse::<u32>(), count.parse::<u32>()) else {
            continue;
        };
        if count >= SUBORDINATE_COUNT && start.checked_add(SUBORDINATE_COUNT).is_some() {
            return Ok(start);
        }
        smaller.push(format!("{start}:{count}"));
    }
    Err(if smaller.is_empty() {
        "none".into()
    } else {
        format!("only {}", smaller.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_large_enough_range_of_the_user_by_name_or_uid() {
        let text =
            "# comment\nalice:100000:65536\nbob:165536:1000\nbob:300000:65536\n1001:400000:70000\n";
        assert_eq!(first_range(text, "alice", 1000), Ok(100000));
        assert_eq!(first_range(text, "bob", 1002), Ok(300000));
        assert_eq!(first_range(text, "carol", 1001), Ok(400000));
        assert_eq!(first_range(text, "dave", 1003), Err("none".into()));
        assert_eq!(
            first_range("eve:500000:1000\n", "eve", 1),
            Err("only 500000:1000".into())
        );
        assert_eq!(
            first_range("eve:4294967000:65536\n", "eve", 1),
            Err("only 4294967000:65536".into()),
            "a range past the end of the id space"
        );
    }
}
