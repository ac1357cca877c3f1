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

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};

use crate::config::Config;
use crate::framing;
use crate::limits::{CappedBody, ConnectionLimit, RateLimiter};
use crate::metrics::Metrics;
use crate::pool::Backend;
use crate::replay;
use crate::sites::Pools;
use crate::upstream::{self, Connection, SendError};

/// An error from either side: a connection's, or a limit's (`limits::BodyTooLarge`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What flows to and from backends and clients.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Most idle keep-alive connections kept per backend.
const MAX_IDLE_PER_BACKEND: usize = 64;

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
            let in_flight = InFlight(Arc::clone(&backend));
            let connection = match checkout(&backend, config.timeouts.connect).await {
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
        // its own there too (see `upstream::RawHead`).
        if let Some(head) = parts.extensions.get_mut::<upstream::RawHead>() {
            head.via = Some(self.via.clone());
            head.request_id = Some(request_id);
        }
        let body = Tracked {
            inner: body,
            guard: Some(ReturnOnEnd {
                in_flight,
                connection: None,
            }),
        };
        Response::from_parts(parts, body.map_err(BoxError::from).boxed())
    }
}

/// A kept-alive connection to `backend`, or a new one.
async fn checkout(backend: &Backend, timeout: Duration) -> Result<Connection, String> {
    loop {
        let cached = backend.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match cached {
            Some(connection) if connection.is_reusable() => return Ok(connection),
            Some(_) => continue, // closed by the backend since: drop it
            None => break,
        }
    }
    tokio::time::timeout(timeout, Connection::connect(backend.addr))
        .await
        .map_err(|_| format!("no connection within {timeout:?}"))?
        .map_err(|e| e.to_string())
}

fn checkin(backend: &Backend, connection: Connection) {
    let mut idle = backend.idle.lock().unwrap_or_else(|e| e.into_inner());
    if idle.len() < MAX_IDLE_PER_BACKEND {
        idle.push(connection);
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

/// A request counted in a backend's `in_flight` (by `Pool::pick`), from the pick to the end
/// of its response body; dropping it releases the count. It holds the backend, so a backend
/// that leaves the pool lives until its last request is answered.
pub struct InFlight(Arc<Backend>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// Holds the request's place in its backend's `in_flight` until the response body ends or is
/// dropped; a body read to its end gives its connection back to the backend's idle list, a
/// body dropped half-read takes its connection with it.
struct ReturnOnEnd {
    in_flight: InFlight,
    connection: Option<Connection>,
}

impl Drop for ReturnOnEnd {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            checkin(&self.in_flight.0, connection);
        }
    }
}

/// A backend's response body on its way to the client.
struct Tracked {
    inner: upstream::Incoming,
    guard: Option<ReturnOnEnd>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // A body that was empty from the start (204, 304, HEAD) is complete even if the
        // client side never polled it.
        if let Some(guard) = self.guard.as_mut() {
            guard.connection = self.inner.take_reusable();
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            if let Some(mut guard) = self.guard.take() {
                guard.connection = self.inner.take_reusable();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const HOPS: usize = 7;
/// Headers meant for one hop only (RFC 9110 7.6.1); any the Connection header names are too.
/// As text, for a backend's raw response head (`is_hop_by_hop`)...
const HOP_BY_HOP_NAMES: [&str; HOPS] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
/// ...and as `HeaderName`s, for a client's request in a `HeaderMap` (`strip_hop_by_hop`).
const HOP_BY_HOP: [HeaderName; HOPS] = {
    let n = HOP_BY_HOP_NAMES;
    [
        HeaderName::from_static(n[0]),
        HeaderName::from_static(n[1]),
        HeaderName::from_static(n[2]),
        HeaderName::from_static(n[3]),
        HeaderName::from_static(n[4]),
        HeaderName::from_static(n[5]),
        HeaderName::from_static(n[6]),
    ]
};

/// Whether a field name (any case) is one of `HOP_BY_HOP`. Compared as bytes: a
/// `HeaderName`'s text costs a lookup for each standard one.
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP_NAMES
        .iter()
        .any(|hop| name.eq_ignore_ascii_case(hop.as_bytes()))
}

/// Whether a field is one the request was routed by (`Host`), which `Connection` cannot make
/// hop-by-hop: the backend must get the host the balancer chose it for.
fn is_routing(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"host")
}

/// Removes the hop-by-hop headers from a client's request (a backend's response loses them
/// as it is parsed, `upstream::parse_head`). One pass over the names finds which are present,
/// usually none, so only those are looked up to be removed.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; HOPS];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[i] = true;
        }
    }
    if present == [false; HOPS] {
        return;
    }
    if present[0] {
        // The names `Connection` lists but those removed anyway: usually none, and an empty
        // Vec allocates nothing.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| framing::connection_tokens(v.as_bytes()))
            .filter(|token| !is_hop_by_hop(token) && !is_routing(token))
            .filter_map(|name| HeaderName::from_bytes(name).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (name, present) in HOP_BY_HOP.into_iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
}

/// The client end of a connection, and the parts of the forwarding headers that are the same
/// for every request on it: made once per connection.
pub struct Peer {
    pub addr: SocketAddr,
    pub scheme: &'static str,
    /// The address as `X-Forwarded-For` lists it.
    ip: String,
    /// `for=...;proto=...`: the start of this hop's `Forwarded` element.
    forwarded: String,
}

impl Peer {
    pub fn new(addr: SocketAddr, scheme: &'static str) -> Self {
        let ip = addr.ip();
        // RFC 7239: IPv6 addresses are quoted and bracketed.
        let forwarded = match ip {
            std::net::IpAddr::V4(ip) => format!("for={ip};proto={scheme}"),
            std::net::IpAddr::V6(ip) => format!("for=\"[{ip}]\";proto={scheme}"),
        };
        Self {
            addr,
            scheme,
            ip: ip.to_string(),
            forwarded,
        }
    }
}

/// Readies the client's headers for a backend: the hop-by-hop ones removed, and `Host` set
/// to the target's authority when it has one (HTTP/2's `:authority`, an absolute-form
/// target), which is what `sites::request_host` routed by: the backend gets the host it was
/// chosen for, never a different `Host` the client also sent. The headers this hop adds are
/// not put in the map: `Forwarding` writes them into the request head, which saves a map
/// insert and a built value each.
fn prepare_request_headers(headers: &mut HeaderMap, uri: &Uri) {
    strip_hop_by_hop(headers);
    if let Some(host) = uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(header::HOST, host);
    }
}

/// The headers this hop adds to a request, written by `upstream::encode_head` after the
/// client's own, of which it leaves out those these replace (`replaces`):
/// - `X-Forwarded-For`: the client's first one, if any, then the client's address;
/// - `X-Forwarded-Proto`: the scheme the client used;
/// - `X-Forwarded-Host`, when the request names a host (else the client's passes);
/// - `Forwarded`: after the client's, `for=...;proto=...`, with `host="..."` when the host
///   needs no escaping as a quoted string;
/// - `Via`, after the client's;
/// - `X-Request-Id`: the client's first one, or one made here.
pub struct Forwarding<'a> {
    peer: &'a Peer,
    via: &'a HeaderValue,
    host: Option<&'a [u8]>,
    /// The client's `X-Forwarded-For`, when it is visible ASCII.
    earlier_for: Option<&'a [u8]>,
    request_id: &'a HeaderValue,
}

impl<'a> Forwarding<'a> {
    pub fn of(
        headers: &'a HeaderMap,
        peer: &'a Peer,
        via: &'a HeaderValue,
        request_id: &'a HeaderValue,
    ) -> Self {
        Self {
            peer,
            via,
            host: headers.get(header::HOST).map(HeaderValue::as_bytes),
            earlier_for: headers
                .get(X_FORWARDED_FOR)
                .filter(|v| v.to_str().is_ok())
                .map(HeaderValue::as_bytes),
            request_id,
        }
    }

    /// Whether the client's header `name` is left out, since this hop sends its own.
    pub fn replaces(&self, name: &HeaderName) -> bool {
        name == X_FORWARDED_FOR
            || name == X_FORWARDED_PROTO
            || name == X_REQUEST_ID
            || (name == X_FORWARDED_HOST && self.host.is_some())
    }

    /// Appends the headers, each as `name: value\r\n`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"x-forwarded-for: ");
        if let Some(earlier) = self.earlier_for {
            out.extend_from_slice(earlier);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(self.peer.ip.as_bytes());
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(self.peer.scheme.as_bytes());
        if let Some(host) = self.host {
            out.extend_from_slice(b"\r\nx-forwarded-host: ");
            out.extend_from_slice(host);
        }
        out.extend_from_slice(b"\r\nforwarded: ");
        out.extend_from_slice(self.peer.forwarded.as_bytes());
        // The host is a quoted string: only when it needs no escaping.
        if let Some(host) = self
            .host
            .filter(|h| h.iter().all(|&b| b.is_ascii_graphic() && b != b'"'))
        {
            out.extend_from_slice(b";host=\"");
            out.extend_from_slice(host);
            out.push(b'"');
        }
        out.extend_from_slice(b"\r\nvia: ");
        out.extend_from_slice(self.via.as_bytes());
        out.extend_from_slice(b"\r\nx-request-id: ");
        out.extend_from_slice(self.request_id.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// A short page of our own, for when no backend can answer.
pub fn error_page(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\n\
         <body><h1>{code} {reason}</h1><p>{message}</p><p><small>foobar-balancer</small></p></body></html>\n",
        code = status.as_u16()
    );
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Request ids: unique per balancer process without a random source: start time and a count,
/// in hex: `PREFIX-COUNT`, the count at least 8 digits.
struct RequestIds {
    /// The start time's 16 hex digits and the dash.
    prefix: [u8; 17],
    next: AtomicU64,
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `n` as `digits` hex digits (the low ones, when n needs more).
fn push_hex(out: &mut Vec<u8>, n: u64, digits: u32) {
    for shift in (0..digits).rev() {
        out.push(HEX_DIGITS[((n >> (shift * 4)) & 0xf) as usize]);
    }
}

impl RequestIds {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let start = (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32);
        let mut prefix = Vec::with_capacity(17);
        push_hex(&mut prefix, start, 16);
        prefix.push(b'-');
        Self {
            prefix: prefix.try_into().expect("16 digits and a dash"),
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(8);
        let mut id = Vec::with_capacity(self.prefix.len() + digits as usize);
        id.extend_from_slice(&self.prefix);
        push_hex(&mut id, n, digits);
        HeaderValue::from_maybe_shared(Bytes::from(id)).expect("hex is a valid header value")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The headers a backend gets: the client's left after `prepare_request_headers` but
    /// those replaced, then this hop's, one `name: value` a line.
    fn backend_headers(mut headers: HeaderMap, peer: &Peer, uri: &'static str) -> Vec<String> {
        prepare_request_headers(&mut headers, &Uri::from_static(uri));
        let via = HeaderValue::from_static("1.1 lb-1");
        let id = HeaderValue::from_static("abc");
        let forwarding = Forwarding::of(&headers, peer, &via, &id);
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.headers = headers.clone();
        let mut out = Vec::new();
        upstream::encode_head(
            &mut out,
            &parts,
            &forwarding,
            upstream::RequestFraming::None,
        );
        let text = String::from_utf8(out).unwrap();
        let fields = text.strip_suffix("\r\n\r\n").expect("a whole head");
        fields.split("\r\n").skip(1).map(String::from).collect()
    }

    #[test]
    fn forwarding_headers_are_added_and_hop_by_hop_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("www.foobar.com"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("ftp"));
        headers.insert("x-forwarded-host", HeaderValue::from_static("evil"));
        headers.insert("x-request-id", HeaderValue::from_static("theirs"));
        headers.insert(header::VIA, HeaderValue::from_static("1.0 edge"));
        headers.insert(header::FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
        let peer = Peer::new(SocketAddr::from(([192, 0, 2, 7], 5555)), "https");
        let mut lines = backend_headers(headers, &peer, "/x");
        // This hop's come last, after any of the client's with the same name.
        let ours = lines.split_off(3);
        assert_eq!(
            ours,
            [
                "x-forwarded-for: 203.0.113.9, 192.0.2.7",
                "x-forwarded-proto: https",
                "x-forwarded-host: www.foobar.com",
                "forwarded: for=192.0.2.7;proto=https;host=\"www.foobar.com\"",
                "via: 1.1 lb-1",
                "x-request-id: abc",
            ]
        );
        lines.sort();
        assert_eq!(
            lines,
            [
                "forwarded: for=1.2.3.4",
                "host: www.foobar.com",
                "via: 1.0 edge"
            ]
        );
    }

    #[test]
    fn without_a_host_the_clients_forwarded_host_passes() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-host", HeaderValue::from_static("a.example"));
        let peer = Peer::new(SocketAddr::from(([192, 0, 2, 7], 5555)), "http");
        let lines = backend_headers(headers, &peer, "/");
        assert!(
            lines.contains(&"x-forwarded-host: a.example".to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"forwarded: for=192.0.2.7;proto=http".to_string()));
    }

    #[test]
    fn hop_by_hop_headers_are_removed_from_requests() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Mine"),
        );
        headers.insert("x-mine", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().collect::<Vec<_>>(), [header::CONTENT_TYPE]);
    }

    #[test]
    fn request_ids_are_unique_and_hex() {
        let ids = RequestIds::new();
        let (first, second) = (ids.next(), ids.next());
        assert_ne!(first, second);
        let second = second.to_str().unwrap();
        assert!(
            second.ends_with("-00000001") && second.len() == 25,
            "{second}"
        );
        ids.next.store(0x1_2345_6789, Ordering::Relaxed);
        assert!(ids.next().to_str().unwrap().ends_with("-123456789"));
    }

    #[test]
    fn an_ipv6_client_is_bracketed_and_quoted_in_forwarded() {
        let peer = Peer::new("[2001:db8::1]:5555".parse().unwrap(), "http");
        let lines = backend_headers(HeaderMap::new(), &peer, "http://a.example/");
        for line in [
            "host: a.example",
            "forwarded: for=\"[2001:db8::1]\";proto=http;host=\"a.example\"",
            "x-forwarded-for: 2001:db8::1",
        ] {
            assert!(lines.contains(&line.to_string()), "{line} in {lines:?}");
        }
    }
}
