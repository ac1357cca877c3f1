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

/// Where a header field lies in a head: its name's offset and length, then its value's.
pub type Span = (usize, usize, usize, usize);

/// Room made in a read buffer before each read: a short read tells tokio the socket is
/// drained, so checking an idle connection later costs no system call.
pub const READ_SIZE: usize = 16 * 1024;
/// Longest chunk-size or trailer line accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;

pub fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// The `Content-Length` of a message: None when absent; an error when malformed or when
/// several values disagree.
pub fn content_length(headers: &HeaderMap) -> io::Result<Option<u64>> {
    length_of(
        headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .map(|v| v.as_bytes()),
    )
}

/// `content_length` over the raw values of every `Content-Length` field.
pub fn length_of<'a>(values: impl Iterator<Item = &'a [u8]>) -> io::Result<Option<u64>> {
    let mut length = None;
    for value in values {
        let n = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| invalid("bad Content-Length"))?;
        if length.is_some_and(|m| m != n) {
            return Err(invalid("conflicting Content-Length values"));
        }
        length = Some(n);
    }
    Ok(length)
}

/// Whether the last of the message's transfer codings is chunked; None without any.
pub fn chunked(headers: &HeaderMap) -> Option<bool> {
    let last = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()?;
    Some(ends_chunked(last.as_bytes()))
}

/// Whether the last coding of a `Transfer-Encoding` field's raw value is chunked.
pub fn ends_chunked(codings: &[u8]) -> bool {
    let last = codings.rsplit(|&b| b == b',').next().unwrap_or_default();
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
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
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
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
                let digits = line[..]
                    .split(|&b| b == b';' || b == b' ' || b == b'\t')
                    .next();
                let size = digits
                    .and_then(|d| std::str::from_utf8(d).ok())
                    .and_then(|d| u64::from_str_radix(d, 16).ok())
                    .ok_or_else(|| invalid("bad chunk size"))?;
                *state = if size == 0 {
                    Chunk::Trailers
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
            Chunk::Trailers => {
                let Some(line) = take_line(buffer)? else {
                    return Ok(None);
                };
                if line.is_empty() {
                    return Ok(Some(None));
                }
            }
        }
    }
}

/// The next CRLF-ended line, without its CRLF; Ok(None) until one is complete.
fn take_line(buffer: &mut BytesMut) -> io::Result<Option<BytesMut>> {
    match buffer.windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            let mut line = buffer.split_to(end + 2);
            line.truncate(end);
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
