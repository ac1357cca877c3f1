//! A service's life: ready or not, and the signal to stop.
//!
//! Shutdown order, the same in every service: SIGTERM (or Ctrl-C) marks the service not ready
//! first, so `/readyz` fails and balancers stop sending new work; it keeps serving for
//! `service.shutdown_delay` (a lame duck, for the health checkers to notice: HAProxy's
//! `grace`; a second signal ends the wait); then the shutdown token is cancelled, each
//! listener stops accepting and finishes what it has in flight; the process exits when `run`
//! returns, or `service.shutdown_timeout` later at the latest.
//!
//! Reload, for a service that supports it: SIGHUP bumps [`Context::reloads`]; the service then
//! calls [`Context::reload_config`], which reads the config exactly as it was read at start
//! (the same file, then the environment's overrides), and keeps its running config when that
//! fails: the error names the file, line and key, as at start.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigError, ServiceConfig};

/// Whether the service should be sent traffic: what `/readyz` answers.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the shared code hands each service's `run`.
#[derive(Clone)]
pub struct Context {
    /// Cancelled on SIGTERM or Ctrl-C; every listener selects on it.
    pub shutdown: CancellationToken,
    /// Set it once the service can do its work; the shared code clears it on shutdown.
    pub readiness: Readiness,
    /// Where the service registers its metrics; `/metrics` encodes it on every scrape.
    pub metrics: Arc<std::sync::Mutex<Registry>>,
    /// Counts SIGHUPs: a service that can reload watches it with [`Context::reloads`].
    reload: Arc<watch::Sender<u64>>,
    /// Routes a service adds to its admin listener (a status page, admin actions).
    pub(crate) admin_routes: Arc<std::sync::OnceLock<axum::Router>>,
    /// Where the running config came from, so [`Context::reload_config`] reads it the same way.
    config_origin: Option<Arc<ConfigOrigin>>,
}

/// How a service's config was loaded: its file (or none: the defaults) and the prefix of its
/// environment overrides.
#[derive(Debug, Clone)]
pub struct ConfigOrigin {
    pub path: Option<PathBuf>,
    pub env_prefix: &'static str,
}

impl Context {
    pub fn new(prefix: &str) -> Self {
        Self {
            shutdown: CancellationToken::new(),
            readiness: Readiness::default(),
            metrics: Arc::new(std::sync::Mutex::new(Registry::with_prefix(prefix))),
            reload: Arc::new(watch::channel(0).0),
            admin_routes: Arc::default(),
            config_origin: None,
        }
    }

    /// Remembers how the config was loaded; [`crate::main`] does this before `run`.
    pub fn with_config_origin(mut self, origin: ConfigOrigin) -> Self {
        self.config_origin = Some(Arc::new(origin));
        self
    }

    /// Reads the config again as it was read at start: the same file, then the environment's
    /// overrides, then [`ServiceConfig::validate`]. On error the caller keeps its running
    /// config; the error names the file, line and key (or the variable).
    pub fn reload_config<C: ServiceConfig>(&self) -> Result<C, ConfigError> {
        let origin = self
            .config_origin
            .as_deref()
            .ok_or_else(|| ConfigError::Invalid {
                path: PathBuf::from("(unknown)"),
                message: "this service was not started by foobar_service::main, so there is no \
                      config to reload"
                    .into(),
            })?;
        config::load(origin.path.as_deref(), origin.env_prefix, std::env::vars())
    }

    /// Adds `routes` to the admin listener (beside /healthz, /readyz, /metrics). Once per
    /// service; a second call is ignored.
    pub fn add_admin_routes(&self, routes: axum::Router) {
        if self.admin_routes.set(routes).is_err() {
            tracing::warn!("admin routes were already added; ignoring the second set");
        }
    }

    /// A receiver that changes on every SIGHUP: `while reloads.changed().await.is_ok()`.
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.reload.subscribe()
    }

    /// What SIGHUP does; also for tests.
    pub fn request_reload(&self) {
        self.reload.send_modify(|n| *n += 1);
    }

    /// Registers one metric under the service's prefix.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register(name, help, metric);
    }
}

/// Turns each SIGHUP into a reload request, until shutdown.
#[cfg(unix)]
pub async fn reload_on_sighup(ctx: Context) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload is unavailable");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reload requested");
                ctx.request_reload();
            }
            () = ctx.shutdown.cancelled() => return,
        }
    }
}

#[cfg(not(unix))]
pub async fn reload_on_sighup(_ctx: Context) {}

/// Waits for SIGTERM or Ctrl-C, then marks the service not ready, waits `delay` (or for a
/// second signal) and cancels `shutdown`.
pub async fn stop_on_signal(ctx: Context, delay: Duration) {
    let signal = wait_for_signal().await;
    ctx.readiness.set(false);
    if !delay.is_zero() {
        tracing::info!(
            signal,
            ?delay,
            "not ready; still serving until the delay is over"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            again = wait_for_signal() => tracing::info!(signal = again, "second signal: not waiting"),
            () = ctx.shutdown.cancelled() => {}
        }
    }
    tracing::info!(
        signal,
        "shutting down: no new work, finishing in-flight work"
    );
    ctx.shutdown.cancel();
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM ({e}); only Ctrl-C stops the service");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CommonConfig;

    #[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields, default)]
    struct Reloadable {
        service: CommonConfig,
        limit: u32,
    }

    impl ServiceConfig for Reloadable {
        fn common(&self) -> &CommonConfig {
            &self.service
        }
    }

    #[test]
    fn reload_config_reads_the_same_file_again_and_reports_a_broken_one() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "limit = 1\n").unwrap();
        let ctx = Context::new("test").with_config_origin(ConfigOrigin {
            path: Some(file.path().to_owned()),
            env_prefix: "FOOBAR_RELOAD_TEST_NO_SUCH_PREFIX",
        });
        assert_eq!(ctx.reload_config::<Reloadable>().unwrap().limit, 1);

        std::fs::write(file.path(), "limit = 2\n").unwrap();
        assert_eq!(ctx.reload_config::<Reloadable>().unwrap().limit, 2);

        std::fs::write(file.path(), "limit = 3\nlimmit = 4\n").unwrap();
        let err = ctx.reload_config::<Reloadable>().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:2:1: ", file.path().display())) && err.contains("limmit"),
            "{err}"
        );
    }

    #[test]
    fn reload_config_without_an_origin_is_an_error_not_the_defaults() {
        assert!(Context::new("test").reload_config::<Reloadable>().is_err());
    }
}
