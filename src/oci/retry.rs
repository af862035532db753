//! When and how long to wait before trying a registry or download request again.
//!
//! Pure policy: which failures are transient (connect errors, a body cut short, HTTP 5xx,
//! 408, 429) and the delay before the next attempt (exponential backoff, or the server's
//! `Retry-After` when it sent one). The transfer code in `pull` applies it.

use std::time::Duration;

/// Bounded exponential backoff. The defaults suit real registries; tests shrink `base_delay`
/// through `SPARKGAP_RETRY_BASE_MS` so fault-injection runs stay fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts per request, including the first (at least 1).
    pub attempts: u32,
    /// Delay before the second attempt; doubles each time.
    pub base_delay: Duration,
    /// Cap on any one backoff delay.
    pub max_delay: Duration,
    /// Cap on a server's `Retry-After` (a registry asking for an hour is not honoured as is).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The default, with `SPARKGAP_RETRY_BASE_MS` and `SPARKGAP_RETRY_ATTEMPTS` applied when
    /// set to valid numbers (internal knobs for tests and slow links; not documented CLI).
    pub fn from_env() -> RetryPolicy {
        let mut p = RetryPolicy::default();
        let num = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(ms) = num("SPARKGAP_RETRY_BASE_MS") {
            p.base_delay = Duration::from_millis(ms);
        }
        if let Some(n) = num("SPARKGAP_RETRY_ATTEMPTS") {
            p.attempts = n.clamp(1, 100) as u32;
        }
        p
    }

    /// Delay after failed attempt number `attempt` (1-based). `retry_after` from the server
    /// wins over backoff, capped by `max_retry_after`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.max_retry_after);
        }
        let exp = attempt.saturating_sub(1).min(20);
        self.base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay)
    }

    /// Whether another attempt follows failed attempt number `attempt`.
    pub fn again(&self, attempt: u32) -> bool {
        attempt < self.attempts.max(1)
    }
}

/// HTTP statuses worth another attempt: server errors, request timeout, rate limiting.
pub fn status_is_transient(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

/// `Retry-After` in its delay-seconds form. The HTTP-date form is rare from registries and
/// is treated as absent (backoff applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(700),
            max_retry_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = policy();
        let ms: Vec<u128> = (1..=5).map(|a| p.delay(a, None).as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 700, 700]);
        assert_eq!(p.delay(u32::MAX, None), Duration::from_millis(700));
    }

    #[test]
    fn retry_after_wins_and_is_capped() {
        let p = policy();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn attempts_are_bounded() {
        let p = policy();
        assert!(p.again(1));
        assert!(p.again(4));
        assert!(!p.again(5));
        let once = RetryPolicy { attempts: 0, ..p };
        assert!(!once.again(1));
    }

    #[test]
    fn transient_statuses() {
        for s in [500, 502, 503, 504, 408, 429] {
            assert!(status_is_transient(s), "{s}");
        }
        for s in [400, 401, 403, 404, 416] {
            assert!(!status_is_transient(s), "{s}");
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
