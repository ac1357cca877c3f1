//! The default of every key of `balancer.toml`: what a file that leaves a key (or a whole
//! table) out gets, and what `--help` lists beside each environment override.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use foobar_service::CommonConfig;

use super::{
    Algorithm, Config, HealthConfig, HttpConfig, HttpsConfig, LimitsConfig, PoolConfig,
    TimeoutConfig,
};

impl Default for Config {
    fn default() -> Self {
        Self {
            service: CommonConfig::with_admin_port(9100),
            http: HttpConfig::default(),
            https: HttpsConfig::default(),
            pool: PoolConfig::default(),
            sites: Vec::new(),
            health: HealthConfig::default(),
            timeouts: TimeoutConfig::default(),
            limits: LimitsConfig::default(),
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

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::RoundRobin,
            backends: Vec::new(),
            resolve_interval: Duration::from_secs(5),
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
            healthy_statuses: Vec::new(),
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

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            max_header_size: 32 * 1024,
            max_body_size: 10 * 1024 * 1024,
            rate_limit_per_second: 0.0,
            rate_limit_burst: 100,
        }
    }
}
