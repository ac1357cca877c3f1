//! HTTP/1.1 message bodies on the wire (RFC 9112 section 6-7), both ways: a backend's
//! response read by `upstream.rs`, a client's request read by `http1.rs`.
//!
//! A body is read from the connection's own buffer, then from its socket, one frame per
//! poll: a `Content-Length` body in the pieces that arrive, a chunked one chunk by chunk
//! (extensions ignored, trailers read and dropped), a close-delimited one until the end.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http::header;
use tokio::io::AsyncRead;

/// Room made in a read buffer before each read: a short read tells tokio the socket is
/// drained, so checking an idle connection later costs no system call.
pub const READ_SIZE: usize = 16 * 1024;
/// Longest chunk-size or trailer line accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer fields after a chunked body, as many as header fields in a head (httparse's
/// parsers, and the backends behind, refuse more).
const MAX_TRAILERS: usize = 100;

pub fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// `length_of` over a map's `Content-Length` fields.
pub fn content_length(headers: &HeaderMap) -> io::Result<Option<u64>> {
    length_of(
        headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .map(|v| v.as_bytes()),
    )
}

/// The length the raw values of every `Content-Length` field give (RFC 9110 8.6, RFC 9112
/// 6.3): None when there is none; an error unless every value is decimal digits only (no
/// sign, no space inside, no empty value, no overflow). Repeats, as fields or as a list in
/// one field (`5, 5`), are accepted only when all are equal.
pub fn length_of<'a>(values: impl Iterator<Item = &'a [u8]>) -> io::Result<Option<u64>> {
    let mut length = None;
    for value in values {
        for element in value.split(|&b| b == b',') {
            let n = digits(element.trim_ascii()).ok_or_else(|| invalid("bad Content-Length"))?;
            if length.is_some_and(|m| m != n) {
                return Err(invalid("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// A decimal number of digits only; None when empty, with anything else, or past u64.
fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Why a message's `Transfer-Encoding` is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum CodingRefused {
    /// Not a list of codings, `chunked` twice, or `chunked` not the last coding
    /// (RFC 9112 6.1 and 6.3: 400, and the connection closed).
    Malformed,
    /// A coding other than `chunked`, which this server does not decode (RFC 9112 6.1: 501).
    Unsupported,
}

/// Checks the raw values of a message's `Transfer-Encoding` fields, read as one list: the
/// only body it accepts is `chunked` applied once, as the sole coding. An empty list element
/// (`chunked,`) is refused, not ignored as RFC 9110 5.6.1 allows: hyper, for one, reads
/// `chunked,` as a last coding that is not chunked, and two readings of one request's framing
/// are what smuggling is made of.
///
/// A request refused is answered 400 or 501 (`http1/request.rs`); a backend's response, 502
/// (`upstream/response.rs`). This hop decodes chunked and applies it again, or drops it for
/// HTTP/2, which has no transfer codings (RFC 9113 8.2.2); any other coding it would have to
/// pass on with its field, to a client that never said it takes one (its `TE` is not
/// forwarded), so it refuses the response as HAProxy does, rather than drop the field and
/// pass bytes the client cannot read.
pub fn transfer_codings<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<(), CodingRefused> {
    let (mut codings, mut chunked_at, mut other) = (0usize, None, false);
    for value in values {
        for element in value.split(|&b| b == b',') {
            let element = element.trim_ascii();
            let name = element
                .split(|&b| b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                return Err(CodingRefused::Malformed);
            }
            if element.eq_ignore_ascii_case(b"chunked") {
                if chunked_at.is_some() {
                    return Err(CodingRefused::Malformed);
                }
                chunked_at = Some(codings);
            } else if name.eq_ignore_ascii_case(b"chunked") {
                return Err(CodingRefused::Malformed); // chunked takes no parameters
            } else {
                other = true;
            }
            codings += 1;
        }
    }
    match chunked_at {
        _ if codings == 0 => Err(CodingRefused::Malformed),
        Some(at) if at + 1 != codings => Err(CodingRefused::Malformed),
        _ if other => Err(CodingRefused::Unsupported),
        _ => Ok(()),
    }
}

/// A `tchar` of RFC 9110 5.6.2: the characters of a token.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The options of a `Connection` field's raw value (`close`, `keep-alive`, or the names of
/// other hop-by-hop fields), trimmed, empty ones left out.
pub fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// Appends one header field to a head being written: `name: value` and its line end.
#[inline]
pub fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited, and where reading it has got to.
#[derive(Debug)]
pub enum Framing {
    /// Bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the peer closes the connection (responses only).
    UntilClose,
    Done,
}

/// Where a chunked body's decoding is.
#[derive(Debug, Clone, Copy)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk: bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one; how many came so far.
    Trailers(usize),
}

/// One step of decoding a chunked body from `buffer`: data, the end, or Ok(None) when more
/// bytes are needed.
pub fn decode_chunked(
    state: &mut Chunk,
    buffer: &mut BytesMut,
) -> io::Result<Option<Option<Bytes>>> {
    loop {
        match *state {
            Chunk::Size => {
                let Some(line) = take_line(buffer)? else {
                    return Ok(None);
                };
                let size = chunk_size(&line).ok_or_else(|| invalid("bad chunk size"))?;
                *state = if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Data(left) => {
                if buffer.is_empty() {
                    return Ok(None);
                }
                let take = left.min(buffer.len() as u64);
                let data = buffer.split_to(take as usize).freeze();
                *state = if take == left {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left - take)
                };
                return Ok(Some(Some(data)));
            }
            Chunk::DataEnd => {
                if buffer.len() < 2 {
                    return Ok(None);
                }
                if &buffer[..2] != b"\r\n" {
                    return Err(invalid("chunk data not followed by CRLF"));
                }
                buffer.advance(2);
                *state = Chunk::Size;
            }
            Chunk::Trailers(count) => {
                let Some(line) = take_line(buffer)? else {
                    return Ok(None);
                };
                if line.is_empty() {
                    return Ok(Some(None));
                }
                if !is_field_line(&line) {
                    return Err(invalid("bad trailer field"));
                }
                if count >= MAX_TRAILERS {
                    return Err(invalid("too many trailer fields"));
                }
                *state = Chunk::Trailers(count + 1);
            }
        }
    }
}

/// The size a chunk-size line gives (RFC 9112 7.1): 1 to 16 hex digits, then nothing, or
/// extensions after `;` (whitespace allowed before it), which are ignored. Anything else
/// (`+5`, `5 junk`, `0x5`, an empty line, a control character) is None.
pub fn chunk_size(line: &[u8]) -> Option<u64> {
    let hex = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if hex == 0 || hex > 16 {
        return None;
    }
    // Only spaces and tabs (BWS) before `;`: `trim_ascii_start` would also skip a form feed.
    let blank = line[hex..]
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let rest = &line[hex + blank..];
    if !(hex == line.len() || rest.first() == Some(&b';')) {
        return None;
    }
    if rest.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return None;
    }
    let digits = std::str::from_utf8(&line[..hex]).ok()?;
    u64::from_str_radix(digits, 16).ok()
}

/// Whether a trailer line is a field line (RFC 9112 5): a token, a colon, then a value of
/// visible characters, spaces and tabs. Trailers are dropped, not forwarded, but a line that
/// is no field is refused, as httparse and the backends behind would refuse it.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    colon > 0
        && line[..colon].iter().all(|&b| is_tchar(b))
        && line[colon + 1..]
            .iter()
            .all(|&b| b == b'\t' || (b >= b' ' && b != 0x7f))
}

/// The next CRLF-ended line, without its CRLF; Ok(None) until one is complete. A bare LF or
/// a bare CR in a chunked body's lines is an error, not a line end: RFC 9112 7.1 writes
/// CRLF, and a peer that read it otherwise would split the body elsewhere.
fn take_line(buffer: &mut BytesMut) -> io::Result<Option<BytesMut>> {
    match buffer.iter().position(|&b| b == b'\n') {
        Some(end) => {
            if end == 0 || buffer[end - 1] != b'\r' || buffer[..end - 1].contains(&b'\r') {
                return Err(invalid("chunk line not ended by CRLF"));
            }
            let mut line = buffer.split_to(end + 1);
            line.truncate(end - 1);
            Ok(Some(line))
        }
        None if buffer.len() > MAX_CHUNK_LINE => Err(invalid("chunk line too long")),
        None => Ok(None),
    }
}

/// The next frame of a body framed by `framing`, from `buffer` and then `io`: Some(data),
/// None at its end (`framing` is then Done). An error (malformed, or the peer gone before the
/// end) leaves the connection unusable.
pub fn poll_body<S: AsyncRead + Unpin>(
    framing: &mut Framing,
    io: &mut S,
    buffer: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<Option<io::Result<Bytes>>> {
    loop {
        match framing {
            Framing::Done => return Poll::Ready(None),
            Framing::Length(left) if !buffer.is_empty() => {
                let take = (*left).min(buffer.len() as u64);
                let data = buffer.split_to(take as usize).freeze();
                *left -= take;
                if *left == 0 {
                    *framing = Framing::Done;
                }
                return Poll::Ready(Some(Ok(data)));
            }
            Framing::Chunked(state) => match decode_chunked(state, buffer) {
                Ok(Some(Some(data))) => return Poll::Ready(Some(Ok(data))),
                Ok(Some(None)) => {
                    *framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            },
            Framing::UntilClose if !buffer.is_empty() => {
                return Poll::Ready(Some(Ok(buffer.split().freeze())));
            }
            Framing::Length(_) | Framing::UntilClose => {}
        }
        buffer.reserve(READ_SIZE);
        match ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut *io),
            cx,
            buffer
        )) {
            Ok(0) if matches!(framing, Framing::UntilClose) => {
                *framing = Framing::Done;
                return Poll::Ready(None);
            }
            Ok(0) => {
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of the body",
                ))));
            }
            Ok(_) => {}
            Err(e) => return Poll::Ready(Some(Err(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_digits_only_and_repeats_equal() {
        let length = |values: &[&str]| length_of(values.iter().map(|v| v.as_bytes())).ok();
        assert_eq!(length(&[]), Some(None));
        assert_eq!(length(&["5"]), Some(Some(5)));
        assert_eq!(length(&["5", "5"]), Some(Some(5)));
        assert_eq!(length(&["5, 5"]), Some(Some(5)));
        assert_eq!(length(&["18446744073709551615"]), Some(Some(u64::MAX)));
        for bad in [
            "+5",
            "-5",
            "5x",
            "",
            " ",
            "0x5",
            "5 5",
            "5,",
            "18446744073709551616",
        ] {
            assert_eq!(length(&[bad]), None, "{bad:?}");
        }
        assert_eq!(length(&["5", "6"]), None);
        assert_eq!(length(&["5, 6"]), None);
    }

    #[test]
    fn only_a_single_final_chunked_coding_is_accepted() {
        use CodingRefused::*;
        let codings = |values: &[&str]| transfer_codings(values.iter().map(|v| v.as_bytes()));
        for good in [&["chunked"][..], &["Chunked"], &[" chunked "]] {
            assert_eq!(codings(good), Ok(()), "{good:?}");
        }
        for (values, refused) in [
            (&["gzip, chunked"][..], Unsupported),
            (&["identity, chunked"], Unsupported),
            (&["xchunked"], Unsupported),
            (&["gzip"], Unsupported),
            (&["gzip", "chunked"], Unsupported),
            (&["chunked, chunked"], Malformed),
            (&["chunked", "chunked"], Malformed),
            (&["chunked, gzip"], Malformed),
            (&["chunked;q=1"], Malformed),
            (&["\"chunked\""], Malformed),
            (&["chunked chunked"], Malformed),
            (&[""], Malformed),
            (&[","], Malformed),
            (&["chunked,"], Malformed),
            (&[", chunked"], Malformed),
            (&["", "chunked"], Malformed),
        ] {
            assert_eq!(codings(values), Err(refused), "{values:?}");
        }
    }

    #[test]
    fn chunk_sizes_are_hex_digits_then_extensions_only() {
        for (line, size) in [
            ("5", 5),
            ("A;name=val", 10),
            ("ff ;x", 255),
            ("0", 0),
            ("ffffffffffffffff", u64::MAX),
        ] {
            assert_eq!(chunk_size(line.as_bytes()), Some(size), "{line:?}");
        }
        for bad in [
            "",
            "+5",
            "-5",
            "5 junk",
            "5 ",
            "0x5",
            " 5",
            "5\0",
            "5\x0c;x",
            "10000000000000000",
        ] {
            assert_eq!(chunk_size(bad.as_bytes()), None, "{bad:?}");
        }
        for bad in [
            &b"5\nhello\r\n"[..],
            b"5\r\r\n",
            b"\n",
            b"0\r\nhello\r\n\r\n",
            b"0\r\n: x\r\n\r\n",
            b"0\r\nT : x\r\n\r\n",
        ] {
            let mut state = Chunk::Size;
            assert!(decode_chunked(&mut state, &mut BytesMut::from(bad)).is_err());
        }
        let trailers = |n: usize| format!("0\r\n{}\r\n", "T: 1\r\n".repeat(n));
        let mut state = Chunk::Size;
        let mut many = BytesMut::from(trailers(MAX_TRAILERS).as_bytes());
        assert!(matches!(
            decode_chunked(&mut state, &mut many),
            Ok(Some(None))
        ));
        let mut state = Chunk::Size;
        let mut too_many = BytesMut::from(trailers(MAX_TRAILERS + 1).as_bytes());
        assert!(decode_chunked(&mut state, &mut too_many).is_err());
    }

    #[test]
    fn chunked_bodies_decode_across_reads() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
        // Fed one byte at a time, the worst a network can do.
        let mut state = Chunk::Size;
        let mut buffer = BytesMut::new();
        let mut body = Vec::new();
        let mut ended = false;
        for &byte in wire {
            buffer.extend_from_slice(&[byte]);
            while let Some(step) = decode_chunked(&mut state, &mut buffer).unwrap() {
                match step {
                    Some(data) => body.extend_from_slice(&data),
                    None => ended = true,
                }
            }
        }
        assert_eq!((body.as_slice(), ended), (&b"hello world"[..], true));
        assert!(buffer.is_empty());

        let mut state = Chunk::Size;
        assert!(decode_chunked(&mut state, &mut BytesMut::from(&b"zz\r\n"[..])).is_err());
        let mut state = Chunk::Size;
        assert!(
            decode_chunked(&mut state, &mut BytesMut::from(&b"1\r\nab"[..]))
                .is_ok_and(|s| s.is_some())
        );
    }
}
