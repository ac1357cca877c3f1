//! What the demo's process tests share: foobar-dns and foobar-balancer from the workspace's
//! release build, started as processes, and a small guestbook server shaped like the
//! webapp's JSON API behind the balancers. Everything listens on 127.0.0.0/8.

// Each test file uses its own part of these fixtures.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foobar_demo::visitor::VisitorConfig;
use foobar_service::testing::RunningService;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Method, Request as HyperRequest, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// Nothing listens here: connections are refused.
pub const DEAD: &str = "127.0.0.2";
pub const LB_A: &str = "127.0.0.3";
pub const LB_B: &str = "127.0.0.4";

/// A release binary of another package of the workspace, beside this test's.
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} missing: cargo build --release -p {name}",
        path.display()
    );
    path
}

/// The guestbook's posts, answered as the webapp's JSON API answers: a POST whose
/// `Idempotency-Key` was seen before stores nothing and gets the first one's post.
#[derive(Default)]
pub struct Guestbook {
    posts: Mutex<Vec<(u64, String)>>,
    pub created: AtomicU64,
    /// Every POST's `Idempotency-Key` header (None: it had none), in arrival order.
    pub keys: Mutex<Vec<Option<String>>>,
    /// Post id and message by key.
    stored_keys: Mutex<HashMap<String, (u64, String)>>,
    /// Requests with `slow=1` received: handled, and answered a second later.
    pub slow_requests: AtomicU64,
    /// Acknowledged and then forgotten: a lost write.
    pub forget: Mutex<Option<u64>>,
}

impl Guestbook {
    fn answer(
        &self,
        method: &Method,
        path: &str,
        key: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, Value) {
        let served_by = |database: &str| json!({ "web": "web-x", "database": database });
        let (route, query) = path.split_once('?').unwrap_or((path, ""));
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v.parse::<u64>().ok())
        };
        if param("slow").is_some() {
            self.slow_requests.fetch_add(1, Ordering::SeqCst);
        }
        let post = |(id, message): &(u64, String)| json!({ "id": id, "name": "foobar-demo", "message": message, "created_at": "" });
        match (method, route) {
            (&Method::POST, "/api/posts") => {
                self.keys.lock().unwrap().push(key.map(str::to_owned));
                let message = serde_json::from_slice::<Value>(body).unwrap()["message"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let mut stored_keys = self.stored_keys.lock().unwrap();
                let stored = match key.and_then(|key| stored_keys.get(key)) {
                    Some(earlier) => earlier.clone(),
                    None => {
                        let id = self.created.fetch_add(1, Ordering::SeqCst) + 1;
                        if *self.forget.lock().unwrap() != Some(id) {
                            self.posts.lock().unwrap().push((id, message.clone()));
                        }
                        if let Some(key) = key {
                            stored_keys.insert(key.to_owned(), (id, message.clone()));
                        }
                        (id, message)
                    }
                };
                let body = json!({ "post": post(&stored), "served_by": served_by("db-primary") });
                (StatusCode::CREATED, body)
            }
            (&Method::GET, "/api/posts") => {
                let limit = param("limit").unwrap_or(10) as usize;
                let before = param("before").unwrap_or(u64::MAX);
                let posts = self.posts.lock().unwrap();
                let older: Vec<_> = posts.iter().rev().filter(|(id, _)| *id < before).collect();
                let page: Vec<Value> = older.iter().take(limit).map(|p| post(p)).collect();
                let next = (older.len() > limit)
                    .then(|| format!("/api/posts?before={}&limit={limit}", older[limit - 1].0));
                let body =
                    json!({ "posts": page, "older": next, "served_by": served_by("db-replica") });
                (StatusCode::OK, body)
            }
            (&Method::GET, route) if route.starts_with("/api/posts/") => {
                let id: u64 = route["/api/posts/".len()..].parse().unwrap_or(0);
                match self.posts.lock().unwrap().iter().find(|(i, _)| *i == id) {
                    Some(found) => (
                        StatusCode::OK,
                        json!({ "post": post(found), "served_by": served_by("db-replica") }),
                    ),
                    None => (StatusCode::NOT_FOUND, json!({ "error": "no such post" })),
                }
            }
            _ => (StatusCode::OK, json!({})),
        }
    }
}

/// The web server behind the balancers. A request with `slow=1` is handled (a POST stored)
/// at once and answered a second later, so a test can kill a balancer while it waits.
async fn web_server(guestbook: Arc<Guestbook>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let guestbook = Arc::clone(&guestbook);
            let service = service_fn(move |request: HyperRequest<hyper::body::Incoming>| {
                let guestbook = Arc::clone(&guestbook);
                async move {
                    let method = request.method().clone();
                    let path = request.uri().to_string();
                    let key = request
                        .headers()
                        .get("idempotency-key")
                        .and_then(|value| value.to_str().ok())
                        .map(str::to_owned);
                    let body = request.into_body().collect().await?.to_bytes();
                    let (status, json) = guestbook.answer(&method, &path, key.as_deref(), &body);
                    if path.contains("slow=1") {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    let mut response = Response::new(Full::new(Bytes::from(json.to_string())));
                    *response.status_mut() = status;
                    response
                        .headers_mut()
                        .insert("x-served-by", "web-x".parse().unwrap());
                    Ok::<_, hyper::Error>(response)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

pub struct Stack {
    pub dir: PathBuf,
    pub dns: RunningService,
    pub guestbook: Arc<Guestbook>,
    pub web: SocketAddr,
    /// Balancers started as processes, by IP address, all on the same HTTPS port.
    balancers: HashMap<IpAddr, RunningService>,
    pub https_port: u16,
}

impl Stack {
    /// foobar-dns answering `www` with `addresses` (`dns_extra` appended to its config), the
    /// guestbook, and no balancer yet; the HTTPS port all balancers will use is chosen.
    pub async fn start(test: &str, addresses: &[&str], dns_extra: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("foobar-demo-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        write_zone(&dir, addresses);
        let config = dir.join("dns.toml");
        std::fs::write(
            &config,
            format!(
                "[service]\nadmin_listen = \"127.0.0.1:0\"\n\n\
                 [dns]\nlisten = \"127.0.0.1:0\"\n\n\
                 [[zone]]\norigin = \"foobar.com\"\nfile = \"{}\"\n{dns_extra}",
                dir.join("foobar.com.zone").display()
            ),
        )
        .unwrap();
        let dns = RunningService::start_ready(
            &sibling_binary("foobar-dns"),
            &config,
            &[],
            &["admin", "dns-udp", "dns-tcp"],
        )
        .await
        .unwrap();
        let guestbook = Arc::new(Guestbook::default());
        let web = web_server(Arc::clone(&guestbook)).await;
        Self {
            https_port: free_port(LB_A),
            dir,
            dns,
            guestbook,
            web,
            balancers: HashMap::new(),
        }
    }

    /// The config file of a balancer on `ip`; its admin listener on `ip:admin_port`.
    pub fn balancer_config(&self, ip: &str, admin_port: u16) -> PathBuf {
        let config = self.dir.join(format!("balancer-{ip}.toml"));
        std::fs::write(
            &config,
            format!(
                "[service]\nadmin_listen = \"{ip}:{admin_port}\"\nshutdown_timeout = \"1s\"\n\n\
                 [http]\nlisten = \"{ip}:0\"\nredirect_to_https = false\n\n\
                 [https]\nlisten = \"{ip}:{}\"\ngenerated_dir = \"{}\"\n\n\
                 [health]\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 2\n\n\
                 [[pool.backends]]\naddress = \"{}\"\n",
                self.https_port,
                self.dir.join("tls").display(),
                self.web
            ),
        )
        .unwrap();
        config
    }

    /// A balancer process on `ip`.
    pub async fn start_balancer(&mut self, ip: &str) {
        let config = self.balancer_config(ip, 0);
        let lb = RunningService::start_ready(
            &sibling_binary("foobar-balancer"),
            &config,
            &[],
            &["admin", "http", "https"],
        )
        .await
        .unwrap();
        self.balancers.insert(ip.parse().unwrap(), lb);
    }

    /// Sends `signal` (`STOP`, `CONT` ...) to the balancer on `ip`.
    pub async fn signal_balancer(&self, ip: &str, signal: &str) {
        let ip: IpAddr = ip.parse().unwrap();
        self.balancers[&ip].signal(signal).await.unwrap();
    }

    /// SIGKILL, and wait until its port refuses connections.
    pub async fn kill_balancer(&mut self, ip: IpAddr) {
        drop(self.balancers.remove(&ip));
        let addr = SocketAddr::new(ip, self.https_port);
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "{addr} still accepts");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn visitor_config(&self, max_requests_per_connection: u32) -> VisitorConfig {
        VisitorConfig {
            dns_servers: vec![self.dns.addr("dns-udp")],
            port: self.https_port,
            ca_file: self.dir.join("tls").join("ca.pem"),
            max_requests_per_connection,
            max_connection_age: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
            ..VisitorConfig::default()
        }
    }

    pub fn posts(&self) -> u64 {
        self.guestbook.created.load(Ordering::SeqCst)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port free on `ip` just now.
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn write_zone(dir: &Path, addresses: &[&str]) {
    let www: String = addresses
        .iter()
        .map(|a| format!("www IN A {a}\n"))
        .collect();
    std::fs::write(
        dir.join("foobar.com.zone"),
        format!(
            "$ORIGIN foobar.com.\n$TTL 300\n\
             @ IN SOA ns1.foobar.com. hostmaster.foobar.com. ( 1 3600 600 604800 60 )\n\
             @ IN NS ns1.foobar.com.\nns1 IN A 127.0.0.10\n{www}"
        ),
    )
    .unwrap();
}
