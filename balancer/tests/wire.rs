//! Raw HTTP/1.1 bytes against the balancer process (RFC 9112's MUST rules and the usual
//! request-smuggling set): each row sends its bytes on one TCP connection to the real binary,
//! in front of a backend that records exactly what reached it, and checks the statuses the
//! client got, whether the connection was closed after them, and what the backend received.
//!
//! Whether a connection stayed open is asked, not timed: after the row's answers the client
//! sends a probe request (`GET /probe`); an open connection answers it, a closed one gives
//! end of file or a reset.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foobar_service::testing::RunningService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The longest any single read may take before the row counts as stalled: a failure
/// detector, never what a row asserts.
const STALL: Duration = Duration::from_secs(5);
const PROBE: &[u8] = b"GET /probe HTTP/1.1\r\nHost: a\r\n\r\n";

/// A backend speaking raw HTTP/1.1: it records each complete request it receives (head and
/// body as they came, framing included) and answers by path:
/// `/204` a 204 with a Content-Length, `/304` a 304 with one, `/103` Early Hints then 200,
/// `/100` 100 Continue then 200, `/malformed` a head no parser accepts, `/extra` a 200 and,
/// 300 ms later, a second response nobody asked for; `/103-held` Early Hints, then 200 only
/// once the test releases it; `/coded/N` row N of `coded_table`,
/// then a close; `/probe` "probe"; anything else "ok".
struct Recorder {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Told when `/extra`'s unsolicited response has been written.
    extra_sent: Arc<Notify>,
    /// Lets `/103-held` send its final response.
    release: Arc<Notify>,
}

impl Recorder {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let recorder = Self {
            addr: listener.local_addr().unwrap(),
            received: Arc::default(),
            extra_sent: Arc::default(),
            release: Arc::default(),
        };
        let (received, extra_sent, release) = (
            Arc::clone(&recorder.received),
            Arc::clone(&recorder.extra_sent),
            Arc::clone(&recorder.release),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_backend(
                    stream,
                    Arc::clone(&received),
                    Arc::clone(&extra_sent),
                    Arc::clone(&release),
                ));
            }
        });
        recorder
    }

    /// What arrived, probes and health checks left out, each request with this hop's own
    /// forwarding fields removed (they name a port and a request id that change each run).
    fn received(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|request| {
                let text = String::from_utf8_lossy(request);
                let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
                let kept: Vec<&str> = head
                    .split("\r\n")
                    .filter(|line| {
                        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
                        !matches!(
                            name.as_str(),
                            "x-forwarded-for"
                                | "x-forwarded-proto"
                                | "x-forwarded-host"
                                | "forwarded"
                                | "via"
                                | "x-request-id"
                        )
                    })
                    .collect();
                format!("{}\r\n\r\n{body}", kept.join("\r\n"))
            })
            .collect()
    }
}

async fn serve_backend(
    mut stream: TcpStream,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    extra_sent: Arc<Notify>,
    release: Arc<Notify>,
) {
    let mut buffer = Vec::new();
    loop {
        let (end, path) = loop {
            match request_end(&buffer) {
                Ok(Some(found)) => break found,
                Ok(None) => {}
                Err(()) => {
                    received.lock().unwrap().push(buffer.clone());
                    return;
                }
            }
            let mut chunk = [0; 16 * 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let request: Vec<u8> = buffer.drain(..end).collect();
        if path != "/probe" && path != "/readyz" {
            received.lock().unwrap().push(request);
        }
        if let Some(n) = path.strip_prefix("/coded/") {
            // Written whole, then the connection closed: some rows end by the close.
            let table = coded_table();
            if let Some(row) = n.parse::<usize>().ok().and_then(|n| table.get(n)) {
                let _ = stream.write_all(&row.answer).await;
            }
            return;
        }
        if path == "/103-held" {
            let hints = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n";
            if stream.write_all(hints).await.is_err() {
                return;
            }
            release.notified().await;
        }
        let answer: &[u8] = match path.as_str() {
            "/204" => b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-B: 1\r\n\r\n",
            "/304" => b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"e\"\r\n\r\n",
            "/103" => {
                b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n\
                        HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            }
            "/100" => {
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            }
            "/malformed" => b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
            "/103-held" => b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nheld",
            "/probe" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nprobe",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        };
        if stream.write_all(answer).await.is_err() {
            return;
        }
        if path == "/extra" {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let unasked = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL";
            if stream.write_all(unasked).await.is_err() {
                return;
            }
            extra_sent.notify_one();
        }
    }
}

/// Where the first request in `buffer` ends, and its path: Ok(None) while incomplete, Err on
/// bytes that are no request. Written here, apart from the balancer's own parser, on purpose.
fn request_end(buffer: &[u8]) -> Result<Option<(usize, String)>, ()> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut fields);
    let head_len = match request.parse(buffer) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let path = request.path.unwrap_or("").to_owned();
    let field = |name: &str| {
        request
            .headers
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| String::from_utf8_lossy(f.value).into_owned())
    };
    let mut at = head_len;
    if field("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        loop {
            let Some(line_end) = find_crlf(&buffer[at..]) else {
                return Ok(None);
            };
            let line = std::str::from_utf8(&buffer[at..at + line_end]).map_err(|_| ())?;
            let size =
                usize::from_str_radix(line.split(';').next().unwrap(), 16).map_err(|_| ())?;
            at += line_end + 2;
            if size == 0 {
                // Trailer lines until an empty one.
                loop {
                    let Some(line_end) = find_crlf(&buffer[at..]) else {
                        return Ok(None);
                    };
                    at += line_end + 2;
                    if line_end == 0 {
                        return Ok(Some((at, path)));
                    }
                }
            }
            if buffer.len() < at + size + 2 {
                return Ok(None);
            }
            at += size + 2;
        }
    }
    let length: usize = match field("content-length") {
        Some(n) => n.parse().map_err(|_| ())?,
        None => 0,
    };
    if buffer.len() < at + length {
        return Ok(None);
    }
    Ok(Some((at + length, path)))
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

/// A balancer with one backend, plain HTTP, default limits (32 KiB heads).
async fn balancer(backend: &Recorder) -> RunningService {
    let dir = std::env::temp_dir().join(format!(
        "foobar-balancer-wire-{}-{}",
        std::process::id(),
        backend.addr.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "[service]\nadmin_listen = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n\n\
         [http]\nlisten = \"127.0.0.1:0\"\nredirect_to_https = false\n\n\
         [https]\nlisten = \"127.0.0.1:0\"\ngenerated_dir = \"{}\"\n\n\
         [health]\npath = \"/readyz\"\ninterval = \"1s\"\n\n\
         [timeouts]\nresponse = \"3s\"\n\n\
         [pool]\n[[pool.backends]]\naddress = \"{}\"\n",
        dir.join("tls").display(),
        backend.addr
    );
    let path = dir.join("balancer.toml");
    std::fs::write(&path, config).unwrap();
    support::start(&path).await
}

/// What a row expects the backend to have received.
#[derive(Debug)]
enum Got {
    /// No complete request.
    Nothing,
    /// This many requests (their bytes vary, or do not matter).
    Count(usize),
    /// Exactly these requests, forwarding fields left out (`Recorder::received`).
    Exactly(&'static [&'static str]),
}

struct Row {
    name: &'static str,
    raw: Vec<u8>,
    /// The statuses the client gets, interim ones included, in order.
    answers: &'static [u16],
    /// Whether the connection is closed after them.
    closed: bool,
    backend: Got,
    /// Text the answers must contain, and must not (lower-cased).
    contains: &'static [&'static str],
    lacks: &'static [&'static str],
}

fn row(
    name: &'static str,
    raw: impl AsRef<[u8]>,
    answers: &'static [u16],
    closed: bool,
    backend: Got,
) -> Row {
    Row {
        name,
        raw: raw.as_ref().to_vec(),
        answers,
        closed,
        backend,
        contains: &[],
        lacks: &[],
    }
}

const CLOSED: bool = true;
const OPEN: bool = false;
const OK_GET: &[&str] = &["GET / HTTP/1.1\r\nhost: a\r\n\r\n"];
const HELLO_CHUNKED: &[&str] =
    &["POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"];
const HELLO_LENGTH: &[&str] = &["POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello"];

fn post(fields: &str, body: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n{body}").into_bytes()
}

fn table() -> Vec<Row> {
    use Got::*;
    let chunked_hello = "5\r\nhello\r\n0\r\n\r\n";
    vec![
        // Both framings (RFC 9112 6.1, 6.3): refused, and the connection closed.
        row(
            "CL.TE",
            post(
                "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "TE.CL",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                "8\r\nSMUGGLED\r\n0\r\n\r\n",
            ),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "HTTP/1.0 with Transfer-Encoding",
            b"POST / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        // Transfer-Encoding obfuscations and codings other than one final chunked.
        row(
            "TE with a space before the colon",
            post("Transfer-Encoding : chunked\r\n", chunked_hello),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "TE: xchunked",
            post("Transfer-Encoding: xchunked\r\n", chunked_hello),
            &[501],
            CLOSED,
            Nothing,
        ),
        row(
            "TE:<tab>chunked (tab is whitespace)",
            post("Transfer-Encoding:\tchunked\r\n", chunked_hello),
            &[200],
            OPEN,
            Exactly(HELLO_CHUNKED),
        ),
        row(
            "TE: CHUNKED (case-insensitive)",
            post("Transfer-Encoding: CHUNKED\r\n", chunked_hello),
            &[200],
            OPEN,
            Exactly(HELLO_CHUNKED),
        ),
        row(
            "TE twice: chunked, chunked fields",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                chunked_hello,
            ),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "TE: chunked, chunked",
            post("Transfer-Encoding: chunked, chunked\r\n", chunked_hello),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "TE: gzip, chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", chunked_hello),
            &[501],
            CLOSED,
            Nothing,
        ),
        row(
            "TE: identity, chunked",
            post("Transfer-Encoding: identity, chunked\r\n", chunked_hello),
            &[501],
            CLOSED,
            Nothing,
        ),
        row(
            "TE: chunked, gzip (chunked not last)",
            post("Transfer-Encoding: chunked, gzip\r\n", chunked_hello),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "TE: gzip alone",
            post("Transfer-Encoding: gzip\r\n", "xx"),
            &[501],
            CLOSED,
            Nothing,
        ),
        row(
            "TE empty",
            post("Transfer-Encoding: \r\n", chunked_hello),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "TE: \"chunked\" (quoted)",
            post("Transfer-Encoding: \"chunked\"\r\n", chunked_hello),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "TE: chunked, (empty element)",
            post("Transfer-Encoding: chunked,\r\n", chunked_hello),
            &[400],
            CLOSED,
            Nothing,
        ),
                // Content-Length: digits only; repeats only when equal.
        row(
            "CL: +5",
            post("Content-Length: +5\r\n", "hello"),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "CL: -5",
            post("Content-Length: -5\r\n", "hello"),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "CL: 5x",
            post("Content-Length:  5x\r\n", "hello"),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "CL empty",
            post("Content-Length: \r\n", "hello"),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "CL: 0x5",
            post("Content-Length: 0x5\r\n", "hello"),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "CL past u64",
            post("Content-Length: 99999999999999999999999\r\n", "hello"),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "CL twice, equal",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            &[200],
            OPEN,
            Exactly(HELLO_LENGTH),
        ),
        row(
            "CL twice, different",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            &[400],
            CLOSED,
            Nothing,
        ),
        // Chunk sizes: hex digits only, extensions allowed.
        row(
            "chunk size +5",
            post("Transfer-Encoding: chunked\r\n", "+5\r\nhello\r\n0\r\n\r\n"),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "chunk size '5 junk'",
            post("Transfer-Encoding: chunked\r\n", "5 junk\r\nhello\r\n0\r\n\r\n"),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "chunk size 0x5",
            post("Transfer-Encoding: chunked\r\n", "0x5\r\nhello\r\n0\r\n\r\n"),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "chunk size empty",
            post("Transfer-Encoding: chunked\r\n", "\r\nhello\r\n0\r\n\r\n"),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "chunk size of 17 hex digits",
            post(
                "Transfer-Encoding: chunked\r\n",
                "10000000000000005\r\nhello\r\n0\r\n\r\n",
            ),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "chunk extension ;name=val",
            post(
                "Transfer-Encoding: chunked\r\n",
                "5;name=val\r\nhello\r\n0\r\n\r\n",
            ),
            &[200],
            OPEN,
            Exactly(HELLO_CHUNKED),
        ),
        row(
            "chunk lines ended by bare LF",
            post("Transfer-Encoding: chunked\r\n", "5\nhello\n0\n\n"),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "chunk data longer than its size",
            post("Transfer-Encoding: chunked\r\n", "3\r\nhello\r\n0\r\n\r\n"),
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "trailer line that is no field",
            post(
                "Transfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\nhello\r\n\r\n",
            ),
            &[400],
            CLOSED,
            Nothing,
        ),
                // Host (RFC 9112 3.2): one, and the one routed by is the one forwarded.
        row(
            "HTTP/1.1 without Host",
            b"GET / HTTP/1.1\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "HTTP/1.0 without Host",
            b"GET / HTTP/1.0\r\n\r\n",
            &[200],
            CLOSED,
            Exactly(&["GET / HTTP/1.1\r\n\r\n"]),
        ),
        row(
            "two Host fields",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "Host with user info",
            b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "Host with a space",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "absolute form, Host differs",
            b"GET http://b/x HTTP/1.1\r\nHost: a\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "absolute form, Host agrees",
            b"GET http://a/x?y HTTP/1.1\r\nHost: A\r\n\r\n",
            &[200],
            OPEN,
            Exactly(&["GET /x?y HTTP/1.1\r\nhost: a\r\n\r\n"]),
        ),
        row(
            "Connection: Host",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Host\r\n\r\n",
            &[200],
            OPEN,
            Exactly(OK_GET),
        ),
        // Request lines.
        row(
            "two spaces in the request line",
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "no version",
            b"GET /\r\nHost: a\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "HTTP/1.2",
            b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "lowercase method (another method: passed)",
            b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
            &[200],
            OPEN,
            Exactly(&["get / HTTP/1.1\r\nhost: a\r\n\r\n"]),
        ),
        row(
            "asterisk form for GET",
            b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "asterisk form for OPTIONS",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            &[200],
            OPEN,
            Exactly(&["OPTIONS * HTTP/1.1\r\nhost: a\r\n\r\n"]),
        ),
        row(
            "authority form for GET",
            b"GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "fragment in the target",
            b"GET /a#f HTTP/1.1\r\nHost: a\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "request target over the limit (100 KB)",
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(100_000)),
            &[414],
            CLOSED,
            Nothing,
        ),
        row(
            "CONNECT",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            &[405],
            CLOSED,
            Nothing,
        ),
        // Field lines.
        row(
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "bare LF line ends (accepted, forwarded with CRLF)",
            b"GET / HTTP/1.1\nHost: a\n\n",
            &[200],
            OPEN,
            Exactly(OK_GET),
        ),
        row(
            "NUL in a value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "bare CR in a value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "NUL in the target",
            b"GET /a\0 HTTP/1.1\r\nHost: a\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        row(
            "space in a field name",
            b"GET / HTTP/1.1\r\nHost: a\r\nX A: 1\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        // Pipelining.
        row(
            "three pipelined requests",
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
            &[200, 200, 200],
            OPEN,
            Exactly(&[
                "GET /1 HTTP/1.1\r\nhost: a\r\n\r\n",
                "POST /2 HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello",
                "GET /3 HTTP/1.1\r\nhost: a\r\n\r\n",
            ]),
        ),
        row(
            "pipelined after Connection: close",
            b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
            &[200],
            CLOSED,
            Count(1),
        ),
        row(
            "pipelined after a refused request",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
            &[400],
            CLOSED,
            Nothing,
        ),
        // What the backend answers.
        Row {
            lacks: &["content-length", "transfer-encoding"],
            ..row("backend 204 with a length", b"GET /204 HTTP/1.1\r\nHost: a\r\n\r\n", &[204], OPEN, Count(1))
        },
        Row {
            contains: &["content-length: 10"],
            ..row("backend 304 with a length", b"GET /304 HTTP/1.1\r\nHost: a\r\n\r\n", &[304], OPEN, Count(1))
        },
        Row {
            contains: &["link: </s.css>; rel=preload"],
            ..row("backend 103 Early Hints", b"GET /103 HTTP/1.1\r\nHost: a\r\n\r\n", &[103, 200], OPEN, Count(1))
        },
        Row {
            lacks: &["103", "link:"],
            ..row("backend 103 to an HTTP/1.0 client (none)", b"GET /103 HTTP/1.0\r\nHost: a\r\n\r\n", &[200], CLOSED, Count(1))
        },
        row(
            "Expect: 100-continue (backend's 100 not repeated)",
            b"POST /100 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
            &[100, 200],
            OPEN,
            Count(1),
        ),
        row(
            "malformed backend response",
            b"GET /malformed HTTP/1.1\r\nHost: a\r\n\r\n",
            &[502],
            OPEN,
            Count(1),
        ),
    ]
}

/// What one connection got: the statuses, whether it closed, the answers' text.
struct Outcome {
    answers: Vec<u16>,
    closed: bool,
    text: String,
    stalled: bool,
}

/// Sends `raw`, reads answers until the connection closes or answers the probe sent once
/// the `expected` answers have come.
async fn exchange(http: SocketAddr, raw: &[u8], expected: usize) -> Outcome {
    let mut stream = TcpStream::connect(http).await.unwrap();
    let mut outcome = Outcome {
        answers: Vec::new(),
        closed: false,
        text: String::new(),
        stalled: false,
    };
    if stream.write_all(raw).await.is_err() {
        outcome.closed = true;
        return outcome;
    }
    let mut buffer = Vec::new();
    let mut probed = false;
    loop {
        if outcome.answers.len() >= expected && !probed {
            probed = true;
            if stream.write_all(PROBE).await.is_err() {
                outcome.closed = true;
                return outcome;
            }
        }
        if let Some((end, status, body)) = response_end(&buffer) {
            let answer: Vec<u8> = buffer.drain(..end).collect();
            if probed && status == 200 && body == b"probe" {
                return outcome; // open: the probe was answered
            }
            outcome
                .text
                .push_str(&String::from_utf8_lossy(&answer).to_ascii_lowercase());
            outcome.answers.push(status);
            continue;
        }
        let mut chunk = [0; 16 * 1024];
        match tokio::time::timeout(STALL, stream.read(&mut chunk)).await {
            Err(_) => {
                outcome.stalled = true;
                return outcome;
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                outcome.closed = true;
                return outcome;
            }
            Ok(Ok(n)) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The end of the first complete response in `buffer`, its status and body.
fn response_end(buffer: &[u8]) -> Option<(usize, u16, Vec<u8>)> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut fields);
    let head_len = match response.parse(buffer) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let status = response.code.unwrap_or(0);
    let field = |name: &str| {
        response
            .headers
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| String::from_utf8_lossy(f.value).into_owned())
    };
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Some((head_len, status, Vec::new()));
    }
    if field("transfer-encoding").is_some() {
        let mut at = head_len;
        let mut body = Vec::new();
        loop {
            let line_end = find_crlf(&buffer[at..])?;
            let line = std::str::from_utf8(&buffer[at..at + line_end]).ok()?;
            let size = usize::from_str_radix(line, 16).ok()?;
            at += line_end + 2;
            if size == 0 {
                return (buffer.len() >= at + 2).then(|| (at + 2, status, body));
            }
            if buffer.len() < at + size + 2 {
                return None;
            }
            body.extend_from_slice(&buffer[at..at + size]);
            at += size + 2;
        }
    }
    let length: usize = field("content-length")?.parse().ok()?;
    (buffer.len() >= head_len + length).then(|| {
        (
            head_len + length,
            status,
            buffer[head_len..head_len + length].to_vec(),
        )
    })
}

/// Runs one row against a balancer of its own, so that no row's leftovers reach another;
/// None when it passed, else what went wrong.
async fn run(row: &Row) -> Option<String> {
    let backend = Recorder::start().await;
    let lb = balancer(&backend).await;
    let outcome = exchange(lb.addr("http"), &row.raw, row.answers.len()).await;
    let received = backend.received();
    let mut wrong = Vec::new();
    if outcome.stalled {
        wrong.push("stalled (no answer, no close)".to_owned());
    }
    if outcome.answers != row.answers {
        wrong.push(format!(
            "answers {:?}, expected {:?}",
            outcome.answers, row.answers
        ));
    }
    if outcome.closed != row.closed && !outcome.stalled {
        wrong.push(if row.closed {
            "left open".to_owned()
        } else {
            "closed".to_owned()
        });
    }
    let backend_ok = match &row.backend {
        Got::Nothing => received.is_empty(),
        Got::Count(n) => received.len() == *n,
        Got::Exactly(requests) => received == *requests,
    };
    if !backend_ok {
        wrong.push(format!(
            "backend got {received:?}, expected {:?}",
            row.backend
        ));
    }
    for text in row.contains {
        if !outcome.text.contains(text) {
            wrong.push(format!("answer lacks {text:?}"));
        }
    }
    for text in row.lacks {
        if outcome.text.contains(text) {
            wrong.push(format!("answer has {text:?}"));
        }
    }
    drop(lb);
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

#[tokio::test]
async fn raw_requests_get_rfc_9112_verdicts() {
    let mut failures = Vec::new();
    let rows = table();
    for row in &rows {
        let verdict = run(row).await;
        eprintln!(
            "{:<55} {}",
            row.name,
            verdict
                .as_deref()
                .map_or("PASS".to_owned(), |why| format!("FAIL: {why}"))
        );
        if let Some(why) = verdict {
            failures.push(format!("{}: {why}", row.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// A backend that sends a response nobody asked for after a complete one: that connection is
/// never used again, so the next request (which may be another client's) gets its own answer.
#[tokio::test]
async fn bytes_a_backend_sends_unasked_never_reach_the_next_request() {
    let backend = Recorder::start().await;
    let lb = balancer(&backend).await;
    let http = lb.addr("http");
    let first = exchange(
        http,
        b"GET /extra HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        1,
    )
    .await;
    assert_eq!(first.answers, [200]);
    backend.extra_sent.notified().await;
    // The unasked bytes are now in the balancer's socket buffer for that connection.
    let second = exchange(
        http,
        b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        1,
    )
    .await;
    assert_eq!(second.answers, [200]);
    assert!(
        second.text.ends_with("\r\n\r\nok") && !second.text.contains("evil"),
        "{}",
        second.text
    );
    assert_eq!(backend.received().len(), 2);
}

/// gzip's encoding of "hello" (RFC 1952), as a backend that compresses sends it.
const GZIP_HELLO: &[u8] = &[
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x07,
    0x00, 0x86, 0xa6, 0x10, 0x36, 0x05, 0x00, 0x00, 0x00,
];

/// One way a backend frames and codes a response body, and what every client must get.
struct Coded {
    name: &'static str,
    answer: Vec<u8>,
    /// 200 with exactly `body`, or 502: never a body whose coding was taken off its field.
    status: u16,
    body: &'static [u8],
    /// Text the client's head must contain, and must not (lower-cased `name: value`).
    contains: &'static [&'static str],
    lacks: &'static [&'static str],
}

/// A 200 with `fields` and `body` as they go on the wire.
fn answer(fields: &str, body: &[u8]) -> Vec<u8> {
    let mut answer = format!("HTTP/1.1 200 OK\r\n{fields}\r\n").into_bytes();
    answer.extend_from_slice(body);
    answer
}

/// `data` as one chunk and the last chunk.
fn chunked(data: &[u8]) -> Vec<u8> {
    let mut body = format!("{:x}\r\n", data.len()).into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    body
}

/// What the backend answers to `/coded/N`. RFC 9112 6.1 lets a proxy decode chunked and
/// apply it again; a coding it does not decode could reach the client only with its field,
/// which HTTP/2 has none of (RFC 9113 8.2.2) and which no client asked for: HAProxy answers
/// 502 to any coding but chunked (`mux_h1.c`, "Unknown transfer-encoding").
fn coded_table() -> Vec<Coded> {
    let row = |name, answer, status, body| Coded {
        name,
        answer,
        status,
        body,
        contains: &[],
        lacks: &[],
    };
    vec![
        row(
            "chunked",
            answer("Transfer-Encoding: chunked\r\n", &chunked(b"hello")),
            200,
            b"hello",
        ),
        Coded {
            lacks: &["content-length: 3"],
            ..row(
                "chunked with a Content-Length beside it",
                answer(
                    "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
                    &chunked(b"hello"),
                ),
                200,
                b"hello",
            )
        },
        Coded {
            contains: &["content-encoding: gzip"],
            ..row(
                "Content-Encoding: gzip, chunked (end to end: passed on)",
                answer(
                    "Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                    &chunked(GZIP_HELLO),
                ),
                200,
                GZIP_HELLO,
            )
        },
        row(
            "TE: gzip, chunked",
            answer("Transfer-Encoding: gzip, chunked\r\n", &chunked(GZIP_HELLO)),
            502,
            b"",
        ),
        row(
            "TE: identity, chunked",
            answer(
                "Transfer-Encoding: identity, chunked\r\n",
                &chunked(b"hello"),
            ),
            502,
            b"",
        ),
        row(
            "TE: chunked, chunked",
            answer(
                "Transfer-Encoding: chunked, chunked\r\n",
                &chunked(b"hello"),
            ),
            502,
            b"",
        ),
        row(
            "TE: gzip and TE: chunked fields",
            answer(
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                &chunked(GZIP_HELLO),
            ),
            502,
            b"",
        ),
        row(
            "TE: chunked, gzip (until close)",
            answer("Transfer-Encoding: chunked, gzip\r\n", &chunked(b"hello")),
            502,
            b"",
        ),
        row(
            "TE: gzip (until close)",
            answer("Transfer-Encoding: gzip\r\n", GZIP_HELLO),
            502,
            b"",
        ),
    ]
}

/// Status, head (lower-cased) and body, its chunked framing decoded, of a GET of `path`
/// over HTTP/1.1.
async fn fetch_http1(http: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(http).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(STALL, stream.read_to_end(&mut answer))
        .await
        .expect("closed after the answer")
        .unwrap();
    let head_len = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |at| at + 4);
    let head = String::from_utf8_lossy(&answer[..head_len]).to_ascii_lowercase();
    let (_, status, body) = response_end(&answer).unwrap_or_default();
    (status, head, body)
}

/// The same over HTTP/2 (prior knowledge), the head as `name: value` lines.
async fn fetch_http2(http: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    use http_body_util::BodyExt;
    let mut sender = support::h2c(http).await;
    let request = hyper::Request::get(format!("http://a{path}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(STALL, sender.send_request(request))
        .await
        .expect("answered")
        .unwrap();
    let status = response.status().as_u16();
    let head: String = response
        .headers()
        .iter()
        .map(|(name, value)| format!("{name}: {}\r\n", String::from_utf8_lossy(value.as_bytes())))
        .collect();
    let body = tokio::time::timeout(STALL, response.into_body().collect())
        .await
        .expect("the body ends")
        .map(|body| body.to_bytes().to_vec())
        .unwrap_or_default();
    (status, head.to_ascii_lowercase(), body)
}

/// A backend's transfer coding reaches every client intact or as a 502: chunked is decoded
/// and applied again (HTTP/1.1) or dropped (HTTP/2, which has no transfer codings); any
/// other (`gzip, chunked`, `identity, chunked`, chunked twice or not last) makes the response
/// malformed, never a body whose coding was silently taken off.
#[tokio::test]
async fn backend_transfer_codings_reach_clients_intact_or_as_502() {
    let mut failures = Vec::new();
    let rows = coded_table();
    for (n, row) in rows.iter().enumerate() {
        // A balancer of its own: a 502 counts against the backend (passive health).
        let backend = Recorder::start().await;
        let lb = balancer(&backend).await;
        let path = format!("/coded/{n}");
        let http = lb.addr("http");
        for (client, (status, head, body)) in [
            ("HTTP/1.1", fetch_http1(http, &path).await),
            ("HTTP/2", fetch_http2(http, &path).await),
        ] {
            let mut wrong = Vec::new();
            if status != row.status {
                wrong.push(format!("status {status}, expected {}", row.status));
            } else if status == 200 && body != row.body {
                wrong.push(format!("body {body:?}, expected {:?}", row.body));
            }
            for text in row.contains {
                if !head.contains(text) {
                    wrong.push(format!("head lacks {text:?}"));
                }
            }
            for text in row.lacks {
                if head.contains(text) {
                    wrong.push(format!("head has {text:?}"));
                }
            }
            let verdict = if wrong.is_empty() {
                "PASS".to_owned()
            } else {
                format!("FAIL: {}", wrong.join("; "))
            };
            eprintln!("{:<55} {client:<8} {status} {verdict}", row.name);
            if !wrong.is_empty() {
                failures.push(format!("{} over {client}: {}", row.name, wrong.join("; ")));
            }
        }
        drop(lb);
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The next complete answer on `stream`: status, head (lower-cased) and body.
async fn next_answer(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    what: &str,
) -> (u16, String, Vec<u8>) {
    loop {
        if let Some((end, status, body)) = response_end(buffer) {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            buffer.drain(..end);
            return (status, head, body);
        }
        let mut chunk = [0; 4096];
        let n = tokio::time::timeout(STALL, stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no {what} within {STALL:?}"))
            .unwrap();
        assert!(n > 0, "closed before the {what}");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// A backend's 103 Early Hints reach an HTTP/1.1 client as they arrive, while the backend
/// still works on its final response: here it holds that response until the client has read
/// the 103, so a balancer that kept the 103 for the final head would stall.
#[tokio::test]
async fn early_hints_reach_the_client_before_the_final_response_is_sent() {
    let backend = Recorder::start().await;
    let lb = balancer(&backend).await;
    let mut stream = TcpStream::connect(lb.addr("http")).await.unwrap();
    stream
        .write_all(b"GET /103-held HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let (status, head, _) =
        next_answer(&mut stream, &mut buffer, "103 before the final response").await;
    assert_eq!(status, 103, "{head}");
    assert!(head.contains("link: </s.css>; rel=preload"), "{head}");
    backend.release.notify_one();
    let (status, _, body) = next_answer(&mut stream, &mut buffer, "final response").await;
    assert_eq!((status, body.as_slice()), (200, &b"held"[..]));
}

/// The same over HTTP/2 (h2c, prior knowledge): the 103 arrives as an informational HEADERS
/// frame on the request's stream while the backend still holds its final response.
#[tokio::test]
async fn early_hints_reach_an_http2_client_before_the_final_response_is_sent() {
    let backend = Recorder::start().await;
    let lb = balancer(&backend).await;
    let tcp = TcpStream::connect(lb.addr("http")).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("http://a/103-held").body(()).unwrap();
    let (mut response, _) = client.send_request(request, true).unwrap();
    let hints = tokio::time::timeout(
        STALL,
        std::future::poll_fn(|cx| response.poll_informational(cx)),
    )
    .await
    .expect("103 before the final response")
    .expect("an informational response")
    .unwrap();
    assert_eq!(hints.status(), 103);
    assert_eq!(
        hints.headers().get("link").unwrap(),
        "</s.css>; rel=preload"
    );
    backend.release.notify_one();
    let response = tokio::time::timeout(STALL, response)
        .await
        .expect("the final response")
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = Vec::new();
    while let Some(chunk) = body.data().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(received, b"held");
}
