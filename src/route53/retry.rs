//! Pacing and retries around any `Api`: a sliding window that never lets more than the rate
//! through in any window (Route53 allows 5 requests per second per account, measured over any
//! second: a token bucket's burst would be throttled) and jittered exponential backoff for throttling, prior-request-not-complete,
//! server and transport errors. Every call is counted by operation and result.

use std::time::Duration;

use rand::Rng;
use tokio::{sync::Mutex, time::Instant};

use super::metrics::Route53Metrics;
use super::{
    Change,
    api::{Api, ApiError, Page, PageStart},
};

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            attempts: 8,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// Full jitter: uniform in [0, min(cap, base * 2^attempt)].
    fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.base.saturating_mul(1 << attempt.min(16)).min(self.cap);
        ceiling.mul_f64(rand::rng().random_range(0.0..=1.0))
    }
}

/// The start times of the last calls, at most `calls` within any `window`.
struct Window {
    calls: usize,
    window: Duration,
    sent: std::collections::VecDeque<Instant>,
}

impl Window {
    /// `rate` calls per second: at most floor(rate) in any window of a second (one per 1/rate
    /// seconds below 1), the window a tenth longer than that, so that the server, which counts
    /// when requests arrive, never sees more.
    fn new(rate: f64) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        let (calls, window) = if rate >= 1.0 {
            (rate.floor() as usize, Duration::from_secs(1))
        } else {
            (1, Duration::from_secs_f64(1.0 / rate))
        };
        let window = window.mul_f64(MARGIN);
        Self {
            calls,
            window,
            sent: std::collections::VecDeque::new(),
        }
    }

    /// When the next call may start (`now` if at once); the call is counted from then.
    fn admit(&mut self, now: Instant) -> Instant {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.sent.pop_front();
        }
        let at = if self.sent.len() < self.calls {
            now
        } else {
            // The window is full: wait until its oldest call leaves it.
            let oldest = self.sent.pop_front().unwrap_or(now);
            (oldest + self.window).max(now)
        };
        self.sent.push_back(at);
        at
    }
}

/// How much longer than a second (or 1/rate) the pacing window is.
const MARGIN: f64 = 1.1;

pub struct Paced<A> {
    inner: A,
    window: Mutex<Window>,
    backoff: Backoff,
    metrics: Route53Metrics,
}

impl<A: Api> Paced<A> {
    pub fn new(
        inner: A,
        requests_per_second: f64,
        backoff: Backoff,
        metrics: Route53Metrics,
    ) -> Self {
        Self {
            inner,
            window: Mutex::new(Window::new(requests_per_second)),
            backoff,
            metrics,
        }
    }

    /// Waits until a call fits the window.
    async fn token(&self) {
        let at = self.window.lock().await.admit(Instant::now());
        tokio::time::sleep_until(at).await;
    }

    async fn call<T, F, Fut>(&self, operation: &'static str, mut f: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut attempt = 0;
        loop {
            self.token().await;
            match f().await {
                Ok(v) => {
                    self.metrics.call(operation, "ok");
                    return Ok(v);
                }
                Err(e) => {
                    self.metrics.call(operation, e.label());
                    attempt += 1;
                    if !e.is_transient() || attempt >= self.backoff.attempts {
                        return Err(e);
                    }
                    let delay = self.backoff.delay(attempt);
                    tracing::warn!(operation, attempt, error = %e, ?delay, "Route53 call failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl<A: Api> Api for Paced<A> {
    async fn list_page(&self, zone: &str, start: Option<&PageStart>) -> Result<Page, ApiError> {
        self.call("ListResourceRecordSets", || {
            self.inner.list_page(zone, start)
        })
        .await
    }

    async fn change(
        &self,
        zone: &str,
        changes: &[Change],
        comment: &str,
    ) -> Result<String, ApiError> {
        self.call("ChangeResourceRecordSets", || {
            self.inner.change(zone, changes, comment)
        })
        .await
    }

    async fn is_insync(&self, change_id: &str) -> Result<bool, ApiError> {
        self.call("GetChange", || self.inner.is_insync(change_id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Fails the first `failures` calls with `error`, then succeeds.
    struct Flaky {
        calls: AtomicUsize,
        failures: usize,
        error: ApiError,
    }

    #[async_trait::async_trait]
    impl Api for Flaky {
        async fn list_page(&self, _: &str, _: Option<&PageStart>) -> Result<Page, ApiError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.failures {
                Err(self.error.clone())
            } else {
                Ok(Page::default())
            }
        }
        async fn change(&self, _: &str, _: &[Change], _: &str) -> Result<String, ApiError> {
            Ok(String::new())
        }
        async fn is_insync(&self, _: &str) -> Result<bool, ApiError> {
            Ok(true)
        }
    }

    fn paced(failures: usize, error: ApiError, rate: f64) -> Paced<Flaky> {
        Paced::new(
            Flaky {
                calls: AtomicUsize::new(0),
                failures,
                error,
            },
            rate,
            Backoff::default(),
            Route53Metrics::new(&crate::metrics::Registry::new()),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_and_permanent_ones_are_not() {
        let api = paced(3, ApiError::Throttled("slow down".into()), 5.0);
        api.list_page("Z", None)
            .await
            .expect("succeeds after retries");
        assert_eq!(api.inner.calls.load(Ordering::SeqCst), 4);

        let api = paced(3, ApiError::InvalidChangeBatch("no".into()), 5.0);
        assert!(api.list_page("Z", None).await.is_err());
        assert_eq!(
            api.inner.calls.load(Ordering::SeqCst),
            1,
            "a refused batch is not retried blindly"
        );

        let api = paced(100, ApiError::Server("500".into()), 5.0);
        assert!(api.list_page("Z", None).await.is_err());
        assert_eq!(
            api.inner.calls.load(Ordering::SeqCst),
            Backoff::default().attempts as usize
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_calls_than_the_rate_in_any_second() {
        let api = std::sync::Arc::new(paced(0, ApiError::Other(String::new()), 5.0));
        let started = Instant::now();
        // Callers at once, as a cycle's batches and the propagation checks are.
        let mut tasks = Vec::new();
        for _ in 0..23 {
            let api = api.clone();
            tasks.push(tokio::spawn(async move {
                api.list_page("Z", None).await.expect("ok");
                Instant::now()
            }));
        }
        let mut at = Vec::new();
        for t in tasks {
            at.push(t.await.expect("join"));
        }
        at.sort();
        for (i, t) in at.iter().enumerate() {
            let in_window = at[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
                .count();
            assert!(in_window <= 5, "{in_window} calls within one second");
        }
        // 5 at once, then 5 more each 1.1 s: the 23rd after four windows.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(4_400), "{took:?}");
        assert!(took < Duration::from_millis(4_500), "{took:?}");
    }

    #[test]
    fn a_rate_below_one_spaces_calls_out() {
        let mut w = Window::new(0.5);
        let t0 = Instant::now();
        assert_eq!(w.admit(t0), t0);
        assert_eq!(w.admit(t0), t0 + Duration::from_millis(2_200));
        assert_eq!(
            w.admit(t0 + Duration::from_secs(10)),
            t0 + Duration::from_secs(10)
        );
    }
}
