//! HTTP/2 from clients, served with the h2 crate directly rather than through hyper's server,
//! on TLS connections (ALPN `h2`) and on plain ones that open with the preface.
//!
//! Why not hyper's server: it runs each stream as a task of its own beside the connection's,
//! and its service answers with one final response, so a backend's 103 Early Hints could not
//! reach an HTTP/2 client. Here one task serves the connection and every stream on it:
//! - each stream is a future in the connection's own set (`FuturesUnordered`), polled by
//!   the same task that reads and writes the socket: a stream that has its answer queues
//!   its frames, and they go out with the other streams' in the connection's next write
//!   (`batching.rs` gathers them);
//! - a backend's 1xx heads go to the client as they come, each as an informational HEADERS
//!   frame (`SendResponse::send_informational`), while the stream waits for the final one
//!   (`message::Interim`, as HTTP/1.1 does);
//! - a stream the client resets (RST_STREAM) drops its future, which cancels the proxy's
//!   work for it: its backend request is abandoned, as HTTP/1.1's is when a client leaves;
//! - `CONNECT` is refused with 405, never forwarded as `CONNECT /`: a reverse proxy tunnels
//!   nothing (RFC 9113 section 8.5);
//! - a connection with no stream open for `idle_timeout` is closed with GOAWAY, as an idle
//!   HTTP/1.1 connection is, so idle clients cannot hold every connection slot; the preface
//!   must come within the same time;
//! - when the balancer drains, GOAWAY: the streams already open are answered, no new one is.
//!
//! What it costs against hyper's server, measured side by side (`MODES=h2 bench/https.sh`,
//! one round of 15 s each, hyper's build and this one alternating, three pairs, the machine
//! otherwise idle): 27 515 requests/s against 28 091 (0.98), 21.1 µs of CPU per request
//! against 20.6 (1.02). The futures set and the 1xx channel per stream cost about what
//! hyper's task per stream did (perf: `FuturesUnordered` 1.7% of the balancer's time, hyper's
//! spawn and stream task 1%). The gap to HAProxy is elsewhere: h2's HPACK and stream
//! bookkeeping and the `HeaderMap`s, and the kernel's share, half of the time for both.
//!
//! What h2 keeps for us (RFC 9113): frame and HPACK parsing, flow control, `Content-Length`
//! against the DATA received, a malformed request as a stream error (RST_STREAM, not the
//! whole connection: `vendor/h2/PATCHED.md`), header lists past `max_header_list_size`
//! answered with 431, and rapid-reset floods bounded (`max_pending_accept_reset_streams`,
//! `max_local_error_reset_streams`).

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::batching::Batched;
use crate::http1::Io;
use crate::message::{BoxError, HOP_BY_HOP, Interim, ProxyBody, error_page, merge_raw_head};

/// Streams a client may have open at once on one connection (hyper's default, which this
/// balancer served with before; HAProxy's is 100, RFC 9113 asks for no fewer than 100).
const MAX_CONCURRENT_STREAMS: u32 = 200;
/// Flow-control windows a client may fill before the proxy reads: 1 MiB for each stream and
/// for the connection (hyper's defaults; HTTP/2's own 64 KiB throttles uploads).
const WINDOW: u32 = 1024 * 1024;
/// Bytes of response a stream may have queued beyond what the client's window takes.
const MAX_SEND_BUFFER: usize = 400 * 1024;
/// Streams the balancer may reset for the client's errors before the connection is closed
/// (hyper's default; h2's own guard against a flood of bad streams).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// The limits a connection is served with.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The decoded header list's size limit (SETTINGS_MAX_HEADER_LIST_SIZE); past it, 431.
    pub max_header_list_size: u32,
    /// How long the preface may take, and how long the connection may stay with no stream
    /// open.
    pub idle_timeout: Duration,
}

/// Serves a connection's HTTP/2 streams until the client closes it, an error ends it, it
/// stays idle for `settings.idle_timeout`, or `drain` is cancelled and its streams are done.
/// Each stream's request goes to `handle`, in this task.
pub async fn serve<S, H, F>(io: S, handle: H, settings: Settings, drain: CancellationToken)
where
    S: Io,
    H: Fn(Request<ProxyBody>) -> F,
    F: Future<Output = Response<ProxyBody>>,
{
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(settings.max_header_list_size)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS));
    let handshake = builder.handshake::<_, Bytes>(Batched::new(io));
    let mut connection = match tokio::time::timeout(settings.idle_timeout, handshake).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => return tracing::debug!("HTTP/2 preface refused: {e}"),
        Err(_) => return tracing::debug!("HTTP/2 preface too slow"),
    };
    let mut streams = FuturesUnordered::new();
    let mut idle = Idle::new(settings.idle_timeout);
    let mut drained = pin!(drain.cancelled());
    let mut closing = false;
    let ended = poll_fn(|cx| {
        if !closing && drained.as_mut().poll(cx).is_ready() {
            connection.graceful_shutdown();
            closing = true;
        }
        loop {
            // Accepting also drives the connection: it reads frames and writes what the
            // streams queued.
            let mut accepted = false;
            while let Poll::Ready(next) = connection.poll_accept(cx) {
                match next {
                    Some(Ok((request, respond))) => {
                        streams.push(answer(&handle, request, respond, settings.idle_timeout));
                        accepted = true;
                    }
                    Some(Err(e)) => return Poll::Ready(Err(e)),
                    None => return Poll::Ready(Ok(())),
                }
            }
            // A stream that finishes may have queued its last frames: accept again to write
            // them, and then wait.
            let mut finished = false;
            while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {
                finished = true;
            }
            if finished || accepted {
                continue;
            }
            // Idle from here (timer polled after any change, so it is registered): GOAWAY,
            // written by the next pass.
            idle.busy(!streams.is_empty());
            if closing || !idle.poll_expired(cx) {
                return Poll::Pending;
            }
            connection.graceful_shutdown();
            closing = true;
        }
    })
    .await;
    if let Err(e) = ended {
        tracing::debug!("HTTP/2 connection ended: {e}");
    }
}

/// The idle timer: armed when the last stream ends, disarmed when one opens.
struct Idle {
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

impl Idle {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
            armed: true,
        }
    }

    fn busy(&mut self, busy: bool) {
        if busy {
            self.armed = false;
        } else if !self.armed {
            self.armed = true;
            self.timer.as_mut().reset(Instant::now() + self.timeout);
        }
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.armed && self.timer.as_mut().poll(cx).is_ready()
    }
}

/// Answers one stream: its request to `handle`, the backend's 1xx heads relayed while it
/// waits, then the response's head and body. Returns early, dropping the proxy's work, when
/// the client resets the stream.
async fn answer<H, F>(
    handle: &H,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    timeout: Duration,
) where
    H: Fn(Request<ProxyBody>) -> F,
    F: Future<Output = Response<ProxyBody>>,
{
    let mut response = if request.method() == Method::CONNECT {
        error_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "This site does not tunnel connections (CONNECT).",
        )
    } else {
        let (mut parts, body) = request.into_parts();
        let (sender, mut relayed) = tokio::sync::mpsc::channel(4);
        parts.extensions.insert(Interim(sender));
        let body = RequestBody::new(body, &parts.headers).boxed();
        let mut handling = pin!(handle(Request::from_parts(parts, body)));
        loop {
            tokio::select! {
                biased;
                response = &mut handling => break response,
                Some(head) = relayed.recv() => {
                    if let Err(e) = respond.send_informational(head) {
                        tracing::debug!("a 1xx head could not be relayed: {e}");
                    }
                }
                reset = poll_fn(|cx| respond.poll_reset(cx)) => {
                    return tracing::debug!("stream reset by the client: {reset:?}");
                }
            }
        }
    };
    prepare_head(&mut response);
    let (head, body) = response.into_parts();
    let end = body.is_end_stream();
    let sending = match respond.send_response(Response::from_parts(head, ()), end) {
        Ok(sending) => sending,
        Err(e) => {
            tracing::debug!("response head refused: {e}");
            return respond.send_reset(Reason::INTERNAL_ERROR);
        }
    };
    if !end {
        send_body(body, sending, timeout).await;
    }
}

/// Makes a response head fit for HTTP/2: the backend's raw fields merged into the map, no
/// connection-specific field (RFC 9113 8.2.2), `Date` when missing, and `Content-Length` when
/// the body's size is known.
fn prepare_head(response: &mut Response<ProxyBody>) {
    merge_raw_head(response);
    // An empty body (HEAD, 204, 304) keeps the head's own length, or none.
    let length = Some(response.body())
        .filter(|body| !body.is_end_stream())
        .and_then(|body| body.size_hint().exact());
    let headers = response.headers_mut();
    strip_connection_fields(headers);
    if !headers.contains_key(header::DATE) {
        let now = httpdate::fmt_http_date(std::time::SystemTime::now());
        if let Ok(date) = HeaderValue::from_str(&now) {
            headers.insert(header::DATE, date);
        }
    }
    if let Some(length) = length.filter(|_| !headers.contains_key(header::CONTENT_LENGTH)) {
        headers.insert(header::CONTENT_LENGTH, length.into());
    }
}

fn strip_connection_fields(headers: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Sends a response body's frames as the client's window lets them go: the next frame is
/// read from the backend only when the stream has room, so a slow client slows its backend
/// instead of filling the balancer's memory. A client whose window stays shut for `timeout`
/// has the stream reset, so it cannot hold the stream and its backend request for ever.
async fn send_body(mut body: ProxyBody, mut sending: SendStream<Bytes>, timeout: Duration) {
    loop {
        // The timer only when the window is shut: most frames find room at once.
        sending.reserve_capacity(1);
        let waited = if sending.capacity() > 0 {
            Ok(Ok(()))
        } else {
            let room = poll_fn(|cx| poll_room(&mut sending, cx));
            tokio::time::timeout(timeout, room).await
        };
        match waited {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return tracing::debug!("response body not sent: {e}"),
            Err(_) => {
                tracing::debug!("the client took nothing for {timeout:?}: stream reset");
                return sending.send_reset(Reason::CANCEL);
            }
        }
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            reset = poll_fn(|cx| sending.poll_reset(cx)) => {
                return tracing::debug!("stream reset by the client: {reset:?}");
            }
        };
        let sent = match frame {
            None => sending.send_data(Bytes::new(), true),
            Some(Err(e)) => {
                tracing::debug!("response body failed: {e}");
                return sending.send_reset(Reason::INTERNAL_ERROR);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let end = body.is_end_stream();
                    let sent = sending.send_data(data, end);
                    if sent.is_ok() && !end {
                        continue;
                    }
                    sent
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(mut trailers) => {
                        strip_connection_fields(&mut trailers);
                        sending.send_trailers(trailers)
                    }
                    Err(_) => continue,
                },
            },
        };
        if let Err(e) = sent {
            tracing::debug!("response body not sent: {e}");
        }
        return;
    }
}

/// Ready when the stream has room for at least one more byte, or has failed (the client
/// reset it, or the connection ended). h2 queues a whole frame past the window and sends it
/// as the window opens; `MAX_SEND_BUFFER` bounds what it queues.
fn poll_room(sending: &mut SendStream<Bytes>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
    sending.reserve_capacity(1);
    while sending.capacity() == 0 {
        match ready!(sending.poll_capacity(cx)) {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Poll::Ready(Err(e.into())),
            None => return Poll::Ready(Err("the stream closed".into())),
        }
    }
    Poll::Ready(Ok(()))
}

/// A client's request body, as the proxy reads it: DATA frames, then trailers. What is read
/// is given back to the client's window at once; the proxy's own reading is what throttles.
struct RequestBody {
    stream: RecvStream,
    /// The DATA frames have ended; trailers next.
    data_done: bool,
    /// `Content-Length`, when the request declared one (h2 checks the DATA against it).
    length: Option<u64>,
}

impl RequestBody {
    fn new(stream: RecvStream, headers: &HeaderMap) -> Self {
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        Self {
            stream,
            data_done: false,
            length,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.data_done {
            match ready!(self.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => self.data_done = true,
            }
        }
        match ready!(self.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}
