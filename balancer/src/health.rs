//! Active health checks: an HTTP GET of `health.path` on every backend each `interval`.
//! `rise` good answers in a row bring a backend up, `fall` failures take it down (failed
//! connections under traffic count too, see `proxy.rs`).

use std::sync::Arc;

use foobar_service::probe::http_status;
use tokio_util::sync::CancellationToken;

use crate::config::HealthConfig;
use crate::proxy::Proxy;

/// Checks backend `index` until shutdown.
pub async fn check_backend(
    proxy: Arc<Proxy>,
    index: usize,
    config: HealthConfig,
    shutdown: CancellationToken,
) {
    let backend = &proxy.pool.backends[index];
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let result = http_status(backend.addr, &config.path, config.timeout).await;
        let seen = match &result {
            Ok(status) => format!("HTTP {status}"),
            Err(e) => e.to_string(),
        };
        *backend.last_check.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::SystemTime::now(), seen));
        match result {
            Ok(status) if (200..300).contains(&status) => {
                if backend.record_success(config.rise) {
                    tracing::info!(backend = %backend.name, "up: {} good checks of {}", config.rise, config.path);
                    proxy.metrics.set_up(&backend.name, true);
                }
            }
            result => {
                let why = match result {
                    Ok(status) => format!("answered {status}"),
                    Err(e) => e.to_string(),
                };
                if backend.record_failure(config.fall) {
                    tracing::warn!(backend = %backend.name, "down: {} failed checks of {} ({why})", config.fall, config.path);
                    proxy.metrics.set_up(&backend.name, false);
                }
            }
        }
    }
}
