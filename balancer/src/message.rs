//! The vocabulary every HTTP layer of the balancer shares, below all of them: the body and
//! error types that flow between clients and backends, the hop-by-hop field list, a
//! backend's raw response head, and the balancer's own error page. It imports no other
//! module of the crate, so the HTTP/1 code (`framing`, `http1`, `upstream`) can be read
//! without the proxy above it.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// An error from either side: a connection's, or a limit's (`limits::BodyTooLarge`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What flows to and from backends and clients.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Where a header field lies in a head: its name's offset and length, then its value's.
pub type Span = (usize, usize, usize, usize);

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub(crate) const HOPS: usize = 7;
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
pub(crate) const HOP_BY_HOP: [HeaderName; HOPS] = {
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
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP_NAMES
        .iter()
        .any(|hop| name.eq_ignore_ascii_case(hop.as_bytes()))
}

/// A backend's response head as it arrived: its bytes, and where each field the client gets
/// lies in them. `parse_head` leaves out the hop-by-hop fields (RFC 9110 section 7.6.1), so
/// the rest passes as it is. It travels in the response's extensions, with an empty
/// `HeaderMap` beside it for what the balancer adds or overrides: an HTTP/1 client's head is
/// written from both (`http1::encode_head`), a writer that knows only the map gets them
/// merged first ([`RawHead::merge_into`]). Building that map for every response, then
/// stripping, extending and walking it, was a third of the balancer's own instructions per
/// request (callgrind under bench/balancer.sh's load).
#[derive(Clone, Debug)]
pub struct RawHead {
    bytes: Bytes,
    fields: Vec<Span>,
    /// This hop's `Via`, written after the backend's.
    pub via: Option<HeaderValue>,
    /// This hop's `X-Request-Id`, which replaces the backend's.
    pub request_id: Option<HeaderValue>,
}

impl RawHead {
    /// A head's bytes and the places of the fields it passes on.
    pub fn new(bytes: Bytes, fields: Vec<Span>) -> Self {
        Self {
            bytes,
            fields,
            via: None,
            request_id: None,
        }
    }

    /// The backend's end-to-end fields, names as the backend spelled them, in order; without
    /// those this hop replaces (`X-Request-Id` when it has its own).
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.passed().map(|&(name, name_len, value, value_len)| {
            (
                &self.bytes[name..name + name_len],
                &self.bytes[value..value + value_len],
            )
        })
    }

    /// The places of the fields `fields` yields.
    fn passed(&self) -> impl Iterator<Item = &Span> {
        self.fields.iter().filter(|&&(name, name_len, _, _)| {
            self.request_id.is_none()
                || !self.bytes[name..name + name_len].eq_ignore_ascii_case(b"x-request-id")
        })
    }

    /// Puts the backend's fields and this hop's in `headers`, whose own entries win.
    pub fn merge_into(&self, headers: &mut HeaderMap) {
        let overrides = std::mem::take(headers);
        headers.reserve(self.fields.len() + overrides.len() + 2);
        for &(name, name_len, value, value_len) in self.passed() {
            // httparse accepted the name as a token and the value's bytes, which is what
            // HeaderName and HeaderValue accept: neither fails.
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&self.bytes[name..name + name_len]),
                HeaderValue::from_maybe_shared(self.bytes.slice(value..value + value_len)),
            ) else {
                continue;
            };
            if !overrides.contains_key(&name) {
                headers.append(name, value);
            }
        }
        if let Some(via) = &self.via {
            headers.append(header::VIA, via.clone());
        }
        if let Some(id) = &self.request_id {
            headers.insert(X_REQUEST_ID, id.clone());
        }
        for (name, value) in overrides {
            if let Some(name) = name {
                headers.insert(name, value);
            }
        }
    }
}

/// Moves a backend's raw head into the response's `HeaderMap`, for a writer that knows only
/// the map (HTTP/2's HPACK encoder).
pub fn merge_raw_head<B>(response: &mut Response<B>) {
    if let Some(head) = response.extensions_mut().remove::<RawHead>() {
        head.merge_into(response.headers_mut());
    }
}

/// Where a backend's 1xx responses (103 Early Hints) go as they arrive, before its final
/// one: to the client's connection, which writes each at once (RFC 9110 15.2: a proxy
/// forwards them). It travels in the request's extensions; a request without it (an
/// HTTP/1.0 client, which gets no 1xx) has them dropped. 100 Continue is not among them: that one is each hop's own.
#[derive(Clone, Debug)]
pub struct Interim(pub tokio::sync::mpsc::Sender<Response<()>>);

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
