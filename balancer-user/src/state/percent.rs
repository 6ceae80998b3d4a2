//! Percentages with up to two decimals, held as basis points.

use super::StateError;

/// Parses "12.5" or "100" (0..=100, at most two decimals) into basis points.
pub fn parse_percent(text: &str) -> Result<u16, StateError> {
    let bad = || StateError::BadPercent(text.to_string());
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
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
        .ok_or_else(bad)?;
    if bp > 10_000 {
        return Err(bad());
    }
    Ok(bp as u16)
}

/// Formats basis points as a percentage with two decimals ("12.50").
pub fn format_basis_points(bp: u16) -> String {
    format!("{}.{:02}", bp / 100, bp % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_percent("100").unwrap(), 10_000);
        assert_eq!(parse_percent("0").unwrap(), 0);
        assert_eq!(parse_percent("12.5").unwrap(), 1250);
        assert_eq!(parse_percent("0.01").unwrap(), 1);
        assert_eq!(format_basis_points(1250), "12.50");
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
        ] {
            assert!(parse_percent(bad).is_err(), "{bad:?} accepted");
        }
    }
}
