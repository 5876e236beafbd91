//! Retries of idempotent calls (protocol.md §4): transport errors and 408/425/429/500/
//! 502/503/504 only, capped exponential backoff with full jitter, `Retry-After`
//! honoured, and never past the call's deadline.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::events::{self, EventKind, Level};
use crate::error::{QuillError, Result};
use crate::protocol::{MAX_RETRY_AFTER_MS, RETRY_BACKOFF_BASE_MS, RETRY_BACKOFF_CAP_MS};

/// Whether a failed attempt may be repeated. Timeouts are not retried: the timeout
/// covers the whole call, so there is no time left for another attempt.
pub(crate) fn is_retryable(err: &QuillError) -> bool {
    match err {
        QuillError::Connection { .. } => true,
        QuillError::Status { problem } => problem.is_retryable(),
        _ => false,
    }
}

/// The exponential backoff ceiling before attempt `retry` (0-based):
/// `base × 2^retry`, capped.
pub(crate) fn backoff_ceiling(retry: u32) -> Duration {
    let ms = RETRY_BACKOFF_BASE_MS
        .checked_shl(retry.min(32))
        .unwrap_or(u64::MAX)
        .min(RETRY_BACKOFF_CAP_MS);
    Duration::from_millis(ms)
}

/// The wait before retry number `retry`: full jitter (uniform in `0..=ceiling`, from
/// `jitter`), but never shorter than the server's `Retry-After`.
pub(crate) fn backoff_delay(
    retry: u32,
    retry_after_ms: Option<u64>,
    jitter: impl FnOnce(u64) -> u64,
) -> Duration {
    let ceiling = backoff_ceiling(retry).as_millis() as u64;
    let jittered = jitter(ceiling).min(ceiling);
    Duration::from_millis(jittered.max(retry_after_ms.unwrap_or(0)))
}

fn retry_after_ms(err: &QuillError) -> Option<u64> {
    match err {
        QuillError::Status { problem } => problem.retry_after_ms,
        _ => None,
    }
}

/// Runs `attempt` up to `1 + max_retries` times. A retry happens only when the error is
/// retryable, the server's `Retry-After` is at most [`MAX_RETRY_AFTER_MS`], and the wait
/// ends before `deadline`; otherwise the last error is returned as it is. Each retry is
/// reported as an event of the call `path`.
pub(crate) async fn run<T, F, Fut>(
    max_retries: u32,
    deadline: Option<Instant>,
    path: &str,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut retry = 0;
    loop {
        let err = match attempt(retry).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if retry >= max_retries || !is_retryable(&err) {
            return Err(err);
        }
        let retry_after = retry_after_ms(&err);
        if retry_after.is_some_and(|ms| ms > MAX_RETRY_AFTER_MS) {
            return Err(err);
        }
        let delay = backoff_delay(retry, retry_after, |ceiling| fastrand::u64(0..=ceiling));
        if deadline.is_some_and(|d| Instant::now() + delay >= d) {
            // The retry could not finish in time; the real error says more than a timeout.
            return Err(err);
        }
        events::emit(Level::Info, EventKind::RetryScheduled, |e| {
            e.target = path.to_owned();
            e.elapsed = delay;
            e.message = format!(
                "{path}: retry {} of {max_retries} in {} after: {err}",
                retry + 1,
                events::millis(delay)
            );
        });
        tokio::time::sleep(delay).await;
        retry += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Problem;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn status(code: u16, retry_after: Option<&str>) -> QuillError {
        QuillError::Status {
            problem: Problem::from_response(code, None, b"").with_retry_after(retry_after),
        }
    }

    #[test]
    fn backoff_maths() {
        assert_eq!(backoff_ceiling(0), Duration::from_millis(50));
        assert_eq!(backoff_ceiling(1), Duration::from_millis(100));
        assert_eq!(backoff_ceiling(5), Duration::from_millis(1600));
        assert_eq!(backoff_ceiling(6), Duration::from_millis(2000));
        assert_eq!(backoff_ceiling(200), Duration::from_millis(2000));
        // Full jitter: anywhere between zero and the ceiling.
        assert_eq!(backoff_delay(3, None, |_| 0), Duration::ZERO);
        assert_eq!(backoff_delay(3, None, |c| c), Duration::from_millis(400));
        assert_eq!(
            backoff_delay(3, None, |_| u64::MAX),
            Duration::from_millis(400)
        );
        // Retry-After is a floor.
        assert_eq!(
            backoff_delay(0, Some(1500), |c| c),
            Duration::from_millis(1500)
        );
        for _ in 0..100 {
            let d = backoff_delay(2, None, |c| fastrand::u64(0..=c));
            assert!(d <= Duration::from_millis(200));
        }
    }

    #[test]
    fn what_is_retryable() {
        for code in [408, 425, 429, 500, 502, 503, 504] {
            assert!(is_retryable(&status(code, None)), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 501] {
            assert!(!is_retryable(&status(code, None)), "{code}");
        }
        assert!(is_retryable(&QuillError::Connection {
            reason: String::new()
        }));
        assert!(!is_retryable(&QuillError::Timeout {
            reason: String::new()
        }));
        assert!(!is_retryable(&QuillError::Stream {
            reason: String::new()
        }));
    }

    async fn count_attempts(
        max: u32,
        deadline: Option<Instant>,
        err: QuillError,
    ) -> (u32, Result<()>) {
        let n = AtomicU32::new(0);
        let r = run(max, deadline, "s.v1.S/M", |_| {
            n.fetch_add(1, Ordering::SeqCst);
            let e = err.clone();
            async move { Err::<(), _>(e) }
        })
        .await;
        (n.load(Ordering::SeqCst), r)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn retry_loop() {
        let (n, r) = count_attempts(3, None, status(503, None)).await;
        assert_eq!(n, 4);
        assert!(matches!(r, Err(QuillError::Status { .. })));
        let (n, _) = count_attempts(3, None, status(400, None)).await;
        assert_eq!(n, 1);
        let (n, _) = count_attempts(0, None, status(503, None)).await;
        assert_eq!(n, 1);
        // Retry-After beyond the cap, or beyond the deadline: no retry.
        let (n, _) = count_attempts(3, None, status(429, Some("3600"))).await;
        assert_eq!(n, 1);
        let deadline = Some(Instant::now() + Duration::from_secs(1));
        let (n, _) = count_attempts(3, deadline, status(429, Some("2"))).await;
        assert_eq!(n, 1);
        // Retry-After is waited for.
        let start = Instant::now();
        let (n, _) = count_attempts(1, None, status(429, Some("0.2"))).await;
        assert_eq!(n, 2);
        assert!(start.elapsed() >= Duration::from_millis(200));
        // Success after a failure.
        let n = AtomicU32::new(0);
        let r = run(2, None, "s.v1.S/M", |retry| {
            n.fetch_add(1, Ordering::SeqCst);
            async move {
                if retry == 0 {
                    Err(QuillError::Connection {
                        reason: "refused".into(),
                    })
                } else {
                    Ok(retry)
                }
            }
        })
        .await;
        assert_eq!(r, Ok(1));
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }
}
