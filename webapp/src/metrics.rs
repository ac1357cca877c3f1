//! The webapp's Prometheus metrics, registered on the shared [`Context`] so they appear on the
//! admin listener's `/metrics` beside every other service's.
//!
//! Requests are labelled by route pattern (`/api/posts/{id}`, not `/api/posts/42`) and every
//! static file counts as `static`, and methods other than GET, HEAD and POST as `other`, so
//! the number of series stays fixed whatever visitors ask. Database URLs are labelled
//! `host:port` (never the password); they are fixed at start.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use foobar_service::Context;
use foobar_service::histogram::LatencyHistogram;
use futures_util::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

/// The router's patterns (lib.rs), so labels are static strings: no allocation per request.
const ROUTES: [&str; 7] = [
    "/",
    "/guestbook",
    "/api/posts",
    "/api/posts/{id}",
    "/api/{*rest}",
    "/healthz",
    "/readyz",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UrlLabels {
    url: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    url: String,
    outcome: &'static str,
}

/// How one try of a request's database work through one URL ended
/// (`foobar_webapp_db_attempts_total{url, outcome}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The work ran and answered (an SQL error included: the router answered).
    Answered,
    /// Every pooled connection of the URL stayed in use for `acquire_timeout`: the pool is
    /// busy, the router is not at fault, and the URL stays in use.
    Busy,
    /// No connection could be opened or checked within `connect_timeout` (refused,
    /// unreachable, a frozen router that accepts TCP and says nothing).
    Unreachable,
    /// The work got no answer within its time limit: the connection is closed, not reused.
    Timeout,
    /// The connection died under the work.
    Broken,
}

impl Attempt {
    const ALL: [Attempt; 5] = [
        Attempt::Answered,
        Attempt::Busy,
        Attempt::Unreachable,
        Attempt::Timeout,
        Attempt::Broken,
    ];

    fn label(self) -> &'static str {
        match self {
            Attempt::Answered => "answered",
            Attempt::Busy => "busy",
            Attempt::Unreachable => "unreachable",
            Attempt::Timeout => "timeout",
            Attempt::Broken => "broken",
        }
    }
}

/// Handles on the metrics; clones share the counts.
#[derive(Clone)]
pub struct Metrics {
    http: Arc<HttpMetrics>,
    db: DatabaseMetrics,
}

foobar_service::metrics! {
    /// The two families every request updates, behind one `Arc` so a request clones one
    /// pointer.
    #[derive(Default)]
    struct HttpMetrics {
        /// HTTP requests answered, by route pattern, method and status code
        requests: Family<RequestLabels, Counter> = "http_requests",
        /// Time to the response head, by route pattern
        duration: Family<RouteLabels, LatencyHistogram> = "http_request_duration_seconds",
    }
}

foobar_service::metrics! {
    /// What requests' database work did, by database URL.
    #[derive(Clone, Default)]
    struct DatabaseMetrics {
        /// Requests whose database work failed, by kind (busy, unavailable, timeout, query,
        /// schema)
        errors: Family<ErrorLabels, Counter> = "db_errors",
        /// Requests whose database work went through each database URL (host:port)
        served: Family<UrlLabels, Counter> = "db_requests",
        /// Failures to connect, or to get an answer, through each database URL (refused,
        /// unreachable, no answer in time, connection lost)
        connect_failures: Family<UrlLabels, Counter> = "db_connect_failures",
        /// 1 while requests use a database URL, 0 while they skip it because connecting
        /// failed
        url_in_use: Family<UrlLabels, Gauge> = "db_url_in_use",
        /// Tries of a request's database work through each database URL, by outcome
        /// (answered, busy, unreachable, timeout, broken); a busy pool is not a failed
        /// router
        attempts: Family<AttemptLabels, Counter> = "db_attempts",
    }
}

/// The metrics of one database URL, created once at start so a request only increments.
#[derive(Clone)]
pub struct UrlMetrics {
    /// Requests (and migration runs) whose database work went through this URL.
    pub served: Counter,
    /// Times connecting through this URL, or getting an answer through it, failed.
    pub connect_failures: Counter,
    /// 1 while requests use this URL, 0 while they skip it.
    pub in_use: Gauge,
    /// Tries through this URL, by [`Attempt`], in `Attempt::ALL`'s order.
    attempts: [Counter; 5],
}

impl UrlMetrics {
    /// Counts one try through this URL.
    pub fn attempt(&self, outcome: Attempt) {
        let index = Attempt::ALL
            .iter()
            .position(|a| *a == outcome)
            .expect("every outcome is in ALL");
        self.attempts[index].inc();
    }
}

impl Metrics {
    pub fn register(ctx: &Context) -> Self {
        Self {
            http: Arc::new(HttpMetrics::register(ctx)),
            db: DatabaseMetrics::register(ctx),
        }
    }

    /// The metrics of the database URL named `url` (`host:port`), in use to begin with.
    pub fn database_url(&self, url: &str) -> UrlMetrics {
        let labels = UrlLabels {
            url: url.to_owned(),
        };
        let metrics = UrlMetrics {
            served: self.db.served.get_or_create(&labels).clone(),
            connect_failures: self.db.connect_failures.get_or_create(&labels).clone(),
            in_use: self.db.url_in_use.get_or_create(&labels).clone(),
            attempts: Attempt::ALL.map(|outcome| {
                self.db
                    .attempts
                    .get_or_create(&AttemptLabels {
                        url: url.to_owned(),
                        outcome: outcome.label(),
                    })
                    .clone()
            }),
        };
        metrics.in_use.set(1);
        metrics
    }

    /// Counts one failed database operation.
    pub fn db_error(&self, kind: &'static str) {
        self.db.errors.get_or_create(&ErrorLabels { kind }).inc();
    }
}

impl Metrics {
    /// The layer that counts and times every request of the site's router.
    pub fn layer(&self) -> Track {
        Track(self.http.clone())
    }
}

/// Layer: counts and times every request of the site's router. A tower layer rather than
/// `axum::middleware::from_fn`, which for every request boxes a clone of the inner service
/// as `Next` and boxes two futures; here one future is boxed. For static files this
/// bookkeeping cost a few percent of the CPU.
#[derive(Clone)]
pub struct Track(Arc<HttpMetrics>);

impl<S> tower::Layer<S> for Track {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// A route's service, counted and timed.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    metrics: Arc<HttpMetrics>,
}

impl<S> tower::Service<Request> for Tracked<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .and_then(|matched| ROUTES.iter().find(|route| **route == matched.as_str()))
            .map_or("static", |route| *route);
        let method = match *request.method() {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            _ => "other",
        };
        let metrics = self.metrics.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let Ok(response) = response.await;
            metrics
                .duration
                .get_or_create(&RouteLabels { route })
                .observe(started.elapsed());
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    route,
                    method,
                    code: response.status().as_u16(),
                })
                .inc();
            Ok(response)
        })
    }
}
