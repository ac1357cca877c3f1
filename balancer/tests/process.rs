//! foobar-balancer as a user runs it: the binary started as a process in front of real HTTP
//! servers that the test starts, slows, fails and kills.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use foobar_service::testing::{self, RunningService};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

const BINARY: &str = env!("CARGO_BIN_EXE_foobar-balancer");

/// The admin token of every test balancer (`service.admin_token_file` in its folder), and the
/// header its admin actions carry.
const ADMIN_TOKEN: &str = "process-test-token";
const ADMIN_AUTH: (&str, &str) = ("Authorization", "Bearer process-test-token");

/// A body sent in pieces with no length announced: HTTP/1.1 frames it chunked.
struct Chunks(std::collections::VecDeque<Bytes>);

impl Chunks {
    fn of(bytes: &Bytes, size: usize) -> Self {
        let pieces = (0..bytes.len()).step_by(size);
        Self(
            pieces
                .map(|at| bytes.slice(at..(at + size).min(bytes.len())))
                .collect(),
        )
    }
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(
            self.0
                .pop_front()
                .map(|data| Ok(hyper::body::Frame::data(data))),
        )
    }
}

/// A real HTTP server standing in for a web server.
struct Backend {
    addr: SocketAddr,
    /// Requests answered, by path.
    hits: Arc<Mutex<HashMap<String, usize>>>,
    /// POST requests whose body arrived.
    posts: Arc<AtomicUsize>,
    ready: Arc<AtomicBool>,
    /// Headers of the last request.
    last_headers: Arc<Mutex<Vec<(String, String)>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Backend {
    /// `GET /` answers the backend's name; `/slow` after 300 ms (`/slow?ms=N`: after N ms);
    /// `/readyz` 200 while ready; `/unavailable` 503 (as a web server whose database is down
    /// answers a page that needs it); `POST /die` reads the body and then drops the connection
    /// without an answer (`/die?on=NAME`: only the backend called NAME does); `/echo` answers
    /// the request's body in 1000-byte chunks without a length (chunked on the wire),
    /// `/echo?length` with its Content-Length.
    async fn start(name: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = Self {
            addr: listener.local_addr().unwrap(),
            hits: Arc::default(),
            posts: Arc::default(),
            ready: Arc::new(AtomicBool::new(true)),
            last_headers: Arc::default(),
            tasks: Arc::default(),
        };
        let (hits, posts, ready, last, tasks) = (
            Arc::clone(&backend.hits),
            Arc::clone(&backend.posts),
            Arc::clone(&backend.ready),
            Arc::clone(&backend.last_headers),
            Arc::clone(&backend.tasks),
        );
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (hits, posts, ready, last) = (
                    Arc::clone(&hits),
                    Arc::clone(&posts),
                    Arc::clone(&ready),
                    Arc::clone(&last),
                );
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let (hits, posts, ready, last) = (
                        Arc::clone(&hits),
                        Arc::clone(&posts),
                        Arc::clone(&ready),
                        Arc::clone(&last),
                    );
                    async move {
                        let path = request.uri().path().to_owned();
                        let delay = request
                            .uri()
                            .query()
                            .and_then(|q| q.strip_prefix("ms="))
                            .and_then(|ms| ms.parse().ok())
                            .unwrap_or(300);
                        let dies = path == "/die"
                            && request
                                .uri()
                                .query()
                                .is_none_or(|q| q.strip_prefix("on=") == Some(name));
                        let is_post = request.method() == hyper::Method::POST;
                        let with_length = request.uri().query() == Some("length");
                        *last.lock().unwrap() = request
                            .headers()
                            .iter()
                            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
                            .collect();
                        let received = request.into_body().collect().await;
                        let received = received.map(|b| b.to_bytes()).unwrap_or_default();
                        if is_post {
                            posts.fetch_add(1, Ordering::SeqCst);
                        }
                        if dies {
                            return Err("dying on purpose");
                        }
                        if path == "/slow" {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        if path != "/readyz" {
                            *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                        }
                        let status = if (path == "/readyz" && !ready.load(Ordering::SeqCst))
                            || path == "/unavailable"
                        {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            StatusCode::OK
                        };
                        let body = match (path.as_str(), with_length) {
                            ("/echo", false) => Chunks::of(&received, 1000).boxed(),
                            ("/echo", true) => Full::new(received).boxed(),
                            _ => Full::new(Bytes::from(name)).boxed(),
                        };
                        let mut response = Response::new(body);
                        *response.status_mut() = status;
                        Ok::<_, &str>(response)
                    }
                });
                let connection = tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                tasks.lock().unwrap().push(connection);
            }
        });
        backend.tasks.lock().unwrap().push(accept);
        backend
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Gone at once: the listener closes and every open connection drops mid-request.
    fn kill(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

struct Spec<'a> {
    backends: &'a [(&'a Backend, u32, bool)],
    algorithm: &'a str,
}

/// A test's folder (config, generated certificates): `foobar-balancer-test-PID-PORT` in the
/// temporary folder. A test process cannot clean up after its last test, so the first call
/// removes the folders of test processes that have ended.
fn test_dir(spec: &Spec<'_>) -> std::path::PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    const PREFIX: &str = "foobar-balancer-test-";
    let temp = std::env::temp_dir();
    SWEPT.call_once(|| {
        for entry in std::fs::read_dir(&temp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.split('-').next());
            if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
    let port = spec.backends[0].0.addr.port();
    let dir = temp.join(format!("{PREFIX}{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin_token"), ADMIN_TOKEN).unwrap();
    dir
}

const PLAIN_HTTP: &str = "[http]\nlisten = \"127.0.0.1:0\"\nredirect_to_https = false\n";

/// A balancer spreading plain HTTP over `backends` by round robin, each of weight 1, none a
/// backup: what most tests need.
async fn round_robin(backends: &[&Backend]) -> RunningService {
    let backends: Vec<_> = backends.iter().map(|&b| (b, 1, false)).collect();
    balancer(Spec {
        backends: &backends,
        algorithm: "round_robin",
    })
    .await
}

/// A balancer proxying plain HTTP (no redirect), with HTTPS on a generated certificate.
async fn balancer(spec: Spec<'_>) -> RunningService {
    balancer_with(spec, PLAIN_HTTP).await
}

async fn balancer_with(spec: Spec<'_>, http_table: &str) -> RunningService {
    let path = write_config(&spec, http_table, "");
    start(&path).await
}

/// The config file for `spec`, with `extra` tables (`[limits]` ...) added.
fn write_config(spec: &Spec<'_>, http_table: &str, extra: &str) -> std::path::PathBuf {
    let path = test_dir(spec).join("balancer.toml");
    std::fs::write(&path, config_text(spec, http_table, extra)).unwrap();
    path
}

fn config_text(spec: &Spec<'_>, http_table: &str, extra: &str) -> String {
    let dir = test_dir(spec);
    let mut config = format!(
        "[service]\nadmin_listen = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n\
         admin_token_file = \"{}\"\n\n\
         {http_table}\n\
         [https]\nlisten = \"127.0.0.1:0\"\ngenerated_dir = \"{}\"\n\n\
         [health]\npath = \"/readyz\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 2\n\n\
         [timeouts]\nconnect = \"500ms\"\nresponse = \"5s\"\n\n{extra}\n\
         [pool]\nalgorithm = \"{}\"\nresolve_interval = \"200ms\"\n",
        dir.join("admin_token").display(),
        dir.join("tls").display(),
        spec.algorithm
    );
    for (backend, weight, backup) in spec.backends {
        config.push_str(&format!(
            "\n[[pool.backends]]\naddress = \"{}\"\nweight = {weight}\nbackup = {backup}\n",
            backend.addr
        ));
    }
    config
}

async fn start(path: &Path) -> RunningService {
    let service = RunningService::start(Path::new(BINARY), path, &[], &["admin", "http", "https"])
        .await
        .unwrap();
    testing::wait_ready(service.addr("admin"), Duration::from_secs(10))
        .await
        .unwrap();
    service
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    testing::http_get(addr, path).await.unwrap()
}

/// A real HTTP/1.1 client connection, kept alive across requests; aborting the task closes
/// it.
async fn keep_alive(addr: SocketAddr) -> (SendRequest<Full<Bytes>>, JoinHandle<()>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, task)
}

/// One GET on a kept-alive connection; an error if the connection is gone.
async fn send(sender: &mut SendRequest<Full<Bytes>>, path: &str) -> anyhow::Result<(u16, String)> {
    sender.ready().await?;
    let request = Request::get(path)
        .header("host", "www.foobar.com")
        .body(Full::new(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A sample's value from the admin listener's `/metrics`, 0 when it is not there yet.
async fn metric(admin: SocketAddr, sample: &str) -> f64 {
    let (_, text) = get(admin, "/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The backends as `/status.json` shows them: name to (state, requests).
async fn backends(admin: SocketAddr) -> HashMap<String, (String, u64)> {
    let (_, json) = get(admin, "/status.json").await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    json["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_owned(),
                (
                    b["state"].as_str().unwrap().to_owned(),
                    b["requests"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// Polls the status until the balancer has sent `backend` at least `n` requests (counted
/// when it is picked, so such a request is in flight from then on).
async fn wait_for_requests(admin: SocketAddr, backend: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = backends(admin).await;
        if now.get(backend).is_some_and(|&(_, sent)| sent >= n) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{backend} not sent {n} requests within 5 s: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `done` holds, for at most 5 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 5 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the status until `backend` is in `state`.
async fn wait_for_state(admin: SocketAddr, backend: &str, state: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = backends(admin).await;
        if now.get(backend).is_some_and(|(s, _)| s == state) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{backend} not {state} within 5 s: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn round_robin_splits_evenly_and_forwards_who_asked() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = round_robin(&[&a, &b]).await;
    for _ in 0..100 {
        assert_eq!(get(lb.addr("http"), "/").await.0, 200);
    }
    let (hits_a, hits_b) = (a.hits("/"), b.hits("/"));
    assert!(
        hits_a.abs_diff(50) <= 1 && hits_b.abs_diff(50) <= 1,
        "a {hits_a}, b {hits_b}"
    );

    let (status, headers, _) = testing::http_request(
        lb.addr("http"),
        "GET",
        "/",
        &[("X-Request-Id", "given-id")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "x-request-id" && v == "given-id"),
        "{headers:?}"
    );
    let seen: HashMap<String, String> = {
        let a_last = a.last_headers.lock().unwrap().clone();
        let b_last = b.last_headers.lock().unwrap().clone();
        if a_last.iter().any(|(_, v)| v == "given-id") {
            a_last
        } else {
            b_last
        }
        .into_iter()
        .collect()
    };
    assert_eq!(
        seen.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1"),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("x-forwarded-proto").map(String::as_str),
        Some("http")
    );
    assert!(
        seen.get("forwarded")
            .is_some_and(|f| f.starts_with("for=127.0.0.1;proto=http")),
        "{seen:?}"
    );
    assert!(
        seen.get("via").is_some_and(|v| v.starts_with("1.1 ")),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("x-request-id").map(String::as_str),
        Some("given-id")
    );
    assert!(
        !seen.contains_key("connection"),
        "hop-by-hop header forwarded: {seen:?}"
    );
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn weights_and_least_connections_behave_as_configured() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = balancer(Spec {
        backends: &[(&a, 3, false), (&b, 1, false)],
        algorithm: "round_robin",
    })
    .await;
    for _ in 0..100 {
        get(lb.addr("http"), "/").await;
    }
    assert_eq!((a.hits("/"), b.hits("/")), (75, 25));
    lb.terminate(Duration::from_secs(10)).await.unwrap();

    let (c, d) = (Backend::start("c").await, Backend::start("d").await);
    let lb = balancer(Spec {
        backends: &[(&c, 1, false), (&d, 1, false)],
        algorithm: "least_connections",
    })
    .await;
    let addr = lb.addr("http");
    // Four slow requests in flight at once: least connections spreads them two and two.
    let slow: Vec<_> = (0..4)
        .map(|_| tokio::spawn(async move { get(addr, "/slow").await }))
        .collect();
    for request in slow {
        assert_eq!(request.await.unwrap().0, 200);
    }
    assert_eq!((c.hits("/slow"), d.hits("/slow")), (2, 2));
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn the_backup_gets_nothing_until_every_primary_is_down() {
    let (a, b, standby) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("standby").await,
    );
    let lb = balancer(Spec {
        backends: &[(&a, 1, false), (&b, 1, false), (&standby, 1, true)],
        algorithm: "round_robin",
    })
    .await;
    for _ in 0..20 {
        assert_ne!(get(lb.addr("http"), "/").await.1, "standby");
    }
    a.ready.store(false, Ordering::SeqCst);
    b.ready.store(false, Ordering::SeqCst);
    let admin = lb.addr("admin");
    wait_for_state(admin, &a.addr.to_string(), "DOWN").await;
    wait_for_state(admin, &b.addr.to_string(), "DOWN").await;
    for _ in 0..10 {
        assert_eq!(get(lb.addr("http"), "/").await, (200, "standby".to_owned()));
    }
    a.ready.store(true, Ordering::SeqCst);
    wait_for_state(admin, &a.addr.to_string(), "UP").await;
    assert_eq!(
        get(lb.addr("http"), "/").await.1,
        "a",
        "the primary takes over again"
    );
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn a_backend_killed_during_1000_gets_costs_no_request() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = round_robin(&[&a, &b]).await;
    let addr = lb.addr("http");
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut failed = Vec::new();
                for _ in 0..250 {
                    match testing::http_get(addr, "/").await {
                        Ok((200, _)) => {}
                        Ok((status, body)) => failed.push(format!("{status} {body}")),
                        Err(e) => failed.push(format!("no answer: {e}")),
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                failed
            })
        })
        .collect();
    while done.load(Ordering::SeqCst) < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill();
    let mut failed = Vec::new();
    for client in clients {
        failed.extend(client.await.unwrap());
    }
    assert!(
        failed.is_empty(),
        "{} of 1000 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(
        a.hits("/") > 0 && b.hits("/") > 500,
        "a {}, b {}",
        a.hits("/"),
        b.hits("/")
    );
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn a_post_whose_backend_dies_is_never_sent_again() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = round_robin(&[&a, &b]).await;
    // The first request goes to `a`, which reads the POST and dies without answering.
    let (status, _, _) = testing::http_request(lb.addr("http"), "POST", "/die", &[], "order=1")
        .await
        .unwrap();
    assert_eq!(status, 502, "the client learns the outcome is unknown");
    assert_eq!(a.posts.load(Ordering::SeqCst), 1);
    assert_eq!(
        b.posts.load(Ordering::SeqCst),
        0,
        "the POST must not be replayed on b"
    );
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

/// Bodies both ways in every framing, through the real curl: a chunked upload arrives whole
/// and is answered chunked, a sized one is answered sized, HEAD gets a head only, and the
/// answer after it is whole: the balancer reads each framing to its exact end, so the backend
/// connection it keeps alive carries the next exchange unmixed.
#[tokio::test]
async fn bodies_arrive_whole_in_every_framing() {
    let a = Backend::start("a").await;
    let lb = round_robin(&[&a]).await;
    let dir = std::env::temp_dir().join(format!("foobar-balancer-bodies-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let upload = dir.join("upload");
    // 300 kB that no two chunks share, so a chunk lost, doubled or reordered shows.
    let data: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i % 251).to_le_bytes()[..1].to_vec())
        .collect();
    std::fs::write(&upload, &data).unwrap();
    let url = |path: &str| format!("http://{}{path}", lb.addr("http"));
    let curl = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .args(&args)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let file = format!("@{}", upload.display());

    let echoed = curl(vec![
        "-H".into(),
        "Transfer-Encoding: chunked".into(),
        "--data-binary".into(),
        file.clone(),
        url("/echo"),
    ])
    .await;
    assert!(
        echoed == data,
        "a chunked upload, answered chunked: {} bytes back",
        echoed.len()
    );
    let echoed = curl(vec![
        "--data-binary".into(),
        file.clone(),
        url("/echo?length"),
    ])
    .await;
    assert!(
        echoed == data,
        "a sized upload, answered sized: {} bytes back",
        echoed.len()
    );
    let head = curl(vec!["-I".into(), url("/")]).await;
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("content-length: 1"),
        "{head}"
    );
    assert_eq!(
        get(lb.addr("http"), "/").await,
        (200, "a".to_owned()),
        "after a HEAD, the next answer is whole"
    );

    // curl's own habits: Expect: 100-continue before a large body, HTTP/1.0, and HTTP/2
    // with prior knowledge on the plain listener (h2c).
    let echoed = curl(vec![
        "-H".into(),
        "Expect: 100-continue".into(),
        "--data-binary".into(),
        file.clone(),
        url("/echo?length"),
    ])
    .await;
    assert!(
        echoed == data,
        "an upload after 100 Continue: {} bytes back",
        echoed.len()
    );
    for (flag, version) in [
        ("--http1.0", "HTTP/1.1 200"),
        ("--http2-prior-knowledge", "HTTP/2 200"),
    ] {
        let out = curl(vec![flag.into(), "-i".into(), url("/")]).await;
        let out = String::from_utf8_lossy(&out);
        assert!(
            out.starts_with(version) && out.ends_with("\r\n\r\na"),
            "{flag}: {out}"
        );
    }

    assert_eq!(a.hits("/echo") + a.hits("/"), 7);
    lb.terminate(Duration::from_secs(10)).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn no_backend_up_gives_a_clear_503_at_once() {
    let a = Backend::start("a").await;
    let lb = round_robin(&[&a]).await;
    a.kill();
    wait_for_state(lb.addr("admin"), &a.addr.to_string(), "DOWN").await;
    let started = std::time::Instant::now();
    let (status, headers, body) = testing::http_request(lb.addr("http"), "GET", "/", &[], "")
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no hang: {:?}",
        started.elapsed()
    );
    assert!(
        headers.iter().any(|(n, v)| n == "retry-after" && v == "1"),
        "{headers:?}"
    );
    assert!(body.contains("No web server is available"), "{body}");
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn sigterm_lets_requests_in_flight_finish() {
    let a = Backend::start("a").await;
    let lb = round_robin(&[&a]).await;
    let addr = lb.addr("http");
    let in_flight = tokio::spawn(async move { get(addr, "/slow").await });
    wait_for_requests(lb.addr("admin"), &a.addr.to_string(), 1).await;
    let status = lb.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(in_flight.await.unwrap(), (200, "a".to_owned()));
}

/// HTTPS with the real curl: HTTP/2 by ALPN, the generated CA trusted with --cacert, HSTS,
/// X-Forwarded-Proto https; TLS 1.1 refused; plain HTTP redirected.
#[tokio::test]
async fn https_with_http2_and_the_generated_ca_and_a_redirect_from_http() {
    let a = Backend::start("a").await;
    let spec = Spec {
        backends: &[(&a, 1, false)],
        algorithm: "round_robin",
    };
    let ca = test_dir(&spec).join("tls").join("ca.pem");
    let lb = balancer_with(
        spec,
        "[http]\nlisten = \"127.0.0.1:0\"\nredirect_to_https = true\nhttps_port = 8443\n",
    )
    .await;
    let https = lb.addr("https").port();
    let curl = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("curl")
            .args(&args)
            .output()
            .await
            .expect("curl is installed");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let url = format!("https://www.foobar.com:{https}/");
    let resolve = format!("www.foobar.com:{https}:127.0.0.1");
    let (ok, out, err) = curl(vec![
        "-sS".into(),
        "--http2".into(),
        "--cacert".into(),
        ca.display().to_string(),
        "--resolve".into(),
        resolve.clone(),
        "-D".into(),
        "-".into(),
        url.clone(),
    ])
    .await;
    assert!(ok, "{err}");
    assert!(out.starts_with("HTTP/2 200"), "HTTP/2 by ALPN: {out}");
    let lower = out.to_ascii_lowercase();
    assert!(
        lower.contains("strict-transport-security: max-age=31536000"),
        "{out}"
    );
    // The backend's head reaches an HTTP/2 client merged with this hop's fields.
    assert!(
        lower.contains("\r\nvia: 1.1 ") && lower.contains("\r\nx-request-id: "),
        "{out}"
    );
    assert!(out.ends_with('a'), "the backend's answer: {out}");
    let seen: HashMap<String, String> = a.last_headers.lock().unwrap().iter().cloned().collect();
    assert_eq!(
        seen.get("x-forwarded-proto").map(String::as_str),
        Some("https")
    );
    assert_eq!(
        seen.get("host").map(String::as_str),
        Some(format!("www.foobar.com:{https}").as_str()),
        "{seen:?}"
    );

    let (ok, _, _) = curl(vec![
        "-sS".into(),
        "--http1.1".into(),
        "--cacert".into(),
        ca.display().to_string(),
        "--resolve".into(),
        resolve.clone(),
        url.clone(),
    ])
    .await;
    assert!(ok, "HTTP/1.1 over TLS too");
    let (ok, _, err) = curl(vec![
        "-sS".into(),
        "--tlsv1.1".into(),
        "--tls-max".into(),
        "1.1".into(),
        "--cacert".into(),
        ca.display().to_string(),
        "--resolve".into(),
        resolve,
        url,
    ])
    .await;
    assert!(!ok, "TLS 1.1 must be refused: {err}");

    // Through a published port the Host names it: to the published HTTPS port. On port 80
    // directly it does not: to HTTPS's own 443.
    for (host, location) in [
        (
            "www.foobar.com:8080",
            "https://www.foobar.com:8443/guestbook?page=2",
        ),
        ("www.foobar.com", "https://www.foobar.com/guestbook?page=2"),
    ] {
        let (status, headers, _) = testing::http_request(
            lb.addr("http"),
            "GET",
            "/guestbook?page=2",
            &[("Host", host)],
            "",
        )
        .await
        .unwrap();
        assert_eq!(status, 308);
        assert!(
            headers
                .iter()
                .any(|(n, v)| n == "location" && v == location),
            "{host}: {headers:?}"
        );
    }
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

/// The status page lists every backend with its state, a drained backend gets no new
/// requests while its in-flight one finishes, and enabling it brings it back.
#[tokio::test]
async fn status_page_and_drain() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = balancer(Spec {
        backends: &[(&a, 1, false), (&b, 2, false)],
        algorithm: "round_robin",
    })
    .await;
    let (http, admin) = (lb.addr("http"), lb.addr("admin"));
    let (status, page) = get(admin, "/status").await;
    assert_eq!(status, 200);
    for backend in [&a, &b] {
        assert!(
            page.contains(&format!("<tr data-backend=\"{}\">", backend.addr)),
            "{page}"
        );
    }
    assert!(page.contains("class=\"UP\""), "{page}");

    let slow = tokio::spawn(async move { get(http, "/slow").await }); // goes to b (weight 2)
    wait_for_requests(admin, &b.addr.to_string(), 1).await;
    let drain = format!("/backends/{}/drain", b.addr);
    let (status, _, answer) = testing::http_request(admin, "POST", &drain, &[ADMIN_AUTH], "")
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    for _ in 0..10 {
        assert_eq!(get(http, "/").await, (200, "a".to_owned()));
    }
    assert_eq!(
        slow.await.unwrap(),
        (200, "b".to_owned()),
        "in flight when drained, still answered"
    );
    let (_, json) = get(admin, "/status.json").await;
    assert!(json.contains("\"state\":\"DRAIN\""), "{json}");

    let enable = format!("/backends/{}/enable", b.addr);
    assert_eq!(
        testing::http_request(admin, "POST", &enable, &[ADMIN_AUTH], "")
            .await
            .unwrap()
            .0,
        200
    );
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(get(http, "/").await.1);
    }
    assert!(answers.contains(&"b".to_owned()), "{answers:?}");
    assert_eq!(
        testing::http_request(admin, "POST", "/backends/nope/drain", &[ADMIN_AUTH], "")
            .await
            .unwrap()
            .0,
        404
    );
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

/// A person's view: headless Chromium loads the status page and finds both backends in it.
#[tokio::test]
async fn chromium_shows_both_backends_on_the_status_page() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = round_robin(&[&a, &b]).await;
    let url = format!("http://{}/status", lb.addr("admin"));
    let profile = std::env::temp_dir().join(format!("foobar-chromium-{}", std::process::id()));
    let out = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .output()
        .await
        .expect("chromium is installed by scripts/install-tools.sh");
    let dom = String::from_utf8_lossy(&out.stdout);
    for backend in [&a, &b] {
        assert!(
            dom.contains(&format!("data-backend=\"{}\"", backend.addr)),
            "backend {} missing from the page Chromium rendered:\n{dom}",
            backend.addr
        );
    }
    assert!(dom.contains("<table id=\"backends\">"), "{dom}");
    let _ = std::fs::remove_dir_all(profile);
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

#[test]
fn check_config_accepts_good_and_names_the_bad_key() {
    let config = "[service]\nadmin_listen = \"127.0.0.1:0\"\n\n[[pool.backends]]\naddress = \"127.0.0.1:1\"\n\n\
                  [[site]]\nname = \"status\"\nhosts = [\"status.foobar.com\"]\n\
                  [[site.backends]]\naddress = \"127.0.0.1:2\"\n";
    testing::assert_check_config(Path::new(BINARY), config).unwrap();

    let dir = std::env::temp_dir().join(format!("foobar-balancer-site-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (line, bad, key) in [
        (
            11,
            "address = \"prometheus\"",
            "site[0].backends[0].address",
        ),
        (11, "adress = \"127.0.0.1:2\"", "site[0].backends[0].adress"),
        (9, "hosts = [\"status.foobar.com:8443\"]", "site[0].hosts"),
    ] {
        let path = dir.join("bad-site.toml");
        let good = if bad.starts_with("hosts") {
            "hosts = [\"status.foobar.com\"]"
        } else {
            "address = \"127.0.0.1:2\""
        };
        std::fs::write(&path, config.replace(good, bad)).unwrap();
        let out = std::process::Command::new(BINARY)
            .arg("--check-config")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        let at = format!("{}:{line}:", path.display());
        assert!(
            stderr.contains(&at) && stderr.contains(&format!("key `{key}`")),
            "{bad}: the error names the file, line and key: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The limits of `[limits]`, each answered as configured: a client trickling its headers is
/// cut off after `header_read_timeout`; headers over `max_header_size` get 431; a body over
/// `max_body_size` gets 413, whether its length was announced or it was chunked.
#[tokio::test]
async fn slowloris_oversize_headers_and_oversize_bodies_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Backend::start("a").await;
    let spec = Spec {
        backends: &[(&a, 1, false)],
        algorithm: "round_robin",
    };
    let limits =
        "[limits]\nheader_read_timeout = \"1s\"\nmax_header_size = 8192\nmax_body_size = 1000\n";
    let lb = start(&write_config(&spec, PLAIN_HTTP, limits)).await;
    let (http, admin) = (lb.addr("http"), lb.addr("admin"));

    // Slowloris: one header byte every 200 ms, for up to 6 s.
    let started = std::time::Instant::now();
    let stream = tokio::net::TcpStream::connect(http).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(b"GET / HTTP/1.1\r\nHost: www.foobar.com\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for byte in b"X-Slow: abcdefghijklmnopqrstuvwxyz0123".iter() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(&[*byte]).await.is_err() {
                return true; // cut off
            }
        }
        false
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut answer))
        .await
        .expect("the slow client must be cut off, not served for ever");
    let cut_after = started.elapsed();
    assert!(
        cut_after >= Duration::from_millis(900) && cut_after < Duration::from_millis(2500),
        "cut off after {cut_after:?}, expected about 1 s"
    );
    trickle.abort();
    assert_eq!(a.hits("/"), 0, "nothing of it reached the backend");

    let big = "x".repeat(9000);
    let (status, _, _) = testing::http_request(http, "GET", "/", &[("X-Big", &big)], "")
        .await
        .unwrap();
    assert_eq!(status, 431);
    let small = "x".repeat(4000);
    let (status, _, _) = testing::http_request(http, "GET", "/", &[("X-Small", &small)], "")
        .await
        .unwrap();
    assert_eq!(status, 200, "headers under the limit pass");

    let (status, _, body) = testing::http_request(http, "POST", "/form", &[], &"y".repeat(1001))
        .await
        .unwrap();
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        a.posts.load(Ordering::SeqCst),
        0,
        "refused before any backend"
    );
    let (status, _, _) = testing::http_request(http, "POST", "/form", &[], &"y".repeat(1000))
        .await
        .unwrap();
    assert_eq!(status, 200, "a body of exactly the limit passes");

    // Chunked: no length announced; the fourth 300-byte chunk passes the limit mid-stream.
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    let mut request =
        b"POST /form HTTP/1.1\r\nHost: www.foobar.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..4 {
        request.extend_from_slice(format!("12c\r\n{}\r\n", "z".repeat(300)).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    assert_eq!(
        metric(
            admin,
            "foobar_balancer_rejected_total{reason=\"body_too_large\"}"
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            admin,
            "foobar_balancer_rejected_total{reason=\"header_too_large\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            admin,
            "foobar_balancer_rejected_total{reason=\"header_timeout\"}"
        )
        .await,
        1.0
    );
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

/// A client over its rate gets 429 with Retry-After once its burst is spent.
#[tokio::test]
async fn the_rate_limit_answers_429_past_the_burst() {
    let a = Backend::start("a").await;
    let spec = Spec {
        backends: &[(&a, 1, false)],
        algorithm: "round_robin",
    };
    let limits = "[limits]\nrate_limit_per_second = 0.5\nrate_limit_burst = 5\n";
    let lb = start(&write_config(&spec, PLAIN_HTTP, limits)).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..8 {
        let (status, headers, _) = testing::http_request(lb.addr("http"), "GET", "/", &[], "")
            .await
            .unwrap();
        statuses.push(status);
        if status == 429 {
            retry_after = headers
                .into_iter()
                .find(|(name, _)| name == "retry-after")
                .map(|(_, value)| value);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    assert_eq!(retry_after.as_deref(), Some("2"), "one token every 2 s");
    assert_eq!(a.hits("/"), 5);
    assert_eq!(
        metric(
            lb.addr("admin"),
            "foobar_balancer_rejected_total{reason=\"rate_limit\"}"
        )
        .await,
        3.0
    );
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

/// With `max_connections` open, a new connection is not refused: it waits in the accept
/// queue, unanswered, and is served as soon as one of the open ones closes.
#[tokio::test]
async fn max_connections_holds_new_connections_until_one_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Backend::start("a").await;
    let spec = Spec {
        backends: &[(&a, 1, false)],
        algorithm: "round_robin",
    };
    let lb = start(&write_config(
        &spec,
        PLAIN_HTTP,
        "[limits]\nmax_connections = 2\n",
    ))
    .await;
    let http = lb.addr("http");
    let (mut first, first_connection) = keep_alive(http).await;
    let (mut second, _second_connection) = keep_alive(http).await;
    assert_eq!(send(&mut first, "/").await.unwrap().0, 200);
    assert_eq!(send(&mut second, "/").await.unwrap().0, 200);

    let mut third = tokio::net::TcpStream::connect(http)
        .await
        .expect("the kernel queues the connection: it is not refused");
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: www.foobar.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(700), third.read_to_end(&mut answer)).await;
    assert!(early.is_err(), "served past max_connections: {answer:?}");
    let (_, status) = get(lb.addr("admin"), "/status.json").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        (
            status["client_connections"].as_i64(),
            status["max_connections"].as_u64()
        ),
        (Some(2), Some(2)),
        "{status}"
    );

    first_connection.abort();
    tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut answer))
        .await
        .expect("served once a place was free")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        send(&mut second, "/").await.unwrap().0,
        200,
        "the open one still works"
    );
    assert!(metric(lb.addr("admin"), "foobar_balancer_connections_waited_total").await >= 1.0);
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

/// SIGHUP: a new pool applies to new requests while an open keep-alive connection keeps
/// working; a broken file is refused with its file and line, and traffic carries on.
#[tokio::test]
async fn sighup_reload_keeps_open_connections_and_refuses_a_broken_file() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let path = write_config(
        &Spec {
            backends: &[(&a, 1, false), (&b, 1, false)],
            algorithm: "round_robin",
        },
        PLAIN_HTTP,
        "",
    );
    let mut lb = start(&path).await;
    let admin = lb.addr("admin");
    let (mut client, _connection) = keep_alive(lb.addr("http")).await;
    let mut before = Vec::new();
    for _ in 0..4 {
        before.push(send(&mut client, "/").await.unwrap().1);
    }
    assert_eq!(before, ["a", "b", "a", "b"]);

    // The same file, now with b (weight 3) and c (weight 1) instead of a and b.
    let reloaded = config_text(
        &Spec {
            backends: &[(&b, 3, false), (&c, 1, false)],
            algorithm: "round_robin",
        },
        PLAIN_HTTP,
        "",
    );
    std::fs::write(&path, reloaded).unwrap();
    lb.signal("HUP").await.unwrap();
    lb.wait_for_log("config reloaded", Duration::from_secs(5))
        .await
        .unwrap();
    let mut after = Vec::new();
    for _ in 0..8 {
        after.push(
            send(&mut client, "/")
                .await
                .expect("the kept-alive connection still works")
                .1,
        );
    }
    assert_eq!(after.iter().filter(|n| *n == "b").count(), 6, "{after:?}");
    assert_eq!(after.iter().filter(|n| *n == "c").count(), 2, "{after:?}");
    let pool = backends(admin).await;
    assert!(
        !pool.contains_key(&a.addr.to_string()),
        "a left the pool: {pool:?}"
    );
    assert!(
        pool[&b.addr.to_string()].1 >= 8,
        "b kept its counters across the reload: {pool:?}"
    );

    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("[health]\n", "[health]\nintervall = \"1s\"\n"),
    )
    .unwrap();
    lb.signal("HUP").await.unwrap();
    let refused = lb
        .wait_for_log("reload refused", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        refused.contains(&format!("{}:", path.display())) && refused.contains("intervall"),
        "the log names the file, line and key: {refused}"
    );
    for _ in 0..4 {
        let (status, name) = send(&mut client, "/").await.unwrap();
        assert!(
            status == 200 && (name == "b" || name == "c"),
            "{status} {name}"
        );
    }
    assert_eq!(
        metric(
            admin,
            "foobar_balancer_config_reloads_total{result=\"refused\"}"
        )
        .await,
        1.0
    );
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

/// A backend given by host name: `localhost:PORT` is resolved (again every 200 ms here), each
/// address is a backend named `localhost:PORT@IP`, and it keeps its counters across
/// resolutions; draining the entry's name drains every address it resolved to.
#[tokio::test]
async fn a_backend_given_by_name_is_resolved_and_keeps_its_state() {
    let a = Backend::start("a").await;
    let spec = Spec {
        backends: &[(&a, 1, false)],
        algorithm: "round_robin",
    };
    let path = write_config(&spec, PLAIN_HTTP, "");
    let by_name = format!("localhost:{}", a.addr.port());
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&a.addr.to_string(), &by_name);
    std::fs::write(&path, text).unwrap();
    let lb = start(&path).await;
    let (http, admin) = (lb.addr("http"), lb.addr("admin"));
    let resolved = format!("{by_name}@127.0.0.1");
    for _ in 0..5 {
        assert_eq!(get(http, "/").await, (200, "a".to_owned()));
    }
    // Five resolutions later, the same backend with the same counters.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for _ in 0..5 {
        assert_eq!(get(http, "/").await, (200, "a".to_owned()));
    }
    let pool = backends(admin).await;
    assert_eq!(
        pool.get(&resolved).map(|(state, n)| (state.as_str(), *n)),
        Some(("UP", 10)),
        "{pool:?}"
    );
    let drain = format!("/backends/{by_name}/drain");
    let (status, _, answer) = testing::http_request(admin, "POST", &drain, &[ADMIN_AUTH], "")
        .await
        .unwrap();
    assert!(
        status == 200 && answer.contains(&resolved),
        "{status} {answer}"
    );
    assert_eq!(get(http, "/").await.0, 503, "its only backend is drained");
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

/// A backend whose /readyz fails is taken out by the active check: it gets no new request,
/// and the one it was serving is answered in full.
#[tokio::test]
async fn a_backend_failing_readyz_finishes_its_requests_and_gets_no_new_ones() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = round_robin(&[&a, &b]).await;
    let (http, admin) = (lb.addr("http"), lb.addr("admin"));
    // The first pick of an even round robin is the first backend: a.
    let slow = tokio::spawn(async move { get(http, "/slow?ms=1500").await });
    wait_for_requests(admin, &a.addr.to_string(), 1).await;
    a.ready.store(false, Ordering::SeqCst);
    wait_for_state(admin, &a.addr.to_string(), "DOWN").await;
    for _ in 0..10 {
        assert_eq!(get(http, "/").await, (200, "b".to_owned()));
    }
    assert_eq!(a.hits("/"), 0);
    assert_eq!(
        slow.await.unwrap(),
        (200, "a".to_owned()),
        "the request a had when it went down is answered"
    );
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

/// A web server that answers 503 (its database is down, say) is alive: it stays in the pool,
/// and the requests it can serve (a static page, a read) still reach it. Only failed
/// connections, exchanges and timeouts count against a backend under traffic; whether it is
/// ready is the active check's call.
#[tokio::test]
async fn backends_answering_503_stay_up_and_keep_serving_what_they_can() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = round_robin(&[&a, &b]).await;
    let (http, admin) = (lb.addr("http"), lb.addr("admin"));
    for _ in 0..20 {
        let (status, body) = get(http, "/unavailable").await;
        assert_eq!(status, 503);
        assert!(
            body == "a" || body == "b",
            "the balancer's own 503 page: {body}"
        );
    }
    let states = backends(admin).await;
    for backend in [&a, &b] {
        assert_eq!(
            states[&backend.addr.to_string()].0,
            "UP",
            "marked down for answering 503: {states:?}"
        );
    }
    let mut answered = Vec::new();
    for _ in 0..4 {
        answered.push(get(http, "/").await);
    }
    assert!(
        answered.iter().all(|(status, _)| *status == 200),
        "{answered:?}"
    );
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

/// Draining a backend under a steady load of concurrent requests: every request is answered
/// 200, and the drained backend gets none once the requests it had have finished.
#[tokio::test]
async fn draining_a_backend_under_load_loses_no_request() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = round_robin(&[&a, &b]).await;
    let (http, admin) = (lb.addr("http"), lb.addr("admin"));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            tokio::spawn(async move {
                let mut failed = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match testing::http_get(http, "/slow?ms=20").await {
                        Ok((200, _)) => {}
                        Ok((status, body)) => failed.push(format!("{status} {body}")),
                        Err(e) => failed.push(format!("no answer: {e}")),
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                failed
            })
        })
        .collect();
    while done.load(Ordering::SeqCst) < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain = format!("/backends/{}/drain", a.addr);
    assert_eq!(
        testing::http_request(admin, "POST", &drain, &[ADMIN_AUTH], "")
            .await
            .unwrap()
            .0,
        200
    );
    let at_drain = done.load(Ordering::SeqCst);
    // Requests a had when drained take 20 ms; after 200 ms, a has answered its last.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a_after_drain = a.hits("/slow");
    while done.load(Ordering::SeqCst) < at_drain + 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut failed = Vec::new();
    for client in clients {
        failed.extend(client.await.unwrap());
    }
    let total = done.load(Ordering::SeqCst);
    assert!(
        failed.is_empty(),
        "{} of {total} failed: {failed:?}",
        failed.len()
    );
    assert!(a_after_drain > 0, "a served before the drain");
    assert_eq!(
        a.hits("/slow"),
        a_after_drain,
        "a got requests after its drain"
    );
    assert_eq!(a.hits("/slow") + b.hits("/slow"), total);
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

/// A `[[site]]` (its backend given by name): requests whose Host (HTTP/1.1, any case, any
/// port) or `:authority` (HTTP/2) is one of its hosts go to its own backend, checked at its
/// own health path; every other host goes to `[pool]`. The status JSON, the metrics and the drain action know its pool, and
/// a reload without it sends its hosts back to `[pool]`.
#[tokio::test]
async fn a_site_gets_the_requests_for_its_hosts_and_leaves_on_reload() {
    let (a, s) = (Backend::start("a").await, Backend::start("s").await);
    let spec = Spec {
        backends: &[(&a, 1, false)],
        algorithm: "round_robin",
    };
    // Given by name, as prometheus:9090 is: resolved like [pool]'s backends.
    let by_name = format!("localhost:{}", s.addr.port());
    let resolved = format!("{by_name}@127.0.0.1");
    let site = format!(
        "[[site]]\nname = \"status\"\nhosts = [\"status.foobar.com\"]\n\
         [site.health]\npath = \"/-/ready\"\n[[site.backends]]\naddress = \"{by_name}\"\n"
    );
    let path = write_config(&spec, PLAIN_HTTP, &site);
    let mut lb = start(&path).await;
    let (http, admin) = (lb.addr("http"), lb.addr("admin"));
    let for_host = |host: &'static str| async move {
        let (status, _, body) = testing::http_request(http, "GET", "/", &[("Host", host)], "")
            .await
            .unwrap();
        (status, body)
    };
    assert_eq!(for_host("status.foobar.com").await, (200, "s".to_owned()));
    assert_eq!(
        for_host("Status.FooBar.COM:8080").await,
        (200, "s".to_owned())
    );
    assert_eq!(for_host("www.foobar.com").await, (200, "a".to_owned()));
    assert_eq!(
        for_host("status.foobar.com.example").await,
        (200, "a".to_owned()),
        "exact names only"
    );

    let https = lb.addr("https").port();
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "--insecure",
            "-w",
            " %{http_version}",
            "--resolve",
        ])
        .arg(format!("status.foobar.com:{https}:127.0.0.1"))
        .arg(format!("https://status.foobar.com:{https}/"))
        .output()
        .await
        .expect("curl is installed");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "s 2",
        "HTTP/2's :authority chooses the site: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    eventually("the site's own health path is checked", || {
        s.hits("/-/ready") > 0
    })
    .await;
    assert_eq!(a.hits("/-/ready"), 0, "[pool] keeps [health]'s path");
    let (_, json) = get(admin, "/status.json").await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let pool_of = |name: String| {
        json["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name.as_str())
            .map(|b| b["pool"].clone())
    };
    assert_eq!(pool_of(resolved.clone()), Some("status".into()), "{json}");
    assert_eq!(
        pool_of(a.addr.to_string()),
        Some("default".into()),
        "{json}"
    );
    assert_eq!(json["pools"][1]["hosts"][0], "status.foobar.com", "{json}");
    let (_, page) = get(admin, "/status").await;
    assert!(page.contains("<li data-pool=\"status\">"), "{page}");
    let requests = format!(
        "foobar_balancer_requests_total{{pool=\"status\",backend=\"{resolved}\",code=\"200\"}}"
    );
    assert_eq!(metric(admin, &requests).await, 3.0);
    let up = format!("foobar_balancer_backend_up{{pool=\"status\",backend=\"{resolved}\"}}");
    assert_eq!(metric(admin, &up).await, 1.0);

    let drain = format!("/backends/{by_name}/drain");
    let (status, _, _) = testing::http_request(admin, "POST", &drain, &[ADMIN_AUTH], "")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        for_host("status.foobar.com").await.0,
        503,
        "the site's only backend is drained; [pool] does not stand in"
    );
    assert_eq!(for_host("www.foobar.com").await, (200, "a".to_owned()));

    std::fs::write(&path, config_text(&spec, PLAIN_HTTP, "")).unwrap();
    lb.signal("HUP").await.unwrap();
    lb.wait_for_log("config reloaded", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(for_host("status.foobar.com").await, (200, "a".to_owned()));
    assert!(
        !backends(admin).await.contains_key(&resolved),
        "the site's backend left with it"
    );
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

/// One HTTP/1.1 request with a chunked body, written by hand: the status and the body.
async fn chunked_post(
    addr: SocketAddr,
    path: &str,
    headers: &str,
    chunks: &[&str],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: www.foobar.com\r\nConnection: close\r\n{headers}\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    for chunk in chunks {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// A write with an `Idempotency-Key` and a body of at most 64 KiB (announced, or chunked) is
/// sent to another backend when the first reads it and closes the connection without an
/// answer; one without the key, or with a longer body, gets 502 and reaches one backend only;
/// and a keyed one whose backend is too slow gets 504 and is not sent again.
#[tokio::test]
async fn a_write_with_an_idempotency_key_is_sent_again_when_its_backend_dies() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let spec = Spec {
        backends: &[(&a, 1, false), (&b, 1, false)],
        algorithm: "round_robin",
    };
    let path = write_config(&spec, PLAIN_HTTP, "");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("response = \"5s\"", "response = \"1s\""),
    )
    .unwrap();
    let lb = start(&path).await;
    let (http, admin) = (lb.addr("http"), lb.addr("admin"));
    let posts = || {
        (
            a.posts.load(Ordering::SeqCst),
            b.posts.load(Ordering::SeqCst),
        )
    };
    let key = (
        "Idempotency-Key",
        "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"",
    );

    // The first pick of an even round robin is a, which reads the POST and dies.
    let (status, _, body) = testing::http_request(http, "POST", "/die?on=a", &[key], "order=1")
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "b"), "sent again, to b");
    assert_eq!(posts(), (1, 1));
    assert_eq!(metric(admin, "foobar_balancer_retries_total").await, 1.0);

    // Next pick: b. Without the key, every backend dies on /die: 502, sent to one only.
    let (status, _, _) = testing::http_request(http, "POST", "/die", &[], "order=2")
        .await
        .unwrap();
    assert_eq!(status, 502, "the client learns the outcome is unknown");
    assert_eq!(posts(), (1, 2), "never sent twice");

    // Next pick: a again. A chunked body that ends within 64 KiB is read ahead, so it too
    // goes to b after a dies.
    let (status, response) = chunked_post(
        http,
        "/die?on=a",
        "Idempotency-Key: \"second\"\r\n",
        &["order=", "3"],
    )
    .await;
    assert_eq!(status, 200, "{response}");
    assert!(response.ends_with('b'), "{response}");
    assert_eq!(posts(), (2, 3));

    // Past 64 KiB the body streams as it comes and cannot be sent again.
    let long = "x".repeat(70_000);
    let (status, _, _) = testing::http_request(http, "POST", "/die", &[key], &long)
        .await
        .unwrap();
    assert_eq!(status, 502);
    let (sent_a, sent_b) = posts();
    assert_eq!(
        sent_a + sent_b,
        6,
        "reached one backend only: {sent_a} {sent_b}"
    );

    // No answer within timeouts.response: 504, and the backend may still act on it.
    let (status, _, _) = testing::http_request(http, "POST", "/slow?ms=1500", &[key], "order=4")
        .await
        .unwrap();
    assert_eq!(status, 504);
    // Waits for an absence (no second copy within the time a retry would take): no event
    // to poll for.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (sent_a, sent_b) = posts();
    assert_eq!(
        sent_a + sent_b,
        7,
        "not sent again after a timeout: {sent_a} {sent_b}"
    );
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}
