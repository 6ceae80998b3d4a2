//! Shares of new flows: percentages with up to two decimals, held as basis points
//! (1 basis point = 0.01% = one split cell).
//!
//! One type end to end: the CLI parses it, the API carries it as percentage text
//! (`"12.5"`), the state file stores the number of basis points, `status` prints it.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A share from 0% to 100% in basis points (0..=10000).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BasisPoints(u16);

/// A percentage that is not 0..=100 with at most two decimals.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad percentage {0:?}: use a number from 0 to 100 with at most 2 decimals")]
pub struct BadPercent(pub String);

impl BasisPoints {
    /// 0%.
    pub const ZERO: Self = Self(0);
    /// 100%: every new flow.
    pub const ALL: Self = Self(10_000);

    /// `bp` basis points, if at most 10000.
    pub fn new(bp: u16) -> Option<Self> {
        (bp <= Self::ALL.0).then_some(Self(bp))
    }

    /// The number of basis points.
    pub fn get(self) -> u16 {
        self.0
    }

    /// What is left of 100% after this share.
    pub fn rest(self) -> Self {
        Self(Self::ALL.0 - self.0)
    }
}

impl FromStr for BasisPoints {
    type Err = BadPercent;

    /// Parses "12.5" or "100" (0..=100, at most two decimals).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadPercent(text.to_string());
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty()
            || frac.len() > 2
            || !whole.chars().all(|c| c.is_ascii_digit())
            || !frac.chars().all(|c| c.is_ascii_digit())
            || (text.contains('.') && frac.is_empty())
        {
            return Err(bad());
        }
        let whole: u32 = whole.parse().map_err(|_| bad())?;
        let frac: u32 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
        let bp = whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(frac))
            .and_then(|bp| u16::try_from(bp).ok())
            .ok_or_else(bad)?;
        Self::new(bp).ok_or_else(bad)
    }
}

impl fmt::Display for BasisPoints {
    /// Two decimals: "12.50".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl Serialize for BasisPoints {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BasisPoints {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde adapters for the state file, which stores shares as numbers of basis points.
pub mod stored {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::BasisPoints;

    fn checked<E: serde::de::Error>(bp: u16) -> Result<BasisPoints, E> {
        BasisPoints::new(bp).ok_or_else(|| E::custom(format!("{bp} basis points exceed 100%")))
    }

    /// A list of shares as numbers.
    pub mod list {
        use super::*;

        /// Writes the numbers.
        pub fn serialize<S: Serializer>(v: &[BasisPoints], s: S) -> Result<S::Ok, S::Error> {
            v.iter().map(|b| b.get()).collect::<Vec<_>>().serialize(s)
        }

        /// Reads the numbers, each at most 10000.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<BasisPoints>, D::Error> {
            Vec::<u16>::deserialize(d)?
                .into_iter()
                .map(checked)
                .collect()
        }
    }

    /// An optional share as a number.
    pub mod optional {
        use super::*;

        /// Writes the number or null.
        pub fn serialize<S: Serializer>(v: &Option<BasisPoints>, s: S) -> Result<S::Ok, S::Error> {
            v.map(BasisPoints::get).serialize(s)
        }

        /// Reads the number (at most 10000) or null.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<BasisPoints>, D::Error> {
            Option::<u16>::deserialize(d)?.map(checked).transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let bp = |t: &str| t.parse::<BasisPoints>().map(BasisPoints::get);
        assert_eq!(bp("100"), Ok(10_000));
        assert_eq!(bp("0"), Ok(0));
        assert_eq!(bp("12.5"), Ok(1250));
        assert_eq!(bp("0.01"), Ok(1));
        assert_eq!(BasisPoints(1250).to_string(), "12.50");
        assert_eq!(BasisPoints(1250).rest(), BasisPoints(8750));
        for bad in [
            "",
            "-1",
            "100.01",
            "1.234",
            "abc",
            "1.",
            ".5",
            "1e2",
            "99999999999",
            "655.36",
        ] {
            assert_eq!(
                bad.parse::<BasisPoints>(),
                Err(BadPercent(bad.to_string())),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn wire_text_and_stored_numbers() {
        let wire: BasisPoints = serde_json::from_str("\"12.5\"").unwrap();
        assert_eq!(serde_json::to_string(&wire).unwrap(), "\"12.50\"");
        assert!(serde_json::from_str::<BasisPoints>("\"101\"").is_err());
        assert!(serde_json::from_str::<BasisPoints>("12").is_err());

        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Stored {
            #[serde(with = "stored::list")]
            steps: Vec<BasisPoints>,
            #[serde(with = "stored::optional")]
            threshold: Option<BasisPoints>,
        }
        let text = r#"{"steps":[100,10000],"threshold":5000}"#;
        let stored: Stored = serde_json::from_str(text).unwrap();
        assert_eq!(stored.steps, [BasisPoints(100), BasisPoints::ALL]);
        assert_eq!(serde_json::to_string(&stored).unwrap(), text);
        assert!(serde_json::from_str::<Stored>(r#"{"steps":[10001],"threshold":null}"#).is_err());
    }
}
