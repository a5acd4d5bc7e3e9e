use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A VM name. It becomes a DNS label (`<name>.vm`), a hostname and a
/// folder name, so it follows RFC 1123 label rules, restricted to lowercase.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VmName(String);

pub const MAX_NAME_LEN: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("VM name is empty: use 1-63 characters from a-z, 0-9 and '-'")]
    Empty,
    #[error("VM name {0:?} is longer than 63 characters: choose a shorter name")]
    TooLong(String),
    #[error(
        "VM name {name:?} contains {bad:?}: use only lowercase letters a-z, digits 0-9 and '-'"
    )]
    BadChar { name: String, bad: char },
    #[error("VM name {0:?} starts or ends with '-': a DNS label cannot")]
    EdgeHyphen(String),
}

impl VmName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(s.to_string()));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadChar {
                name: s.to_string(),
                bad,
            });
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(NameError::EdgeHyphen(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for VmName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for VmName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<VmName> for String {
    fn from(n: VmName) -> String {
        n.0
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "sandbox", "web-1", "0abc", &"x".repeat(63)] {
            assert_eq!(VmName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_bad_names_with_reason() {
        assert_eq!(VmName::parse(""), Err(NameError::Empty));
        assert!(matches!(
            VmName::parse(&"x".repeat(64)),
            Err(NameError::TooLong(_))
        ));
        assert!(matches!(
            VmName::parse("Web"),
            Err(NameError::BadChar { bad: 'W', .. })
        ));
        assert!(matches!(
            VmName::parse("a_b"),
            Err(NameError::BadChar { bad: '_', .. })
        ));
        assert!(matches!(
            VmName::parse("a.vm"),
            Err(NameError::BadChar { bad: '.', .. })
        ));
        assert!(matches!(
            VmName::parse("é"),
            Err(NameError::BadChar { bad: 'é', .. })
        ));
        assert!(matches!(VmName::parse("-a"), Err(NameError::EdgeHyphen(_))));
        assert!(matches!(VmName::parse("a-"), Err(NameError::EdgeHyphen(_))));
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let msg = VmName::parse("My_VM").unwrap_err().to_string();
        assert!(msg.contains("My_VM") && msg.contains("a-z"), "{msg}");
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<VmName>("\"UPPER\"").is_err());
        assert_eq!(
            serde_json::from_str::<VmName>("\"ok-1\"").unwrap().as_str(),
            "ok-1"
        );
    }
}
