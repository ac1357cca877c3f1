//! Which backends the pools have: the config's `[[pool.backends]]` and each site's
//! `[[site.backends]]`, with host names resolved.
//!
//! An entry with an IP address is one backend, named by the address as written. An entry with
//! a host name (`web:8080`) is resolved at start and again every `pool.resolve_interval`; each
//! address it resolves to is a backend named `web:8080@10.0.0.5`. So `docker compose up
//! --scale web=3` is picked up without a restart: the new address joins once it passes `rise`
//! health checks, and an address that vanished leaves the pool (no new requests; those in
//! flight finish). A failed lookup keeps the entry's last known addresses: a DNS hiccup never
//! empties the pool.
//!
//! [`refresh`] is the one way the pools change after start (the resolve loop here, and
//! SIGHUP in `reload.rs`); it keeps the state of every backend that stays (`Pool::rebuild`),
//! pool by pool (a pool is known by its name: `default` or the site's), and retires every
//! backend of a site that left the config.

use std::sync::Arc;

use foobar_service::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{BackendConfig, Config, PoolSpec, Target};
use crate::health;
use crate::pool::{Backend, BackendSpec, Pool};
use crate::proxy::Proxy;
use crate::sites::Pools;

/// The backends `entries` describe now. `previous` (the same pool as it is) supplies the
/// last known addresses of an entry whose name does not resolve at the moment.
pub async fn resolve(entries: &[BackendConfig], previous: &Pool) -> Vec<BackendSpec> {
    let mut specs = Vec::new();
    for entry in entries {
        let spec = |name: String, addr| BackendSpec {
            pool: previous.name.clone(),
            name,
            group: entry.address.clone(),
            addr,
            weight: entry.weight,
            backup: entry.backup,
        };
        match entry.target() {
            Some(Target::Fixed(addr)) => specs.push(spec(entry.address.clone(), addr)),
            Some(Target::Name { host, port }) => {
                match tokio::net::lookup_host((host.as_str(), port)).await {
                    Ok(addrs) => {
                        let mut addrs: Vec<_> = addrs.collect();
                        addrs.sort();
                        addrs.dedup();
                        specs.extend(
                            addrs
                                .into_iter()
                                .map(|addr| spec(format!("{}@{}", entry.address, addr.ip()), addr)),
                        );
                    }
                    Err(e) => {
                        let known: Vec<_> = previous
                            .backends
                            .iter()
                            .filter(|b| b.group == entry.address)
                            .map(|b| spec(b.name.clone(), b.addr))
                            .collect();
                        tracing::warn!(
                            backend = %entry.address,
                            "cannot resolve {host}: {e}; keeping its {} known address(es)",
                            known.len()
                        );
                        specs.extend(known);
                    }
                }
            }
            None => {} // refused by Config::validate
        }
    }
    specs
}

/// How a backend that joins the pool starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joining {
    /// Up at once: the backends of the config at start or after a reload, which an operator
    /// named (HAProxy does the same). A dead one is found by its first failed connection
    /// (and retried elsewhere) or its checks.
    Up,
    /// Down until `rise` checks pass: an address DNS just started answering, which may not
    /// be serving yet.
    AfterChecks,
}

/// Makes the pools `config` describes the ones in force: resolves them, keeps the backends
/// that stay, starts checking the ones that join, retires the ones that left.
pub async fn refresh(
    proxy: &Arc<Proxy>,
    config: &Config,
    joining: Joining,
    shutdown: &CancellationToken,
) {
    let _one_at_a_time = proxy.membership.lock().await;
    let previous = proxy.pools.load_full();
    let mut pools = Vec::new();
    for spec in config.pools() {
        let before = match previous.get(spec.name) {
            Some(pool) => Arc::clone(pool),
            None => Arc::new(Pool::new(spec.name, Vec::new(), spec.algorithm)),
        };
        pools.push(refresh_pool(proxy, &before, &spec, joining, shutdown).await);
    }
    for gone in previous
        .all
        .iter()
        .filter(|old| !pools.iter().any(|p| p.name == old.name))
    {
        tracing::info!(pool = %gone.name, "the site left the config");
        retire(proxy, &gone.backends);
    }
    let sites = config.sites.iter().map(|s| (s.name.as_str(), &s.hosts[..]));
    proxy.pools.store(Arc::new(Pools::new(pools, sites)));
}

/// The pool `spec` describes now: `before` itself when nothing changed.
async fn refresh_pool(
    proxy: &Arc<Proxy>,
    before: &Arc<Pool>,
    spec: &PoolSpec<'_>,
    joining: Joining,
    shutdown: &CancellationToken,
) -> Arc<Pool> {
    let wanted = resolve(spec.backends, before).await;
    let unchanged = before.algorithm() == spec.algorithm
        && wanted.len() == before.backends.len()
        && wanted.iter().zip(&before.backends).all(|(spec, b)| {
            spec.name == b.name
                && spec.addr == b.addr
                && spec.weight == b.weight()
                && spec.backup == b.is_backup()
        });
    if unchanged {
        return Arc::clone(before);
    }
    let metrics = &proxy.metrics;
    let up = joining == Joining::Up;
    let rebuilt = before.rebuild(wanted, spec.algorithm, |spec| {
        metrics
            .backend_up
            .get_or_create(&crate::metrics::BackendLabels::new(&spec.pool, &spec.name))
            .set(i64::from(up));
        Backend::new(spec, up, metrics)
    });
    for backend in &rebuilt.joined {
        match joining {
            Joining::Up => {
                tracing::info!(pool = %backend.pool, backend = %backend.name, addr = %backend.addr, "in the pool")
            }
            Joining::AfterChecks => {
                tracing::info!(pool = %backend.pool, backend = %backend.name, addr = %backend.addr, "joined the pool; gets requests once its health checks pass")
            }
        }
        tokio::spawn(health::check_backend(
            Arc::clone(proxy),
            Arc::clone(backend),
            shutdown.clone(),
        ));
    }
    retire(proxy, &rebuilt.left);
    if rebuilt.pool.backends.is_empty() {
        tracing::warn!(pool = %spec.name, "the pool has no backend: its requests get 503 until one resolves");
    }
    Arc::new(rebuilt.pool)
}

/// Backends that left: their checks stop, their gauges go; requests in flight finish.
fn retire(proxy: &Proxy, left: &[Arc<Backend>]) {
    for backend in left {
        tracing::info!(pool = %backend.pool, backend = %backend.name, "left the pool: no new requests; {} in flight finish", backend.in_flight.get());
        backend.retired.cancel();
        proxy.metrics.forget(&backend.pool, &backend.name);
    }
}

/// Resolves the config's host names again every `pool.resolve_interval`, until shutdown.
pub async fn resolve_periodically(proxy: Arc<Proxy>, ctx: Context) {
    loop {
        let interval = proxy.config.load().pool.resolve_interval;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = ctx.shutdown.cancelled() => return,
        }
        let config = proxy.config.load_full();
        if config.pools().any(|pool| {
            pool.backends
                .iter()
                .any(|b| matches!(b.target(), Some(Target::Name { .. })))
        }) {
            refresh(&proxy, &config, Joining::AfterChecks, &ctx.shutdown).await;
        }
    }
}
