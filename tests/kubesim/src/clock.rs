//! Wall-clock time as a jiff `Timestamp` (k8s-openapi builds jiff without
//! `std`, so `Timestamp::now()` is not available).

use k8s_openapi::jiff::Timestamp;

/// The current time.
pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(0);
    let nanos = i32::try_from(d.subsec_nanos()).unwrap_or(0);
    Timestamp::new(secs, nanos).unwrap_or(Timestamp::UNIX_EPOCH)
}
