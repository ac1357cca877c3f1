//! The balancer's edge as a client meets it, with the binary as a process: HTTPS and HTTP/2,
//! and the limits that refuse slow, oversized or too many requests.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use foobar_service::testing;

use support::*;

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

/// HTTP/2 (prior knowledge, on the plain listener) with hyper's client: cookies sent as
/// separate fields, as RFC 9113 allows, reach the HTTP/1.1 backend as one `Cookie` line
/// joined with "; "; a CONNECT (`:authority`, no `:path`) is refused with 405 and never
/// reaches the backend; the connection carries on after it.
#[tokio::test]
async fn http2_cookies_are_joined_and_connect_is_refused() {
    let a = Backend::start("a").await;
    let lb = round_robin(&[&a]).await;
    let mut sender = h2c(lb.addr("http")).await;
    let get = || {
        hyper::Request::get("http://www.foobar.com/")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };

    let response = sender.send_request(get()).await.unwrap();
    assert_eq!(response.status(), 200);
    let cookies: Vec<String> = a
        .last_headers
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, _)| name == "cookie")
        .map(|(_, value)| value.clone())
        .collect();
    assert_eq!(cookies, ["a=1; b=2"]);

    let connect = hyper::Request::connect("www.foobar.com:443")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(connect).await.unwrap();
    assert_eq!(response.status(), 405);

    let response = sender.send_request(get()).await.unwrap();
    assert_eq!(response.status(), 200, "the connection goes on");
    assert_eq!(a.hits("/"), 2, "the CONNECT never reached the backend");
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}
