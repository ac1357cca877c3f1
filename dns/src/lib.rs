//! foobar-dns: the authoritative DNS server for foobar.com, the first hop of every request.
//!
//! - [`config`]: `dns.toml`: listener, `[[zone]]` files, `[[health_check]]` record sets.
//! - [`zones`]: RFC 1035 zone files, parsed by hickory and checked; errors name file and line.
//! - [`answer`]: one generation of answers ([`answer::Served`]: hickory's catalog plus a cache
//!   of ready-made wire answers) and the path of one query through it.
//! - [`wire`]: the little of a query the fast path reads itself (fuzzed: `dns/fuzz`).
//! - [`health`]: HTTP probes of the health-checked addresses; only healthy ones are answered.
//! - [`server`]: the UDP and TCP listeners; on Linux, UDP goes in batches (`batch.rs`:
//!   `recvmmsg`/`sendmmsg`, the crate's only unsafe code).
//! - [`metrics`]: what `/metrics` exports.
//!
//! The shared parts (command line, config loading, admin listener, shutdown) come from
//! [`foobar_service`].

pub mod answer;
#[cfg(target_os = "linux")]
mod batch;
pub mod config;
pub mod health;
pub mod metrics;
pub mod server;
pub mod wire;
pub mod zones;

use std::sync::Arc;

use arc_swap::ArcSwap;
use foobar_service::{Context, ServiceInfo};
use hickory_proto::rr::{LowerName, Name};

pub use config::Config;

use crate::answer::Served;
use crate::health::HealthChecker;
use crate::metrics::Metrics;
use crate::server::Dns;
use crate::zones::Zone;

pub const SERVICE: ServiceInfo = ServiceInfo {
    binary: "foobar-dns",
    about: "Authoritative DNS server for foobar.com: answers www.foobar.com with the healthy \
            balancers. SIGHUP reloads the zone files.",
    env_prefix: "FOOBAR_DNS",
    metrics_prefix: "foobar_dns",
};

/// Loads the zones, starts the health checks and both listeners, and serves until shutdown.
/// SIGHUP reloads the zone files; a broken one is refused and the old zones keep serving.
pub async fn run(config: Config, ctx: Context) -> anyhow::Result<()> {
    let metrics = Metrics::register(&ctx);
    let mut zones = zones::load_all(&config.zones)?;
    metrics
        .zone_loads
        .get_or_create(&metrics::ResultLabels { result: "ok" })
        .inc();
    log_zones(&zones);

    let checks = config
        .health_checks
        .iter()
        .map(|check| Ok((lower_name(&check.name)?, check.clone())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let health = HealthChecker::new(checks, metrics.clone(), ctx.shutdown.clone());
    health.reconcile(|name| answer::addresses_of(&zones, name));

    let cache_entries = config.dns.answer_cache_entries;
    let served =
        Served::build(&zones, &health.view(), cache_entries).map_err(anyhow::Error::msg)?;
    let dns = Arc::new(Dns {
        served: ArcSwap::from_pointee(served),
        metrics: metrics.clone(),
        max_udp_payload: config.dns.max_udp_payload,
    });

    let udp = server::bind_udp(config.dns.listen, config.dns.udp_receive_buffer)
        .map_err(|e| anyhow::anyhow!("cannot listen on udp {}: {e}", config.dns.listen))?;
    foobar_service::admin::log_listening("dns-udp", udp.local_addr()?);
    // TCP on the port UDP got, so `listen = "...:0"` gives one port for both.
    let tcp_addr = udp.local_addr()?;
    let tcp = foobar_service::admin::bind("dns-tcp", tcp_addr).await?;
    let udp_task = tokio::spawn(server::serve_udp(
        udp,
        Arc::clone(&dns),
        ctx.shutdown.clone(),
    ));
    let tcp_task = tokio::spawn(server::serve_tcp(
        tcp,
        Arc::clone(&dns),
        config.dns.clone(),
        ctx.shutdown.clone(),
    ));
    ctx.readiness.set(true);

    let mut reloads = ctx.reloads();
    let mut health_changes = health.changes();
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            Ok(()) = reloads.changed() => match zones::load_all(&config.zones) {
                Ok(loaded) => {
                    zones = loaded;
                    health.reconcile(|name| answer::addresses_of(&zones, name));
                    metrics.zone_loads.get_or_create(&metrics::ResultLabels { result: "ok" }).inc();
                    log_zones(&zones);
                }
                Err(e) => {
                    metrics.zone_loads.get_or_create(&metrics::ResultLabels { result: "refused" }).inc();
                    tracing::error!("zone reload refused, still serving the previous zones: {e}");
                    continue;
                }
            },
            Ok(()) = health_changes.changed() => {}
        }
        match Served::build(&zones, &health.view(), cache_entries) {
            Ok(served) => dns.served.store(Arc::new(served)),
            Err(e) => tracing::error!("cannot rebuild the answers, keeping the previous ones: {e}"),
        }
    }
    let _ = tokio::join!(udp_task, tcp_task);
    Ok(())
}

fn lower_name(name: &str) -> anyhow::Result<LowerName> {
    let mut name =
        Name::from_ascii(name).map_err(|e| anyhow::anyhow!("health_check name {name:?}: {e}"))?;
    name.set_fqdn(true);
    Ok(LowerName::from(name))
}

fn log_zones(zones: &[Zone]) {
    for zone in zones {
        tracing::info!(zone = %zone.origin, file = %zone.file.display(), records = zone.records.len(), "zone loaded");
    }
}
