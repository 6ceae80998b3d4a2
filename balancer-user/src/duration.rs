//! Bounds of the durations operators give (intervals, timeouts, slow starts), so that no
//! deadline computed from one can overflow or wrap into the past.

use crate::state::StateError;

/// The longest duration any setting takes, in milliseconds: [`MAX_DAYS`] days.
pub const MAX_MS: u64 = MAX_DAYS * 24 * 3600 * 1000;

/// [`MAX_MS`] in days.
pub const MAX_DAYS: u64 = 365;

/// `ms` if it is at most [`MAX_MS`]; otherwise a refusal naming `what`.
pub fn check(what: &'static str, ms: u64) -> Result<u64, StateError> {
    if ms <= MAX_MS {
        Ok(ms)
    } else {
        Err(StateError::TooLong(what, ms))
    }
}

/// Like [`check`], for a duration that may be absent.
pub fn check_optional(what: &'static str, ms: Option<u64>) -> Result<Option<u64>, StateError> {
    ms.map(|ms| check(what, ms)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_up_to_a_year_pass_and_longer_ones_are_refused_with_one_line() {
        assert_eq!(check("the canary interval", MAX_MS).unwrap(), MAX_MS);
        assert_eq!(check_optional("the drain timeout", None).unwrap(), None);
        let err = check("the drain timeout", u64::MAX).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the drain timeout of 18446744073709551615 ms is longer than the longest allowed (365 days)"
        );
        assert!(check_optional("the flip's drain timeout", Some(MAX_MS + 1)).is_err());
    }
}
