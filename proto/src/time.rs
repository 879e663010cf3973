//! Times as the API carries them: nanoseconds since the Unix epoch, and
//! protobuf timestamps.

/// Nanoseconds since the Unix epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// A protobuf timestamp from nanoseconds since the epoch.
pub fn timestamp(nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
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
