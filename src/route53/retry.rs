//! Pacing and retries around any `Api`: a token bucket (Route53 allows 5 requests per second
//! per account) and jittered exponential backoff for throttling, prior-request-not-complete,
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

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct Paced<A> {
    inner: A,
    rate: f64,
    bucket: Mutex<Bucket>,
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
            rate: requests_per_second,
            bucket: Mutex::new(Bucket {
                tokens: requests_per_second.max(1.0),
                last: Instant::now(),
            }),
            backoff,
            metrics,
        }
    }

    /// Waits for a request token.
    async fn token(&self) {
        let mut bucket = self.bucket.lock().await;
        loop {
            let now = Instant::now();
            let refill = now.duration_since(bucket.last).as_secs_f64() * self.rate;
            bucket.tokens = (bucket.tokens + refill).min(self.rate.max(1.0));
            bucket.last = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                return;
            }
            let wait = (1.0 - bucket.tokens) / self.rate;
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
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
    async fn requests_are_paced_by_the_token_bucket() {
        let api = paced(0, ApiError::Other(String::new()), 5.0);
        let started = Instant::now();
        for _ in 0..15 {
            api.list_page("Z", None).await.expect("ok");
        }
        // A full bucket of 5, then 10 more at 5 per second.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1_950),
            "15 calls at 5/s took only {took:?}"
        );
        assert!(took <= Duration::from_millis(2_100), "{took:?}");
    }
}
