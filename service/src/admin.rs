//! The admin HTTP listener every service has: `/healthz`, `/readyz`, `/metrics`.
//!
//! `/healthz` answers 200 while the process can answer at all (liveness: restart me if not).
//! `/readyz` answers 200 only while the service wants traffic (readiness: route around me if
//! not). `/metrics` is Prometheus' text format. A service that speaks HTTP on its main port
//! too (the webapp) merges [`health_routes`] there as well, so checks see the same answer.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

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

/// Binds `addr`, logs `listening on ADDR`, and serves `router` until shutdown.
pub async fn serve(
    name: &'static str,
    addr: SocketAddr,
    router: Router,
    ctx: Context,
) -> anyhow::Result<()> {
    let listener = bind(name, addr).await?;
    axum::serve(listener, router)
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
