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
