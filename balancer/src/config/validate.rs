//! The rules a config must keep that no single field can check alone (they span keys or
//! tables), applied by `ServiceConfig::validate` after the file is read, at start and on
//! every reload. What one field can get wrong is refused while it is read (`config.rs`).

use std::time::Duration;

use foobar_service::{CommonConfig, ServiceConfig};

use super::{Config, DEFAULT_POOL, HealthConfig, MIN_HEADER_SIZE};

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
        for pool in self.pools() {
            check_health(&self.health_of(pool.name)).map_err(|e| match pool.name {
                DEFAULT_POOL => e,
                site => format!("site {site}: {e}"),
            })?;
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
        if self.pool.resolve_interval < Duration::from_millis(100) {
            return Err("pool.resolve_interval must be at least 100ms".into());
        }
        let limits = &self.limits;
        if limits.max_connections == 0 {
            return Err("limits.max_connections must be at least 1".into());
        }
        if limits.header_read_timeout.is_zero() {
            return Err("limits.header_read_timeout must be more than 0".into());
        }
        if limits.max_header_size < MIN_HEADER_SIZE || limits.max_header_size > u32::MAX as usize {
            return Err(format!(
                "limits.max_header_size must be at least {MIN_HEADER_SIZE} bytes"
            ));
        }
        if !limits.rate_limit_per_second.is_finite() || limits.rate_limit_per_second < 0.0 {
            return Err("limits.rate_limit_per_second must be 0 (no limit) or more".into());
        }
        if limits.rate_limit_per_second > 0.0 && limits.rate_limit_burst == 0 {
            return Err("limits.rate_limit_burst must be at least 1 when a rate is set".into());
        }
        Ok(())
    }
}

/// What `validate` asks of `[health]` and of each site's checks.
fn check_health(health: &HealthConfig) -> Result<(), String> {
    if health.rise == 0 || health.fall == 0 {
        return Err("health.rise and health.fall must be at least 1".into());
    }
    if health.timeout >= health.interval {
        return Err("health.timeout must be shorter than health.interval".into());
    }
    if !health.path.starts_with('/') {
        return Err("health.path must start with /".into());
    }
    if let Some(status) = health
        .healthy_statuses
        .iter()
        .find(|status| !(100..=599).contains(*status))
    {
        return Err(format!(
            "health.healthy_statuses: {status} is not an HTTP status (100 to 599)"
        ));
    }
    Ok(())
}
