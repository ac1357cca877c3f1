//! The admin HTTP listener every service has: `/healthz`, `/readyz`, `/metrics`.
//!
//! `/healthz` answers 200 while the process can answer at all (liveness: restart me if not).
//! `/readyz` answers 200 only while the service wants traffic (readiness: route around me if
//! not). `/metrics` is Prometheus' text format. A service that speaks HTTP on its main port
//! too (the webapp) merges [`health_routes`] there as well, so checks see the same answer.
//!
//! Reading is open; changing state is not. [`guard`] lets a GET or HEAD through to anyone who
//! reaches the port (health checks, Prometheus, a status page: they change nothing), and
//! refuses every other method (drain, enable, rejoin, whatever a service adds) unless it comes
//! from an address in `service.admin_allow` (else 403) and carries
//! `Authorization: Bearer TOKEN` with the token of `service.admin_token_file` (else 401;
//! 403 while that file cannot be read: the door stays shut, never open).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ipnet::IpNet;
use tokio::net::TcpListener;

use crate::config::CommonConfig;
use crate::lifecycle::Context;

/// `/healthz` and `/readyz`, for any router that wants them.
pub fn health_routes(ctx: &Context) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(ctx.clone())
}

/// The admin router: health, metrics, and whatever the service added with
/// [`Context::add_admin_routes`] (it may add them after the listener started).
pub fn router(ctx: &Context) -> Router {
    let extra = std::sync::Arc::clone(&ctx.admin_routes);
    let service_routes = move |request: axum::extract::Request| async move {
        use tower::ServiceExt;
        match extra.get() {
            Some(routes) => routes.clone().oneshot(request).await.into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        }
    };
    base_router(ctx).fallback(service_routes)
}

fn base_router(ctx: &Context) -> Router {
    health_routes(ctx).merge(
        Router::new()
            .route("/metrics", get(metrics))
            .with_state(ctx.clone()),
    )
}

async fn readyz(State(ctx): State<Context>) -> impl IntoResponse {
    if ctx.readiness.get() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(ctx): State<Context>) -> impl IntoResponse {
    let mut body = String::new();
    let registry = ctx.metrics.lock().unwrap_or_else(|e| e.into_inner());
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode metrics: {e}\n"),
        ),
    }
}

/// Who may change state through the admin listener: `service.admin_allow` and
/// `service.admin_token_file`.
#[derive(Clone)]
pub struct AdminAccess {
    allow: Arc<[IpNet]>,
    token_file: Arc<Path>,
}

impl AdminAccess {
    pub fn new(common: &CommonConfig) -> Self {
        Self {
            allow: common.admin_allow.clone().into(),
            token_file: common.admin_token_file.clone().into(),
        }
    }
}

/// `router` behind [`guard`], the way the admin listener serves it. The peer's address comes
/// from the connection ([`ConnectInfo`], which [`serve`] provides); a request without one is
/// refused any change.
pub fn guarded(router: Router, access: AdminAccess) -> Router {
    router.layer(axum::middleware::from_fn_with_state(access, guard))
}

/// Lets GET and HEAD through; any other method needs an allowed source address and the token.
pub async fn guard(State(access): State<AdminAccess>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    match check(&access, &request) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let peer = peer_ip(&request).map_or_else(|| "unknown".into(), |ip| ip.to_string());
            tracing::warn!(
                %peer,
                method = %request.method(),
                path = request.uri().path(),
                status = refusal.0.as_u16(),
                "admin action refused"
            );
            refusal.into_response()
        }
    }
}

/// A refused admin action: its status, and a body that says why and what to do.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.0, self.1).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"foobar admin\""),
            );
        }
        response
    }
}

fn peer_ip(request: &Request) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        // An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d.
        .map(|ConnectInfo(peer)| peer.ip().to_canonical())
}

fn check(access: &AdminAccess, request: &Request) -> Result<(), Refusal> {
    let Some(ip) = peer_ip(request) else {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "admin actions are refused: the peer's address is unknown\n".into(),
        ));
    };
    if !access.allow.iter().any(|net| net.contains(&ip)) {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            format!(
                "admin actions are refused from {ip}: only addresses in service.admin_allow \
                 may change state\n"
            ),
        ));
    }
    let expected = read_token(&access.token_file).map_err(|why| {
        Refusal(
            StatusCode::FORBIDDEN,
            format!("admin actions are disabled: {why}\n"),
        )
    })?;
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
    match given {
        None => Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "admin actions need `Authorization: Bearer TOKEN`, the token from the admin token \
             file (secrets/admin_token in the stack)\n"
                .into(),
        )),
        Some(given) if !same_secret(given, expected.as_bytes()) => Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "wrong admin token\n".into(),
        )),
        Some(_) => Ok(()),
    }
}

/// The token in `file`, without surrounding white space; an error says why there is none.
fn read_token(file: &Path) -> Result<String, String> {
    match std::fs::read_to_string(file) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => Err(format!("the admin token file {} is empty", file.display())),
        Err(e) => Err(format!(
            "the admin token file {} cannot be read ({e})",
            file.display()
        )),
    }
}

/// Whether two secrets are equal, in time that depends on their lengths only, never on where
/// they first differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    given.ct_eq(expected).into()
}

/// Binds `addr`, logs `listening on ADDR`, and serves `router` behind [`guard`] until
/// shutdown.
pub async fn serve(
    name: &'static str,
    addr: SocketAddr,
    router: Router,
    access: AdminAccess,
    ctx: Context,
) -> anyhow::Result<()> {
    let listener = bind(name, addr).await?;
    let app = guarded(router, access).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(ctx.shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// Binds a TCP listener and logs the line tests and people look for.
pub async fn bind(name: &'static str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({name}): {e}"))?;
    log_listening(name, listener.local_addr()?);
    Ok(listener)
}

/// The next connection, or None once `shutdown` is cancelled. Accept errors (out of file
/// descriptors, a connection reset before it was accepted) are logged and retried after a
/// short pause, so a burst of them neither stops the listener nor spins a core.
pub async fn accept(
    listener: &TcpListener,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// The one line per listener that says it accepts: `listening on ADDR listener=NAME`.
pub fn log_listening(name: &'static str, addr: SocketAddr) {
    tracing::info!(listener = name, "listening on {addr}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::post;
    use tower::ServiceExt;

    const TOKEN: &str = "s3cret-token";

    struct Setup {
        router: Router,
        _dir: tempfile::TempDir,
    }

    /// A router with a GET page and a POST action, behind the guard that allows `allow` and
    /// reads the token from a file holding `token` (none: no file).
    fn setup(allow: &[&str], token: Option<&str>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("admin_token");
        if let Some(token) = token {
            std::fs::write(&token_file, format!("{token}\n")).unwrap();
        }
        let common = CommonConfig {
            admin_allow: allow.iter().map(|net| net.parse().unwrap()).collect(),
            admin_token_file: token_file,
            ..CommonConfig::default()
        };
        let routes = Router::new()
            .route("/status", get(|| async { "status\n" }))
            .route("/drain", post(|| async { "drained\n" }));
        Setup {
            router: guarded(routes, AdminAccess::new(&common)),
            _dir: dir,
        }
    }

    async fn send(
        setup: &Setup,
        method: Method,
        peer: Option<&str>,
        authorization: Option<&str>,
    ) -> (StatusCode, String) {
        use http_body_util::BodyExt;
        let path = if matches!(method, Method::GET | Method::HEAD) {
            "/status"
        } else {
            "/drain"
        };
        let mut request = Request::builder().method(method).uri(path);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let mut request = request.body(Body::empty()).unwrap();
        if let Some(peer) = peer {
            let peer: SocketAddr = peer.parse().unwrap();
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        let response = setup.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    const BEARER: &str = "Bearer s3cret-token";

    #[tokio::test]
    async fn reading_is_open_to_any_address_without_a_token() {
        let setup = setup(&["127.0.0.0/8"], Some(TOKEN));
        let answer = send(&setup, Method::GET, Some("10.153.53.99:40000"), None).await;
        assert_eq!(answer, (StatusCode::OK, "status\n".into()));
        let answer = send(&setup, Method::HEAD, Some("10.153.53.99:40000"), None).await;
        assert_eq!(answer.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn an_action_with_the_token_from_an_allowed_address_is_done() {
        let setup = setup(&["127.0.0.0/8", "10.153.53.1/32"], Some(TOKEN));
        for peer in ["127.0.0.1:1", "10.153.53.1:1", "[::ffff:127.0.0.1]:1"] {
            let answer = send(&setup, Method::POST, Some(peer), Some(BEARER)).await;
            assert_eq!(answer, (StatusCode::OK, "drained\n".into()), "{peer}");
        }
    }

    #[tokio::test]
    async fn an_action_from_an_address_not_allowed_is_refused_even_with_the_token() {
        let setup = setup(&["127.0.0.0/8", "10.153.53.1/32"], Some(TOKEN));
        for peer in [
            "10.153.53.2:1",
            "10.153.53.99:1",
            "[::1]:1",
            "[2001:db8::1]:1",
        ] {
            for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
                let (status, body) = send(&setup, method.clone(), Some(peer), Some(BEARER)).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} from {peer}");
                assert!(body.contains("service.admin_allow"), "{body}");
            }
        }
        let (status, body) = send(&setup, Method::POST, None, Some(BEARER)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("address is unknown"), "{body}");
    }

    #[tokio::test]
    async fn an_action_without_the_right_token_is_unauthorized() {
        let setup = setup(&["127.0.0.0/8"], Some(TOKEN));
        let wrong = [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("Bearer s3cret-toke"),
            Some("Bearer s3cret-tokenX"),
            Some("Bearer S3cret-token"),
            Some("bearer s3cret-token"),
            Some("Basic s3cret-token"),
            Some("Bearer  s3cret-token"),
            Some("s3cret-token"),
        ];
        for authorization in wrong {
            let (status, body) =
                send(&setup, Method::POST, Some("127.0.0.1:1"), authorization).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
            assert!(!body.contains(TOKEN), "never says the token: {body}");
        }
        let (_, body) = send(&setup, Method::POST, Some("127.0.0.1:1"), None).await;
        assert!(body.contains("Authorization: Bearer"), "{body}");
    }

    #[tokio::test]
    async fn without_a_token_file_every_action_is_refused() {
        for token in [None, Some(""), Some("  ")] {
            let setup = setup(&["127.0.0.0/8"], token);
            for authorization in [None, Some("Bearer "), Some(BEARER)] {
                let (status, body) =
                    send(&setup, Method::POST, Some("127.0.0.1:1"), authorization).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{token:?} {authorization:?}");
                assert!(body.contains("admin token file"), "{body}");
            }
            let answer = send(&setup, Method::GET, Some("127.0.0.1:1"), None).await;
            assert_eq!(answer.0, StatusCode::OK);
        }
    }

    #[test]
    fn the_default_allows_the_loopback_only() {
        let allow = CommonConfig::default().admin_allow;
        let allowed = |ip: &str| {
            allow
                .iter()
                .any(|net| net.contains(&ip.parse::<std::net::IpAddr>().unwrap()))
        };
        assert!(allowed("127.0.0.1") && allowed("127.1.2.3") && allowed("::1"));
        assert!(!allowed("10.153.53.1") && !allowed("172.17.0.1") && !allowed("::2"));
    }
}
