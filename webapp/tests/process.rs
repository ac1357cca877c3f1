//! The binary as a user runs it: check its config, start it without a database, stop it while
//! a request is in flight. (With a database: `tests/guestbook.rs`.)

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use foobar_service::testing::{self, RunningService};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BINARY: &str = env!("CARGO_BIN_EXE_foobar-webapp");

/// A port on 127.0.0.1 where nothing listens (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(database_port: u16) -> String {
    let static_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/static");
    format!(
        "[service]\nadmin_listen = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n\n\
         [http]\nlisten = \"127.0.0.1:0\"\nstatic_dir = \"{static_dir}\"\ninstance = \"web-test\"\n\n\
         [database]\nurl = \"mysql://foobar@127.0.0.1:{database_port}/foobar\"\n\
         acquire_timeout = \"1s\"\nquery_timeout = \"2s\"\nretry_interval = \"200ms\"\n"
    )
}

async fn start_without_database() -> RunningService {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webapp.toml");
    std::fs::write(&path, config(closed_port())).unwrap();
    RunningService::start(Path::new(BINARY), &path, &[], &["admin", "http"])
        .await
        .unwrap()
}

#[test]
fn check_config_accepts_good_and_names_the_bad_key() {
    testing::assert_check_config(Path::new(BINARY), &config(3306)).unwrap();
}

#[test]
fn check_config_names_a_bad_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webapp.toml");
    std::fs::write(&path, config(3306)).unwrap();
    let out = std::process::Command::new(BINARY)
        .args(["--check-config", "--config"])
        .arg(&path)
        .env("DATABASE_URL", "postgres://foobar@db/foobar")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("DATABASE_URL: must start with mysql://"),
        "{stderr}"
    );
}

/// Started before its database: it serves what needs no database, is not ready, says why in
/// its log, and answers the guestbook with a quick 503.
#[tokio::test]
async fn starts_without_a_database_serves_static_parts_and_is_not_ready() {
    let mut service = start_without_database().await;
    let http = service.addr("http");
    let line = service
        .wait_for_log("cannot apply the database schema", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(line.contains("retrying in 200ms"), "{line}");

    for addr in [http, service.addr("admin")] {
        let (status, _) = testing::http_get(addr, "/readyz").await.unwrap();
        assert_eq!(status, 503, "not ready without the schema ({addr})");
        let (status, _) = testing::http_get(addr, "/healthz").await.unwrap();
        assert_eq!(status, 200, "alive all the same ({addr})");
    }
    let (status, body) = testing::http_get(http, "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("The guestbook is resting"), "{body}");
    let (status, _) = testing::http_get(http, foobar_webapp::pages::STYLESHEET)
        .await
        .unwrap();
    assert_eq!(status, 200);

    let started = Instant::now();
    let (status, headers, body) = testing::http_request(http, "GET", "/api/posts", &[], "")
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        headers
            .iter()
            .any(|(name, value)| name == "content-type" && value == "application/json"),
        "{headers:?}"
    );
    assert!(body.contains("the database is unavailable"), "{body}");
    let (status, body) = testing::http_get(http, "/guestbook").await.unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("cannot be reached right now"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "503s come quickly"
    );

    let status = service.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "exit status {status}");
}

/// SIGTERM lets a request that has started finish: its answer arrives, then the process exits 0.
#[tokio::test]
async fn a_request_in_flight_at_sigterm_still_gets_its_answer() {
    let mut service = start_without_database().await;
    let http: SocketAddr = service.addr("http");
    let body = r#"{"name": "", "message": "sent slowly"}"#;
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    // A first request on the same kept-alive connection proves the server has accepted it.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1024];
    let n = stream.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));

    let head = format!(
        "POST /api/posts HTTP/1.1\r\nHost: web\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    // Nothing outside the process can see when the server has parsed this head (after which
    // the connection counts as busy, not idle); give it a moment, far longer than it needs.
    tokio::time::sleep(Duration::from_millis(300)).await;

    service.signal("TERM").await.unwrap();
    service
        .wait_for_log("shutting down", Duration::from_secs(5))
        .await
        .unwrap();
    stream.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 422"),
        "the in-flight request was answered: {response}"
    );
    assert!(response.contains("name is required"), "{response}");
    let status = service.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "exit status {status}");
}
