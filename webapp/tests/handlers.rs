//! The router in process (`app()` and `oneshot`, no socket): every static-file behaviour, every
//! validation error, and what pages and the API answer while the database is not there.
//!
//! The database URL points at a port where nothing listens, so nothing here waits for one;
//! the guestbook against a real MariaDB is `tests/guestbook.rs`.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use foobar_service::Context;
use foobar_webapp::config::{DatabaseConfig, HttpConfig};
use foobar_webapp::{Config, Parts, app};
use http_body_util::BodyExt;
use tower::ServiceExt;

const INSTANCE: &str = "web-test";

fn static_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("static")
}

fn router_with_cache(cache_max_file_size: u64) -> (Router, Context) {
    let config = Config {
        http: HttpConfig {
            static_dir: static_dir(),
            instance: INSTANCE.into(),
            cache_max_file_size,
            ..HttpConfig::default()
        },
        database: DatabaseConfig {
            url: "mysql://foobar@127.0.0.1:1/foobar".into(),
            ..DatabaseConfig::default()
        },
        ..Config::default()
    };
    let ctx = Context::new("foobar_webapp");
    let parts = Parts::new(&config, &ctx).unwrap();
    (app(&config, &ctx, &parts), ctx)
}

fn router() -> Router {
    router_with_cache(HttpConfig::default().cache_max_file_size).0
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn get(router: &Router, uri: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(router, request.body(Body::empty()).unwrap()).await
}

async fn post(router: &Router, uri: &str, content_type: Option<&str>, body: &str) -> Answer {
    let mut request = Request::post(uri);
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    send(router, request.body(Body::from(body.to_owned())).unwrap()).await
}

/// POST /guestbook with a form body.
async fn post_form(router: &Router, body: &str) -> Answer {
    post(
        router,
        "/guestbook",
        Some("application/x-www-form-urlencoded"),
        body,
    )
    .await
}

fn stylesheet_file() -> PathBuf {
    static_dir().join(foobar_webapp::pages::STYLESHEET.trim_start_matches('/'))
}

// ---- static files ----

#[tokio::test]
async fn content_types_follow_the_extension() {
    let router = router();
    let css = get(&router, foobar_webapp::pages::STYLESHEET, &[]).await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.header("content-type"), "text/css");
    assert_eq!(css.body, std::fs::read(stylesheet_file()).unwrap());
    let robots = get(&router, "/robots.txt", &[]).await;
    assert_eq!(robots.status, StatusCode::OK);
    assert_eq!(robots.header("content-type"), "text/plain");
}

#[tokio::test]
async fn etag_and_last_modified_answer_conditional_gets_with_304() {
    // From memory and from disk alike.
    for cache in [HttpConfig::default().cache_max_file_size, 0] {
        let (router, _) = router_with_cache(cache);
        let first = get(&router, "/robots.txt", &[]).await;
        let etag = first.header("etag").to_owned();
        let last_modified = first.header("last-modified").to_owned();

        let again = get(&router, "/robots.txt", &[("if-none-match", &etag)]).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "cache {cache}");
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), etag);

        let since = get(
            &router,
            "/robots.txt",
            &[("if-modified-since", &last_modified)],
        )
        .await;
        assert_eq!(since.status, StatusCode::NOT_MODIFIED, "cache {cache}");

        let changed = get(&router, "/robots.txt", &[("if-none-match", "\"other\"")]).await;
        assert_eq!(
            changed.status,
            StatusCode::OK,
            "a different ETag gets the file"
        );
        assert_eq!(changed.body, first.body);
    }
}

#[tokio::test]
async fn range_requests_get_part_of_the_file() {
    let file = std::fs::read(stylesheet_file()).unwrap();
    for cache in [HttpConfig::default().cache_max_file_size, 0] {
        let (router, _) = router_with_cache(cache);
        let part = get(
            &router,
            foobar_webapp::pages::STYLESHEET,
            &[("range", "bytes=10-29")],
        )
        .await;
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT, "cache {cache}");
        assert_eq!(
            part.header("content-range"),
            format!("bytes 10-29/{}", file.len())
        );
        assert_eq!(part.body, file[10..30]);

        let beyond = get(
            &router,
            foobar_webapp::pages::STYLESHEET,
            &[("range", "bytes=100000-")],
        )
        .await;
        assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    }
}

#[tokio::test]
async fn precompressed_variants_are_chosen_by_accept_encoding() {
    let router = router();
    let path = stylesheet_file();
    let variant = |ext: &str| std::fs::read(format!("{}.{ext}", path.display())).unwrap();

    let br = get(
        &router,
        foobar_webapp::pages::STYLESHEET,
        &[("accept-encoding", "gzip;q=0.5, br")],
    )
    .await;
    assert_eq!(br.header("content-encoding"), "br");
    assert_eq!(br.header("content-type"), "text/css");
    assert_eq!(br.header("vary"), "accept-encoding");
    assert_eq!(br.body, variant("br"));

    let gzip = get(
        &router,
        foobar_webapp::pages::STYLESHEET,
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(gzip.header("content-encoding"), "gzip");
    assert_eq!(gzip.body, variant("gz"));

    let plain = get(&router, foobar_webapp::pages::STYLESHEET, &[]).await;
    assert!(plain.headers.get("content-encoding").is_none());
    assert_eq!(plain.body, std::fs::read(&path).unwrap());
}

#[tokio::test]
async fn fingerprinted_files_are_cached_for_a_year_and_the_rest_briefly() {
    let router = router();
    let css = get(&router, foobar_webapp::pages::STYLESHEET, &[]).await;
    assert_eq!(
        css.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    let robots = get(&router, "/robots.txt", &[]).await;
    assert_eq!(robots.header("cache-control"), "public, max-age=60");
    let home = get(&router, "/", &[]).await;
    assert_eq!(home.header("cache-control"), "no-cache");
}

#[tokio::test]
async fn no_path_leads_out_of_the_static_folder() {
    let router = router();
    // webapp/Cargo.toml sits one level above the static folder.
    for uri in [
        "/../Cargo.toml",
        "/assets/../../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/assets/%2e%2e/%2e%2e/Cargo.toml",
        "/..%2fCargo.toml",
        "/..%5cCargo.toml",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
    ] {
        let answer = get(&router, uri, &[]).await;
        assert!(
            answer.status == StatusCode::NOT_FOUND || answer.status == StatusCode::BAD_REQUEST,
            "{uri}: {}",
            answer.status
        );
        let body = answer.text();
        assert!(
            !body.contains("[package]") && !body.contains("root:"),
            "{uri} leaked a file"
        );
    }
}

#[tokio::test]
async fn unknown_paths_get_the_sites_404_page() {
    let router = router();
    let answer = get(&router, "/no/such/page.html", &[]).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.header("content-type").starts_with("text/html"));
    let body = answer.text();
    assert!(body.contains("<h1>Page not found</h1>"), "{body}");
    assert!(
        body.contains(foobar_webapp::pages::STYLESHEET),
        "styled like the site"
    );
    assert!(body.contains(INSTANCE), "names the web server");

    let api = get(&router, "/api/nothing-here", &[]).await;
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert_eq!(api.json()["error"], "no such API endpoint");
}

#[tokio::test]
async fn every_response_says_which_server_answered() {
    let router = router();
    for uri in [
        "/",
        "/guestbook",
        "/api/posts",
        "/robots.txt",
        "/missing",
        "/healthz",
        "/readyz",
    ] {
        let answer = get(&router, uri, &[]).await;
        assert_eq!(answer.header("x-served-by"), INSTANCE, "{uri}");
    }
}

/// Files in memory are answered from headers prepared at start (statics.rs): those answers
/// must be ServeDir's own, header for header and byte for byte. With the cache off ServeDir
/// answers every request itself, from disk: the reference.
#[tokio::test]
async fn prepared_answers_are_the_same_as_servedirs() {
    let prepared = router();
    let (servedir, _) = router_with_cache(0);
    let css = foobar_webapp::pages::STYLESHEET;
    let etag = get(&servedir, css, &[]).await.header("etag").to_owned();
    let br = [("accept-encoding", "br")];
    let br_etag = get(&servedir, css, &br).await.header("etag").to_owned();
    let weak = format!("W/{etag}");
    let list = format!("\"other\" , {br_etag}");
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("accept-encoding", "gzip")],
        vec![("accept-encoding", "br")],
        vec![("accept-encoding", "gzip, br")],
        vec![("accept-encoding", "gzip, br;q=0.5")],
        vec![("accept-encoding", "gzip;q=0.5, br;q=0.50")],
        vec![("accept-encoding", "br;q=0, gzip;q=0")],
        vec![("accept-encoding", "identity, gzip;q=0.9")],
        vec![("accept-encoding", "identity;q=0")],
        vec![("accept-encoding", "X-GZIP")],
        vec![("accept-encoding", "br;q=1.5, gzip;q=0.25")],
        vec![("accept-encoding", "br;q=0.0005, gzip;q=1.")],
        vec![("accept-encoding", "deflate, zstd, *")],
        vec![
            ("accept-encoding", "gzip;q=0.2"),
            ("accept-encoding", "br;q=0.3"),
        ],
        vec![("if-none-match", &etag)],
        vec![("if-none-match", &weak)],
        vec![("if-none-match", "*")],
        vec![("if-none-match", "\"other\"")],
        vec![("if-none-match", "")],
        vec![("if-none-match", &list), ("accept-encoding", "br")],
        vec![("if-none-match", &etag), ("accept-encoding", "br")],
        vec![
            ("if-none-match", "\"other\""),
            ("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT"),
        ],
        vec![("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT")],
        vec![("range", "bytes=10-29"), ("accept-encoding", "gzip")],
        vec![("if-match", "\"other\"")],
    ];
    let gz = format!("{css}.gz");
    for uri in [
        css,
        &gz,
        "/robots.txt",
        "/robots.txt?v=2",
        "/assets/",
        "/./robots.txt",
    ] {
        for method in ["GET", "HEAD"] {
            for headers in &cases {
                let request = || {
                    let mut request = Request::builder().method(method).uri(uri);
                    for (name, value) in headers {
                        request = request.header(*name, *value);
                    }
                    request.body(Body::empty()).unwrap()
                };
                let expected = send(&servedir, request()).await;
                let answer = send(&prepared, request()).await;
                let what = format!("{method} {uri} {headers:?}");
                assert_eq!(answer.status, expected.status, "{what}");
                assert_eq!(answer.headers, expected.headers, "{what}");
                assert_eq!(answer.body, expected.body, "{what}");
            }
        }
    }
}

/// The stylesheet's name carries its hash, and its precompressed variants hold the same
/// bytes: what makes the year-long cache and Accept-Encoding safe. After editing the CSS, run
/// `bash webapp/fingerprint.sh FILE`.
#[test]
fn stylesheet_name_matches_its_content() {
    let path = stylesheet_file();
    let sha256 = std::process::Command::new("sha256sum")
        .arg(&path)
        .output()
        .unwrap();
    let hash = String::from_utf8(sha256.stdout).unwrap()[..8].to_owned();
    assert!(
        foobar_webapp::pages::STYLESHEET.ends_with(&format!(".{hash}.css")),
        "{} has content hash {hash}: run `bash webapp/fingerprint.sh {}`",
        foobar_webapp::pages::STYLESHEET,
        path.display()
    );
    let original = std::fs::read(&path).unwrap();
    for (tool, ext) in [("gzip", "gz"), ("brotli", "br")] {
        let out = std::process::Command::new(tool)
            .arg("-dc")
            .arg(format!("{}.{ext}", path.display()))
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e} (scripts/install-tools.sh installs it)"));
        assert!(out.status.success(), "{tool} -dc failed");
        assert_eq!(out.stdout, original, ".{ext} variant is stale");
    }
}

// ---- validation ----

#[tokio::test]
async fn a_bad_form_post_is_shown_again_with_each_problem() {
    let router = router();
    let answer = post_form(&router, "name=&message=%3Cscript%3Ealert(1)%3C%2Fscript%3E").await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body = answer.text();
    assert!(
        body.contains(r#"<li data-field="name">name is required</li>"#),
        "{body}"
    );
    assert!(
        body.contains(">&#60;script&#62;alert(1)&#60;/script&#62;</textarea>"),
        "the message is kept, escaped: {body}"
    );
    assert!(
        !body.contains("<script>"),
        "nothing a visitor wrote is markup"
    );

    let long_name = "n".repeat(41);
    let answer = post_form(&router, &format!("name={long_name}&message=hello")).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body = answer.text();
    assert!(
        body.contains("name is too long: 41 characters, at most 40"),
        "{body}"
    );
    assert!(
        body.contains(&format!(r#"value="{long_name}""#)),
        "value kept"
    );
    assert!(body.contains(">hello</textarea>"), "message kept");
}

#[tokio::test]
async fn a_form_post_that_is_not_a_form_is_refused() {
    let router = router();
    let answer = post(
        &router,
        "/guestbook",
        Some("text/plain"),
        "name=a&message=b",
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(answer.text().contains("The form could not be read"));
}

#[tokio::test]
async fn api_validation_errors_name_the_field_and_the_reason() {
    let router = router();
    let answer = post(
        &router,
        "/api/posts",
        Some("application/json"),
        r#"{"message": "hi"}"#,
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        answer.json(),
        serde_json::json!({
            "error": "the post was not saved",
            "fields": [{"field": "name", "message": "name is required"}]
        })
    );

    let long = "m".repeat(501);
    let answer = post(
        &router,
        "/api/posts",
        Some("application/json"),
        &format!(r#"{{"name": "Ada\nL", "message": "{long}"}}"#),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        answer.json()["fields"],
        serde_json::json!([
            {"field": "name", "message": "name must be one line, without control characters"},
            {"field": "message", "message": "message is too long: 501 characters, at most 500"}
        ])
    );

    let wrong_type = post(
        &router,
        "/api/posts",
        Some("application/json"),
        r#"{"name": 5, "message": "x"}"#,
    )
    .await;
    assert_eq!(wrong_type.status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = wrong_type.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("name"), "{error}");

    let malformed = post(
        &router,
        "/api/posts",
        Some("application/json"),
        "{\"name\":",
    )
    .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(malformed.json()["error"].is_string());

    let not_json = post(&router, "/api/posts", None, r#"{"name":"a","message":"b"}"#).await;
    assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(not_json.json()["error"].is_string());

    let huge = format!(r#"{{"name": "a", "message": "{}"}}"#, "x".repeat(100_000));
    let too_big = post(&router, "/api/posts", Some("application/json"), &huge).await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
}

/// The value of the guestbook form's hidden `idempotency_key` field.
fn form_key(page: &str) -> String {
    let marker = r#"<input type="hidden" name="idempotency_key" value=""#;
    let start = page
        .find(marker)
        .unwrap_or_else(|| panic!("no key field: {page}"))
        + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn each_rendered_form_has_a_fresh_key_and_a_form_shown_again_keeps_its_own() {
    let router = router();
    let first = form_key(&get(&router, "/guestbook", &[]).await.text());
    let second = form_key(&get(&router, "/guestbook", &[]).await.text());
    assert_ne!(first, second);
    for key in [&first, &second] {
        assert!(
            key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}"
        );
    }
    let again = post_form(
        &router,
        &format!("name=&message=hi&idempotency_key={first}"),
    )
    .await;
    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(form_key(&again.text()), first);
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_400_with_a_reason() {
    let router = router();
    let long = "k".repeat(65);
    for bad in ["", "two words", long.as_str(), "\"\""] {
        let request = Request::post("/api/posts")
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", bad)
            .body(Body::from(r#"{"name":"a","message":"b"}"#))
            .unwrap();
        let answer = send(&router, request).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad:?}");
        let error = answer.json()["error"].as_str().unwrap().to_owned();
        assert!(
            error.starts_with("Idempotency-Key must be 1 to 64 visible ASCII characters"),
            "{error}"
        );
    }
    let form = post_form(&router, "name=a&message=b&idempotency_key=two+words").await;
    assert_eq!(form.status, StatusCode::BAD_REQUEST);
    assert!(
        form.text().contains("Idempotency-Key must be 1 to 64"),
        "{}",
        form.text()
    );
}

#[tokio::test]
async fn bad_parameters_are_400_with_a_reason() {
    let router = router();
    for uri in [
        "/api/posts?limit=0",
        "/api/posts?limit=101",
        "/api/posts?before=abc",
        "/api/posts/abc",
        "/api/posts/-1",
    ] {
        let answer = get(&router, uri, &[]).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(answer.json()["error"].is_string(), "{uri}");
    }
    let page = get(&router, "/guestbook?before=abc", &[]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.text().contains("must be post numbers"));
}

// ---- without a database ----

#[tokio::test]
async fn without_a_database_pages_say_so_and_static_parts_keep_serving() {
    let (router, ctx) = router_with_cache(HttpConfig::default().cache_max_file_size);
    let home = get(&router, "/", &[]).await;
    assert_eq!(home.status, StatusCode::OK);
    let body = home.text();
    assert!(body.contains("A real web stack"), "{body}");
    assert!(body.contains("The guestbook is resting"), "{body}");

    let page = get(&router, "/guestbook", &[]).await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(page.header("retry-after"), "5");
    assert!(page.text().contains("cannot be reached right now"));

    let api = get(&router, "/api/posts", &[]).await;
    assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        api.json()["error"],
        "the database is unavailable; try again shortly"
    );
    let write = post(
        &router,
        "/api/posts",
        Some("application/json"),
        r#"{"name":"a","message":"b"}"#,
    )
    .await;
    assert_eq!(write.status, StatusCode::SERVICE_UNAVAILABLE);

    let css = get(&router, foobar_webapp::pages::STYLESHEET, &[]).await;
    assert_eq!(css.status, StatusCode::OK);
    let ready = get(&router, "/readyz", &[]).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);

    // The failures are on /metrics, by route and by kind.
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &ctx.metrics.lock().unwrap()).unwrap();
    assert!(
        metrics.contains(
            r#"foobar_webapp_http_requests_total{route="/api/posts",method="GET",code="503"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"foobar_webapp_db_errors_total{kind="schema"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"foobar_webapp_http_requests_total{route="static",method="GET",code="200"} 1"#
        ),
        "{metrics}"
    );
}
