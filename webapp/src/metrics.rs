//! The webapp's Prometheus metrics, registered on the shared [`Context`] so they appear on the
//! admin listener's `/metrics` beside every other service's.
//!
//! Requests are labelled by route pattern (`/api/posts/{id}`, not `/api/posts/42`) and every
//! static file counts as `static`, and methods other than GET, HEAD and POST as `other`, so
//! the number of series stays fixed whatever visitors ask.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use foobar_service::Context;
use foobar_service::histogram::LatencyHistogram;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

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

/// Handles on the metrics; clones share the counts.
#[derive(Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, LatencyHistogram>,
    db_errors: Family<ErrorLabels, Counter>,
}

impl Metrics {
    pub fn register(ctx: &Context) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::default(),
            db_errors: Family::default(),
        };
        ctx.register(
            "http_requests",
            "HTTP requests answered, by route pattern, method and status code",
            metrics.requests.clone(),
        );
        ctx.register(
            "http_request_duration_seconds",
            "Time to the response head, by route pattern",
            metrics.duration.clone(),
        );
        ctx.register(
            "db_errors",
            "Database operations that failed, by kind (unavailable, timeout, query, schema)",
            metrics.db_errors.clone(),
        );
        metrics
    }

    /// Counts one failed database operation.
    pub fn db_error(&self, kind: &'static str) {
        self.db_errors.get_or_create(&ErrorLabels { kind }).inc();
    }
}

/// Middleware: counts and times every request of the site's router.
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
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
    let response = next.run(request).await;
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
    response
}
