//! What the balancer's process tests share: a real HTTP backend the test controls
//! (`Backend`), the balancer's config and process, and polls on its status page.
// Each test file uses a part of it.
#![allow(dead_code)]

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

pub const BINARY: &str = env!("CARGO_BIN_EXE_foobar-balancer");

/// The admin token of every test balancer (`service.admin_token_file` in its folder), and the
/// header its admin actions carry.
pub const ADMIN_TOKEN: &str = "process-test-token";
pub const ADMIN_AUTH: (&str, &str) = ("Authorization", "Bearer process-test-token");

/// A body sent in pieces with no length announced: HTTP/1.1 frames it chunked.
pub struct Chunks(std::collections::VecDeque<Bytes>);

impl Chunks {
    pub fn of(bytes: &Bytes, size: usize) -> Self {
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
pub struct Backend {
    pub addr: SocketAddr,
    /// Requests answered, by path.
    pub hits: Arc<Mutex<HashMap<String, usize>>>,
    /// POST requests whose body arrived.
    pub posts: Arc<AtomicUsize>,
    pub ready: Arc<AtomicBool>,
    /// Headers of the last request.
    pub last_headers: Arc<Mutex<Vec<(String, String)>>>,
    pub tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Backend {
    /// `GET /` answers the backend's name; `/slow` after 300 ms (`/slow?ms=N`: after N ms);
    /// `/readyz` 200 while ready; `/unavailable` 503 (as a web server whose database is down
    /// answers a page that needs it); `POST /die` reads the body and then drops the connection
    /// without an answer (`/die?on=NAME`: only the backend called NAME does); `/echo` answers
    /// the request's body in 1000-byte chunks without a length (chunked on the wire),
    /// `/echo?length` with its Content-Length.
    pub async fn start(name: &'static str) -> Self {
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

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Gone at once: the listener closes and every open connection drops mid-request.
    pub fn kill(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

pub struct Spec<'a> {
    pub backends: &'a [(&'a Backend, u32, bool)],
    pub algorithm: &'a str,
}

/// A test's folder (config, generated certificates): `foobar-balancer-test-PID-PORT` in the
/// temporary folder. A test process cannot clean up after its last test, so the first call
/// removes the folders of test processes that have ended.
pub fn test_dir(spec: &Spec<'_>) -> std::path::PathBuf {
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

pub const PLAIN_HTTP: &str = "[http]\nlisten = \"127.0.0.1:0\"\nredirect_to_https = false\n";

/// A balancer spreading plain HTTP over `backends` by round robin, each of weight 1, none a
/// backup: what most tests need.
pub async fn round_robin(backends: &[&Backend]) -> RunningService {
    let backends: Vec<_> = backends.iter().map(|&b| (b, 1, false)).collect();
    balancer(Spec {
        backends: &backends,
        algorithm: "round_robin",
    })
    .await
}

/// Backends `a` and `b` behind a [`round_robin`] balancer, as many tests begin.
pub async fn a_and_b_round_robin() -> (Backend, Backend, RunningService) {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = round_robin(&[&a, &b]).await;
    (a, b, lb)
}

/// A balancer proxying plain HTTP (no redirect), with HTTPS on a generated certificate.
pub async fn balancer(spec: Spec<'_>) -> RunningService {
    balancer_with(spec, PLAIN_HTTP).await
}

pub async fn balancer_with(spec: Spec<'_>, http_table: &str) -> RunningService {
    let path = write_config(&spec, http_table, "");
    start(&path).await
}

/// The config file for `spec`, with `extra` tables (`[limits]` ...) added.
pub fn write_config(spec: &Spec<'_>, http_table: &str, extra: &str) -> std::path::PathBuf {
    let path = test_dir(spec).join("balancer.toml");
    std::fs::write(&path, config_text(spec, http_table, extra)).unwrap();
    path
}

pub fn config_text(spec: &Spec<'_>, http_table: &str, extra: &str) -> String {
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

pub async fn start(path: &Path) -> RunningService {
    let service = RunningService::start(Path::new(BINARY), path, &[], &["admin", "http", "https"])
        .await
        .unwrap();
    testing::wait_ready(service.addr("admin"), Duration::from_secs(10))
        .await
        .unwrap();
    service
}

pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    testing::http_get(addr, path).await.unwrap()
}

/// A real HTTP/1.1 client connection, kept alive across requests; aborting the task closes
/// it.
pub async fn keep_alive(addr: SocketAddr) -> (SendRequest<Full<Bytes>>, JoinHandle<()>) {
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
pub async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    path: &str,
) -> anyhow::Result<(u16, String)> {
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
pub async fn metric(admin: SocketAddr, sample: &str) -> f64 {
    let (_, text) = get(admin, "/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The backends as `/status.json` shows them: name to (state, requests).
pub async fn backends(admin: SocketAddr) -> HashMap<String, (String, u64)> {
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
pub async fn wait_for_requests(admin: SocketAddr, backend: &str, n: u64) {
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

/// `clients` tasks each sending GET `path` one request after another while `more(sent)`
/// holds, counting answers in `done`; each task returns the requests that failed.
pub fn load(
    clients: usize,
    addr: SocketAddr,
    path: &'static str,
    done: Arc<AtomicUsize>,
    more: impl Fn(usize) -> bool + Clone + Send + 'static,
) -> Vec<JoinHandle<Vec<String>>> {
    (0..clients)
        .map(|_| {
            let (done, more) = (Arc::clone(&done), more.clone());
            tokio::spawn(async move {
                let mut failed = Vec::new();
                let mut sent = 0;
                while more(sent) {
                    match testing::http_get(addr, path).await {
                        Ok((200, _)) => {}
                        Ok((status, body)) => failed.push(format!("{status} {body}")),
                        Err(e) => failed.push(format!("no answer: {e}")),
                    }
                    sent += 1;
                    done.fetch_add(1, Ordering::SeqCst);
                }
                failed
            })
        })
        .collect()
}

/// Polls until `done` holds, for at most 5 s.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
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
pub async fn wait_for_state(admin: SocketAddr, backend: &str, state: &str) {
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

/// An HTTP/2 client connection with prior knowledge (h2c) to `addr`, for requests without a
/// body; the connection runs in a task of its own.
pub async fn h2c(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    sender
}
