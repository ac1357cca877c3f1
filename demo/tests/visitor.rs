//! The demo's client against the project's real servers, started as processes: foobar-dns
//! answering www.foobar.com with a dead address first, and foobar-balancer terminating HTTPS
//! with its generated CA in front of a small guestbook server shaped like the webapp's API.
//!
//! Needs the release binaries of foobar-dns and foobar-balancer beside this test's
//! (`cargo build --release -p foobar-dns -p foobar-balancer`). Everything listens on
//! 127.0.0.0/8 and is killed when the test ends.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{DEAD, LB_A, LB_B, Stack, write_zone};
use foobar_demo::http1::Request;
use foobar_demo::load::{Load, LoadConfig};
use foobar_demo::record::Kind;
use foobar_demo::verify;
use foobar_demo::visitor::Visitor;
use serde_json::json;

#[tokio::test]
async fn each_connection_resolves_anew_skips_a_refusing_address_and_trusts_only_the_ca() {
    let mut stack = Stack::start("resolve", &[DEAD, LB_A], "").await;
    stack.start_balancer(LB_A).await;
    let mut visitor = Visitor::new(Arc::new(stack.visitor_config(5))).unwrap();
    for _ in 0..20 {
        let answer = visitor.send(&Request::get("/api/posts?limit=5")).await;
        let response = answer.result.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-served-by"), Some("web-x"));
        assert_eq!(answer.address.unwrap().ip().to_string(), LB_A);
        assert!(!answer.retried);
    }
    // Five requests a connection: four connections, each after its own DNS answer; the dead
    // address refused the first, and is tried last since.
    let stats = visitor.stats;
    assert_eq!((stats.lookups, stats.connections), (4, 4), "{stats:?}");
    assert_eq!(stats.skipped_addresses, 1, "{stats:?}");

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

/// Kills the balancer at `ip` once the web server has `request` (a `slow=1` one, answered a
/// second after it arrives), so the balancer dies while the web server works on it.
async fn kill_during(
    stack: &mut Stack,
    visitor: &mut Visitor,
    request: &Request,
    ip: IpAddr,
) -> foobar_demo::visitor::Answer {
    let received = stack.guestbook.slow_requests.load(Ordering::SeqCst);
    let (answer, ()) = tokio::join!(visitor.send(request), async {
        let deadline = Instant::now() + Duration::from_secs(5);
        while stack.guestbook.slow_requests.load(Ordering::SeqCst) == received {
            assert!(
                Instant::now() < deadline,
                "the web server never got the request"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stack.kill_balancer(ip).await;
    });
    answer
}

#[tokio::test]
async fn a_crashed_balancer_costs_a_get_nothing_and_a_post_in_flight_its_answer() {
    let mut stack = Stack::start("retry", &[DEAD, LB_A, LB_B], "").await;
    stack.start_balancer(LB_A).await;
    stack.start_balancer(LB_B).await;
    let mut visitor = Visitor::new(Arc::new(stack.visitor_config(1000))).unwrap();
    let first = visitor.send(&Request::get("/api/posts")).await;
    assert_eq!(first.result.unwrap().status, 200);
    let a = first.address.unwrap().ip();
    let b: IpAddr = if a.to_string() == LB_A { LB_B } else { LB_A }
        .parse()
        .unwrap();

    // a crashes while the connection is idle: the POST sees it closed and opens another.
    stack.kill_balancer(a).await;
    let post = json!({ "name": "foobar-demo", "message": "idle" });
    let answer = visitor.send(&Request::post_json("/api/posts", &post)).await;
    assert_eq!(answer.result.unwrap().status, 201);
    assert_eq!(answer.address.unwrap().ip(), b);
    assert!(!answer.retried);
    assert_eq!(stack.posts(), 1);

    // b crashes with a GET in flight: the connection dies unanswered, the GET goes once more.
    stack.start_balancer(&a.to_string()).await;
    let slow_get = Request::get("/api/posts?slow=1");
    let answer = kill_during(&mut stack, &mut visitor, &slow_get, b).await;
    assert_eq!(answer.result.unwrap().status, 200);
    assert!(answer.retried);
    assert_eq!(answer.address.unwrap().ip(), a);
    assert_eq!(visitor.stats.retries, 1);
    assert_eq!(stack.guestbook.slow_requests.load(Ordering::SeqCst), 2);

    // a crashes with a POST in flight, after the web server stored it: the POST carries its
    // Idempotency-Key, so it goes again, to b, which gets the stored post: one post.
    stack.start_balancer(&b.to_string()).await;
    let slow_post = Request::post_json("/api/posts?slow=1", &post);
    let answer = kill_during(&mut stack, &mut visitor, &slow_post, a).await;
    assert_eq!(answer.result.unwrap().status, 201);
    assert!(answer.retried);
    assert_eq!(answer.address.unwrap().ip(), b);
    assert_eq!(visitor.stats.retries, 2);
    assert_eq!(stack.posts(), 2);

    // Sent again by hand, the same write (the same request, so the same key) stores nothing
    // new and gets the stored post; a new write has a key of its own.
    let again = visitor.send(&slow_post).await.result.unwrap();
    assert_eq!(again.status, 201);
    assert_eq!(stack.posts(), 2);
    let keys = stack.guestbook.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 4);
    assert!(keys.iter().all(Option::is_some), "{keys:?}");
    assert_ne!(keys[0], keys[1]);
    assert!(keys[1..].iter().all(|key| *key == keys[1]), "{keys:?}");

    // A POST without a key is never sent twice: a crashes with one in flight and it fails.
    stack.start_balancer(&a.to_string()).await;
    let mut unkeyed = Request::post_json("/api/posts?slow=1", &post);
    unkeyed.idempotency_key = None;
    let on_b = visitor.send(&Request::get("/api/posts")).await;
    assert_eq!(on_b.address.unwrap().ip(), b);
    let answer = kill_during(&mut stack, &mut visitor, &unkeyed, b).await;
    let error = answer.result.unwrap_err();
    assert!(error.contains("died before answering"), "{error}");
    assert!(!answer.retried);
    assert_eq!(stack.posts(), 3);
}

#[tokio::test]
async fn the_load_records_who_answered_and_the_check_finds_a_lost_write() {
    let mut stack = Stack::start("load", &[DEAD, LB_A, LB_B], "").await;
    stack.start_balancer(LB_A).await;
    stack.start_balancer(LB_B).await;
    let config = Arc::new(stack.visitor_config(20));
    let mut checker = Visitor::new(Arc::clone(&config)).unwrap();
    // Posts from before the run are not the run's.
    let old = json!({ "name": "someone", "message": "hello" });
    let answer = checker.send(&Request::post_json("/api/posts", &old)).await;
    assert_eq!(answer.result.unwrap().status, 201);
    let before_run = verify::newest_post_id(&mut checker).await.unwrap();
    assert_eq!(before_run, 1);
    // The third post of the run will be acknowledged and not stored.
    *stack.guestbook.forget.lock().unwrap() = Some(4);

    let load_config = LoadConfig {
        readers: 2,
        writers: 2,
        read_rate: 40.0,
        write_rate: 60.0,
        run_id: "test".into(),
        ..LoadConfig::default()
    };
    let started = Instant::now();
    let load = Load::start(config, &load_config, started).unwrap();
    // Until the run holds more than a page of writes (past the forgotten one) and some reads.
    let recorded = load.records();
    let count = |kind: Kind| {
        let records = recorded.lock().unwrap();
        records.iter().filter(|r| r.kind == kind).count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(Kind::Write) < 30 || count(Kind::Read) < 20 {
        assert!(Instant::now() < deadline, "the load stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let records = load.stop().await;
    let elapsed = started.elapsed().as_secs_f64();

    let reads: Vec<_> = records.iter().filter(|r| r.kind == Kind::Read).collect();
    let writes: Vec<_> = records.iter().filter(|r| r.kind == Kind::Write).collect();
    // The rates bound the load: never more than 40 reads and 60 writes a second since the
    // start, and one tick more per worker.
    let most = |rate: f64| (rate * elapsed).ceil() as usize + 2 * 2;
    assert!(
        reads.len() <= most(40.0),
        "{} reads in {elapsed} s",
        reads.len()
    );
    assert!(
        writes.len() <= most(60.0),
        "{} writes in {elapsed} s",
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
    // Every write carried a key of its own (the checker's one before the run included).
    let keys = stack.guestbook.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), writes.len() + 1);
    let distinct: std::collections::HashSet<_> = keys.iter().flatten().collect();
    assert_eq!(distinct.len(), keys.len(), "{keys:?}");
    let forgotten = writes.iter().find(|r| r.post_id == Some(4)).unwrap();
    assert_eq!(result.lost, [forgotten.marker.clone().unwrap()]);
    assert!(!result.passed());
}

/// Binds `ip`:`port` and never accepts: the kernel completes TCP handshakes into the backlog
/// and nothing more is ever said, as with a frozen balancer's new connections.
fn silent_listener(ip: &str, port: u16) -> std::net::TcpListener {
    std::net::TcpListener::bind((ip, port)).unwrap()
}

#[tokio::test]
async fn a_frozen_balancer_costs_a_request_one_attempt_and_a_post_is_stored_once() {
    const SILENT: &str = "127.0.0.5";
    let mut stack = Stack::start("frozen", &[SILENT, LB_A, LB_B], "").await;
    let _silent = silent_listener(SILENT, stack.https_port);
    stack.start_balancer(LB_A).await;
    stack.start_balancer(LB_B).await;
    let config = Arc::new(stack.visitor_config(1000));
    let (mut reader, mut writer) = (
        Visitor::new(Arc::clone(&config)).unwrap(),
        Visitor::new(Arc::clone(&config)).unwrap(),
    );

    // The silent address takes TCP and never a TLS handshake: skipped within the connect
    // timeout, for the next address in DNS's order.
    for visitor in [&mut reader, &mut writer] {
        let answer = visitor.send(&Request::get("/api/posts")).await;
        assert_eq!(answer.result.unwrap().status, 200);
        assert_eq!(answer.address.unwrap().ip().to_string(), LB_A);
        assert!(!answer.retried);
        assert_eq!(visitor.stats.skipped_addresses, 1, "{:?}", visitor.stats);
    }

    // LB_A freezes with both visitors' connections open. A GET gets no answer within the
    // attempt timeout and goes to LB_B; so does a POST, by its Idempotency-Key.
    stack.signal_balancer(LB_A, "STOP").await;
    let answer = reader.send(&Request::get("/api/posts")).await;
    assert_eq!(answer.result.unwrap().status, 200);
    assert!(answer.retried);
    assert_eq!(answer.address.unwrap().ip().to_string(), LB_B);
    let post = Request::post_json(
        "/api/posts",
        &json!({ "name": "foobar-demo", "message": "frozen" }),
    );
    let answer = writer.send(&post).await;
    assert_eq!(answer.result.unwrap().status, 201);
    assert!(answer.retried);
    assert_eq!(answer.address.unwrap().ip().to_string(), LB_B);
    assert_eq!(writer.stats.retries, 1);
    assert_eq!(stack.posts(), 1);

    // The next connections go to LB_B first: the failed addresses are tried last.
    for visitor in [&mut reader, &mut writer] {
        let skipped = visitor.stats.skipped_addresses;
        let answer = visitor.send(&Request::get("/api/posts")).await;
        assert_eq!(answer.address.unwrap().ip().to_string(), LB_B);
        assert_eq!(visitor.stats.skipped_addresses, skipped);
    }

    // LB_A resumes and passes on the POST it held: the web server gets it a second time,
    // with the same key, and stores nothing new.
    stack.signal_balancer(LB_A, "CONT").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while stack.guestbook.keys.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "LB_A never passed the held POST on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let keys = stack.guestbook.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert!(keys[0].is_some() && keys[0] == keys[1], "{keys:?}");
    assert_eq!(stack.posts(), 1);
}
