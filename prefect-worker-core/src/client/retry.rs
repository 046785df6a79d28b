//! The retry decision and delays of spec §1 "Retries": which statuses are retried, how a
//! `Retry-After` is read, and the jittered exponential back-off. Pure, so it is unit-tested
//! without a server; the transport loop applies it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

use super::options::ClientOptions;

/// Statuses every request retries, besides `PREFECT_CLIENT_RETRY_EXTRA_CODES`.
/// 500 and 504 are deliberately absent (Prefect does not retry them).
const BASE_RETRY_CODES: [u16; 4] = [408, 429, 502, 503];

/// The guard Python uses against `log(0)` in the Poisson draw.
const MIN_LOG_ARG: f64 = 1e-10;

/// The retry settings of one client.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub jitter_factor: f64,
    pub extra_codes: Vec<u16>,
    pub base_delay: Duration,
}

impl RetryPolicy {
    pub(crate) fn from_options(o: &ClientOptions) -> Self {
        Self {
            max_retries: o.max_retries,
            jitter_factor: if o.retry_jitter_factor.is_finite() {
                o.retry_jitter_factor.max(0.0)
            } else {
                0.0
            },
            extra_codes: o.retry_extra_codes.clone(),
            base_delay: o.retry_base_delay,
        }
    }

    /// Whether a response with this status is retried.
    pub(crate) fn is_retry_status(&self, status: u16) -> bool {
        BASE_RETRY_CODES.contains(&status) || self.extra_codes.contains(&status)
    }

    /// The sleep before the next attempt, after `try_count` counted attempts.
    ///
    /// A server-given `Retry-After` is a minimum: jitter only stretches it, up to
    /// ×(1+factor). Otherwise the delay is `2^try_count × base` with jitter on both
    /// sides that keeps the mean (Prefect's clamped Poisson interval).
    pub(crate) fn delay(
        &self,
        try_count: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Duration {
        let (secs, from_header) = match retry_after {
            Some(d) => (d.as_secs_f64(), true),
            None => (exponential(try_count, self.base_delay).as_secs_f64(), false),
        };
        let factor = self.jitter_factor;
        if secs <= 0.0 || factor <= 0.0 {
            return Duration::from_secs_f64(secs.max(0.0));
        }
        let u: f64 = rng.random();
        let jittered = if from_header {
            bounded_poisson(secs, secs * (1.0 + factor), u)
        } else {
            clamped_poisson(secs, factor, u)
        };
        Duration::try_from_secs_f64(jittered).unwrap_or(Duration::MAX)
    }
}

/// `2^try_count × base`, saturating instead of overflowing.
pub(crate) fn exponential(try_count: u32, base: Duration) -> Duration {
    let factor = 2u32.checked_pow(try_count).unwrap_or(u32::MAX);
    base.saturating_mul(factor)
}

/// Parses `Retry-After` (RFC 9110: delay-seconds, here also fractional, or an HTTP-date
/// measured from `now`). `None` when it cannot be read, so the caller backs off
/// exponentially instead; a date in the past means "now".
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let secs = match value.parse::<f64>() {
        Ok(s) => s,
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&Utc) - now).num_milliseconds() as f64 / 1000.0
        }
    };
    if !secs.is_finite() {
        return None;
    }
    Duration::try_from_secs_f64(secs.max(0.0)).ok()
}

/// The exponential CDF with mean `avg`.
fn exponential_cdf(x: f64, avg: f64) -> f64 {
    1.0 - (-x / avg).exp()
}

/// An exponential draw with mean `avg`, restricted to the CDF range `[lo_rv, hi_rv]`;
/// `u` in `[0, 1)` picks the point in that range (inverse-CDF sampling).
fn poisson_between(avg: f64, lo_rv: f64, hi_rv: f64, u: f64) -> f64 {
    let p = lo_rv + (hi_rv - lo_rv) * u;
    -(1.0 - p).max(MIN_LOG_ARG).ln() * avg
}

/// A jittered interval in `[lower, upper]` (used to stretch a `Retry-After`).
pub(crate) fn bounded_poisson(lower: f64, upper: f64, u: f64) -> f64 {
    let avg = (lower + upper) / 2.0;
    poisson_between(
        avg,
        exponential_cdf(lower, avg),
        exponential_cdf(upper, avg),
        u,
    )
}

/// A jittered interval around `avg`, at most `avg × (1+factor)`, with a lower bound
/// chosen so the probability mass either side of the median is equal.
pub(crate) fn clamped_poisson(avg: f64, factor: f64, u: f64) -> f64 {
    if avg <= 0.0 {
        return 0.0;
    }
    let upper_multiple = 1.0 + factor;
    let lower_multiple = if upper_multiple >= 50.0 {
        0.0
    } else {
        let p = upper_multiple.exp2();
        (p / (p - 1.0)).max(MIN_LOG_ARG).log2()
    };
    let upper = avg * upper_multiple;
    let lower = (avg * lower_multiple).max(0.0);
    poisson_between(
        avg,
        exponential_cdf(lower, avg),
        exponential_cdf(upper, avg),
        u,
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            max_retries: 5,
            jitter_factor: jitter,
            extra_codes: vec![500],
            base_delay: Duration::from_secs(1),
        }
    }

    #[test]
    fn retried_statuses() {
        let p = policy(0.2);
        for s in [408, 429, 502, 503, 500] {
            assert!(p.is_retry_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 504] {
            assert!(!p.is_retry_status(s), "{s}");
        }
        assert!(!policy(0.2).is_retry_status(501));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap();
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(" 0.25 ", now),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_after("-4", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("inf", now), None);
        assert_eq!(parse_retry_after("NaN", now), None);
    }

    #[test]
    fn exponential_doubles_and_saturates() {
        let b = Duration::from_secs(1);
        assert_eq!(exponential(1, b), Duration::from_secs(2));
        assert_eq!(exponential(5, b), Duration::from_secs(32));
        assert_eq!(exponential(200, b), b.saturating_mul(u32::MAX));
    }

    #[test]
    fn clamped_jitter_stays_within_bounds() {
        // The lower clamp for factor 0.2 is log2(2^1.2 / (2^1.2 - 1)) ≈ 0.8236.
        for i in 0..=100 {
            let u = f64::from(i) / 100.0 * 0.999_999;
            let d = clamped_poisson(8.0, 0.2, u);
            assert!((8.0 * 0.82..=8.0 * 1.2 + 1e-9).contains(&d), "u={u} d={d}");
        }
        assert_eq!(clamped_poisson(0.0, 0.2, 0.5), 0.0);
    }

    #[test]
    fn retry_after_jitter_only_stretches() {
        for i in 0..=100 {
            let u = f64::from(i) / 100.0 * 0.999_999;
            let d = bounded_poisson(10.0, 12.0, u);
            assert!((10.0 - 1e-9..=12.0 + 1e-9).contains(&d), "u={u} d={d}");
        }
    }

    #[test]
    fn delay_uses_header_or_backoff() {
        let mut rng = rand::rng();
        let p = policy(0.2);
        for _ in 0..200 {
            let d = p.delay(1, Some(Duration::from_secs(5)), &mut rng);
            assert!(
                d >= Duration::from_secs(5) && d <= Duration::from_secs(6),
                "{d:?}"
            );
            let d = p.delay(2, None, &mut rng).as_secs_f64();
            assert!((4.0 * 0.82..=4.8 + 1e-9).contains(&d), "{d}");
        }
        let none = policy(0.0);
        assert_eq!(none.delay(3, None, &mut rng), Duration::from_secs(8));
        assert_eq!(
            none.delay(3, Some(Duration::from_millis(7)), &mut rng),
            Duration::from_millis(7)
        );
        assert_eq!(p.delay(3, Some(Duration::ZERO), &mut rng), Duration::ZERO);
    }
}
