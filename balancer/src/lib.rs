//! foobar-balancer: the load balancer in front of the web servers (HAProxy's role in the classic design).
//!
//! The shared parts (command line, config loading, admin listener, shutdown) come from
//! [`foobar_service`]; this crate holds only what is particular to the service.

use foobar_service::{CommonConfig, Context, ServiceConfig, ServiceInfo};
use serde::{Deserialize, Serialize};

pub const SERVICE: ServiceInfo = ServiceInfo {
    binary: "foobar-balancer",
    about: "HTTP(S) load balancer in front of the web servers: health-checked, draining, observable.",
    env_prefix: "FOOBAR_BALANCER",
    metrics_prefix: "foobar_balancer",
};

/// The service's configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub service: CommonConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            service: CommonConfig::with_admin_port(9100),
        }
    }
}

impl ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.service
    }
}

/// Runs the service until `ctx.shutdown` is cancelled.
pub async fn run(_config: Config, ctx: Context) -> anyhow::Result<()> {
    ctx.readiness.set(true);
    ctx.shutdown.cancelled().await;
    Ok(())
}
