//! What one client may ask of the balancer: connections, request rate, body size.
//!
//! The header read timeout and header size are enforced where requests are read: by
//! `http1.rs` for HTTP/1.1 (408, 431, 414), by `http2.rs` for HTTP/2 (h2's header list size;
//! the preface and idle timeout). The ones here:
//!
//! - [`ConnectionLimit`]: at most `max_connections` client connections at once. Past it the
//!   accept loops stop accepting, so new connections wait in the kernel's accept queue and are
//!   served as soon as one closes, as HAProxy's `maxconn` does: a burst is slowed, not reset.
//! - [`RateLimiter`]: a token bucket per client IP address (`rate_limit_per_second`, refilled
//!   continuously, `rate_limit_burst` deep); an empty bucket answers 429 with `Retry-After`.
//!   The table is bounded: when it holds [`MAX_TRACKED_CLIENTS`] addresses, the buckets that
//!   have refilled (equal to a fresh one) are dropped, and if that is not enough the table
//!   starts over: under a flood of distinct addresses the limit fails open, never the
//!   balancer's memory.
//! - [`CappedBody`]: a request body that stops with an error once it passes `max_body_size`,
//!   so a chunked or HTTP/2 body that never announced its length is cut off mid-stream; the
//!   proxy turns that into 413.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::message::ProxyBody;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

/// Most client addresses the rate limiter remembers at once.
pub const MAX_TRACKED_CLIENTS: usize = 65_536;

/// Client connections open at once, shared by the HTTP and HTTPS listeners.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: AtomicUsize,
    open: AtomicUsize,
    freed: Notify,
    /// Open client connections, exported as a metric.
    pub gauge: Gauge,
}

/// One admitted connection; dropping it frees its place.
pub struct ConnectionPermit(Arc<ConnectionLimit>);

impl ConnectionLimit {
    pub fn new(max: usize, gauge: Gauge) -> Self {
        Self {
            max: AtomicUsize::new(max),
            open: AtomicUsize::new(0),
            freed: Notify::new(),
            gauge,
        }
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// A new maximum (reload). Raising it lets waiting listeners accept at once; lowering it
    /// takes effect as connections close.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
        self.freed.notify_waiters();
    }

    /// A place for one more connection, waiting while `max_connections` are open. Returns
    /// whether it had to wait, with the permit.
    pub async fn admit(self: &Arc<Self>) -> (ConnectionPermit, bool) {
        let mut waited = false;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a place freed in between is not missed.
            freed.as_mut().enable();
            let open = self.open.load(Ordering::Relaxed);
            if open < self.max.load(Ordering::Relaxed) {
                if self
                    .open
                    .compare_exchange(open, open + 1, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    self.gauge.inc();
                    return (ConnectionPermit(Arc::clone(self)), waited);
                }
                continue;
            }
            waited = true;
            freed.await;
        }
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.dec();
        self.0.freed.notify_waiters();
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// The bucket refilled up to `now`.
    fn refilled(self, now: Instant, rate: f64, burst: f64) -> Self {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        Self {
            tokens: (self.tokens + elapsed * rate).min(burst),
            updated: now,
        }
    }
}

/// Token buckets by client address.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// Takes a token from `client`'s bucket, or says how long until one is there.
    /// `rate` must be above 0 (the caller skips the limiter when it is off).
    pub fn check(
        &self,
        client: IpAddr,
        rate: f64,
        burst: u32,
        now: Instant,
    ) -> Result<(), Duration> {
        let burst = f64::from(burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED_CLIENTS && !buckets.contains_key(&client) {
            buckets.retain(|_, b| b.refilled(now, rate, burst).tokens < burst);
            if buckets.len() >= MAX_TRACKED_CLIENTS {
                tracing::warn!(
                    "rate limit: {MAX_TRACKED_CLIENTS} client addresses active at once; starting the table over"
                );
                buckets.clear();
            }
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        *bucket = bucket.refilled(now, rate, burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    /// Client addresses remembered now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A client's request body, cut off with an error once it passes its limit; `exceeded` tells
/// the proxy why the body failed.
pub struct CappedBody {
    inner: ProxyBody,
    remaining: u64,
    pub exceeded: Arc<AtomicBool>,
}

/// The error a [`CappedBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than limits.max_body_size")]
pub struct BodyTooLarge;

impl CappedBody {
    pub fn new(inner: ProxyBody, limit: u64) -> Self {
        Self {
            inner,
            remaining: limit,
            exceeded: Arc::default(),
        }
    }
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                self.exceeded.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(BodyTooLarge.into())));
            }
            self.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn a_client_gets_its_burst_then_the_rate() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limiter.check(ip(1), 10.0, 5, t0).is_ok());
        }
        let wait = limiter.check(ip(1), 10.0, 5, t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(
            limiter.check(ip(2), 10.0, 5, t0).is_ok(),
            "others are not affected"
        );
        let later = t0 + Duration::from_millis(100);
        assert!(
            limiter.check(ip(1), 10.0, 5, later).is_ok(),
            "one token in 100 ms"
        );
        assert!(limiter.check(ip(1), 10.0, 5, later).is_err());
    }

    #[test]
    fn the_table_stays_bounded() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for n in 0..MAX_TRACKED_CLIENTS as u32 {
            let _ = limiter.check(ip(n), 1.0, 2, t0);
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED_CLIENTS);
        // A second later every bucket has refilled: they are dropped to make room.
        let later = t0 + Duration::from_secs(1);
        assert!(limiter.check(ip(u32::MAX), 1.0, 2, later).is_ok());
        assert_eq!(limiter.tracked(), 1);
        // All busy at once: the table starts over rather than grow.
        for n in 0..MAX_TRACKED_CLIENTS as u32 {
            let _ = limiter.check(ip(n), 1.0, 2, later);
        }
        assert!(limiter.check(ip(u32::MAX - 1), 1.0, 2, later).is_ok());
        assert!(limiter.tracked() <= MAX_TRACKED_CLIENTS);
    }

    #[tokio::test]
    async fn connections_past_the_limit_wait_for_a_place() {
        let limit = Arc::new(ConnectionLimit::new(1, Gauge::default()));
        let (first, waited) = limit.admit().await;
        assert!(!waited);
        let second = tokio::spawn({
            let limit = Arc::clone(&limit);
            async move { limit.admit().await.1 }
        });
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "admitted past the limit");
        drop(first);
        assert!(
            second.await.unwrap(),
            "admitted once the first closed, after waiting"
        );
        assert_eq!(limit.gauge.get(), 0);
    }
}
