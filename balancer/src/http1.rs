//! HTTP/1.1 from clients, served here rather than by hyper's server, on plain and TLS
//! connections alike.
//!
//! Why: measured against HAProxy (`bench/balancer.sh`), the balancer was a few percent short,
//! and hyper's server side (its dispatcher state machine, its head encoding) was about a sixth
//! of the balancer's user-space CPU per request (perf). Here one loop per connection reads a
//! request head, hands the request to the proxy in the same task, and writes the response
//! head and the first part of its body in one system call, as HAProxy does. HTTP/2 is
//! `http2.rs`'s.
//!
//! What it implements of RFC 9112, as a gateway needs it:
//! - request heads parsed by httparse (hyper's parser): line and headers within
//!   `limits.max_header_size` (431 past it, 414 when the request line alone is), received
//!   within `limits.header_read_timeout` counted from when the connection starts waiting for
//!   a request (408 when part of one came; a silent close for an idle kept-alive connection,
//!   as the config documents);
//! - RFC 9112's MUSTs for a server, as HAProxy keeps them: exactly one valid `Host` in
//!   HTTP/1.1, equal to an absolute-form target's authority (`check_host`); origin, absolute
//!   or (OPTIONS) asterisk form, no fragment (`target_form`); else 400;
//! - request bodies by `Content-Length` (digits only, repeats equal) or chunked
//!   (`framing.rs`); both at once, `Transfer-Encoding` in HTTP/1.0, a malformed length or
//!   coding list: 400; a coding other than one final `chunked`: 501 (`request_framing`).
//!   Every refusal closes the connection (request smuggling);
//!   `Expect: 100-continue` answered when the proxy first reads the body, so a request
//!   refused by its announced size (413) never has its body sent;
//! - keep-alive: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with
//!   `Connection: keep-alive`; pipelined requests answered in order;
//! - responses framed by `Content-Length` when the body's size is known, else chunked, or by
//!   the connection's end for an HTTP/1.0 client; none for HEAD, 1xx, 204 and 304, whose
//!   headers pass as the backend sent them but Content-Length and Transfer-Encoding on 1xx
//!   and 204; a backend's 1xx heads (103 Early Hints) written to an HTTP/1.1 client as each
//!   arrives, while the proxy waits for the final one (`message::Interim`); `Date` added
//!   when missing;
//! - the connection closes after a response when the client asked, when the request's body
//!   was not read to its end, when the response body failed, and once the balancer drains;
//!   an idle connection closes at once when the balancer drains;
//! - `CONNECT` is refused (405): a reverse proxy tunnels nothing;
//! - HTTP/2 with prior knowledge (h2c): the connection preface is recognised and the
//!   connection, with what was read of it, is handed back for `http2.rs` to serve.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::framing::{self, Framing, READ_SIZE};
use crate::message::{BoxError, Interim, ProxyBody, error_page};
use crate::metrics::Metrics;

mod conn;
mod request;
mod response;

use conn::Conn;
pub use conn::Io;

pub use request::{Framed, frame_request};
use request::{Head, Refused, parse_request, too_large};
use response::write_response;
#[cfg(test)]
pub(crate) use response::{Out, encode_head, encode_interim};

/// The start of HTTP/2's connection preface (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The limits a connection is served with.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub header_read_timeout: Duration,
    pub max_header_size: usize,
}

/// How a connection's service ended.
pub enum Ended<S> {
    /// Closed: by the client, after a response, or refused.
    Closed,
    /// The client spoke HTTP/2 with prior knowledge: the connection, with the bytes read
    /// from it so far put back in front.
    Http2(Rewind<S>),
}

/// Serves HTTP/1.1 requests on `io` until the client closes, a response closes the
/// connection, the head of a request is refused, or `drain` is cancelled while idle. Each
/// request goes to `handle` in this task; its response is written before the next is read.
pub async fn serve<S, H, F>(
    io: S,
    mut handle: H,
    settings: Settings,
    drain: CancellationToken,
    metrics: &Metrics,
) -> Ended<S>
where
    S: Io,
    H: FnMut(Request<ProxyBody>) -> F,
    F: Future<Output = Response<ProxyBody>>,
{
    let mut conn = Conn {
        io,
        read: BytesMut::with_capacity(READ_SIZE),
        body: Framing::Done,
        continue_pending: false,
        owed: BytesMut::new(),
        broken: false,
        spans: Vec::new(),
    };
    let mut waiter = Waiter {
        timeout: settings.header_read_timeout,
        timer: Box::pin(tokio::time::sleep(settings.header_read_timeout)),
        drain: Box::pin(drain.clone().cancelled_owned()),
        token: drain,
    };
    // The response head's bytes, reused from one response to the next.
    let mut out = Vec::with_capacity(1024);
    loop {
        let head = match read_head(&mut conn, &mut waiter, settings.max_header_size).await {
            Ok(Next::Request(head)) => head,
            Ok(Next::Closed) => return Ended::Closed,
            Ok(Next::Http2) => {
                return Ended::Http2(Rewind {
                    prefix: conn.read.freeze(),
                    io: conn.io,
                });
            }
            Err(refused) => {
                let response = match refused {
                    Refused::Timeout => {
                        metrics.reject("header_timeout");
                        error_page(
                            StatusCode::REQUEST_TIMEOUT,
                            "The request did not arrive in time.",
                        )
                    }
                    Refused::TooLarge => {
                        metrics.reject("header_too_large");
                        error_page(
                            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                            "The request's headers are larger than this site accepts.",
                        )
                    }
                    Refused::TargetTooLong => {
                        metrics.reject("header_too_large");
                        error_page(
                            StatusCode::URI_TOO_LONG,
                            "The request's target is longer than this site accepts.",
                        )
                    }
                    Refused::Unsupported => error_page(
                        StatusCode::NOT_IMPLEMENTED,
                        "The request's transfer coding is not supported (only chunked is).",
                    ),
                    Refused::Malformed(why) => {
                        tracing::debug!("malformed request: {why}");
                        error_page(StatusCode::BAD_REQUEST, "The request is malformed.")
                    }
                    Refused::Tunnel => error_page(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "This site does not tunnel connections (CONNECT).",
                    ),
                    Refused::Gone => return Ended::Closed,
                };
                let _ = write_response(
                    &mut conn,
                    response,
                    &Method::GET,
                    Version::HTTP_11,
                    true,
                    &mut out,
                )
                .await;
                return Ended::Closed;
            }
        };
        let Head {
            mut parts,
            body,
            mut close,
            expect_continue,
        } = head;
        let (method, version) = (parts.method.clone(), parts.version);
        // A backend's 1xx heads, relayed as they come; an HTTP/1.0 client gets none.
        let relayed = (version == Version::HTTP_11).then(|| {
            let (sender, receiver) = tokio::sync::mpsc::channel(4);
            parts.extensions.insert(Interim(sender));
            receiver
        });

        let response = if matches!(body, Framing::Done) {
            let handling = handle(Request::from_parts(parts, empty()));
            relaying(handling, relayed, Client::Own(&mut conn)).await
        } else {
            // The body reads from the connection while the proxy sends it on; the connection
            // comes back when the proxy is done with the request.
            conn.body = body;
            conn.continue_pending = expect_continue;
            let shared = Arc::new(Mutex::new(conn));
            let body = ClientBody {
                conn: Arc::clone(&shared),
            };
            let handling = handle(Request::from_parts(parts, body.boxed()));
            let response = relaying(handling, relayed, Client::Shared(&shared)).await;
            match Arc::try_unwrap(shared) {
                Ok(shared) => conn = shared.into_inner().unwrap_or_else(|e| e.into_inner()),
                Err(_) => {
                    tracing::debug!("a request body outlived its request: connection closed");
                    return Ended::Closed;
                }
            }
            // A body not read to its end (a refusal, an early answer) leaves bytes that are
            // not a request: the connection ends with this response.
            if !matches!(conn.body, Framing::Done) || conn.broken {
                close = true;
            }
            response
        };
        close |= waiter.draining();
        let kept = write_response(&mut conn, response, &method, version, close, &mut out).await;
        // Ok(false) when the response closed the connection (`close`, or a body cut short).
        match kept {
            Ok(true) => {}
            Ok(false) => return Ended::Closed,
            Err(e) => {
                tracing::debug!("writing a response failed: {e}");
                return Ended::Closed;
            }
        }
    }
}

/// The client's connection as the relay of 1xx heads reaches it: this loop's own, or shared
/// with the request's body while the proxy reads it.
enum Client<'a, S> {
    Own(&'a mut Conn<S>),
    Shared(&'a Mutex<Conn<S>>),
}

impl<S: Io> Client<'_, S> {
    fn with<R>(&mut self, f: impl FnOnce(&mut Conn<S>) -> R) -> R {
        match self {
            Client::Own(conn) => f(conn),
            Client::Shared(conn) => f(&mut conn.lock().unwrap_or_else(|e| e.into_inner())),
        }
    }
}

/// Awaits the proxy's response to a request, writing each 1xx head the backend sends
/// meanwhile to the client as it comes, not with the final one: a 103's hints are worth
/// something only while the client still waits.
async fn relaying<S: Io>(
    handling: impl Future<Output = Response<ProxyBody>>,
    relayed: Option<tokio::sync::mpsc::Receiver<Response<()>>>,
    mut client: Client<'_, S>,
) -> Response<ProxyBody> {
    let Some(mut relayed) = relayed else {
        return handling.await;
    };
    tokio::pin!(handling);
    loop {
        tokio::select! {
            biased;
            Some(head) = relayed.recv() => {
                client.with(|conn| response::encode_interim(&mut conn.owed, &head));
                if poll_fn(|cx| client.with(|conn| conn.poll_owed(cx))).await.is_err() {
                    client.with(|conn| conn.broken = true);
                }
            }
            response = &mut handling => {
                // Heads read in the same poll as the final one: owed, so they go first, in
                // the final head's write.
                while let Ok(head) = relayed.try_recv() {
                    client.with(|conn| response::encode_interim(&mut conn.owed, &head));
                }
                return response;
            }
        }
    }
}

/// What waits for a request's head: its deadline and the balancer's drain.
struct Waiter {
    timeout: Duration,
    /// Set once per `timeout`, not once per request: when it fires, the request being waited
    /// for is checked against its own start and the timer set again if it has time left.
    timer: Pin<Box<tokio::time::Sleep>>,
    drain: Pin<Box<WaitForCancellationFutureOwned>>,
    token: CancellationToken,
}

impl Waiter {
    fn draining(&self) -> bool {
        self.token.is_cancelled()
    }
}

// Returned once per request and destructured at once: boxing the head would allocate each time.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(Head),
    /// The client closed between requests, or the balancer drains.
    Closed,
    /// HTTP/2's preface instead of a request.
    Http2,
}

/// Reads until a request head is complete, within the header timeout from now.
async fn read_head<S: Io>(
    conn: &mut Conn<S>,
    waiter: &mut Waiter,
    max_header_size: usize,
) -> Result<Next, Refused> {
    let started = Instant::now();
    loop {
        if !conn.read.is_empty() {
            if conn
                .read
                .starts_with(&H2_PREFACE[..conn.read.len().min(H2_PREFACE.len())])
            {
                if conn.read.len() >= H2_PREFACE.len() {
                    return Ok(Next::Http2);
                }
            } else if let Some(head) =
                parse_request(&mut conn.read, &mut conn.spans, max_header_size)?
            {
                return Ok(Next::Request(head));
            }
            if conn.read.len() >= max_header_size {
                return Err(too_large(&conn.read, max_header_size));
            }
        }
        let idle = conn.read.is_empty();
        conn.read.reserve(READ_SIZE);
        let read = poll_fn(|cx| {
            if idle && waiter.drain.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            while waiter.timer.as_mut().poll(cx).is_ready() {
                let deadline = started + waiter.timeout;
                if Instant::now() >= deadline {
                    return Poll::Ready(Some(Err(io::ErrorKind::TimedOut.into())));
                }
                waiter.timer.as_mut().reset(deadline.into());
            }
            tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.read).map(Some)
        })
        .await;
        match read {
            None => return Ok(Next::Closed),
            Some(Ok(0)) if idle => return Ok(Next::Closed),
            Some(Ok(0)) => return Err(Refused::Gone),
            Some(Ok(_)) => {}
            Some(Err(e)) if e.kind() == io::ErrorKind::TimedOut => {
                return if idle {
                    Ok(Next::Closed)
                } else {
                    Err(Refused::Timeout)
                };
            }
            Some(Err(_)) => return Err(Refused::Gone),
        }
    }
}

fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A request's body, read from the client's connection as the proxy polls it.
struct ClientBody<S> {
    conn: Arc<Mutex<Conn<S>>>,
}

impl<S: Io> Body for ClientBody<S> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let conn = &mut *conn;
        if conn.broken {
            return Poll::Ready(Some(Err("client connection failed".into())));
        }
        if std::mem::take(&mut conn.continue_pending) {
            conn.owed.extend_from_slice(CONTINUE);
        }
        if let Err(e) = ready!(conn.poll_owed(cx)) {
            conn.broken = true;
            return Poll::Ready(Some(Err(e.into())));
        }
        let polled = ready!(framing::poll_body(
            &mut conn.body,
            &mut conn.io,
            &mut conn.read,
            cx
        ));
        Poll::Ready(match polled {
            Some(Ok(data)) => Some(Ok(Frame::data(data))),
            Some(Err(e)) => {
                conn.broken = true;
                Some(Err(e.into()))
            }
            None => None,
        })
    }

    fn is_end_stream(&self) -> bool {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        matches!(conn.body, Framing::Done)
    }

    fn size_hint(&self) -> SizeHint {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        match conn.body {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A stream with bytes already read from it put back in front.
pub struct Rewind<S> {
    prefix: Bytes,
    io: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let taken = self.prefix.split_to(n);
            buf.put_slice(&taken);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{self, HeaderValue};
    use http_body_util::Full;
    use tokio::io::AsyncWriteExt;
    use tokio::io::{AsyncReadExt, DuplexStream};

    fn settings() -> Settings {
        Settings {
            header_read_timeout: Duration::from_millis(300),
            max_header_size: 1024,
        }
    }

    /// Serves one end of an in-memory connection: each request is answered with a body
    /// that says what arrived (`METHOD target body-bytes`).
    fn server(drain: CancellationToken) -> (DuplexStream, tokio::task::JoinHandle<bool>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            let handle = |request: Request<ProxyBody>| async move {
                let (parts, body) = request.into_parts();
                let body = match body.collect().await {
                    Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                    Err(e) => format!("body failed: {e}"),
                };
                let text = format!("{} {} {body}", parts.method, parts.uri);
                let mut response =
                    Response::new(Full::new(Bytes::from(text)).map_err(|n| match n {}).boxed());
                if parts.method == Method::HEAD {
                    response
                        .headers_mut()
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(1234));
                }
                response
            };
            let ended = serve(server, handle, settings(), drain, &Metrics::default()).await;
            matches!(ended, Ended::Http2(_))
        });
        (client, task)
    }

    /// Everything the server writes until it closes.
    async fn exchange(wire: &[u8]) -> String {
        let (mut client, task) = server(CancellationToken::new());
        client.write_all(wire).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
            .await
            .expect("the server closes the connection")
            .unwrap();
        task.await.unwrap();
        String::from_utf8(answer).unwrap()
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_until_one_asks_to_close() {
        let answer = exchange(
            b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n",
        )
        .await;
        let bodies: Vec<&str> = answer
            .split("\r\n\r\n")
            .skip(1)
            .map(|r| r.split("HTTP/1.1").next().unwrap())
            .collect();
        assert_eq!(
            bodies,
            ["GET /one ", "GET /two ", "GET /three "],
            "{answer}"
        );
        assert_eq!(answer.matches("HTTP/1.1 200 OK\r\n").count(), 3);
        assert!(answer.contains("content-length: 9\r\n") && answer.contains("date: "));
        assert!(
            answer.ends_with("connection: close\r\n\r\nGET /three "),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn http_1_0_keeps_the_connection_only_when_asked() {
        let answer = exchange(
            b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\nGET /c HTTP/1.0\r\n\r\n",
        )
        .await;
        assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
        assert!(answer.contains("connection: keep-alive\r\n") && answer.ends_with("GET /b "));
    }

    #[tokio::test]
    async fn bodies_by_length_and_chunks_arrive_and_other_framings_are_refused() {
        let answer = exchange(
            b"POST /l HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloPOST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
              3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\nPOST /g HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nxx",
        )
        .await;
        assert!(
            answer.contains("POST /l hello") && answer.contains("POST /c abcde"),
            "{answer}"
        );
        assert!(
            answer.contains("HTTP/1.1 501 Not Implemented") && answer.contains("connection: close"),
            "{answer}"
        );
        for bad in [
            &b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx"[..],
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
            b"G\0T / HTTP/1.1\r\n\r\n",
        ] {
            let answer = exchange(bad).await;
            assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
        }
    }

    #[tokio::test]
    async fn continue_is_sent_only_when_the_body_is_read() {
        let (mut client, task) = server(CancellationToken::new());
        client
            .write_all(
                b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
            )
            .await
            .unwrap();
        let mut interim = vec![0; CONTINUE.len()];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut interim))
            .await
            .expect("100 Continue before the body is sent")
            .unwrap();
        assert_eq!(interim, CONTINUE);
        client.write_all(b"abc").await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.ends_with("PUT /x abc"), "{answer}");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn head_answers_keep_their_length_and_send_no_body() {
        let answer =
            exchange(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /g HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
        let (head, rest) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-length: 1234"), "{head}");
        assert!(
            rest.starts_with("HTTP/1.1 200 OK"),
            "no body after HEAD's head: {rest}"
        );
    }

    #[tokio::test]
    async fn heads_too_large_too_slow_or_connect_are_refused() {
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "x".repeat(2000));
        assert!(exchange(big.as_bytes()).await.starts_with("HTTP/1.1 431 "));
        let many: String = (0..150).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let answer = exchange(many.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        assert!(
            exchange(b"CONNECT a:443 HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 405 ")
        );

        // Half a head, then nothing: 408 after the timeout. Nothing at all: a quiet close.
        let started = Instant::now();
        let answer = exchange(b"GET / HTTP/1.1\r\nHost: a\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(exchange(b"").await, "");
    }

    #[tokio::test]
    async fn an_idle_connection_closes_when_the_balancer_drains() {
        let drain = CancellationToken::new();
        let (mut client, task) = server(drain.clone());
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut first = vec![0; 12];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut first))
            .await
            .unwrap()
            .unwrap();
        drain.cancel();
        let mut rest = String::new();
        tokio::time::timeout(Duration::from_secs(1), client.read_to_string(&mut rest))
            .await
            .expect("closed at once, long before the header timeout")
            .unwrap();
        assert!(rest.ends_with("GET / "));
        assert!(!task.await.unwrap());
    }

    #[tokio::test]
    async fn http2_with_prior_knowledge_is_handed_back() {
        let (mut client, task) = server(CancellationToken::new());
        client.write_all(H2_PREFACE).await.unwrap();
        assert!(task.await.unwrap(), "handed back as HTTP/2");
    }
}
