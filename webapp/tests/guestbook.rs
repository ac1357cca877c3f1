//! The guestbook against a real MariaDB from the project's image, through two real
//! foobar-webapp processes (web-a and web-b), as the stack runs them.
//!
//! MariaDB's first start takes 30-60 s here, so one database serves every step, in an order
//! that matters: the migrations step needs the fresh database, and the database goes down and
//! comes back last. Each step is its own function, named for what it proves: among them the
//! idempotency keys (a repeated, concurrent or double-submitted write stores one post) and
//! the fallback URL (a dead first URL costs nothing, and is used again once it answers).

mod chromium;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use foobar_service::testing::{self, RunningService};
use serde_json::Value;
use sqlx::MySqlPool;

const BINARY: &str = env!("CARGO_BIN_EXE_foobar-webapp");
const PAGE_SIZE: usize = 5;

struct Web {
    name: &'static str,
    service: RunningService,
}

impl Web {
    fn http(&self) -> SocketAddr {
        self.service.addr("http")
    }

    async fn get(&self, path: &str) -> (u16, Vec<(String, String)>, String) {
        testing::http_request(self.http(), "GET", path, &[], "")
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, _, body) = self.get(path).await;
        let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        (status, json)
    }

    async fn post_json(&self, body: &Value) -> (u16, Vec<(String, String)>, Value) {
        self.post_json_with_key(None, body).await
    }

    /// POST /api/posts, with an `Idempotency-Key` header when `key` is given.
    async fn post_json_with_key(
        &self,
        key: Option<&str>,
        body: &Value,
    ) -> (u16, Vec<(String, String)>, Value) {
        let mut headers = vec![("Content-Type", "application/json")];
        headers.extend(key.map(|key| ("Idempotency-Key", key)));
        let (status, headers, body) = testing::http_request(
            self.http(),
            "POST",
            "/api/posts",
            &headers,
            &body.to_string(),
        )
        .await
        .unwrap();
        let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        (status, headers, json)
    }

    /// POST /guestbook with a form body; the status and Location.
    async fn post_form(&self, body: &str) -> (u16, Option<String>) {
        let (status, headers, _) = testing::http_request(
            self.http(),
            "POST",
            "/guestbook",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body,
        )
        .await
        .unwrap();
        let location = headers
            .into_iter()
            .find(|(name, _)| name == "location")
            .map(|(_, value)| value);
        (status, location)
    }

    /// The value of one line of /metrics (`name{labels}`), if it is there.
    async fn metric(&self, series: &str) -> Option<f64> {
        let (_, metrics) = testing::http_get(self.service.addr("admin"), "/metrics")
            .await
            .unwrap();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }

    /// Every log line so far.
    fn drain_logs(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.service.logs.try_recv() {
            lines.push(line);
        }
        lines
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_web(name: &'static str, config: &Path) -> Web {
    let service = RunningService::start(Path::new(BINARY), config, &[], &["admin", "http"])
        .await
        .unwrap();
    Web { name, service }
}

#[tokio::test]
async fn guestbook_against_mariadb() {
    let port = free_port();
    let db = foobar_stack_tests::primary_on_port(port)
        .await
        .expect("the database image foobar/mariadb:dev (make test builds it)");
    let pool = foobar_stack_tests::app_pool(&db).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("db_app_password");
    std::fs::write(&secret, format!("{}\n", foobar_stack_tests::APP_PASSWORD)).unwrap();
    let configs = ["web-a", "web-b"].map(|name| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config(name, port, &secret)).unwrap();
        path
    });

    let (mut a, b) =
        migrations_run_once_when_two_instances_start_together(&pool, &configs[0], &configs[1])
            .await;
    a_post_written_through_the_api_reads_back_on_both_servers(&a, &b).await;
    a_form_post_redirects_to_the_page_that_shows_it(&a).await;
    a_repeated_post_is_stored_once_and_answered_as_the_first(&a, &b, &pool).await;
    concurrent_posts_with_one_key_store_one_post(&a, &b, &pool).await;
    a_double_submitted_form_stores_one_post(&a, &b, &pool).await;
    posts_are_paginated_newest_first_without_gaps(&a, &b, &pool).await;
    what_visitors_wrote_is_escaped_on_the_page(&a).await;
    chromium_fills_in_the_form_and_finds_the_post(&b).await;
    for (name, first_url) in [("web-c", DeadUrl::Refuses), ("web-d", DeadUrl::Hangs)] {
        let config = dir.path().join(format!("{name}.toml"));
        a_dead_first_url_falls_back_at_full_speed_and_is_used_again_once_fixed(
            name, first_url, &config, &secret, port,
        )
        .await;
    }
    let config = dir.path().join("web-e.toml");
    a_frozen_router_costs_a_write_one_timeout_and_its_retry_stores_once(
        &config, &secret, port, &pool,
    )
    .await;
    the_database_goes_down_and_comes_back(&db, &mut a).await;

    for web in [a, b] {
        let status = web
            .service
            .terminate(Duration::from_secs(10))
            .await
            .unwrap();
        assert!(status.success(), "{} exit status {status}", web.name);
    }
}

fn config(name: &str, port: u16, secret: &Path) -> String {
    config_with_fallback(name, port, None, secret)
}

/// A web server's config: its database on `port`, then on `fallback` if given.
fn config_with_fallback(name: &str, port: u16, fallback: Option<u16>, secret: &Path) -> String {
    let static_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/static");
    let fallback_urls = fallback
        .map(|port| format!("fallback_urls = [\"mysql://foobar@127.0.0.1:{port}/foobar\"]\n"))
        .unwrap_or_default();
    format!(
        "[service]\nadmin_listen = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n\n\
         [http]\nlisten = \"127.0.0.1:0\"\nstatic_dir = \"{static_dir}\"\ninstance = \"{name}\"\n\n\
         [database]\nurl = \"mysql://foobar@127.0.0.1:{port}/foobar\"\n{fallback_urls}\
         password_file = \"{}\"\nacquire_timeout = \"1s\"\nquery_timeout = \"2s\"\n\
         retry_interval = \"250ms\"\n\n[guestbook]\npage_size = {PAGE_SIZE}\n",
        secret.display()
    )
}

/// web-a and web-b start at the same moment on an empty database: both become ready, each
/// migration is recorded once, the welcome post (inserted by a migration) exists once, and
/// neither server saw a migration fail (without sqlx's GET_LOCK, the second CREATE TABLE
/// would).
async fn migrations_run_once_when_two_instances_start_together(
    pool: &MySqlPool,
    config_a: &Path,
    config_b: &Path,
) -> (Web, Web) {
    let (mut a, mut b) = tokio::join!(start_web("web-a", config_a), start_web("web-b", config_b));
    let (ready_a, ready_b) = tokio::join!(
        testing::wait_ready(a.service.addr("admin"), Duration::from_secs(60)),
        testing::wait_ready(b.service.addr("admin"), Duration::from_secs(60)),
    );
    ready_a.unwrap();
    ready_b.unwrap();

    let (recorded, succeeded): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(success), 0) AS SIGNED) FROM _sqlx_migrations",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let embedded = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count() as i64;
    assert_eq!((recorded, succeeded), (embedded, embedded));
    let (welcome,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM posts WHERE name = 'foobar.com'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(welcome, 1, "the seeding migration ran exactly once");
    for web in [&mut a, &mut b] {
        let logs = web.drain_logs();
        assert!(
            logs.iter()
                .any(|l| l.contains("database schema is up to date")),
            "{}: {logs:#?}",
            web.name
        );
        assert!(
            !logs
                .iter()
                .any(|l| l.contains("cannot apply the database schema")),
            "{}: a migration failed: {logs:#?}",
            web.name
        );
    }
    (a, b)
}

/// POST /api/posts answers 201 with the stored post and its Location; both servers read it
/// back, and say which web server and which database node served them.
async fn a_post_written_through_the_api_reads_back_on_both_servers(a: &Web, b: &Web) {
    let (status, headers, created) = a
        .post_json(&serde_json::json!({ "name": "Ada", "message": "Hello from the API" }))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["post"]["id"].as_u64().unwrap();
    assert_eq!(header(&headers, "location"), format!("/api/posts/{id}"));
    assert_eq!(created["post"]["name"], "Ada");
    assert_eq!(created["served_by"]["web"], "web-a");
    assert_eq!(created["served_by"]["database"], "db-primary");
    let created_at = created["post"]["created_at"].as_str().unwrap();
    assert!(
        created_at.len() == 20 && created_at.ends_with('Z'),
        "{created_at}"
    );

    for web in [a, b] {
        let (status, read) = web.get_json(&format!("/api/posts/{id}")).await;
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["post"], created["post"]);
        assert_eq!(read["served_by"]["web"], web.name);
    }
    let (status, missing) = a.get_json("/api/posts/999999999").await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"], "there is no post 999999999");
}

/// The HTML form: 303 See Other to the guestbook page, which shows the new post (the user's
/// own write, on the page that follows it) and thanks its author.
async fn a_form_post_redirects_to_the_page_that_shows_it(a: &Web) {
    let (status, location) = a
        .post_form("name=Grace&message=Posted+from+a+form+%26+read+back")
        .await;
    assert_eq!(status, 303);
    let location = location.expect("a Location");
    let id: u64 = location
        .strip_prefix("/guestbook?posted=")
        .and_then(|rest| rest.split('#').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("unexpected Location {location}"));
    assert!(location.ends_with(&format!("#post-{id}")), "{location}");

    let path = location.split('#').next().unwrap();
    let (status, headers, page) = a.get(path).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-served-by"), "web-a");
    assert!(
        page.contains(&format!("Thank you: your post #{id} is saved.")),
        "{page}"
    );
    assert!(page.contains(&format!(r#"id="post-{id}""#)), "{page}");
    assert!(
        page.contains("Posted from a form &#38; read back"),
        "{page}"
    );
    assert!(
        page.contains(r#"<strong id="web-node">web-a</strong>"#),
        "{page}"
    );
    assert!(
        page.contains(r#"<strong id="db-node">db-primary</strong>"#),
        "{page}"
    );
}

/// How many posts hold `key`.
async fn posts_with_key(pool: &MySqlPool, key: &str) -> i64 {
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM posts WHERE idempotency_key = ?")
        .bind(key)
        .fetch_one(pool)
        .await
        .unwrap();
    count
}

/// The same POST with the same `Idempotency-Key`, again on the same server and then on the
/// other one (as a balancer retries it): one post, and every answer is the first one's (status,
/// Location, post), marked as a replay. The key in the draft's quoted form is the same key;
/// with another post it is 422; a malformed key is 400.
async fn a_repeated_post_is_stored_once_and_answered_as_the_first(
    a: &Web,
    b: &Web,
    pool: &MySqlPool,
) {
    let key = "retry-me-0001";
    let body = serde_json::json!({ "name": "Ada", "message": "sent once, stored once" });
    let (status, headers, first) = a.post_json_with_key(Some(key), &body).await;
    assert_eq!(status, 201, "{first}");
    assert!(!headers.iter().any(|(n, _)| n == "idempotent-replayed"));
    let location = header(&headers, "location").to_owned();
    for (web, sent_key) in [
        (a, key.to_owned()),
        (b, format!("\"{key}\"")),
        (a, key.to_owned()),
    ] {
        let (status, headers, again) = web.post_json_with_key(Some(&sent_key), &body).await;
        assert_eq!(status, 201, "{again}");
        assert_eq!(header(&headers, "location"), location);
        assert_eq!(header(&headers, "idempotent-replayed"), "true");
        assert_eq!(again["post"], first["post"]);
        assert_eq!(again["served_by"]["web"], web.name);
        assert_eq!(again["served_by"]["database"], "db-primary");
    }
    assert_eq!(posts_with_key(pool, key).await, 1);

    let other = serde_json::json!({ "name": "Ada", "message": "another post" });
    let (status, _, reused) = b.post_json_with_key(Some(key), &other).await;
    assert_eq!(status, 422, "{reused}");
    let error = reused["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "this Idempotency-Key was already used for post {}",
            first["post"]["id"]
        )),
        "{error}"
    );
    let (status, _, bad) = a.post_json_with_key(Some("not valid"), &body).await;
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .starts_with("Idempotency-Key must be 1 to 64 visible ASCII characters"),
        "{bad}"
    );
    assert_eq!(posts_with_key(pool, key).await, 1);
}

/// Sixteen copies of one POST at once, over both servers: one post, and all sixteen answers
/// name it (the unique key makes the second insert wait for the first, then find its post).
async fn concurrent_posts_with_one_key_store_one_post(a: &Web, b: &Web, pool: &MySqlPool) {
    let key = "concurrent-0001";
    let body = serde_json::json!({ "name": "Grace", "message": "sixteen at once" });
    let answers = futures_util::future::join_all(
        (0..16).map(|i| [a, b][i % 2].post_json_with_key(Some(key), &body)),
    )
    .await;
    let ids: Vec<u64> = answers
        .iter()
        .map(|(status, _, json)| {
            assert_eq!(*status, 201, "{json}");
            json["post"]["id"].as_u64().unwrap()
        })
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let replays = answers
        .iter()
        .filter(|(_, headers, _)| headers.iter().any(|(n, _)| n == "idempotent-replayed"))
        .count();
    assert_eq!(replays, 15);
    assert_eq!(posts_with_key(pool, key).await, 1);
}

/// The form a page rendered, sent twice (a double click, or a retry after an error, even to
/// the other server): one post, and both answers redirect to it.
async fn a_double_submitted_form_stores_one_post(a: &Web, b: &Web, pool: &MySqlPool) {
    let (_, _, page) = a.get("/guestbook").await;
    let marker = r#"<input type="hidden" name="idempotency_key" value=""#;
    let start = page.find(marker).expect("the form's key field") + marker.len();
    let key = page[start..].split('"').next().unwrap().to_owned();
    let form = format!("name=Linus&message=Pressed+twice&idempotency_key={key}");
    let first = a.post_form(&form).await;
    let second = b.post_form(&form).await;
    assert_eq!(first.0, 303);
    assert!(
        first
            .1
            .as_deref()
            .unwrap()
            .starts_with("/guestbook?posted=")
    );
    assert_eq!(second, first);
    assert_eq!(posts_with_key(pool, &key).await, 1);
}

/// Following `older` links from the newest page visits every post once, newest first, on
/// either server; the HTML pages link the same way.
async fn posts_are_paginated_newest_first_without_gaps(a: &Web, b: &Web, pool: &MySqlPool) {
    for i in 0..12 {
        let (status, _, body) = b
            .post_json(
                &serde_json::json!({ "name": format!("Bulk {i}"), "message": "page filler" }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM posts")
        .fetch_one(pool)
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut next = Some(format!("/api/posts?limit={PAGE_SIZE}"));
    let mut pages = 0;
    while let Some(path) = next {
        let web = if pages % 2 == 0 { a } else { b };
        let (status, page) = web.get_json(&path).await;
        assert_eq!(status, 200, "{path}: {page}");
        let posts = page["posts"].as_array().unwrap();
        assert!(posts.len() <= PAGE_SIZE && !posts.is_empty(), "{page}");
        seen.extend(posts.iter().map(|p| p["id"].as_u64().unwrap()));
        next = page["older"].as_str().map(str::to_owned);
        pages += 1;
    }
    assert_eq!(seen.len() as i64, total, "every post once: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seen:?}"
    );
    assert_eq!(pages, (total as usize).div_ceil(PAGE_SIZE));

    // The HTML guestbook: the first page's "Older posts" leads to the next five.
    let (_, _, first) = a.get("/guestbook").await;
    let older = format!(
        r#"<a href="/guestbook?before={}" rel="next">"#,
        seen[PAGE_SIZE - 1]
    );
    assert!(first.contains(&older), "{first}");
    let (status, _, second) = a
        .get(&format!("/guestbook?before={}", seen[PAGE_SIZE - 1]))
        .await;
    assert_eq!(status, 200);
    for id in &seen[PAGE_SIZE..2 * PAGE_SIZE] {
        assert!(second.contains(&format!(r#"id="post-{id}""#)), "{second}");
    }
    assert!(!second.contains(&format!(r#"id="post-{}""#, seen[0])));
}

/// A post made of markup is shown as text.
async fn what_visitors_wrote_is_escaped_on_the_page(a: &Web) {
    let (status, _, _) = a
        .post_json(&serde_json::json!({
            "name": "<b>Mallory</b>",
            "message": "<script>alert('x')</script>"
        }))
        .await;
    assert_eq!(status, 201);
    let (_, _, page) = a.get("/guestbook").await;
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains("<b>Mallory"), "{page}");
    assert!(page.contains("&#60;b&#62;Mallory&#60;/b&#62;"), "{page}");
}

/// A person's view: Chromium types a post into the form, presses Post, and the page that
/// follows shows it.
async fn chromium_fills_in_the_form_and_finds_the_post(b: &Web) {
    let mut browser = chromium::Browser::start().await.unwrap();
    let base = format!("http://{}", b.http());
    browser.goto(&format!("{base}/guestbook")).await.unwrap();
    let message = format!("Typed by Chromium at {:?}", Instant::now());
    browser.type_into("name", "Chromium").await.unwrap();
    browser.type_into("message", &message).await.unwrap();
    browser
        .eval("document.querySelector('.post-form button[type=submit]').click()")
        .await
        .unwrap();
    browser
        .wait_for_page(|href| href.contains("/guestbook?posted="))
        .await
        .unwrap();
    let text = browser
        .eval("document.body.innerText")
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains(&message), "{text}");
    assert!(text.contains("Thank you: your post #"), "{text}");
    assert!(text.contains("Served by web server web-b"), "{text}");
}

/// How a dead first database URL fails.
#[derive(Debug, Clone, Copy)]
enum DeadUrl {
    /// A closed port: connections are refused (a router process that died).
    Refuses,
    /// A listener that never accepts: connections hang, no handshake comes (as when a killed
    /// router's address vanishes), until `connect_timeout`.
    Hangs,
}

/// A web server whose first database URL is dead and whose fallback is the database becomes
/// ready, and serves every request through the fallback as fast as through a working first
/// URL (the dead one is skipped, not tried each time). Then something answers on the first URL
/// (a TCP relay to the database): the background check finds it, and requests use it again.
async fn a_dead_first_url_falls_back_at_full_speed_and_is_used_again_once_fixed(
    name: &'static str,
    dead: DeadUrl,
    config: &Path,
    secret: &Path,
    database_port: u16,
) {
    let first_port = free_port();
    let silent = match dead {
        DeadUrl::Refuses => None,
        DeadUrl::Hangs => Some(std::net::TcpListener::bind(("127.0.0.1", first_port)).unwrap()),
    };
    std::fs::write(
        config,
        config_with_fallback(name, first_port, Some(database_port), secret),
    )
    .unwrap();
    let c = start_web(name, config).await;
    testing::wait_ready(c.service.addr("admin"), Duration::from_secs(30))
        .await
        .unwrap();
    let first = format!("{{url=\"127.0.0.1:{first_port}\"}}");
    let fallback = format!("{{url=\"127.0.0.1:{database_port}\"}}");
    let requests = "foobar_webapp_db_requests_total";
    let in_use = "foobar_webapp_db_url_in_use";
    let served_before = c.metric(&format!("{requests}{fallback}")).await.unwrap();

    for i in 0..10 {
        let started = Instant::now();
        let (status, _, read) = c.get("/api/posts?limit=1").await;
        assert_eq!(status, 200, "{read}");
        let body = serde_json::json!({ "name": name, "message": format!("fallback {i}") });
        let (status, _, created) = c.post_json(&body).await;
        assert_eq!(status, 201, "{created}");
        // A try through the dead URL would cost connect_timeout (500 ms): none is made.
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{name} ({dead:?}): a read and a write took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(c.metric(&format!("{in_use}{first}")).await, Some(0.0));
    assert_eq!(c.metric(&format!("{requests}{first}")).await, Some(0.0));
    let served = c.metric(&format!("{requests}{fallback}")).await.unwrap();
    assert!(served >= served_before + 20.0, "{served} {served_before}");

    drop(silent);
    let relay = relay(first_port, database_port).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.metric(&format!("{in_use}{first}")).await != Some(1.0) {
        assert!(Instant::now() < deadline, "the first URL is not used again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..5 {
        let (status, _, _) = c.get("/api/posts?limit=1").await;
        assert_eq!(status, 200);
    }
    assert_eq!(c.metric(&format!("{requests}{first}")).await, Some(5.0));
    assert_eq!(
        c.metric(&format!("{requests}{fallback}")).await,
        Some(served)
    );
    let status = c.service.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "{name} exit status {status}");
    relay.abort();
}

/// Relays every connection to 127.0.0.1:`from` on to 127.0.0.1:`to`, until aborted.
async fn relay(from: u16, to: u16) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", from))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

/// The primary stops: pages that need it answer 503 quickly (HTML and JSON), the home page and
/// static files keep serving, /readyz fails. It starts again: the same processes recover by
/// themselves, reads and writes work.
async fn the_database_goes_down_and_comes_back(
    db: &testcontainers::ContainerAsync<testcontainers::GenericImage>,
    a: &mut Web,
) {
    db.stop().await.unwrap();

    let started = Instant::now();
    let (status, headers, page) = a.get("/guestbook").await;
    assert_eq!(status, 503, "{page}");
    assert_eq!(header(&headers, "retry-after"), "5");
    assert!(page.contains("cannot be reached right now"), "{page}");
    let (status, json) = a.get_json("/api/posts").await;
    assert_eq!(status, 503);
    assert_eq!(
        json["error"],
        "the database is unavailable; try again shortly"
    );
    let (status, _, created) = a
        .post_json(&serde_json::json!({ "name": "Ada", "message": "while down" }))
        .await;
    assert_eq!(status, 503, "{created}");
    // Each answer within acquire_timeout + query_timeout (3 s), not hanging.
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    let (status, _, home) = a.get("/").await;
    assert_eq!(status, 200);
    assert!(home.contains("The guestbook is resting"), "{home}");
    let (status, _, _) = a.get(foobar_webapp::pages::STYLESHEET).await;
    assert_eq!(status, 200);
    wait_for_readyz(a.service.addr("admin"), 503, Duration::from_secs(10)).await;
    let logs = a.drain_logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("not ready: the database does not answer")),
        "{logs:#?}"
    );

    db.start().await.unwrap();
    wait_for_readyz(a.service.addr("admin"), 200, Duration::from_secs(90)).await;
    let (status, _, page) = a.get("/guestbook").await;
    assert_eq!(status, 200, "{page}");
    let (status, _, created) = a
        .post_json(&serde_json::json!({ "name": "Ada", "message": "after the restart" }))
        .await;
    assert_eq!(status, 201, "{created}");
    let logs = a.drain_logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("the database answers again")),
        "{logs:#?}"
    );
}

/// Polls `/readyz` until it answers `wanted`.
async fn wait_for_readyz(admin: SocketAddr, wanted: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let status = testing::http_get(admin, "/readyz")
            .await
            .map(|(s, _)| s)
            .ok();
        if status == Some(wanted) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status:?}, not {wanted}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Not a test: the relay process of
/// [`a_frozen_router_costs_a_write_one_timeout_and_its_retry_stores_once`], this test binary
/// started again with `FOOBAR_TEST_RELAY=FROM:TO`, so that it can be frozen with SIGSTOP as a
/// router process would be. Without the variable it returns at once.
#[tokio::test]
#[ignore = "started as a process by a test"]
async fn relay_process() {
    let Ok(ports) = std::env::var("FOOBAR_TEST_RELAY") else {
        return;
    };
    let (from, to) = ports.split_once(':').unwrap();
    let _ = relay(from.parse().unwrap(), to.parse().unwrap())
        .await
        .await;
}

/// A router-like relay process from 127.0.0.1:`from` to 127.0.0.1:`to`, accepting once this
/// returns; killed when dropped.
async fn relay_process_on(from: u16, to: u16) -> tokio::process::Child {
    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["relay_process", "--exact", "--ignored", "--nocapture"])
        .env("FOOBAR_TEST_RELAY", format!("{from}:{to}"))
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", from))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the relay process does not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

fn signal(child: &tokio::process::Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A web server's first database URL is a relay process (a router), its fallback the
/// database. A keyed POST's INSERT waits on a row lock the test holds; the relay is frozen
/// (SIGSTOP) and the lock released, so the INSERT commits but its answer stays in the frozen
/// relay. The write gets no answer within query_timeout, runs again through the fallback, finds
/// its own post by the key and is answered with it: one post, 201, marked as a replay. Reads
/// go on through the fallback; the relay's URL is skipped (a timeout, counted) until it
/// resumes, then used again, and the key still names one post.
async fn a_frozen_router_costs_a_write_one_timeout_and_its_retry_stores_once(
    config: &Path,
    secret: &Path,
    database_port: u16,
    pool: &MySqlPool,
) {
    let relay_port = free_port();
    let router = relay_process_on(relay_port, database_port).await;
    let text = config_with_fallback("web-e", relay_port, Some(database_port), secret);
    std::fs::write(config, text).unwrap();
    let e = start_web("web-e", config).await;
    testing::wait_ready(e.service.addr("admin"), Duration::from_secs(30))
        .await
        .unwrap();
    let through = |url: u16, outcome: &str| {
        format!("foobar_webapp_db_attempts_total{{url=\"127.0.0.1:{url}\",outcome=\"{outcome}\"}}")
    };
    let (status, _) = e.get_json("/api/posts?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(e.metric(&through(relay_port, "answered")).await, Some(1.0));

    let key = "frozen-router-0001";
    let mut holder = pool.acquire().await.unwrap();
    sqlx::query("BEGIN").execute(&mut *holder).await.unwrap();
    sqlx::query("INSERT INTO posts (name, message, idempotency_key) VALUES ('held', 'held', ?)")
        .bind(key)
        .execute(&mut *holder)
        .await
        .unwrap();
    let body = serde_json::json!({ "name": "Ada", "message": "through a frozen router" });
    let post = e.post_json_with_key(Some(key), &body);
    let freeze = async {
        // The web server's INSERT is waiting for the lock: freeze the relay, then let it run.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (waiting,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE INFO LIKE 'INSERT INTO posts%'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the INSERT never came");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        signal(&router, "STOP");
        sqlx::query("ROLLBACK").execute(&mut *holder).await.unwrap();
    };
    let ((status, headers, created), ()) = tokio::join!(post, freeze);
    assert_eq!(status, 201, "{created}");
    assert_eq!(header(&headers, "idempotent-replayed"), "true");
    assert_eq!(created["post"]["message"], "through a frozen router");
    assert_eq!(posts_with_key(pool, key).await, 1);
    assert_eq!(e.metric(&through(relay_port, "timeout")).await, Some(1.0));
    assert_eq!(
        e.metric(&format!(
            "foobar_webapp_db_url_in_use{{url=\"127.0.0.1:{relay_port}\"}}"
        ))
        .await,
        Some(0.0)
    );
    let (status, _) = e.get_json("/api/posts?limit=1").await;
    assert_eq!(status, 200);

    signal(&router, "CONT");
    let in_use = format!("foobar_webapp_db_url_in_use{{url=\"127.0.0.1:{relay_port}\"}}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while e.metric(&in_use).await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the relay's URL is not used again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, headers, again) = e.post_json_with_key(Some(key), &body).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(header(&headers, "idempotent-replayed"), "true");
    assert_eq!(again["post"]["id"], created["post"]["id"]);
    assert_eq!(posts_with_key(pool, key).await, 1);
    let status = e.service.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "web-e exit status {status}");
}
