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
//! - the request in origin form, with the client's headers the proxy kept and then its own
//!   (`forwarding::Forwarding`, written straight into the head); a body framed by its
//!   exact length when known (`Content-Length`), else chunked; written while the response
//!   head is awaited, so a backend that answers early (a 413) is heard;
//! - the response head parsed by httparse (hyper's parser); 1xx heads but 100 Continue sent
//!   on to the client as each arrives (`message::Interim`, in the request's extensions);
//! - the response body framed by the method and status (HEAD, 204, 304: none), else
//!   `Transfer-Encoding: chunked` (a `Content-Length` beside it dropped), else
//!   `Content-Length`, else the connection's end; any transfer coding other than one final
//!   chunked makes the response malformed (502), as HAProxy has it;
//! - a connection is kept for another request only after a complete, delimited response
//!   that did not ask to close, with nothing left over (in its buffer or, as far as the
//!   socket's readiness knows, in the socket), and whose request body was sent in full.
//!
//! Failures say whether the request may have reached the backend ([`SendError`]): the
//! proxy's retry rules depend on it. A kept-alive connection is checked before it is reused
//! ([`Connection::is_reusable`]): one the backend has closed is never written to.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{Method, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::forwarding::Forwarding;
use crate::framing::{self, Framing, READ_SIZE, invalid, push_field};
use crate::message::{BoxError, Interim, ProxyBody};

mod response;

use response::{Parsed, parse_head};

/// Most bytes in a response head.
const MAX_HEAD_SIZE: usize = 64 * 1024;

/// A connection to a backend, idle between requests.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    /// Read from the socket and not yet consumed.
    read: BytesMut,
    /// The next request head, built here to reuse the allocation.
    head: Vec<u8>,
    /// The response deadline's timer, kept from one request to the next (see `send`); None
    /// until the first request, and while a request holds it.
    timer: Option<Pin<Box<Sleep>>>,
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
    /// No response head by the deadline: the backend may still be working on the request.
    TimedOut,
}

impl Connection {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            read: BytesMut::with_capacity(READ_SIZE),
            head: Vec::with_capacity(1024),
            timer: None,
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

    /// Writes the request and reads the response head, by `deadline`; the body follows as
    /// the returned response's body is polled. `parts` must be in the form a backend gets
    /// (hop-by-hop headers removed); `forwarding`'s headers follow them.
    ///
    /// The deadline's timer stays with the connection and armed from one request to the
    /// next, as `http1.rs` does with its header timeout: when it fires, the current deadline
    /// is checked and the timer set again if time is left. A new timer per request (tokio's
    /// `timeout`) cost an insert into and a removal from tokio's timer wheel every time.
    pub async fn send(
        mut self,
        parts: &Parts,
        forwarding: &Forwarding<'_>,
        body: ProxyBody,
        deadline: Instant,
    ) -> Result<Response<Incoming>, SendError> {
        let mut timer = match self.timer.take() {
            // Set for an earlier request's deadline: past or sooner is checked when it fires,
            // later (a reload shortened the timeout) must be brought forward.
            Some(mut timer) => {
                if timer.deadline() > deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let exchange = self.exchange(parts, forwarding, body);
        tokio::pin!(exchange);
        let exchanged = poll_fn(|cx| {
            if let Poll::Ready(exchanged) = exchange.as_mut().poll(cx) {
                return Poll::Ready(Some(exchanged));
            }
            while timer.as_mut().poll(cx).is_ready() {
                if Instant::now() >= deadline {
                    return Poll::Ready(None);
                }
                timer.as_mut().reset(deadline);
            }
            Poll::Pending
        })
        .await;
        let mut response = exchanged.ok_or(SendError::TimedOut)??;
        if let Some(connection) = response.body_mut().connection.as_mut() {
            connection.timer = Some(timer);
        }
        Ok(response)
    }

    async fn exchange(
        mut self,
        parts: &Parts,
        forwarding: &Forwarding<'_>,
        body: ProxyBody,
    ) -> Result<Response<Incoming>, SendError> {
        let framing = RequestFraming::of(&parts.method, &parts.headers, &body);
        let mut head = std::mem::take(&mut self.head);
        head.clear();
        encode_head(&mut head, parts, forwarding, framing);
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
        let interim = parts.extensions.get::<Interim>();
        let head = if body_sent {
            read_head(&mut reader, &mut self.read, &parts.method, interim).await
        } else {
            let sending = write_body(&mut writer, body, framing);
            let reading = read_head(&mut reader, &mut self.read, &parts.method, interim);
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
pub(crate) enum RequestFraming {
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

/// `METHOD /path?query HTTP/1.1`, the headers but those `forwarding` replaces, its own, and
/// the framing header of our choosing.
pub(crate) fn encode_head(
    out: &mut Vec<u8>,
    parts: &Parts,
    forwarding: &Forwarding<'_>,
    framing: RequestFraming,
) {
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
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || forwarding.replaces(name)
        {
            continue;
        }
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    forwarding.write(out);
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
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
/// whether the connection may be kept. A 1xx head before it goes to `interim` at once.
async fn read_head(
    reader: &mut tokio::net::tcp::ReadHalf<'_>,
    buffer: &mut BytesMut,
    method: &Method,
    interim: Option<&Interim>,
) -> io::Result<(Response<()>, Framing, bool)> {
    loop {
        if !buffer.is_empty() {
            match parse_head(buffer, method)? {
                Parsed::Final(head) => return Ok(head),
                Parsed::Interim(Some(head)) => {
                    if let Some(Interim(client)) = interim {
                        // A client gone leaves nobody to tell; a slow one holds this up.
                        let _ = client.send(head).await;
                    }
                    continue;
                }
                Parsed::Interim(None) => continue,
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

/// A response body, read from the backend's connection as it is polled.
pub struct Incoming {
    framing: Framing,
    keep_alive: bool,
    connection: Option<Connection>,
}

impl Incoming {
    /// The connection, once the body has been read to its end and the connection may carry
    /// another request.
    ///
    /// Checked here, as the response ends, and again at checkout: a connection with
    /// anything left to read (bytes after the response, which no request asked for, or the
    /// backend's close) is never reused, so no request gets another's answer.
    pub fn take_reusable(&mut self) -> Option<Connection> {
        let done = matches!(self.framing, Framing::Done);
        let clean = self
            .connection
            .as_ref()
            .is_some_and(Connection::is_reusable);
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
        let Some(connection) = this.connection.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = ready!(framing::poll_body(
            &mut this.framing,
            &mut connection.stream,
            &mut connection.read,
            cx,
        ));
        Poll::Ready(match polled {
            Some(Ok(data)) => Some(Ok(Frame::data(data))),
            Some(Err(e)) => {
                this.connection = None;
                Some(Err(e))
            }
            None => None,
        })
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
    use crate::forwarding::Peer;
    use http::Version;
    use http::header::{HeaderName, HeaderValue};

    use crate::framing::Chunk;
    use crate::message::RawHead;
    use std::time::Duration;

    /// What the tests' requests are forwarded as: from a client at 192.0.2.7, through `Via:
    /// 1.1 lb`, with request id `i`.
    fn forwarded_as() -> (Peer, HeaderValue, HeaderValue) {
        (
            Peer::new(([192, 0, 2, 7], 5555).into(), "http"),
            HeaderValue::from_static("1.1 lb"),
            HeaderValue::from_static("i"),
        )
    }

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
        let mut headers = HeaderMap::new();
        response
            .extensions()
            .get::<RawHead>()
            .unwrap()
            .merge_into(&mut headers);
        assert_eq!(headers["x-served-by"], "web-a");
        assert!(matches!(framing, Framing::Length(12)) && keep);

        let (response, framing, keep) = final_head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::GET,
        );
        assert!(matches!(framing, Framing::Chunked(Chunk::Size)) && keep);
        let head = response.extensions().get::<RawHead>().unwrap();
        assert_eq!(
            head.fields().count(),
            0,
            "Content-Length beside chunked: dropped"
        );

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

    /// What a client gets of a backend's head: its end-to-end fields as they came, none of the
    /// hop-by-hop ones (those `Connection` names too), this hop's `Via` after the backend's,
    /// its `X-Request-Id` instead of the backend's, and the balancer's overrides (HSTS) instead
    /// of the backend's; the same over HTTP/1 (written from the raw head) and HTTP/2 (merged).
    #[test]
    fn a_relayed_head_keeps_end_to_end_fields_and_adds_this_hops() {
        let (response, _, keep) = final_head(
            "HTTP/1.1 200 OK\r\nServer: nginx\r\nConnection: keep-alive, X-Mine\r\n\
             Keep-Alive: timeout=5\r\nX-Mine: 1\r\nVia: 1.1 app\r\nX-Request-Id: theirs\r\n\
             Proxy-Connection: keep-alive\r\nTrailer: Expires\r\n\
             Strict-Transport-Security: max-age=1\r\nTransfer-Encoding: chunked\r\n\
             Date: Mon, 23 Nov 2026 10:00:00 GMT\r\n\r\n",
            Method::GET,
        );
        assert!(keep);
        let (mut parts, ()) = response.into_parts();
        let head = parts.extensions.get_mut::<RawHead>().unwrap();
        head.via = Some(HeaderValue::from_static("1.1 lb"));
        head.request_id = Some(HeaderValue::from_static("ours"));
        parts.headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=2"),
        );

        let mut out = Vec::new();
        crate::http1::encode_head(
            &mut out,
            &parts,
            crate::http1::Out::Chunked,
            None,
            false,
            Version::HTTP_11,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: nginx\r\nVia: 1.1 app\r\n\
             Date: Mon, 23 Nov 2026 10:00:00 GMT\r\nvia: 1.1 lb\r\nx-request-id: ours\r\n\
             strict-transport-security: max-age=2\r\ntransfer-encoding: chunked\r\n\r\n"
        );

        let mut response = Response::from_parts(parts, ());
        crate::message::merge_raw_head(&mut response);
        let headers = response.headers();
        let names: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            [
                "server",
                "via",
                "date",
                "x-request-id",
                "strict-transport-security"
            ]
        );
        let vias: Vec<_> = headers.get_all(header::VIA).iter().collect();
        assert_eq!(vias, ["1.1 app", "1.1 lb"]);
        assert_eq!(headers["x-request-id"], "ours");
        assert_eq!(headers[header::STRICT_TRANSPORT_SECURITY], "max-age=2");
        assert!(response.extensions().get::<RawHead>().is_none());
    }

    #[test]
    fn bad_heads_are_errors_and_interim_ones_are_skipped() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
            // A transfer coding this hop cannot relay with its field: 502, never dropped.
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
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
            Parsed::Interim(None)
        ));
        assert!(matches!(
            parse_head(&mut buffer, &Method::POST).unwrap(),
            Parsed::Final(_)
        ));
        // Other 1xx heads are passed on to the client, this hop's fields left out.
        let mut buffer = BytesMut::from(
            &b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nConnection: keep-alive\r\nX: 1\r\n\r\n"[..],
        );
        let Parsed::Interim(Some(relayed)) = parse_head(&mut buffer, &Method::GET).unwrap() else {
            panic!("a 103 is relayed");
        };
        let mut out = BytesMut::new();
        crate::http1::encode_interim(&mut out, &relayed);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\nx: 1\r\n\r\n"
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
        let (peer, via, id) = forwarded_as();
        let forwarding = Forwarding::of(&parts.headers, &peer, &via, &id);
        let mut out = Vec::new();
        encode_head(&mut out, &parts, &forwarding, RequestFraming::Length(4));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /api/posts?x=1 HTTP/1.1\r\nhost: www.foobar.com\r\n\
             x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: www.foobar.com\r\n\
             forwarded: for=192.0.2.7;proto=http;host=\"www.foobar.com\"\r\n\
             via: 1.1 lb\r\nx-request-id: i\r\ncontent-length: 4\r\n\r\n"
        );

        // An HTTP/2 request, or an HTTP/1.1 one in absolute form: origin form to the backend.
        for (uri, line) in [
            ("http://www.foobar.com/a/b?c=d", "GET /a/b?c=d HTTP/1.1\r\n"),
            ("http://www.foobar.com", "GET / HTTP/1.1\r\n"),
        ] {
            let (parts, ()) = http::Request::get(uri).body(()).unwrap().into_parts();
            let forwarding = Forwarding::of(&parts.headers, &peer, &via, &id);
            let mut out = Vec::new();
            encode_head(&mut out, &parts, &forwarding, RequestFraming::None);
            assert!(String::from_utf8(out).unwrap().starts_with(line));
        }
    }

    /// Bytes a backend sends after a complete response, which no request asked for: the
    /// connection is not given back for reuse, or the next request would read them as its
    /// answer.
    #[tokio::test]
    async fn a_connection_with_bytes_after_its_response_is_not_reused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (answered, wait) = tokio::sync::oneshot::channel::<()>();
        let backend = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut read = vec![0; 4096];
            let _ = stream.read(&mut read).await;
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            stream.write_all(answer).await.unwrap();
            let _ = wait.await;
            let unasked = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nEVIL";
            stream.write_all(unasked).await.unwrap();
            stream
        });
        let (peer, via, id) = forwarded_as();
        let (parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let forwarding = Forwarding::of(&parts.headers, &peer, &via, &id);
        let empty = http_body_util::Empty::new().map_err(|n| match n {}).boxed();
        let connection = Connection::connect(addr).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let Ok(response) = connection.send(&parts, &forwarding, empty, deadline).await else {
            panic!("answered");
        };
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
        let connection = body.connection.as_ref().unwrap();
        assert!(connection.is_reusable(), "nothing unread yet");
        answered.send(()).unwrap();
        connection.stream.readable().await.unwrap();
        assert!(body.take_reusable().is_none(), "unread bytes: not reused");
        drop(backend.await.unwrap());
    }

    /// The deadline's timer outlives a request: once it has fired for an earlier deadline,
    /// a later request with time left still gets its answer, and one without gets TimedOut.
    #[tokio::test]
    async fn the_kept_timer_times_out_only_past_each_requests_own_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut read = vec![0; 4096];
            for delay in [0, 300, 300] {
                if stream.read(&mut read).await.unwrap_or(0) == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
            }
        });
        let (peer, via, id) = forwarded_as();
        let (parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let forwarding = Forwarding::of(&parts.headers, &peer, &via, &id);
        let empty = || http_body_util::Empty::new().map_err(|n| match n {}).boxed();
        let send = |connection: Connection, within: u64| {
            let deadline = Instant::now() + Duration::from_millis(within);
            connection.send(&parts, &forwarding, empty(), deadline)
        };
        let reused = |response: Response<Incoming>| {
            let mut body = response.into_body();
            body.take_reusable().expect("kept alive")
        };

        let connection = Connection::connect(addr).await.unwrap();
        let Ok(first) = send(connection, 100).await else {
            panic!("the first request is answered at once");
        };
        let connection = reused(first);
        tokio::time::sleep(Duration::from_millis(200)).await; // the first deadline passes
        let Ok(second) = send(connection, 1000).await else {
            panic!("300 ms is within the second request's deadline");
        };
        let connection = reused(second);
        assert!(matches!(
            send(connection, 100).await,
            Err(SendError::TimedOut)
        ));
        backend.abort();
    }
}
