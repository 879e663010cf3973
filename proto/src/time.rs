//! Times as the API carries them: nanoseconds since the Unix epoch, and
//! protobuf timestamps.

/// Nanoseconds since the Unix epoch, now (saturating at `i64::MAX`, in 2262).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A protobuf timestamp from nanoseconds since the epoch.
pub fn timestamp(nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        // rem_euclid by 10^9 is in 0..10^9, within i32.
        #[allow(clippy::cast_possible_truncation)]
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

/// Go's RFC3339Nano in UTC, as docker and containerd write log times: trailing zeros of the
/// fraction dropped (and the fraction too when it is zero).
pub fn format_time(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let base = chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    if frac == 0 {
        return format!("{base}Z");
    }
    let f = format!("{frac:09}");
    format!("{base}.{}Z", f.trim_end_matches('0'))
}

/// Parses an RFC 3339 time (any offset, any fraction) to nanoseconds.
pub fn parse_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()?
        .timestamp_nanos_opt()
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_split_nanoseconds_even_before_the_epoch() {
        let t = super::timestamp(1_500_000_000);
        assert_eq!((t.seconds, t.nanos), (1, 500_000_000));
        let t = super::timestamp(-1);
        assert_eq!((t.seconds, t.nanos), (-1, 999_999_999));
        assert!(super::now() > 1_700_000_000_000_000_000);
    }
}
