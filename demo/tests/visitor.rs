//! The demo's client against the project's real servers, started as processes: foobar-dns
//! answering www.foobar.com with a dead address first, and foobar-balancer terminating HTTPS
//! with its generated CA in front of a small guestbook server shaped like the webapp's API.
//!
//! Needs the release binaries of foobar-dns and foobar-balancer beside this test's
//! (`cargo build --release -p foobar-dns -p foobar-balancer`). Everything listens on
//! 127.0.0.0/8 and is killed when the test ends.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foobar_demo::http1::Request;
use foobar_demo::load::{Load, LoadConfig};
use foobar_demo::record::Kind;
use foobar_demo::verify;
use foobar_demo::visitor::{Visitor, VisitorConfig};
use foobar_service::testing::{self, RunningService};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Method, Request as HyperRequest, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// Nothing listens here: connections are refused.
const DEAD: &str = "127.0.0.2";
const LB_A: &str = "127.0.0.3";
const LB_B: &str = "127.0.0.4";

/// A release binary of another package of the workspace, beside this test's.
fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} missing: cargo build --release -p {name}",
        path.display()
    );
    path
}

/// The guestbook's posts, as the webapp's JSON API serves them.
#[derive(Default)]
struct Guestbook {
    posts: Mutex<Vec<(u64, String)>>,
    created: AtomicU64,
    /// Acknowledged and then forgotten: a lost write.
    forget: Mutex<Option<u64>>,
}

impl Guestbook {
    fn answer(&self, method: &Method, path: &str, body: &[u8]) -> (StatusCode, Value) {
        let served_by = |database: &str| json!({ "web": "web-x", "database": database });
        let (route, query) = path.split_once('?').unwrap_or((path, ""));
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v.parse::<u64>().ok())
        };
        let post = |(id, message): &(u64, String)| json!({ "id": id, "name": "foobar-demo", "message": message, "created_at": "" });
        match (method, route) {
            (&Method::POST, "/api/posts") => {
                let message = serde_json::from_slice::<Value>(body).unwrap()["message"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let id = self.created.fetch_add(1, Ordering::SeqCst) + 1;
                self.posts.lock().unwrap().push((id, message.clone()));
                if *self.forget.lock().unwrap() == Some(id) {
                    self.posts.lock().unwrap().retain(|(i, _)| *i != id);
                }
                let body =
                    json!({ "post": post(&(id, message)), "served_by": served_by("db-primary") });
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

/// The web server behind the balancers.
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
                    let body = request.into_body().collect().await?.to_bytes();
                    let (status, json) = guestbook.answer(&method, &path, &body);
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

struct Stack {
    dir: PathBuf,
    dns: RunningService,
    guestbook: Arc<Guestbook>,
    web: SocketAddr,
    /// Balancers by IP address, all on the same HTTPS port.
    balancers: HashMap<IpAddr, RunningService>,
    https_port: u16,
}

impl Stack {
    /// foobar-dns answering `www` with `addresses`, a web server, balancers on `lbs`.
    async fn start(test: &str, addresses: &[&str], lbs: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("foobar-demo-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_zone(&dir, addresses);
        let config = dir.join("dns.toml");
        std::fs::write(
            &config,
            format!(
                "[service]\nadmin_listen = \"127.0.0.1:0\"\n\n\
                 [dns]\nlisten = \"127.0.0.1:0\"\n\n\
                 [[zone]]\norigin = \"foobar.com\"\nfile = \"{}\"\n",
                dir.join("foobar.com.zone").display()
            ),
        )
        .unwrap();
        let dns = RunningService::start(
            &sibling_binary("foobar-dns"),
            &config,
            &[],
            &["admin", "dns-udp", "dns-tcp"],
        )
        .await
        .unwrap();
        testing::wait_ready(dns.addr("admin"), Duration::from_secs(10))
            .await
            .unwrap();
        let guestbook = Arc::new(Guestbook::default());
        let web = web_server(Arc::clone(&guestbook)).await;
        let mut stack = Self {
            dir,
            dns,
            guestbook,
            web,
            balancers: HashMap::new(),
            https_port: 0,
        };
        for lb in lbs {
            stack.start_balancer(lb).await;
        }
        stack
    }

    /// A balancer on `ip`, on the HTTPS port the first one got.
    async fn start_balancer(&mut self, ip: &str) {
        let config = self.dir.join(format!("balancer-{ip}.toml"));
        std::fs::write(
            &config,
            format!(
                "[service]\nadmin_listen = \"127.0.0.1:0\"\nshutdown_timeout = \"1s\"\n\n\
                 [http]\nlisten = \"127.0.0.1:0\"\nredirect_to_https = false\n\n\
                 [https]\nlisten = \"{ip}:{}\"\ngenerated_dir = \"{}\"\n\n\
                 [health]\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 2\n\n\
                 [[pool.backends]]\naddress = \"{}\"\n",
                self.https_port,
                self.dir.join("tls").display(),
                self.web
            ),
        )
        .unwrap();
        let lb = RunningService::start(
            &sibling_binary("foobar-balancer"),
            &config,
            &[],
            &["admin", "http", "https"],
        )
        .await
        .unwrap();
        testing::wait_ready(lb.addr("admin"), Duration::from_secs(10))
            .await
            .unwrap();
        self.https_port = lb.addr("https").port();
        self.balancers.insert(ip.parse().unwrap(), lb);
    }

    /// SIGKILL, and wait until its port refuses connections.
    async fn kill_balancer(&mut self, ip: IpAddr) {
        drop(self.balancers.remove(&ip));
        let addr = SocketAddr::new(ip, self.https_port);
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "{addr} still accepts");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn visitor_config(&self, max_requests_per_connection: u32) -> VisitorConfig {
        VisitorConfig {
            dns_server: self.dns.addr("dns-udp"),
            port: self.https_port,
            ca_file: self.dir.join("tls").join("ca.pem"),
            max_requests_per_connection,
            max_connection_age: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
            ..VisitorConfig::default()
        }
    }

    fn posts(&self) -> u64 {
        self.guestbook.created.load(Ordering::SeqCst)
    }
}

fn write_zone(dir: &Path, addresses: &[&str]) {
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

#[tokio::test]
async fn each_connection_resolves_anew_skips_a_refusing_address_and_trusts_only_the_ca() {
    let mut stack = Stack::start("resolve", &[DEAD, LB_A], &[LB_A]).await;
    let mut visitor = Visitor::new(Arc::new(stack.visitor_config(5))).unwrap();
    for _ in 0..20 {
        let answer = visitor.send(&Request::get("/api/posts?limit=5")).await;
        let response = answer.result.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-served-by"), Some("web-x"));
        assert_eq!(answer.address.unwrap().ip().to_string(), LB_A);
        assert!(!answer.retried);
    }
    // Five requests a connection: four connections, each after its own DNS answer, each
    // after the dead address refused.
    let stats = visitor.stats;
    assert_eq!((stats.lookups, stats.connections), (4, 4), "{stats:?}");
    assert_eq!(stats.skipped_addresses, 4, "{stats:?}");

    // The zone now names another balancer: the next connection goes there.
    stack.start_balancer(LB_B).await;
    write_zone(&stack.dir, &[DEAD, LB_B]);
    stack.dns.signal("HUP").await.unwrap();
    stack
        .dns
        .wait_for_log("zone loaded", Duration::from_secs(5))
        .await
        .unwrap();
    let mut last = None;
    for _ in 0..5 {
        last = visitor.send(&Request::get("/")).await.address;
    }
    assert_eq!(last.unwrap().ip().to_string(), LB_B);

    // The balancer's own certificate, without the CA that signed it, is not trusted.
    let chain = std::fs::read_to_string(stack.dir.join("tls").join("cert.pem")).unwrap();
    let end = "-----END CERTIFICATE-----";
    let leaf = &chain[..chain.find(end).unwrap() + end.len()];
    let leaf_file = stack.dir.join("leaf.pem");
    std::fs::write(&leaf_file, leaf).unwrap();
    let mut config = stack.visitor_config(5);
    config.ca_file = leaf_file;
    let mut stranger = Visitor::new(Arc::new(config)).unwrap();
    let error = stranger.send(&Request::get("/")).await.result.unwrap_err();
    assert!(error.contains("TLS"), "{error}");
}

#[tokio::test]
async fn a_get_goes_once_more_on_a_dead_connection_and_a_post_never() {
    let mut stack = Stack::start("retry", &[DEAD, LB_A, LB_B], &[LB_A, LB_B]).await;
    let mut visitor = Visitor::new(Arc::new(stack.visitor_config(1000))).unwrap();
    let first = visitor.send(&Request::get("/api/posts")).await;
    let serving = first.address.unwrap().ip();
    assert_eq!(first.result.unwrap().status, 200);

    // Its balancer crashes: the kept-alive connection is dead, the GET goes once more.
    stack.kill_balancer(serving).await;
    let answer = visitor.send(&Request::get("/api/posts")).await;
    assert_eq!(answer.result.unwrap().status, 200);
    assert!(answer.retried);
    let other = answer.address.unwrap().ip();
    assert_ne!(other, serving);
    assert_eq!(visitor.stats.retries, 1);

    // Same for a POST: it is not sent again, though a working balancer is there.
    stack.start_balancer(&serving.to_string()).await;
    let before = stack.posts();
    stack.kill_balancer(other).await;
    let post = json!({ "name": "foobar-demo", "message": "once" });
    let answer = visitor.send(&Request::post_json("/api/posts", &post)).await;
    let error = answer.result.unwrap_err();
    assert!(error.contains("died before answering"), "{error}");
    assert!(!answer.retried);
    assert_eq!(stack.posts(), before);
    assert_eq!(visitor.stats.retries, 1);
    // The next one, on a new connection, is stored.
    let answer = visitor.send(&Request::post_json("/api/posts", &post)).await;
    assert_eq!(answer.result.unwrap().status, 201);
    assert_eq!(answer.address.unwrap().ip(), serving);
    assert_eq!(stack.posts(), before + 1);
}

#[tokio::test]
async fn the_load_records_who_answered_and_the_check_finds_a_lost_write() {
    let stack = Stack::start("load", &[DEAD, LB_A, LB_B], &[LB_A, LB_B]).await;
    let config = Arc::new(stack.visitor_config(20));
    let mut checker = Visitor::new(Arc::clone(&config)).unwrap();
    // Posts from before the run are not the run's.
    let old = json!({ "name": "someone", "message": "hello" });
    checker
        .send(&Request::post_json("/api/posts", &old))
        .await
        .result
        .unwrap();
    let before_run = verify::newest_post_id(&mut checker).await.unwrap();
    assert_eq!(before_run, 1);
    // The third post will be acknowledged and then forgotten.
    *stack.guestbook.forget.lock().unwrap() = Some(4);

    let load_config = LoadConfig {
        readers: 2,
        writers: 2,
        read_rate: 40.0,
        write_rate: 60.0,
        run_id: "test".into(),
        ..LoadConfig::default()
    };
    let t0 = Instant::now();
    let load = Load::start(config, &load_config, t0).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let records = load.stop().await;

    let reads: Vec<_> = records.iter().filter(|r| r.kind == Kind::Read).collect();
    let writes: Vec<_> = records.iter().filter(|r| r.kind == Kind::Write).collect();
    // The rates bound the load: 3 s at 40 and 60 per second, give or take a tick.
    assert!((80..=124).contains(&reads.len()), "{} reads", reads.len());
    assert!(
        (120..=184).contains(&writes.len()),
        "{} writes",
        writes.len()
    );
    assert!(records.iter().all(|r| r.ok()), "{records:?}");
    assert!(
        reads
            .iter()
            .all(|r| r.web.as_deref() == Some("web-x")
                && r.database.as_deref() == Some("db-replica"))
    );
    assert!(writes.iter().all(|r| {
        r.database.as_deref() == Some("db-primary")
            && r.post_id.is_some()
            && r.marker
                .as_deref()
                .is_some_and(|m| m.starts_with("failover demo test writer "))
    }));

    // More than one page of posts: the check follows the `older` links.
    let result = verify::verify(&mut checker, &records, before_run)
        .await
        .unwrap();
    assert_eq!(result.acknowledged, writes.len());
    assert_eq!(result.unknown, 0);
    assert!(result.duplicated.is_empty());
    let forgotten = writes.iter().find(|r| r.post_id == Some(4)).unwrap();
    assert_eq!(result.lost, [forgotten.marker.clone().unwrap()]);
    assert!(!result.passed());
}
