//! The `foobar-dns` configuration file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use foobar_service::{CommonConfig, ServiceConfig};
use serde::{Deserialize, Serialize};

/// `dns.toml`: where to listen, which zones to serve, which records to health-check.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub service: CommonConfig,
    pub dns: ListenerConfig,
    /// The zones this server is authoritative for.
    #[serde(rename = "zone")]
    pub zones: Vec<ZoneConfig>,
    /// Record sets whose addresses are probed; only healthy ones are answered.
    #[serde(rename = "health_check")]
    pub health_checks: Vec<HealthCheckConfig>,
}

/// The `[dns]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// UDP and TCP, on the same address.
    pub listen: SocketAddr,
    /// A TCP client that sends no whole query, or takes none of its answers, for this long
    /// is disconnected.
    #[serde(with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    /// TCP connections beyond this wait in the kernel's backlog.
    pub max_tcp_connections: usize,
    /// Ready-made answers kept; the cache is emptied when it is full, so memory stays bounded
    /// whatever names a flood of queries asks for.
    pub answer_cache_entries: usize,
    /// The largest UDP answer, whatever a client's EDNS buffer says (RFC 9715's 1232 default).
    pub max_udp_payload: u16,
    /// The UDP socket's receive buffer in bytes: room for a burst of queries while the server
    /// is busy. The kernel caps it at net.core.rmem_max.
    pub udp_receive_buffer: usize,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 53)),
            tcp_idle_timeout: Duration::from_secs(5),
            max_tcp_connections: 256,
            answer_cache_entries: 10_000,
            max_udp_payload: 1232,
            udp_receive_buffer: 1 << 20,
        }
    }
}

/// One `[[zone]]`: an RFC 1035 zone file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The zone's apex, e.g. `foobar.com`.
    pub origin: String,
    pub file: PathBuf,
}

/// One `[[health_check]]`: a record set of the zones whose addresses are probed over HTTP.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// The owner name of the record set, e.g. `www.foobar.com`; its A and AAAA records (from
    /// the zone file) are the addresses probed.
    pub name: String,
    /// The port of each address to probe.
    pub port: u16,
    /// The path an HTTP GET asks for; any 2xx answer is healthy.
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub interval: Duration,
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// Consecutive successes that make a down address up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that make an up address down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// The TTL of the answers: short, so clients notice a change soon.
    #[serde(with = "humantime_serde", default = "default_ttl")]
    pub ttl: Duration,
}

fn default_path() -> String {
    "/readyz".into()
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    2
}
fn default_ttl() -> Duration {
    Duration::from_secs(5)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            service: CommonConfig::with_admin_port(9153),
            dns: ListenerConfig::default(),
            zones: Vec::new(),
            health_checks: Vec::new(),
        }
    }
}

impl ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.service
    }

    fn validate(&self) -> Result<(), String> {
        if self.zones.is_empty() {
            return Err("no [[zone]]: the server would refuse every query".into());
        }
        for check in &self.health_checks {
            let name = &check.name;
            if check.rise == 0 || check.fall == 0 {
                return Err(format!(
                    "health_check {name}: rise and fall must be at least 1"
                ));
            }
            if check.timeout >= check.interval {
                return Err(format!(
                    "health_check {name}: timeout must be shorter than interval"
                ));
            }
            if !check.path.starts_with('/') {
                return Err(format!("health_check {name}: path must start with /"));
            }
            if check.ttl.as_secs() > u64::from(u32::MAX) {
                return Err(format!("health_check {name}: ttl too long"));
            }
        }
        if self.dns.max_udp_payload < 512 {
            return Err("dns.max_udp_payload must be at least 512".into());
        }
        Ok(())
    }
}
