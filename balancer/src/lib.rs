//! foobar-balancer: the load balancer in front of the web servers (HAProxy's role in the
//! classic design), built so that a dead backend costs no client request.
//!
//! - [`config`]: `balancer.toml`: listener, pool (algorithm, backends, backups), health, timeouts.
//! - [`pool`]: backends' state and the choice of one per request (round robin, least
//!   connections, active-passive).
//! - [`proxy`]: forwarding a request, its headers, retries that never repeat a sent write.
//! - [`health`]: active HTTP checks.
//! - [`metrics`]: what `/metrics` exports.
//!
//! The shared parts (command line, config loading, admin listener, shutdown) come from
//! [`foobar_service`].

pub mod config;
pub mod health;
pub mod metrics;
pub mod pool;
pub mod proxy;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use foobar_service::{Context, ServiceInfo};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

pub use config::Config;

use crate::metrics::Metrics;
use crate::pool::{Backend, Pool};
use crate::proxy::Proxy;

pub const SERVICE: ServiceInfo = ServiceInfo {
    binary: "foobar-balancer",
    about: "HTTP load balancer in front of the web servers: health-checked round robin, least \
            connections or active-passive; retries that never repeat a request a backend may \
            have processed; drains on SIGTERM.",
    env_prefix: "FOOBAR_BALANCER",
    metrics_prefix: "foobar_balancer",
};

/// A client that sends its request head slower than this is cut off (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves the backends, starts their health checks and serves until shutdown; then stops
/// accepting and lets in-flight requests finish.
pub async fn run(config: Config, ctx: Context) -> anyhow::Result<()> {
    let metrics = Metrics::register(&ctx);
    let mut backends = Vec::new();
    for backend in &config.pool.backends {
        let addr = tokio::net::lookup_host(&backend.address)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| anyhow::anyhow!("pool.backends: cannot resolve {}", backend.address))?;
        metrics
            .backend_up
            .get_or_create(&metrics::BackendLabels {
                backend: backend.address.clone(),
            })
            .set(1);
        backends.push(Backend::new(
            backend.address.clone(),
            addr,
            backend.weight,
            backend.backup,
        ));
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "foobar-balancer".to_owned(), |h| h.trim().to_owned());
    let proxy = Arc::new(Proxy::new(
        Pool::new(backends, config.pool.algorithm),
        config.timeouts.connect,
        config.timeouts.response,
        config.health.fall,
        &name,
        metrics,
    ));
    for index in 0..proxy.pool.backends.len() {
        tokio::spawn(health::check_backend(
            Arc::clone(&proxy),
            index,
            config.health.clone(),
            ctx.shutdown.clone(),
        ));
    }

    let listener = foobar_service::admin::bind("http", config.http.listen).await?;
    ctx.readiness.set(true);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, client) = tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(&proxy);
        let service = service_fn(move |request| {
            let proxy = Arc::clone(&proxy);
            async move { Ok::<_, Infallible>(proxy.handle(request, client, "http").await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%client, "client connection ended: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!("draining: no new connections; waiting for in-flight requests");
    graceful.shutdown().await;
    Ok(())
}
