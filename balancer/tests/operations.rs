//! Operating the balancer, with the binary as a process: the status page and drain, config
//! checks, SIGHUP reloads, sites, backends given by name.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use foobar_service::testing;

use support::*;

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
    let (a, b, lb) = a_and_b_round_robin().await;
    let url = format!("http://{}/status", lb.addr("admin"));
    let profile = std::env::temp_dir().join(format!("foobar-chromium-{}", std::process::id()));
    let out = foobar_service::testing::chromium(&profile)
        .arg("--dump-dom")
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

/// Draining a backend under a steady load of concurrent requests: every request is answered
/// 200, and the drained backend gets none once the requests it had have finished.
#[tokio::test]
async fn draining_a_backend_under_load_loses_no_request() {
    let (a, b, lb) = a_and_b_round_robin().await;
    let (http, admin) = (lb.addr("http"), lb.addr("admin"));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let clients = load(6, http, "/slow?ms=20", Arc::clone(&done), {
        let stop = Arc::clone(&stop);
        move |_| !stop.load(Ordering::SeqCst)
    });
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
