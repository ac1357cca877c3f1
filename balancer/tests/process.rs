//! foobar-balancer as a user runs it: the binary started as a process in front of real HTTP
//! servers that the test starts, slows, fails and kills. Routing, failover and retries here;
//! the client-facing edge in `edge.rs`, operating it (status page, reload, drain) in
//! `operations.rs`.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use foobar_service::testing;

use support::*;

#[tokio::test]
async fn round_robin_splits_evenly_and_forwards_who_asked() {
    let (a, b, lb) = a_and_b_round_robin().await;
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
    let (a, b, lb) = a_and_b_round_robin().await;
    let addr = lb.addr("http");
    let done = Arc::new(AtomicUsize::new(0));
    let clients = load(4, addr, "/", Arc::clone(&done), |sent| sent < 250);
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
    let (a, b, lb) = a_and_b_round_robin().await;
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

    // Each framing both ways, and curl's own habit of Expect: 100-continue before a large
    // body: every upload comes back whole.
    for (header, path, how) in [
        (
            Some("Transfer-Encoding: chunked"),
            "/echo",
            "a chunked upload, answered chunked",
        ),
        (None, "/echo?length", "a sized upload, answered sized"),
        (
            Some("Expect: 100-continue"),
            "/echo?length",
            "an upload after 100 Continue",
        ),
    ] {
        let mut args = vec!["--data-binary".to_owned(), file.clone(), url(path)];
        if let Some(header) = header {
            args.extend(["-H".to_owned(), header.to_owned()]);
        }
        let echoed = curl(args).await;
        assert!(echoed == data, "{how}: {} bytes back", echoed.len());
    }
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

    // HTTP/1.0, and HTTP/2 with prior knowledge on the plain listener (h2c).
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

/// A backend whose /readyz fails is taken out by the active check: it gets no new request,
/// and the one it was serving is answered in full.
#[tokio::test]
async fn a_backend_failing_readyz_finishes_its_requests_and_gets_no_new_ones() {
    let (a, _b, lb) = a_and_b_round_robin().await;
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
    let (a, b, lb) = a_and_b_round_robin().await;
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
