//! HTTP/1.1 to the backends, run inside the request's own task.
//!
//! hyper's client drives each backend connection as a task of its own and passes the request,
//! the response head and every body chunk across channels: several task wake-ups per request
//! on top of the proxying itself, and the request head copied so that it can be sent again.
//! Here the request's task writes the request from the proxy's own `Parts` (kept for a
//! retry, never copied) and reads the response head itself, and the response body reads
//! straight from the backend's socket whenever the client side polls it. HAProxy works the
//! same way: one event loop, no hand-offs.
//!
//! What it implements of RFC 9112:
//! - the request in origin form, with the headers the proxy prepared; a body framed by its
//!   exact length when known (`Content-Length`), else chunked; written while the response
//!   head is awaited, so a backend that answers early (a 413) is heard;
//! - the response head parsed by httparse (hyper's parser), interim 1xx responses skipped;
//! - the response body framed by the method and status (HEAD, 204, 304: none), else
//!   `Transfer-Encoding: chunked`, else `Content-Length`, else the connection's end;
//! - a connection is kept for another request only after a complete, delimited response
//!   that did not ask to close, with nothing left over, and whose request body was sent in
//!   full.
//!
//! Failures say whether the request may have reached the backend ([`SendError`]): the
//! proxy's retry rules depend on it. A kept-alive connection is checked before it is reused
//! ([`Connection::is_reusable`]): one the backend has closed is never written to.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::{BoxError, ProxyBody};

/// Most header fields in a response head, and most bytes in it.
const MAX_HEADERS: usize = 100;
const MAX_HEAD_SIZE: usize = 64 * 1024;
/// Room made in the read buffer before each read: a short read tells tokio the socket is
/// drained, so checking an idle connection later costs no system call.
const READ_SIZE: usize = 16 * 1024;
/// Longest chunk-size or trailer line accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;

/// A connection to a backend, idle between requests.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    /// Read from the socket and not yet consumed.
    read: BytesMut,
    /// The next request head, built here to reuse the allocation.
    head: Vec<u8>,
}

/// Why a request got no response head.
pub enum SendError {
    /// Nothing of the request reached the backend: it may go to any backend. Its body,
    /// untouched, comes back.
    Unsent(io::Error, ProxyBody),
    /// The request was written, at least in part: the backend may have acted on it.
    Sent(io::Error),
    /// The client's own body failed while it was being sent (cut off, or over a limit).
    Body(BoxError),
}

impl Connection {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            read: BytesMut::with_capacity(READ_SIZE),
            head: Vec::with_capacity(1024),
        })
    }

    /// Whether a kept-alive connection can carry a request: the backend has not closed it
    /// and sent nothing unasked. tokio answers from its readiness state without a system
    /// call unless the socket became readable since it was last drained.
    pub fn is_reusable(&self) -> bool {
        self.read.is_empty()
            && matches!(self.stream.try_read(&mut [0; 1]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes the request and reads the response head; the body follows as the returned
    /// response's body is polled. `parts` must be in the form a backend gets (the proxy's
    /// headers, hop-by-hop ones removed).
    pub async fn send(
        mut self,
        parts: &Parts,
        body: ProxyBody,
    ) -> Result<Response<Incoming>, SendError> {
        let framing = RequestFraming::of(&parts.method, &parts.headers, &body);
        let mut head = std::mem::take(&mut self.head);
        head.clear();
        encode_head(&mut head, parts, framing);
        let written = write_head(&mut self.stream, &head).await;
        self.head = head;
        if let Err((error, sent)) = written {
            return Err(if sent {
                SendError::Sent(error)
            } else {
                SendError::Unsent(error, body)
            });
        }

        let (mut reader, mut writer) = self.stream.split();
        let mut body_sent = framing == RequestFraming::None;
        let head = if body_sent {
            read_head(&mut reader, &mut self.read, &parts.method).await
        } else {
            let sending = write_body(&mut writer, body, framing);
            let reading = read_head(&mut reader, &mut self.read, &parts.method);
            tokio::pin!(sending, reading);
            loop {
                tokio::select! {
                    biased;
                    head = &mut reading => break head,
                    sent = &mut sending, if !body_sent => match sent {
                        Ok(()) => body_sent = true,
                        Err(e) => return Err(e),
                    },
                }
            }
        };
        let (response, framing, keep_alive) = head.map_err(SendError::Sent)?;
        let body = Incoming {
            framing,
            // A backend that answered before the whole body was sent has the rest of it, or
            // a broken request, still coming: that connection carries nothing else.
            keep_alive: keep_alive && body_sent,
            connection: Some(self),
        };
        Ok(response.map(|()| body))
    }
}

/// Writes the whole head; on failure, says whether any of it was sent.
async fn write_head(stream: &mut TcpStream, head: &[u8]) -> Result<(), (io::Error, bool)> {
    let mut written = 0;
    while written < head.len() {
        match stream.write(&head[written..]).await {
            Ok(0) => return Err((io::ErrorKind::WriteZero.into(), written > 0)),
            Ok(n) => written += n,
            Err(e) => return Err((e, written > 0)),
        }
    }
    Ok(())
}

/// How a request's body is delimited on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RequestFraming {
    /// No body, and none expected by the method.
    None,
    Length(u64),
    Chunked,
}

impl RequestFraming {
    fn of(method: &Method, headers: &HeaderMap, body: &ProxyBody) -> Self {
        if body.is_end_stream() {
            // A POST or PUT without a body still says so, as a browser's does.
            let says_length = headers.contains_key(header::CONTENT_LENGTH)
                || matches!(*method, Method::POST | Method::PUT | Method::PATCH);
            return if says_length {
                Self::Length(0)
            } else {
                Self::None
            };
        }
        match body.size_hint().exact() {
            Some(n) => Self::Length(n),
            None => Self::Chunked,
        }
    }
}

/// `METHOD /path?query HTTP/1.1`, the headers, and the framing header of our choosing.
fn encode_head(out: &mut Vec<u8>, parts: &Parts, framing: RequestFraming) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Sends the body's data as `framing` says; trailers are not forwarded.
async fn write_body(
    writer: &mut tokio::net::tcp::WriteHalf<'_>,
    mut body: ProxyBody,
    framing: RequestFraming,
) -> Result<(), SendError> {
    let sent = |e: io::Error| SendError::Sent(e);
    let mut left = match framing {
        RequestFraming::Length(n) => Some(n),
        _ => None,
    };
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(SendError::Body)?.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        match left.as_mut() {
            Some(left) => {
                // More than announced would be read as the next request: refuse it.
                *left = left.checked_sub(data.len() as u64).ok_or_else(|| {
                    SendError::Body("request body longer than its Content-Length".into())
                })?;
                writer.write_all(&data).await.map_err(sent)?;
            }
            None => {
                let size = format!("{:x}\r\n", data.len());
                writer.write_all(size.as_bytes()).await.map_err(sent)?;
                writer.write_all(&data).await.map_err(sent)?;
                writer.write_all(b"\r\n").await.map_err(sent)?;
            }
        }
    }
    match left {
        Some(0) => Ok(()),
        Some(_) => Err(SendError::Body(
            "request body shorter than its Content-Length".into(),
        )),
        None => writer.write_all(b"0\r\n\r\n").await.map_err(sent),
    }
}

/// Reads until a final response head is complete: the head, how its body is delimited, and
/// whether the connection may be kept.
async fn read_head(
    reader: &mut tokio::net::tcp::ReadHalf<'_>,
    buffer: &mut BytesMut,
    method: &Method,
) -> io::Result<(Response<()>, Framing, bool)> {
    loop {
        if !buffer.is_empty() {
            match parse_head(buffer, method)? {
                Parsed::Final(head) => return Ok(head),
                Parsed::Interim => continue,
                Parsed::Partial if buffer.len() >= MAX_HEAD_SIZE => {
                    return Err(invalid("response head larger than 64 KiB"));
                }
                Parsed::Partial => {}
            }
        }
        buffer.reserve(READ_SIZE);
        if reader.read_buf(buffer).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
    }
}

enum Parsed {
    Final((Response<()>, Framing, bool)),
    /// A 1xx response, consumed from the buffer.
    Interim,
    Partial,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Parses one response head at the start of `buffer` and consumes it when complete. Header
/// values point into the head's bytes (no copy per value, as in hyper).
fn parse_head(buffer: &mut BytesMut, method: &Method) -> io::Result<Parsed> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let len = match parsed.parse(buffer) {
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
        buffer.advance(len);
        return Ok(Parsed::Interim);
    }
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Where each field lies in the head, so the head can be frozen and shared by the values.
    let base = buffer.as_ptr() as usize;
    let mut spans = Vec::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = field.name.as_ptr() as usize - base;
        let value = field.value.as_ptr() as usize - base;
        spans.push((name, field.name.len(), value, field.value.len()));
    }
    let head = buffer.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (name, name_len, value, value_len) in spans {
        let name = HeaderName::from_bytes(&head[name..name + name_len])
            .map_err(|_| invalid("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value..value + value_len))
            .map_err(|_| invalid("bad header value"))?;
        headers.append(name, value);
    }
    let (framing, delimited) = Framing::of(method, status, &headers)?;
    let keep_alive = delimited && keeps_alive(version, &headers);
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Parsed::Final((response, framing, keep_alive)))
}

/// HTTP/1.1 keeps the connection unless told to close it; HTTP/1.0 only when told to keep it.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let says = |token: &str| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match version {
        Version::HTTP_10 => says("keep-alive"),
        _ => !says("close"),
    }
}

/// How a response body is delimited, and where reading it has got to.
#[derive(Debug)]
enum Framing {
    /// Bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the backend closes the connection.
    UntilClose,
    Done,
}

impl Framing {
    /// The framing, and whether the body's end is known without the connection closing.
    fn of(method: &Method, status: StatusCode, headers: &HeaderMap) -> io::Result<(Self, bool)> {
        if *method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok((Self::Done, true));
        }
        if let Some(codings) = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
        {
            let chunked = codings
                .to_str()
                .ok()
                .and_then(|c| c.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            return Ok(if chunked {
                (Self::Chunked(Chunk::Size), true)
            } else {
                (Self::UntilClose, false)
            });
        }
        let mut length = None;
        for value in headers.get_all(header::CONTENT_LENGTH) {
            let n = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| invalid("bad Content-Length"))?;
            if length.is_some_and(|m| m != n) {
                return Err(invalid("conflicting Content-Length values"));
            }
            length = Some(n);
        }
        Ok(match length {
            Some(0) => (Self::Done, true),
            Some(n) => (Self::Length(n), true),
            None => (Self::UntilClose, false),
        })
    }
}

/// Where a chunked body's decoding is.
#[derive(Debug, Clone, Copy)]
enum Chunk {
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
fn decode_chunked(state: &mut Chunk, buffer: &mut BytesMut) -> io::Result<Option<Option<Bytes>>> {
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

/// A response body, read from the backend's connection as it is polled.
pub struct Incoming {
    framing: Framing,
    keep_alive: bool,
    connection: Option<Connection>,
}

impl Incoming {
    /// The connection, once the body has been read to its end and the connection may carry
    /// another request.
    pub fn take_reusable(&mut self) -> Option<Connection> {
        let done = matches!(self.framing, Framing::Done);
        let clean = self.connection.as_ref().is_some_and(|c| c.read.is_empty());
        if done && clean && self.keep_alive {
            self.connection.take()
        } else {
            None
        }
    }
}

impl Body for Incoming {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            let buffer = &mut connection.read;
            match &mut this.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(left) if !buffer.is_empty() => {
                    let take = (*left).min(buffer.len() as u64);
                    let data = buffer.split_to(take as usize).freeze();
                    *left -= take;
                    if *left == 0 {
                        this.framing = Framing::Done;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(state) => match decode_chunked(state, buffer) {
                    Ok(Some(Some(data))) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Some(None)) => {
                        this.framing = Framing::Done;
                        return Poll::Ready(None);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        this.connection = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Framing::UntilClose if !buffer.is_empty() => {
                    let data = buffer.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Length(_) | Framing::UntilClose => {}
            }
            buffer.reserve(READ_SIZE);
            let read = tokio_util::io::poll_read_buf(
                Pin::new(&mut connection.stream),
                cx,
                &mut connection.read,
            );
            match ready!(read) {
                Ok(0) if matches!(this.framing, Framing::UntilClose) => {
                    this.framing = Framing::Done;
                    this.keep_alive = false;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "backend closed the connection in the middle of the body",
                    ))));
                }
                Ok(_) => {}
                Err(e) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, method: Method) -> io::Result<Parsed> {
        parse_head(&mut BytesMut::from(text.as_bytes()), &method)
    }

    fn final_head(text: &str, method: Method) -> (Response<()>, Framing, bool) {
        match head(text, method).unwrap() {
            Parsed::Final(head) => head,
            _ => panic!("not a final head: {text:?}"),
        }
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let (response, framing, keep) = final_head(
            "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-Served-By: web-a\r\n\r\n",
            Method::GET,
        );
        assert_eq!(response.headers()["x-served-by"], "web-a");
        assert!(matches!(framing, Framing::Length(12)) && keep);

        let (_, framing, keep) = final_head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            Method::GET,
        );
        assert!(matches!(framing, Framing::Chunked(Chunk::Size)) && keep);

        let (_, framing, keep) = final_head("HTTP/1.1 200 OK\r\n\r\n", Method::GET);
        assert!(
            matches!(framing, Framing::UntilClose) && !keep,
            "no length: until close"
        );

        let (_, framing, _) = final_head(
            "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
            Method::HEAD,
        );
        assert!(matches!(framing, Framing::Done), "HEAD has no body");
        let (_, framing, _) = final_head(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n",
            Method::GET,
        );
        assert!(matches!(framing, Framing::Done), "304 has no body");

        let (_, _, keep) = final_head(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
            Method::GET,
        );
        assert!(!keep);
        let (_, _, keep) = final_head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", Method::GET);
        assert!(!keep, "HTTP/1.0 closes unless it says keep-alive");
        let (_, _, keep) = final_head(
            "HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
            Method::GET,
        );
        assert!(keep);
    }

    #[test]
    fn bad_heads_are_errors_and_interim_ones_are_skipped() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(head(bad, Method::GET).is_err(), "{bad:?}");
        }
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nContent-Le", Method::GET).unwrap(),
            Parsed::Partial
        ));
        let mut buffer =
            BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n\r\n"[..]);
        assert!(matches!(
            parse_head(&mut buffer, &Method::POST).unwrap(),
            Parsed::Interim
        ));
        assert!(matches!(
            parse_head(&mut buffer, &Method::POST).unwrap(),
            Parsed::Final(_)
        ));
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

    #[test]
    fn request_heads_carry_our_framing_only() {
        let request = http::Request::builder()
            .method(Method::POST)
            .uri("/api/posts?x=1")
            .header("host", "www.foobar.com")
            .header("content-length", "999")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let mut out = Vec::new();
        encode_head(&mut out, &parts, RequestFraming::Length(4));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /api/posts?x=1 HTTP/1.1\r\nhost: www.foobar.com\r\ncontent-length: 4\r\n\r\n"
        );

        // An HTTP/2 request, or an HTTP/1.1 one in absolute form: origin form to the backend.
        for (uri, line) in [
            ("http://www.foobar.com/a/b?c=d", "GET /a/b?c=d HTTP/1.1\r\n"),
            ("http://www.foobar.com", "GET / HTTP/1.1\r\n"),
        ] {
            let (parts, ()) = http::Request::get(uri).body(()).unwrap().into_parts();
            let mut out = Vec::new();
            encode_head(&mut out, &parts, RequestFraming::None);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{line}\r\n"));
        }
    }
}
