//! A request head as RFC 9112 asks a server to read it: parsed by httparse, then checked
//! (Host, target form, framing) before any byte of it reaches a backend. Pure: no
//! connection, so the fuzz targets and the differential test call it directly
//! ([`frame_request`]).

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};

use crate::framing::{self, Chunk, CodingRefused, Framing};
use crate::message::Span;

/// Most header fields in a request head (hyper's limit too); more: 431.
const MAX_HEADERS: usize = 100;

pub(super) enum Refused {
    Timeout,
    TooLarge,
    /// The request line alone is past the header size limit (414).
    TargetTooLong,
    Malformed(&'static str),
    /// A transfer coding this server does not decode (501).
    Unsupported,
    /// `CONNECT`: a reverse proxy tunnels nothing (405).
    Tunnel,
    /// The client went away half-way through a head, or the read failed: no one to answer.
    Gone,
}

/// A request head, and what it says about its body and the connection.
pub(super) struct Head {
    pub(super) parts: http::request::Parts,
    pub(super) body: Framing,
    /// The client wants the connection closed after this request (HTTP/1.0: unless it
    /// asked to keep it).
    pub(super) close: bool,
    pub(super) expect_continue: bool,
}

/// Parses one request head at the start of `buffer` and consumes it when complete; Ok(None)
/// while it is incomplete. Header values and the target point into the head's bytes. `spans`
/// is scratch space, kept by the connection so that no request allocates it.
pub(super) fn parse_request(
    buffer: &mut BytesMut,
    spans: &mut Vec<Span>,
    max_header_size: usize,
) -> Result<Option<Head>, Refused> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buffer, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refused::TooLarge),
        Err(_) => return Err(Refused::Malformed("request line or headers")),
    };
    if len > max_header_size {
        return Err(too_large(buffer, max_header_size));
    }
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| Refused::Malformed("method"))?;
    if method == Method::CONNECT {
        return Err(Refused::Tunnel);
    }
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let base = buffer.as_ptr() as usize;
    let path = request.path.unwrap_or_default();
    let path_span = (path.as_ptr() as usize - base, path.len());
    let absolute = target_form(path.as_bytes(), &method)?;
    // Which headers need a look once the map is built; most requests have only Host.
    let (mut lengths, mut codings, mut connection, mut expect, mut hosts) =
        (false, false, false, false, 0);
    spans.clear();
    for field in request.headers.iter() {
        let name = field.name.as_bytes();
        lengths |= name.eq_ignore_ascii_case(b"content-length");
        codings |= name.eq_ignore_ascii_case(b"transfer-encoding");
        connection |= name.eq_ignore_ascii_case(b"connection");
        expect |= name.eq_ignore_ascii_case(b"expect");
        hosts += usize::from(name.eq_ignore_ascii_case(b"host"));
        let value = field.value;
        spans.push((
            field.name.as_ptr() as usize - base,
            field.name.len(),
            value.as_ptr() as usize - base,
            value.len(),
        ));
    }
    let head = buffer.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for &(name, name_len, value, value_len) in spans.iter() {
        let name = HeaderName::from_bytes(&head[name..name + name_len])
            .map_err(|_| Refused::Malformed("header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value..value + value_len))
            .map_err(|_| Refused::Malformed("header value"))?;
        headers.append(name, value);
    }
    let uri = Uri::from_maybe_shared(head.slice(path_span.0..path_span.0 + path_span.1))
        .map_err(|_| Refused::Malformed("request target"))?;
    check_host(&headers, hosts, version, absolute.then_some(&uri))?;

    let body = request_framing(&headers, version, lengths, codings)?;
    let says = |token: &str| {
        connection
            && headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let close = match version {
        Version::HTTP_10 => !says("keep-alive"),
        _ => says("close"),
    };
    let expect_continue = expect
        && version == Version::HTTP_11
        && !matches!(body, Framing::Done)
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));

    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Head {
        parts,
        body,
        close,
        expect_continue,
    }))
}

/// 414 when the request line is what does not fit in `max_header_size` (the target is too
/// long), else 431 (the header fields are).
pub(super) fn too_large(buffer: &[u8], max_header_size: usize) -> Refused {
    match buffer.iter().position(|&b| b == b'\n') {
        Some(end) if end < max_header_size => Refused::TooLarge,
        _ => Refused::TargetTooLong,
    }
}

/// Which of RFC 9112 3.2's forms a request target has: origin form (`/path`), asterisk form
/// (`*`, OPTIONS only) or absolute form (`http://host/path`: true). The authority form
/// belongs to CONNECT, refused before; a fragment is never sent (RFC 9110 7.1).
pub(super) fn target_form(target: &[u8], method: &Method) -> Result<bool, Refused> {
    if target.contains(&b'#') {
        return Err(Refused::Malformed("fragment in the request target"));
    }
    let scheme = |s: &[u8]| target.len() > s.len() && target[..s.len()].eq_ignore_ascii_case(s);
    match target {
        [b'/', ..] => Ok(false),
        b"*" if *method == Method::OPTIONS => Ok(false),
        _ if scheme(b"http://") || scheme(b"https://") => Ok(true),
        _ => Err(Refused::Malformed("request target form")),
    }
}

/// RFC 9112 3.2: an HTTP/1.1 request has exactly one `Host` (HTTP/1.0: at most one), its
/// value a host and optional port; with an absolute-form target it names the target's
/// authority (the one routed by, and forwarded: `forwarding::prepare_request_headers`). 400
/// otherwise, as HAProxy and nginx answer.
pub(super) fn check_host(
    headers: &HeaderMap,
    hosts: usize,
    version: Version,
    absolute: Option<&Uri>,
) -> Result<(), Refused> {
    match hosts {
        0 if version == Version::HTTP_11 => return Err(Refused::Malformed("no Host")),
        0 => {}
        1 => {}
        _ => return Err(Refused::Malformed("more than one Host")),
    }
    let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
    let valid = |b: &u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(b);
    if host.is_some_and(|host| !host.iter().all(valid)) {
        return Err(Refused::Malformed("Host"));
    }
    if let Some(uri) = absolute {
        let authority = uri
            .authority()
            .map(|a| a.as_str().as_bytes())
            .filter(|a| !a.is_empty() && !a.contains(&b'@'))
            .ok_or(Refused::Malformed("absolute-form target's authority"))?;
        if host.is_some_and(|host| !host.eq_ignore_ascii_case(authority)) {
            return Err(Refused::Malformed(
                "Host differs from the target's authority",
            ));
        }
    }
    Ok(())
}

/// A request body's framing (RFC 9112 6.1, 6.3): chunked when `Transfer-Encoding` is exactly
/// `chunked` (another coding: 501; a malformed list: 400), else `Content-Length` (digits
/// only; repeats equal). Both at once, or `Transfer-Encoding` in HTTP/1.0, are refused
/// (400): a peer that frames such a message the other way reads a different request, and
/// every refusal closes the connection.
pub(super) fn request_framing(
    headers: &HeaderMap,
    version: Version,
    lengths: bool,
    codings: bool,
) -> Result<Framing, Refused> {
    if codings {
        if version == Version::HTTP_10 {
            return Err(Refused::Malformed("Transfer-Encoding in HTTP/1.0"));
        }
        if lengths {
            return Err(Refused::Malformed(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        let values = headers.get_all(header::TRANSFER_ENCODING);
        return match framing::transfer_codings(values.iter().map(HeaderValue::as_bytes)) {
            Ok(()) => Ok(Framing::Chunked(Chunk::Size)),
            Err(CodingRefused::Malformed) => Err(Refused::Malformed("Transfer-Encoding")),
            Err(CodingRefused::Unsupported) => Err(Refused::Unsupported),
        };
    }
    if !lengths {
        return Ok(Framing::Done);
    }
    match framing::content_length(headers) {
        Ok(Some(0) | None) => Ok(Framing::Done),
        Ok(Some(n)) => Ok(Framing::Length(n)),
        Err(_) => Err(Refused::Malformed("Content-Length")),
    }
}

/// How this server frames the first request in some bytes ([`frame_request`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// The request, head and body, is this many bytes long.
    Ends(usize),
    /// More bytes are needed.
    Incomplete,
    /// Refused (a 4xx or 5xx, and the connection closed).
    Refused,
}

/// Where the first request in `bytes` ends, by exactly the rules a connection applies
/// (`parse_request`, then `framing`'s body decoding), without a connection: for the fuzz
/// targets (`balancer/fuzz`) and the differential test against httparse.
pub fn frame_request(bytes: &[u8], max_header_size: usize) -> Framed {
    let mut buffer = BytesMut::from(bytes);
    let head = match parse_request(&mut buffer, &mut Vec::new(), max_header_size) {
        Ok(Some(head)) => head,
        Ok(None) if bytes.len() >= max_header_size => return Framed::Refused,
        Ok(None) => return Framed::Incomplete,
        Err(_) => return Framed::Refused,
    };
    let head_len = bytes.len() - buffer.len();
    match head.body {
        Framing::Done => Framed::Ends(head_len),
        Framing::Length(n) if buffer.len() as u64 >= n => Framed::Ends(head_len + n as usize),
        Framing::Length(_) => Framed::Incomplete,
        Framing::Chunked(mut state) => loop {
            match framing::decode_chunked(&mut state, &mut buffer) {
                Ok(Some(Some(_))) => {}
                Ok(Some(None)) => return Framed::Ends(bytes.len() - buffer.len()),
                Ok(None) => return Framed::Incomplete,
                Err(_) => return Framed::Refused,
            }
        },
        Framing::UntilClose => Framed::Refused,
    }
}
