//! SIGHUP: read `balancer.toml` again and apply it without dropping a connection.
//!
//! The file is read as at start (`Context::reload_config`: the same file, the environment's
//! overrides, the same checks). A file that does not load is refused: the log names the file,
//! line and key, and the running config stays. A good one replaces the config in force (the
//! next request uses its timeouts and limits, the next health check its `[health]`), and the
//! pools (`[pool]` and each `[[site]]`) are rebuilt from their backends, keeping the state of
//! those that stay (`discovery::refresh`); a backend new to the config starts up, as at start,
//! and a site removed from the file stops getting requests. Open client connections are untouched; `limits.header_read_timeout`
//! and `limits.max_header_size` apply to connections accepted from then on. Listeners and TLS
//! (`[http]`, `[https]`, `[service]`) need a restart: a change there is logged, not applied.

use std::sync::Arc;

use foobar_service::Context;

use crate::config::Config;
use crate::discovery;
use crate::proxy::Proxy;

/// Applies a reload on every SIGHUP, until shutdown.
pub async fn on_sighup(proxy: Arc<Proxy>, ctx: Context) {
    let mut reloads = ctx.reloads();
    loop {
        tokio::select! {
            changed = reloads.changed() => if changed.is_err() { return },
            () = ctx.shutdown.cancelled() => return,
        }
        match ctx.reload_config::<Config>() {
            Ok(config) => {
                apply(&proxy, config, &ctx).await;
                proxy.metrics.reloaded("applied");
            }
            Err(e) => {
                tracing::error!("reload refused, the running config stays: {e}");
                proxy.metrics.reloaded("refused");
            }
        }
    }
}

async fn apply(proxy: &Arc<Proxy>, config: Config, ctx: &Context) {
    let running = proxy.config.load_full();
    let restart_only = [
        ("[http]", running.http != config.http),
        ("[https]", running.https != config.https),
        ("[service]", running.service != config.service),
    ];
    for (table, changed) in restart_only {
        if changed {
            tracing::warn!("reload: {table} changed; it applies at the next restart");
        }
    }
    proxy.connections.set_max(config.limits.max_connections);
    let config = Arc::new(config);
    proxy.config.store(Arc::clone(&config));
    discovery::refresh(proxy, &config, discovery::Joining::Up, &ctx.shutdown).await;
    tracing::info!(
        backends = proxy.pools.load().backends().count(),
        "config reloaded"
    );
}
