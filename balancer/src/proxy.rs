//! Forwarding one request to a backend, and what makes that safe.
//!
//! The rules, in the order they are applied:
//! - The request's host chooses the pool: a `[[site]]`'s when one lists it, else `[pool]`
//!   (`sites.rs`).
//! - A backend is chosen by that pool (up backends only; backups only when no primary is up).
//! - If connecting to it fails, nothing was sent: the backend is marked against (passive
//!   health) and the request goes to another backend.
//! - A connection kept alive from an earlier request is checked before it is used, and one
//!   the backend has closed is dropped; if writing the request fails before any byte of it
//!   left, nothing was sent, so it too goes to another backend (`upstream::SendError`).
//! - If the exchange fails after the request was sent (the connection reset or closed before
//!   a response), only a replayable request is tried again elsewhere (`replay.rs`): an
//!   idempotent one without a body, or one with an `Idempotency-Key` and a body of at most
//!   64 KiB, read ahead before sending so it can be sent again. Any other request that
//!   reached a backend (a POST without the key) is never sent twice: the client gets 502 and
//!   decides, even when no other backend is up (503 would say it was not processed).
//! - No response head within `timeouts.response`: 504, never retried (the backend may still
//!   be working on it).
//! - No backend left: 503 with a short page and `Retry-After`.
//!
//! Before any of that, the client's limits (`limits.rs`): its rate (429) and its body's size
//! (413, announced or found while streaming). The pools and the config are read once per
//! request from `ArcSwap`s, so a reload never changes a request half-way.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body;

use crate::config::Config;
use crate::forwarding::{Forwarding, Peer, RequestIds, prepare_request_headers};
use crate::limits::{CappedBody, ConnectionLimit, RateLimiter};
use crate::message::{BoxError, ProxyBody, RawHead, X_REQUEST_ID, error_page};
use crate::metrics::Metrics;
use crate::pool::{self, Backend, InFlight, Tracked};
use crate::replay;
use crate::sites::Pools;
use crate::upstream::{self, SendError};

/// The proxy: the pools and config in force, the limits, and what it reports.
pub struct Proxy {
    pub pools: ArcSwap<Pools>,
    pub config: ArcSwap<Config>,
    pub connections: Arc<ConnectionLimit>,
    rate: RateLimiter,
    /// This balancer's name in `Via`.
    pub via: HeaderValue,
    pub metrics: Metrics,
    request_ids: RequestIds,
    /// Held while the pools are rebuilt (reload, DNS), so two rebuilds never interleave.
    pub membership: tokio::sync::Mutex<()>,
}

impl Proxy {
    pub fn new(pools: Pools, config: Config, name: &str, metrics: Metrics) -> Self {
        let via = HeaderValue::from_str(&format!("1.1 {name}"))
            .unwrap_or(HeaderValue::from_static("1.1 foobar-balancer"));
        let connections = Arc::new(ConnectionLimit::new(
            config.limits.max_connections,
            metrics.client_connections.clone(),
        ));
        Self {
            pools: ArcSwap::from_pointee(pools),
            config: ArcSwap::from_pointee(config),
            connections,
            rate: RateLimiter::default(),
            via,
            metrics,
            request_ids: RequestIds::new(),
            membership: tokio::sync::Mutex::new(()),
        }
    }

    /// Answers one client request: forwarded to a backend, or an error page from here.
    pub async fn handle(&self, request: Request<ProxyBody>, peer: &Peer) -> Response<ProxyBody> {
        let client = peer.addr;
        let started = Instant::now();
        let config = self.config.load_full();
        let limits = &config.limits;
        if limits.rate_limit_per_second > 0.0 {
            let allowed = self.rate.check(
                client.ip(),
                limits.rate_limit_per_second,
                limits.rate_limit_burst,
                started,
            );
            if let Err(wait) = allowed {
                self.metrics.reject("rate_limit");
                let mut response = error_page(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many requests from your address. Please slow down.",
                );
                let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                return response;
            }
        }
        let (mut parts, body) = request.into_parts();
        if body.size_hint().lower() > limits.max_body_size {
            self.metrics.reject("body_too_large");
            return body_too_large();
        }
        let pool = Arc::clone(self.pools.load().for_request(&parts.uri, &parts.headers));
        let request_id = match parts.headers.get(X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => self.request_ids.next(),
        };
        prepare_request_headers(&mut parts.headers, &parts.uri);
        let parts = parts; // from here on only read, and the forwarding headers borrow it
        let forwarding = Forwarding::of(&parts.headers, peer, &self.via, &request_id);
        // Set when the body passed `max_body_size` while it streamed; no body, no limit.
        let mut too_large = None;
        let (body, replay) = if body.is_end_stream() {
            (body, replay::without_body(&parts))
        } else {
            let body = CappedBody::new(body, limits.max_body_size);
            let exceeded = too_large.insert(Arc::clone(&body.exceeded));
            match replay::prepare(&parts, body).await {
                Ok(prepared) => prepared,
                Err(_) if exceeded.load(Ordering::Relaxed) => {
                    self.metrics.reject("body_too_large");
                    return body_too_large();
                }
                Err(e) => {
                    tracing::debug!(%client, "request body cut off while read ahead: {e}");
                    return body_cut_off();
                }
            }
        };
        let too_large = || {
            too_large
                .as_ref()
                .is_some_and(|t| t.load(Ordering::Relaxed))
        };
        // The body for the next attempt: the client's, until it has been sent.
        let mut body = Some(body);

        // Backends this request has been tried on; filled only when it is retried, so the
        // usual request allocates nothing for it.
        let mut tried = Vec::new();
        let mut attempt: Option<usize> = None;
        // A backend got the request and failed it (no answer, or a malformed one): with no
        // backend left to try, that is 502, not 503 (none could be reached).
        let mut reached = false;
        let response = loop {
            if let Some(failed) = attempt.take() {
                tried.push(failed);
            }
            // A request that may have reached a backend and cannot be sent again is answered
            // 502 whether or not another backend is up: 503 would say it was not processed.
            let outgoing = match body.take() {
                Some(body) => body,
                None => match &replay {
                    Some(replay) => replay.body(),
                    None => {
                        break error_page(
                            StatusCode::BAD_GATEWAY,
                            "The web server failed while handling this request.",
                        );
                    }
                },
            };
            let Some(index) = pool.pick(&tried) else {
                if reached {
                    break error_page(
                        StatusCode::BAD_GATEWAY,
                        "The web server failed while handling this request.",
                    );
                }
                break error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "No web server is available right now. Please try again in a moment.",
                );
            };
            if !tried.is_empty() {
                self.metrics.retries.inc();
            }
            attempt = Some(index);
            let backend = Arc::clone(&pool.backends[index]);
            let in_flight = InFlight::new(Arc::clone(&backend));
            let connection = match pool::checkout(&backend, config.timeouts.connect).await {
                Ok(connection) => connection,
                Err(e) => {
                    self.passive_failure(&backend, &config, &format!("connect: {e}"));
                    body = Some(outgoing);
                    continue;
                }
            };
            let deadline = tokio::time::Instant::now() + config.timeouts.response;
            let sent = connection
                .send(&parts, &forwarding, outgoing, deadline)
                .await;
            match sent {
                Err(SendError::TimedOut) => {
                    self.passive_failure(&backend, &config, "no response in time");
                    break error_page(
                        StatusCode::GATEWAY_TIMEOUT,
                        "The web server took too long to answer.",
                    );
                }
                Ok(response) => {
                    backend.requests.fetch_add(1, Ordering::Relaxed);
                    if response.status().is_server_error() {
                        // An answer: the web server is alive. A 503 is often its database
                        // being down (every web server then says the same), and taking it
                        // out would turn the reads it can still serve into our 503 page.
                        // Whether it is ready is the active check's call (/readyz).
                        backend.errors.fetch_add(1, Ordering::Relaxed);
                    } else {
                        // Traffic resets the failure count; only checks bring a backend up.
                        backend.record_success(u32::MAX);
                    }
                    backend.responses.count(response.status());
                    break self.client_response(response, in_flight, request_id);
                }
                // The client's fault, not the backend's: the client's body failed on the way.
                Err(SendError::Body(_)) if too_large() => {
                    self.metrics.reject("body_too_large");
                    break body_too_large();
                }
                Err(SendError::Body(e)) => {
                    tracing::debug!(%client, "request body cut off while sent: {e}");
                    break body_cut_off();
                }
                Err(SendError::Unsent(error, unsent)) => {
                    self.passive_failure(&backend, &config, &format!("write: {error}"));
                    body = Some(unsent); // never written: safe anywhere
                }
                Err(SendError::Sent(error)) => {
                    // The loop sends a replayable request again, or answers 502.
                    reached = true;
                    self.passive_failure(&backend, &config, &format!("exchange: {error}"));
                }
            }
        };
        self.metrics.latency.observe(started.elapsed());
        response
    }

    fn passive_failure(&self, backend: &Backend, config: &Config, why: &str) {
        backend.errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(pool = %backend.pool, backend = %backend.name, "request failed: {why}");
        let fall = config.health_of(&backend.pool).fall;
        if backend.record_failure(fall) {
            tracing::warn!(pool = %backend.pool, backend = %backend.name, "down: {fall} failures in a row under traffic (last: {why})");
            self.metrics.set_up(&backend.pool, &backend.name, false);
        }
    }

    fn client_response(
        &self,
        response: Response<upstream::Incoming>,
        in_flight: InFlight,
        request_id: HeaderValue,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = response.into_parts();
        // The backend's fields, hop-by-hop ones left out, are in its raw head; this hop adds
        // its own there too (see `message::RawHead`).
        if let Some(head) = parts.extensions.get_mut::<RawHead>() {
            head.via = Some(self.via.clone());
            head.request_id = Some(request_id);
        }
        let body = Tracked::new(body, in_flight);
        Response::from_parts(parts, body.map_err(BoxError::from).boxed())
    }
}

fn body_cut_off() -> Response<ProxyBody> {
    error_page(
        StatusCode::BAD_REQUEST,
        "The request body did not arrive in full.",
    )
}

fn body_too_large() -> Response<ProxyBody> {
    error_page(
        StatusCode::PAYLOAD_TOO_LARGE,
        "The request body is larger than this site accepts.",
    )
}
