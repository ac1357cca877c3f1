//! The `foobar-balancer` configuration file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use foobar_service::{CommonConfig, ServiceConfig};
use serde::{Deserialize, Serialize};

/// `balancer.toml`: the listener, the backend pool and how it is checked.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub service: CommonConfig,
    pub http: HttpConfig,
    pub https: HttpsConfig,
    pub pool: PoolConfig,
    pub health: HealthConfig,
    pub timeouts: TimeoutConfig,
}

/// The `[http]` table: plain HTTP.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Answer plain HTTP with a redirect to HTTPS (when HTTPS is enabled) instead of proxying.
    pub redirect_to_https: bool,
    /// The HTTPS port clients use, for the redirect's Location (443 is left out of it).
    pub https_port: u16,
}

/// The `[https]` table: TLS termination.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// PEM certificate chain; empty: use (and on first start make) a generated one.
    pub cert: PathBuf,
    /// PEM private key of `cert`; empty together with `cert`.
    pub key: PathBuf,
    /// Where the generated CA (`ca.pem`, to trust) and certificate live.
    pub generated_dir: PathBuf,
    /// Names the generated certificate is valid for.
    pub names: Vec<String>,
    /// `Strict-Transport-Security: max-age` on HTTPS answers; 0 leaves the header out.
    #[serde(with = "humantime_serde")]
    pub hsts_max_age: Duration,
}

impl Default for HttpsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            cert: PathBuf::new(),
            key: PathBuf::new(),
            generated_dir: PathBuf::from("/var/lib/foobar/tls"),
            names: vec![
                "www.foobar.com".into(),
                "foobar.com".into(),
                "localhost".into(),
            ],
            hsts_max_age: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// How a backend is chosen for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// In turn, in proportion to the weights (smooth weighted round robin, as nginx does).
    RoundRobin,
    /// The backend with the fewest requests in flight, relative to its weight.
    LeastConnections,
}

/// The `[pool]` table: the backends (the web servers).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub algorithm: Algorithm,
    pub backends: Vec<BackendConfig>,
}

/// One `[[pool.backends]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `host:port`; a host name is resolved when the balancer starts.
    pub address: String,
    #[serde(default = "one")]
    pub weight: u32,
    /// A backup gets traffic only while every non-backup backend is down (active-passive).
    #[serde(default)]
    pub backup: bool,
}

fn one() -> u32 {
    1
}

/// The `[health]` table: active checks of every backend.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// An HTTP GET of this path; 2xx is healthy.
    pub path: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive good checks that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures (checks, or connections that fail under traffic) that take an up
    /// backend down.
    pub fall: u32,
}

/// The `[timeouts]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutConfig {
    /// Connecting to a backend; past it the request is tried on another backend.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// From a request sent to its response's head; past it the client gets 504.
    #[serde(with = "humantime_serde")]
    pub response: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            service: CommonConfig::with_admin_port(9100),
            http: HttpConfig::default(),
            https: HttpsConfig::default(),
            pool: PoolConfig::default(),
            health: HealthConfig::default(),
            timeouts: TimeoutConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            redirect_to_https: true,
            https_port: 443,
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::RoundRobin,
            backends: Vec::new(),
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            path: "/readyz".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
        }
    }
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(1),
            response: Duration::from_secs(30),
        }
    }
}

impl ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.service
    }

    fn validate(&self) -> Result<(), String> {
        if self.pool.backends.is_empty() {
            return Err("pool.backends is empty: there is nowhere to send requests".into());
        }
        if self.pool.backends.iter().all(|b| b.backup) {
            return Err("pool.backends: every backend is a backup; mark at least one not".into());
        }
        if let Some(b) = self.pool.backends.iter().find(|b| b.weight == 0) {
            return Err(format!(
                "pool.backends {}: weight must be at least 1",
                b.address
            ));
        }
        if let Some(b) = self.pool.backends.iter().find(|b| !b.address.contains(':')) {
            return Err(format!(
                "pool.backends {}: address must be host:port",
                b.address
            ));
        }
        if self.health.rise == 0 || self.health.fall == 0 {
            return Err("health.rise and health.fall must be at least 1".into());
        }
        if self.health.timeout >= self.health.interval {
            return Err("health.timeout must be shorter than health.interval".into());
        }
        if self.https.cert.as_os_str().is_empty() != self.https.key.as_os_str().is_empty() {
            return Err("https.cert and https.key go together: set both or neither".into());
        }
        if self.https.enabled
            && self.https.cert.as_os_str().is_empty()
            && self.https.names.is_empty()
        {
            return Err("https.names is empty: the generated certificate needs a name".into());
        }
        if !self.health.path.starts_with('/') {
            return Err("health.path must start with /".into());
        }
        Ok(())
    }
}
