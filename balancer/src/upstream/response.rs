//! A backend's response head as it arrives, parsed in one pass over httparse's fields
//! (framing, `Connection` options, hop-by-hop fields left out, the rest kept in place as a
//! `message::RawHead`). Pure: no connection; the body is read by `upstream::Incoming`.

use std::io;

use bytes::{Buf, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};

use crate::framing::{self, Chunk, Framing, invalid};
use crate::message::{RawHead, is_hop_by_hop};

/// Most header fields in a response head.
const MAX_HEADERS: usize = 100;

pub(super) enum Parsed {
    Final((Response<()>, Framing, bool)),
    /// A 1xx response, consumed from the buffer: its status and end-to-end fields, as the
    /// client gets them (none for 100 Continue).
    Interim(Option<Response<()>>),
    Partial,
}

/// Parses one response head at the start of `buffer` and consumes it when complete: one pass
/// over the fields finds the framing and the `Connection` options, drops the hop-by-hop
/// fields (`message::is_hop_by_hop`) and keeps the others' places (`RawHead`).
pub(super) fn parse_head(buffer: &mut BytesMut, method: &Method) -> io::Result<Parsed> {
    // Left uninitialised: a hundred empty fields written for every response cost more than
    // parsing the few a backend sends.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let parsing = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buffer,
        &mut fields,
    );
    let len = match parsing {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(invalid(&format!("malformed response head: {e}"))),
    };
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| invalid("bad status code"))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(invalid("101 Switching Protocols was not asked for"));
        }
        // 100 Continue is this hop's own to send (`http1.rs`, when the body is read); other
        // 1xx heads go to the client before the final one.
        let relayed = (status != StatusCode::CONTINUE).then(|| {
            let mut head = Response::new(());
            *head.status_mut() = status;
            for field in parsed.headers.iter() {
                let name = field.name.as_bytes();
                if is_hop_by_hop(name) || name.eq_ignore_ascii_case(b"content-length") {
                    continue;
                }
                // httparse accepted the name as a token and the value's bytes: neither fails.
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name),
                    HeaderValue::from_bytes(field.value),
                ) {
                    head.headers_mut().append(name, value);
                }
            }
            head
        });
        buffer.advance(len);
        return Ok(Parsed::Interim(relayed));
    }
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = buffer.as_ptr() as usize;
    let span = |field: &httparse::Header<'_>| {
        let name = field.name.as_ptr() as usize - base;
        let value = field.value.as_ptr() as usize - base;
        (name, field.name.len(), value, field.value.len())
    };
    let mut kept = Vec::with_capacity(parsed.headers.len());
    let mut options = ConnectionOptions::default();
    let mut chunked = false;
    for field in parsed.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            options.read(field.value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
        } else if !is_hop_by_hop(name) {
            kept.push(span(field));
        }
    }
    if options.names_others {
        // `Connection: close, X-Mine`: X-Mine is hop-by-hop too (rare: a second pass).
        let named = |name: &[u8]| {
            parsed
                .headers
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case("connection"))
                .flat_map(|f| framing::connection_tokens(f.value))
                .any(|token| token.eq_ignore_ascii_case(name))
        };
        kept.retain(|&(name, name_len, _, _)| !named(&buffer[name..name + name_len]));
    }
    if chunked {
        // Only one final chunked is relayed (`framing::transfer_codings`): any other coding
        // would reach the client without its field. 502, as HAProxy answers.
        let codings = parsed
            .headers
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case("transfer-encoding"))
            .map(|f| f.value);
        if framing::transfer_codings(codings).is_err() {
            return Err(invalid("a transfer coding other than one final chunked"));
        }
        // RFC 9112 6.3: Transfer-Encoding overrides Content-Length, which an intermediary
        // removes before it forwards the message.
        kept.retain(|&(name, name_len, _, _)| {
            !buffer[name..name + name_len].eq_ignore_ascii_case(b"content-length")
        });
    }
    let (framing, delimited) = response_framing(method, status, chunked, || {
        let lengths = kept
            .iter()
            .filter_map(|&(name, name_len, value, value_len)| {
                let name = &buffer[name..name + name_len];
                name.eq_ignore_ascii_case(b"content-length")
                    .then(|| &buffer[value..value + value_len])
            });
        framing::length_of(lengths)
    })?;
    let keep_alive = delimited
        && match version {
            Version::HTTP_10 => options.keep_alive,
            _ => !options.close,
        };
    let head = RawHead::new(buffer.split_to(len).freeze(), kept);
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    response.extensions_mut().insert(head);
    Ok(Parsed::Final((response, framing, keep_alive)))
}

/// What a message's `Connection` fields say.
#[derive(Default)]
pub(super) struct ConnectionOptions {
    close: bool,
    keep_alive: bool,
    /// Names other fields, which are then hop-by-hop.
    names_others: bool,
}

impl ConnectionOptions {
    fn read(&mut self, value: &[u8]) {
        for token in framing::connection_tokens(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else {
                self.names_others = true;
            }
        }
    }
}

/// How a response to `method` is delimited, and whether its end is known without the
/// connection closing. `length` is asked for only when it decides.
pub(super) fn response_framing(
    method: &Method,
    status: StatusCode,
    chunked: bool,
    length: impl FnOnce() -> io::Result<Option<u64>>,
) -> io::Result<(Framing, bool)> {
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Done, true));
    }
    if chunked {
        return Ok((Framing::Chunked(Chunk::Size), true));
    }
    Ok(match length()? {
        Some(0) => (Framing::Done, true),
        Some(n) => (Framing::Length(n), true),
        None => (Framing::UntilClose, false),
    })
}
