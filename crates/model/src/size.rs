use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A size in bytes, written by people as `8G`, `512M` or `16GiB`.
///
/// Units are binary (K = 1024), as in QEMU and Firecracker: `8G` and `8GiB`
/// are the same size. Parsing is strict: a unit is required, whole numbers
/// only, no spaces, so `8` or `1.5G` or `8 GB` are errors rather than guesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Size(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("size is empty: write a number and a unit, like 8G or 512M")]
    Empty,
    #[error("size {0:?} has no unit: write it like 8G, 512M or 16GiB")]
    NoUnit(String),
    #[error("size {0:?} is not a whole number of units: write it like 1536M instead of 1.5G")]
    NotWhole(String),
    #[error("size {0:?} does not start with a number: write it like 8G, 512M or 16GiB")]
    NoNumber(String),
    #[error(
        "size {input:?} has an unknown unit {unit:?}: use K, M, G or T (optionally KiB, MiB, GiB, TiB)"
    )]
    BadUnit { input: String, unit: String },
    #[error("size {0:?} is too large")]
    Overflow(String),
    #[error("size {0:?} is zero: give a size greater than zero")]
    Zero(String),
}

const UNITS: [(&str, u32); 4] = [("K", 10), ("M", 20), ("G", 30), ("T", 40)];

impl Size {
    pub const fn from_bytes(bytes: u64) -> Self {
        Self(bytes)
    }
    pub const fn from_mib(mib: u64) -> Self {
        Self(mib << 20)
    }
    pub const fn from_gib(gib: u64) -> Self {
        Self(gib << 30)
    }
    pub const fn bytes(self) -> u64 {
        self.0
    }
    pub const fn mib(self) -> u64 {
        self.0 >> 20
    }

    /// For people, to one decimal: `12.0 GiB`, `3.2 GiB`, `512 B`. Unlike
    /// [`Display`](fmt::Display), which writes a size back exactly, this
    /// suits sizes banger measured (free space).
    pub fn human(self) -> String {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            format!("{} B", self.0)
        } else {
            format!("{value:.1} {}", UNITS[unit])
        }
    }

    pub fn parse(input: &str) -> Result<Self, SizeError> {
        if input.is_empty() {
            return Err(SizeError::Empty);
        }
        let digits_end = input
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(input.len());
        let (digits, unit) = input.split_at(digits_end);
        if digits.is_empty() {
            return Err(SizeError::NoNumber(input.to_string()));
        }
        if unit.starts_with('.') || unit.starts_with(',') {
            return Err(SizeError::NotWhole(input.to_string()));
        }
        if unit.is_empty() {
            return Err(SizeError::NoUnit(input.to_string()));
        }
        let shift = UNITS
            .iter()
            .find(|(u, _)| unit == *u || unit.strip_suffix("iB") == Some(u))
            .map(|(_, s)| *s)
            .ok_or_else(|| SizeError::BadUnit {
                input: input.to_string(),
                unit: unit.to_string(),
            })?;
        let n: u64 = digits
            .parse()
            .map_err(|_| SizeError::Overflow(input.to_string()))?;
        if n == 0 {
            return Err(SizeError::Zero(input.to_string()));
        }
        n.checked_mul(1u64 << shift)
            .map(Size)
            .ok_or_else(|| SizeError::Overflow(input.to_string()))
    }
}

impl FromStr for Size {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Size {
    type Error = SizeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Size> for String {
    fn from(s: Size) -> String {
        s.to_string()
    }
}

impl fmt::Display for Size {
    /// The largest unit that divides the size exactly: `8G`, `1536M`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, shift) in UNITS.iter().rev() {
            let m = 1u64 << shift;
            if self.0 >= m && self.0.is_multiple_of(m) {
                return write!(f, "{}{unit}", self.0 / m);
            }
        }
        write!(f, "{}B", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(Size::parse("8G").unwrap().bytes(), 8 << 30);
        assert_eq!(Size::parse("8GiB").unwrap(), Size::parse("8G").unwrap());
        assert_eq!(Size::parse("512M").unwrap().mib(), 512);
        assert_eq!(Size::parse("16GiB").unwrap(), Size::from_gib(16));
        assert_eq!(Size::parse("4K").unwrap().bytes(), 4096);
        assert_eq!(Size::parse("1T").unwrap().bytes(), 1 << 40);
    }

    #[test]
    fn human_sizes_have_one_decimal() {
        assert_eq!(Size::from_gib(12).human(), "12.0 GiB");
        assert_eq!(Size::from_bytes(3_435_973_837).human(), "3.2 GiB");
        assert_eq!(Size::from_bytes(512).human(), "512 B");
        assert_eq!(Size::from_bytes(100 << 40).human(), "100.0 TiB");
        assert_eq!(Size::from_bytes(u64::MAX).human(), "16777216.0 TiB");
    }

    #[test]
    fn rejects_loose_input() {
        assert_eq!(Size::parse(""), Err(SizeError::Empty));
        assert!(matches!(Size::parse("8"), Err(SizeError::NoUnit(_))));
        assert!(matches!(Size::parse("1.5G"), Err(SizeError::NotWhole(_))));
        assert!(matches!(Size::parse("G"), Err(SizeError::NoNumber(_))));
        assert!(matches!(Size::parse("-1G"), Err(SizeError::NoNumber(_))));
        assert!(matches!(Size::parse("8 G"), Err(SizeError::BadUnit { .. })));
        assert!(matches!(Size::parse("8GB"), Err(SizeError::BadUnit { .. })));
        assert!(matches!(Size::parse("8g"), Err(SizeError::BadUnit { .. })));
        assert!(matches!(Size::parse("8Gi"), Err(SizeError::BadUnit { .. })));
        assert!(matches!(Size::parse("0G"), Err(SizeError::Zero(_))));
        assert!(matches!(
            Size::parse("99999999999T"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            Size::parse("999999999999999999999G"),
            Err(SizeError::Overflow(_))
        ));
    }

    #[test]
    fn displays_in_largest_exact_unit() {
        assert_eq!(Size::from_gib(8).to_string(), "8G");
        assert_eq!(Size::from_mib(1536).to_string(), "1536M");
        assert_eq!(Size::from_bytes(1000).to_string(), "1000B");
        let s = Size::parse("2048M").unwrap();
        assert_eq!(s.to_string(), "2G");
        assert_eq!(Size::parse(&s.to_string()).unwrap(), s);
    }
}
