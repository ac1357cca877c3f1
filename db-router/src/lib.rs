//! foobar-db-router: a MySQL wire-protocol proxy beside each web server that splits reads and writes.
//!
//! - [`topology`]: which node takes writes and which takes reads; the monitor and failover.
//!
//! The shared parts (command line, config loading, admin listener, shutdown) come from
//! [`foobar_service`]; this crate holds only what is particular to the service.

pub mod topology;

use foobar_service::{CommonConfig, Context, ServiceConfig, ServiceInfo};
use serde::{Deserialize, Serialize};

pub const SERVICE: ServiceInfo = ServiceInfo {
    binary: "foobar-db-router",
    about: "MySQL protocol proxy: writes to the primary, reads to the replica, failover by itself.",
    env_prefix: "FOOBAR_DB_ROUTER",
    metrics_prefix: "foobar_db_router",
};

/// The service's configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub service: CommonConfig,
    pub backends: topology::BackendsConfig,
    pub monitor: topology::MonitorConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            service: CommonConfig::with_admin_port(9306),
            backends: topology::BackendsConfig::default(),
            monitor: topology::MonitorConfig::default(),
        }
    }
}

impl ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.service
    }
}

/// Runs the service until `ctx.shutdown` is cancelled.
pub async fn run(config: Config, ctx: Context) -> anyhow::Result<()> {
    let topology = topology::start(&config.backends, &config.monitor, &ctx).await?;
    ctx.add_admin_routes(topology::admin_routes(&topology));
    ctx.readiness.set(true);
    ctx.shutdown.cancelled().await;
    Ok(())
}
