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
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

const BINARY: &str = env!("CARGO_BIN_EXE_foobar-balancer");

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
    /// `GET /` answers the backend's name; `/slow` after 300 ms; `/readyz` 200 while ready;
    /// `POST /die` reads the body and then drops the connection without an answer.
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
                        let is_post = request.method() == hyper::Method::POST;
                        *last.lock().unwrap() = request
                            .headers()
                            .iter()
                            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
                            .collect();
                        let _ = request.into_body().collect().await;
                        if is_post {
                            posts.fetch_add(1, Ordering::SeqCst);
                        }
                        if path == "/die" {
                            return Err("dying on purpose");
                        }
                        if path == "/slow" {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        if path != "/readyz" {
                            *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                        }
                        let status = if path == "/readyz" && !ready.load(Ordering::SeqCst) {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            StatusCode::OK
                        };
                        let mut response = Response::new(Full::new(Bytes::from(name)));
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

fn test_dir(spec: &Spec<'_>) -> std::path::PathBuf {
    let port = spec.backends[0].0.addr.port();
    let dir = std::env::temp_dir().join(format!(
        "foobar-balancer-test-{}-{port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A balancer proxying plain HTTP (no redirect), with HTTPS on a generated certificate.
async fn balancer(spec: Spec<'_>) -> RunningService {
    balancer_with(
        spec,
        "[http]\nlisten = \"127.0.0.1:0\"\nredirect_to_https = false\n",
    )
    .await
}

async fn balancer_with(spec: Spec<'_>, http_table: &str) -> RunningService {
    let dir = test_dir(&spec);
    let mut config = format!(
        "[service]\nadmin_listen = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n\n\
         {http_table}\n\
         [https]\nlisten = \"127.0.0.1:0\"\ngenerated_dir = \"{}\"\n\n\
         [health]\npath = \"/readyz\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 2\n\n\
         [timeouts]\nconnect = \"500ms\"\nresponse = \"5s\"\n\n\
         [pool]\nalgorithm = \"{}\"\n",
        dir.join("tls").display(),
        spec.algorithm
    );
    for (backend, weight, backup) in spec.backends {
        config.push_str(&format!(
            "\n[[pool.backends]]\naddress = \"{}\"\nweight = {weight}\nbackup = {backup}\n",
            backend.addr
        ));
    }
    let path = dir.join("balancer.toml");
    std::fs::write(&path, config).unwrap();
    let service = RunningService::start(Path::new(BINARY), &path, &[], &["admin", "http", "https"])
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

#[tokio::test]
async fn round_robin_splits_evenly_and_forwards_who_asked() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let lb = balancer(Spec {
        backends: &[(&a, 1, false), (&b, 1, false)],
        algorithm: "round_robin",
    })
    .await;
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
    tokio::time::sleep(Duration::from_millis(1000)).await; // fall 2 x interval 200 ms, with room
    for _ in 0..10 {
        assert_eq!(get(lb.addr("http"), "/").await, (200, "standby".to_owned()));
    }
    a.ready.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
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
    let lb = balancer(Spec {
        backends: &[(&a, 1, false), (&b, 1, false)],
        algorithm: "round_robin",
    })
    .await;
    let addr = lb.addr("http");
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut failed = Vec::new();
                for _ in 0..250 {
                    let (status, body) = get(addr, "/").await;
                    if status != 200 {
                        failed.push((status, body));
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
    let lb = balancer(Spec {
        backends: &[(&a, 1, false), (&b, 1, false)],
        algorithm: "round_robin",
    })
    .await;
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

#[tokio::test]
async fn no_backend_up_gives_a_clear_503_at_once() {
    let a = Backend::start("a").await;
    let lb = balancer(Spec {
        backends: &[(&a, 1, false)],
        algorithm: "round_robin",
    })
    .await;
    a.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
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
    let lb = balancer(Spec {
        backends: &[(&a, 1, false)],
        algorithm: "round_robin",
    })
    .await;
    let addr = lb.addr("http");
    let in_flight = tokio::spawn(async move { get(addr, "/slow").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
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
    assert!(
        out.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
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

    let (status, headers, _) = testing::http_request(
        lb.addr("http"),
        "GET",
        "/guestbook?page=2",
        &[("Host", "www.foobar.com:8080")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, 308);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "location" && v == "https://www.foobar.com:8443/guestbook?page=2"),
        "{headers:?}"
    );
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
    tokio::time::sleep(Duration::from_millis(50)).await;
    let drain = format!("/backends/{}/drain", b.addr);
    let (status, _, answer) = testing::http_request(admin, "POST", &drain, &[], "")
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
        testing::http_request(admin, "POST", &enable, &[], "")
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
        testing::http_request(admin, "POST", "/backends/nope/drain", &[], "")
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
    let lb = balancer(Spec {
        backends: &[(&a, 1, false), (&b, 1, false)],
        algorithm: "round_robin",
    })
    .await;
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
    let config = "[service]\nadmin_listen = \"127.0.0.1:0\"\n\n[[pool.backends]]\naddress = \"127.0.0.1:1\"\n";
    testing::assert_check_config(Path::new(BINARY), config).unwrap();
}
