//! Raw HTTP/2 frames against the balancer process (h2c, prior knowledge, on the plain
//! listener): a malformed request is a stream error (RFC 9113 section 8.1.1), answered with
//! RST_STREAM(PROTOCOL_ERROR) on its own stream, never forwarded, while the connection and
//! its other streams go on. The header blocks are HPACK written by hand (literals, no
//! Huffman), since no well-behaved client sends such fields; that the balancer's h2
//! (`vendor/h2`, PATCHED.md) decoded a malformed field into its dynamic table is checked by
//! later requests that refer to the table by index.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use foobar_service::testing::RunningService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

/// The longest any single read may take before the test counts as stalled: a failure
/// detector, never what the test asserts.
const STALL: Duration = Duration::from_secs(5);

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

const PROTOCOL_ERROR: u32 = 0x1;
const COMPRESSION_ERROR: u32 = 0x9;

/// An HPACK integer (RFC 7541 section 5.1) with an `prefix`-bit prefix, the first octet's
/// other bits `flags`.
fn int(flags: u8, prefix: u32, mut value: usize) -> Vec<u8> {
    let max = (1 << prefix) - 1;
    if value < max {
        return vec![flags | value as u8];
    }
    let mut out = vec![flags | max as u8];
    value -= max;
    while value >= 128 {
        out.push(0x80 | (value % 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
    out
}

/// A string literal, no Huffman.
fn string(bytes: &[u8]) -> Vec<u8> {
    [int(0, 7, bytes.len()), bytes.to_vec()].concat()
}

/// Indexed field (static or dynamic table).
fn indexed(index: usize) -> Vec<u8> {
    int(0x80, 7, index)
}

/// Literal without indexing, new name.
fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    [vec![0x00], string(name), string(value)].concat()
}

/// Literal with incremental indexing, new name: becomes dynamic entry 62.
fn literal_indexed(name: &[u8], value: &[u8]) -> Vec<u8> {
    [vec![0x40], string(name), string(value)].concat()
}

/// Literal without indexing whose name is the table's entry `index`.
fn literal_name(index: usize, value: &[u8]) -> Vec<u8> {
    [int(0x00, 4, index), string(value)].concat()
}

/// `GET path` for www.foobar.com: `:method GET` and `:scheme http` from the static table,
/// `:path` and `:authority` literals by static name.
fn request(path: &str) -> Vec<u8> {
    [
        indexed(2),
        indexed(6),
        literal_name(4, path.as_bytes()),
        literal_name(1, b"www.foobar.com"),
    ]
    .concat()
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// How a stream ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// RST_STREAM with this error code.
    Reset(u32),
    /// A response: its `:status` (found only as the static table's 200, index 8, which is
    /// how h2 encodes it) and body.
    Response { ok: bool, body: Vec<u8> },
}

/// One HTTP/2 connection, read frame by frame; streams' outcomes kept as they end, whatever
/// the order.
struct Client {
    stream: TcpStream,
    ended: HashMap<u32, Outcome>,
    /// Responses whose END_STREAM has not come yet.
    open: HashMap<u32, (bool, Vec<u8>)>,
    goaway: Option<u32>,
}

impl Client {
    async fn connect(http: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(http).await.unwrap();
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        stream.write_all(&hello).await.unwrap();
        Self {
            stream,
            ended: HashMap::new(),
            open: HashMap::new(),
            goaway: None,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// A request in one HEADERS frame, END_STREAM and END_HEADERS set.
    async fn request(&mut self, stream: u32, block: &[u8]) {
        self.send(&frame(HEADERS, END_STREAM | END_HEADERS, stream, block))
            .await;
    }

    /// Reads frames until `stream` has ended; None if the connection ended first.
    async fn outcome(&mut self, stream: u32) -> Option<Outcome> {
        loop {
            if let Some(outcome) = self.ended.remove(&stream) {
                return Some(outcome);
            }
            if self.goaway.is_some() || !self.read_frame().await {
                return None;
            }
        }
    }

    /// One frame, acted on; false at the end of the connection.
    async fn read_frame(&mut self) -> bool {
        let mut head = [0; 9];
        let read = tokio::time::timeout(STALL, self.stream.read_exact(&mut head))
            .await
            .expect("a frame within 5 s");
        if read.is_err() {
            return false;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0; len];
        let read = tokio::time::timeout(STALL, self.stream.read_exact(&mut payload))
            .await
            .expect("a frame's payload within 5 s");
        if read.is_err() {
            return false;
        }
        match kind {
            SETTINGS if flags & ACK == 0 => self.send(&frame(SETTINGS, ACK, 0, &[])).await,
            PING if flags & ACK == 0 => self.send(&frame(PING, ACK, 0, &payload)).await,
            GOAWAY => {
                self.goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
            }
            RST_STREAM => {
                let code = u32::from_be_bytes(payload[..4].try_into().unwrap());
                self.open.remove(&id);
                self.ended.insert(id, Outcome::Reset(code));
            }
            HEADERS => {
                assert_ne!(flags & END_HEADERS, 0, "a response head in one frame");
                self.open
                    .insert(id, (payload.first() == Some(&0x88), Vec::new()));
                self.end_if(id, flags);
            }
            DATA => {
                self.open
                    .get_mut(&id)
                    .unwrap()
                    .1
                    .extend_from_slice(&payload);
                self.end_if(id, flags);
            }
            _ => {}
        }
        true
    }

    fn end_if(&mut self, id: u32, flags: u8) {
        if flags & END_STREAM != 0 {
            let (ok, body) = self.open.remove(&id).unwrap();
            self.ended.insert(id, Outcome::Response { ok, body });
        }
    }
}

fn ok() -> Option<Outcome> {
    Some(Outcome::Response {
        ok: true,
        body: b"a".to_vec(),
    })
}

fn reset() -> Option<Outcome> {
    Some(Outcome::Reset(PROTOCOL_ERROR))
}

/// Every malformed request on one connection, each on its own stream: reset with
/// PROTOCOL_ERROR and never forwarded; good requests between and after them, one in flight
/// while a malformed one is reset, still answered 200; the HPACK dynamic table still in step
/// with the client's (by literals with incremental indexing, referred to by index later),
/// also across a block split over CONTINUATION frames.
#[tokio::test]
async fn malformed_http2_requests_reset_their_stream_and_the_connection_goes_on() {
    let a = Backend::start("a").await;
    let lb = round_robin(&[&a]).await;
    let mut client = Client::connect(lb.addr("http")).await;

    // (what, extra fields after the request's own): each on a new stream, path /bad/N.
    let vectors: [(&str, Vec<u8>); 8] = [
        ("uppercase name", literal(b"X-Upper", b"1")),
        ("unknown pseudo-header", literal(b":foo", b"1")),
        ("CR in a value", literal(b"x-v", b"a\rb")),
        ("LF in a value", literal(b"x-v", b"a\nb")),
        ("NUL in a value", literal(b"x-v", b"a\0b")),
        ("CRLF in a value", literal(b"x-v", b"a\r\nx-injected: 1")),
        ("space in a name", literal(b"x v", b"1")),
        ("CR in a value, by a static name", literal_name(58, b"a\rb")),
    ];
    let mut id = 1;
    for (n, (what, extra)) in vectors.iter().enumerate() {
        let block = [request(&format!("/bad/{n}")), extra.clone()].concat();
        client.request(id, &block).await;
        assert_eq!(client.outcome(id).await, reset(), "{what}");
        id += 2;
    }
    client.request(id, &request("/")).await;
    assert_eq!(client.outcome(id).await, ok(), "a good request after them");
    id += 2;

    // One in flight (the backend answers /slow after 300 ms) while a malformed one is reset.
    let slow = id;
    client.request(slow, &request("/slow")).await;
    let bad = slow + 2;
    let block = [request("/bad/in-flight"), literal(b":foo", b"1")].concat();
    client.request(bad, &block).await;
    assert_eq!(client.outcome(bad).await, reset(), "beside one in flight");
    assert_eq!(client.ended.get(&slow), None, "reset before /slow's answer");
    assert_eq!(client.outcome(slow).await, ok(), "the one in flight");
    id = bad + 2;

    // The dynamic table: `x-token: abc`, then a malformed `X-Upper: 1`, then `x-bad: a<CR>b`
    // (a valid name, a malformed value), all with incremental indexing in a malformed request:
    // x-bad is entry 62, X-Upper 63, x-token 64 only if h2 kept every one of them.
    let block = [
        request("/bad/indexed"),
        literal_indexed(b"x-token", b"abc"),
        literal_indexed(b"X-Upper", b"1"),
        literal_indexed(b"x-bad", b"a\rb"),
    ]
    .concat();
    client.request(id, &block).await;
    assert_eq!(client.outcome(id).await, reset(), "malformed, indexed");
    id += 2;
    // A good request by those indexes: x-token whole, x-bad's name with a valid value.
    let block = [request("/"), indexed(64), literal_name(62, b"fine")].concat();
    client.request(id, &block).await;
    assert_eq!(client.outcome(id).await, ok(), "by the dynamic table");
    let received = a.last_headers.lock().unwrap().clone();
    let field = |name: &str| received.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    assert_eq!(
        field("x-token").map(String::as_str),
        Some("abc"),
        "{received:?}"
    );
    assert_eq!(
        field("x-bad").map(String::as_str),
        Some("fine"),
        "{received:?}"
    );
    id += 2;
    // The malformed entries whole are malformed again.
    for entry in [62, 63] {
        let block = [request("/bad/by-index"), indexed(entry)].concat();
        client.request(id, &block).await;
        assert_eq!(client.outcome(id).await, reset(), "entry {entry}");
        id += 2;
    }

    // A malformed block split over CONTINUATION frames, cut after the malformed field and in
    // the next one: reset once its last frame came, its fields in the table (x-after is 62).
    for cut in [0, 4] {
        let rest = literal_indexed(b"x-after", b"1");
        let first = [
            request("/bad/continued"),
            literal(b"X-Upper", b"1"),
            rest[..cut].to_vec(),
        ]
        .concat();
        client.send(&frame(HEADERS, END_STREAM, id, &first)).await;
        client
            .send(&frame(CONTINUATION, END_HEADERS, id, &rest[cut..]))
            .await;
        assert_eq!(client.outcome(id).await, reset(), "split at {cut}");
        id += 2;
        let block = [request("/"), indexed(62)].concat();
        client.request(id, &block).await;
        assert_eq!(client.outcome(id).await, ok(), "after the split block");
        id += 2;
    }

    assert_eq!(client.goaway, None, "the connection never ended");
    assert_eq!(a.hits("/"), 4);
    assert_eq!(a.hits("/slow"), 1);
    let hits = a.hits.lock().unwrap().clone();
    assert!(
        hits.keys().all(|path| !path.starts_with("/bad")),
        "no malformed request reached the backend: {hits:?}"
    );

    // A genuine HPACK error (an index past the dynamic table) still ends the connection,
    // with the code RFC 9113 section 4.3 gives it.
    let block = [request("/bad/hpack"), indexed(200)].concat();
    client.request(id, &block).await;
    assert_eq!(client.outcome(id).await, None);
    assert_eq!(
        client.goaway,
        Some(COMPRESSION_ERROR),
        "GOAWAY COMPRESSION_ERROR"
    );
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

/// A balancer in front of one backend, with `limits.header_read_timeout` of 1 s: the idle
/// and the shut-window timeouts.
async fn with_a_one_second_timeout() -> (Backend, RunningService) {
    let a = Backend::start("a").await;
    let backends = [(&a, 1, false)];
    let spec = Spec {
        backends: &backends,
        algorithm: "round_robin",
    };
    let limits = "[limits]\nheader_read_timeout = \"1s\"\n";
    let lb = start(&write_config(&spec, PLAIN_HTTP, limits)).await;
    (a, lb)
}

/// An HTTP/2 connection with no stream open is closed, as an idle HTTP/1.1 one is, after
/// `limits.header_read_timeout`: GOAWAY(NO_ERROR), then the end of the connection. Before,
/// an idle HTTP/2 client held its connection slot for ever.
#[tokio::test]
async fn an_idle_http2_connection_is_closed_with_goaway() {
    let (_a, lb) = with_a_one_second_timeout().await;
    let mut client = Client::connect(lb.addr("http")).await;
    // A request answered, then nothing: the timer starts when the last stream ends.
    client.request(1, &request("/")).await;
    assert_eq!(client.outcome(1).await, ok());
    let started = std::time::Instant::now();
    while client.goaway.is_none() {
        assert!(
            client.read_frame().await,
            "GOAWAY before the connection ends"
        );
    }
    assert_eq!(client.goaway, Some(0), "NO_ERROR");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the timeout: {:?}",
        started.elapsed()
    );
    while client.read_frame().await {}
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

/// A client that opens no window for a response cannot hold its stream, and the backend
/// request behind it, for ever: after `limits.header_read_timeout` with no room to send,
/// the stream is reset (CANCEL), and the connection goes on.
#[tokio::test]
async fn a_stream_whose_window_stays_shut_is_reset() {
    let (_a, lb) = with_a_one_second_timeout().await;
    let tcp = TcpStream::connect(lb.addr("http")).await.unwrap();
    let (mut client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("http://www.foobar.com/")
        .body(())
        .unwrap();
    let started = std::time::Instant::now();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = tokio::time::timeout(STALL, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200, "the head needs no window");
    let mut body = response.into_body();
    let ended = tokio::time::timeout(STALL, body.data())
        .await
        .expect("reset within 5 s");
    let reason = ended
        .expect("an error, not the body's end")
        .unwrap_err()
        .reason();
    assert_eq!(reason, Some(h2::Reason::CANCEL));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the timeout: {:?}",
        started.elapsed()
    );
    // The connection itself is still served.
    let request = http::Request::get("http://www.foobar.com/")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = tokio::time::timeout(STALL, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}
