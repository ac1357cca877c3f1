//! The headers this hop adds to a request, and the client's it removes: X-Forwarded-*,
//! Forwarded, Via and X-Request-Id (made here when the client sent none), the hop-by-hop
//! fields stripped, and `Host` set to the authority the request was routed by.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Uri;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::framing;
use crate::message::{HOP_BY_HOP, HOPS, X_REQUEST_ID, is_hop_by_hop};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

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
pub fn prepare_request_headers(headers: &mut HeaderMap, uri: &Uri) {
    strip_hop_by_hop(headers);
    join_cookies(headers);
    if let Some(host) = uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(header::HOST, host);
    }
}

/// Joins several `Cookie` fields into one, with "; ": HTTP/2 lets a client send each cookie
/// as a field of its own (RFC 9113 section 8.2.3, for header compression), and an HTTP/1.1
/// backend expects one line (RFC 6265 section 5.4). A single field, the usual case, is left
/// as it is without a copy.
fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    if cookies.next().is_none() || cookies.next().is_none() {
        return;
    }
    let joined = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    // Joined valid values with "; " are a valid value.
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
        headers.insert(header::COOKIE, value);
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

/// Request ids: unique per balancer process without a random source: start time and a count,
/// in hex: `PREFIX-COUNT`, the count at least 8 digits.
pub(crate) struct RequestIds {
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
    pub(crate) fn new() -> Self {
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

    pub(crate) fn next(&self) -> HeaderValue {
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
    use crate::upstream;
    use http::Request;

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
