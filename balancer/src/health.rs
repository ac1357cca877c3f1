//! Active health checks: an HTTP GET of `health.path` on every backend each `interval` (a
//! site's backends: with its `[site.health]` keys over `[health]`).
//! `rise` good answers in a row bring a backend up, `fall` failures take it down (failed
//! connections under traffic count too, see `proxy.rs`).
//!
//! Down means no new requests; a request already sent to the backend is left to finish (a
//! web server that fails `/readyz` because it is shutting down still answers what it has).
//! Each check reads its health config from the config in force, so a reload applies at the next one;
//! a backend's checks stop when it leaves the pool (`Backend::retired`).

use std::sync::Arc;

use foobar_service::probe::http_status;
use tokio_util::sync::CancellationToken;

use crate::pool::Backend;
use crate::proxy::Proxy;

/// Checks `backend` until it leaves the pool or the balancer shuts down.
pub async fn check_backend(proxy: Arc<Proxy>, backend: Arc<Backend>, shutdown: CancellationToken) {
    loop {
        let config = proxy.config.load().health_of(&backend.pool);
        tokio::select! {
            () = tokio::time::sleep(config.interval) => {}
            () = backend.retired.cancelled() => return,
            () = shutdown.cancelled() => return,
        }
        let result = http_status(backend.addr, &config.path, config.timeout).await;
        let seen = match &result {
            Ok(status) => format!("HTTP {status}"),
            Err(e) => e.to_string(),
        };
        *backend.last_check.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::SystemTime::now(), seen));
        if backend.retired.is_cancelled() {
            return;
        }
        match result {
            Ok(status) if config.healthy(status) => {
                if backend.record_success(config.rise) {
                    tracing::info!(pool = %backend.pool, backend = %backend.name, "up: {} good checks of {}", config.rise, config.path);
                    proxy.metrics.set_up(&backend.pool, &backend.name, true);
                }
            }
            result => {
                let why = match result {
                    Ok(status) => format!("answered {status}"),
                    Err(e) => e.to_string(),
                };
                if backend.record_failure(config.fall) {
                    tracing::warn!(pool = %backend.pool, backend = %backend.name, "down: {} failed checks of {} ({why})", config.fall, config.path);
                    proxy.metrics.set_up(&backend.pool, &backend.name, false);
                }
            }
        }
    }
}
