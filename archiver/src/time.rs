//! Time arguments of the evidence tools: an RFC 3339 time, or a duration ago.

use std::time::SystemTime;

use crate::error::TimeArgError;

/// Reads `2026-11-22T10:00:00Z` (RFC 3339; fractions and a space for `T` are
/// accepted) or a humantime duration such as `2h`, `90min`, `7days`, meaning
/// that long before `now`.
pub fn parse_time_arg(arg: &str, now: SystemTime) -> Result<SystemTime, TimeArgError> {
    let arg = arg.trim();
    if let Ok(t) = humantime::parse_rfc3339_weak(arg) {
        return Ok(t);
    }
    let ago = humantime::parse_duration(arg).map_err(|_| TimeArgError(arg.to_owned()))?;
    now.checked_sub(ago)
        .ok_or_else(|| TimeArgError(arg.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_and_durations_ago() {
        let now = humantime::parse_rfc3339("2026-11-22T12:00:00Z").unwrap();
        assert_eq!(
            parse_time_arg("2026-11-22T10:00:00Z", now).unwrap(),
            now - Duration::from_secs(7200)
        );
        assert_eq!(
            parse_time_arg("2026-11-22T10:00:00.5Z", now).unwrap(),
            now - Duration::from_millis(7_199_500)
        );
        assert_eq!(
            parse_time_arg("2h", now).unwrap(),
            now - Duration::from_secs(7200)
        );
        assert_eq!(
            parse_time_arg("1day 2h", now).unwrap(),
            now - Duration::from_secs(93_600)
        );
        assert!(parse_time_arg("yesterday", now).is_err());
    }
}
