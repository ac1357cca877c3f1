//! Which backends the pool has: the config's `[[pool.backends]]`, with host names resolved.
//!
//! An entry with an IP address is one backend, named by the address as written. An entry with
//! a host name (`web:8080`) is resolved at start and again every `pool.resolve_interval`; each
//! address it resolves to is a backend named `web:8080@10.0.0.5`. So `docker compose up
//! --scale web=3` is picked up without a restart: the new address joins once it passes `rise`
//! health checks, and an address that vanished leaves the pool (no new requests; those in
//! flight finish). A failed lookup keeps the entry's last known addresses: a DNS hiccup never
//! empties the pool.
//!
//! [`refresh`] is the one way the pool changes after start (the resolve loop here, and
//! SIGHUP in `reload.rs`); it keeps the state of every backend that stays (`Pool::rebuild`).

use std::sync::Arc;

use foobar_service::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{BackendConfig, Config, Target};
use crate::health;
use crate::pool::{Backend, BackendSpec, Pool};
use crate::proxy::Proxy;

/// The backends `entries` describe now. `previous` supplies the last known addresses of an
/// entry whose name does not resolve at the moment.
pub async fn resolve(entries: &[BackendConfig], previous: &Pool) -> Vec<BackendSpec> {
    let mut specs = Vec::new();
    for entry in entries {
        let spec = |name: String, addr| BackendSpec {
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

/// Makes the pool `config` describes the one in force: resolves it, keeps the backends that
/// stay, starts checking the ones that join, retires the ones that left.
pub async fn refresh(
    proxy: &Arc<Proxy>,
    config: &Config,
    joining: Joining,
    shutdown: &CancellationToken,
) {
    let _one_at_a_time = proxy.membership.lock().await;
    let previous = proxy.pool.load_full();
    let wanted = resolve(&config.pool.backends, &previous).await;
    let unchanged = previous.algorithm() == config.pool.algorithm
        && wanted.len() == previous.backends.len()
        && wanted.iter().zip(&previous.backends).all(|(spec, b)| {
            spec.name == b.name
                && spec.addr == b.addr
                && spec.weight == b.weight()
                && spec.backup == b.is_backup()
        });
    if unchanged {
        return;
    }
    let metrics = &proxy.metrics;
    let up = joining == Joining::Up;
    let rebuilt = previous.rebuild(wanted, config.pool.algorithm, |spec| {
        metrics
            .backend_up
            .get_or_create(&crate::metrics::BackendLabels {
                backend: spec.name.clone(),
            })
            .set(i64::from(up));
        Backend::new(spec, up, metrics)
    });
    for backend in &rebuilt.joined {
        match joining {
            Joining::Up => {
                tracing::info!(backend = %backend.name, addr = %backend.addr, "in the pool")
            }
            Joining::AfterChecks => {
                tracing::info!(backend = %backend.name, addr = %backend.addr, "joined the pool; gets requests once its health checks pass")
            }
        }
        tokio::spawn(health::check_backend(
            Arc::clone(proxy),
            Arc::clone(backend),
            shutdown.clone(),
        ));
    }
    for backend in &rebuilt.left {
        tracing::info!(backend = %backend.name, "left the pool: no new requests; {} in flight finish", backend.in_flight.get());
        backend.retired.cancel();
        metrics.forget(&backend.name);
    }
    if rebuilt.pool.backends.is_empty() {
        tracing::warn!("the pool has no backend: every request gets 503 until one resolves");
    }
    proxy.pool.store(Arc::new(rebuilt.pool));
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
        if config
            .pool
            .backends
            .iter()
            .any(|b| matches!(b.target(), Some(Target::Name { .. })))
        {
            refresh(&proxy, &config, Joining::AfterChecks, &ctx.shutdown).await;
        }
    }
}
