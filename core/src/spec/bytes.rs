//! A memory size as a person writes it: `80GiB`, `80 GB`, `141GiB`, or a
//! plain number of bytes. Used for `train.gpu_memory` and `--gpu-memory`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A number of bytes, parsed from `<number>[unit]` with the units B, KB, MB,
/// GB, TB (powers of 1000) and KiB, MiB, GiB, TiB (powers of 1024).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ByteSize(pub u64);

const UNITS: [(&str, u64); 9] = [
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("B", 1),
];

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<ByteSize, String> {
        let trimmed = text.trim();
        let (number, scale) = UNITS
            .iter()
            .find_map(|(unit, scale)| Some((trimmed.strip_suffix(unit)?, *scale)))
            .unwrap_or((trimmed, 1));
        let value: f64 = number.trim().parse().map_err(|_| {
            format!("'{text}' is not a memory size (e.g. 80GiB, 80GB, 85899345920)")
        })?;
        let bytes = value * scale as f64;
        if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
            return Err(format!("'{text}': a memory size must be positive"));
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl TryFrom<String> for ByteSize {
    type Error = String;
    fn try_from(text: String) -> Result<ByteSize, String> {
        text.parse()
    }
}

impl From<ByteSize> for String {
    fn from(size: ByteSize) -> String {
        size.0.to_string()
    }
}

impl fmt::Display for ByteSize {
    /// GiB with two decimals (GPU memory is sold and reported in GiB).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2} GiB", self.0 as f64 / (1u64 << 30) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_decimal_or_binary_as_written() {
        assert_eq!("80GiB".parse(), Ok(ByteSize(80 << 30)));
        assert_eq!("80 GB".parse(), Ok(ByteSize(80_000_000_000)));
        assert_eq!("1.5KiB".parse(), Ok(ByteSize(1536)));
        assert_eq!("4096".parse(), Ok(ByteSize(4096)));
        assert_eq!("12B".parse(), Ok(ByteSize(12)));
        let err = "80 gigs".parse::<ByteSize>().unwrap_err();
        assert!(err.contains("'80 gigs' is not a memory size"), "{err}");
        assert!("0GiB".parse::<ByteSize>().is_err());
        assert!("-1GB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn serde_round_trips_through_the_byte_count() {
        let size: ByteSize = serde_json::from_str("\"141GiB\"").unwrap();
        assert_eq!(size, ByteSize(141 << 30));
        let back: ByteSize = serde_json::from_str(&serde_json::to_string(&size).unwrap()).unwrap();
        assert_eq!(back, size);
        assert_eq!(size.to_string(), "141.00 GiB");
    }
}
