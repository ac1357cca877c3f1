//! The `foobar-balancer` configuration file.
//!
//! SIGHUP reads it again (see `reload.rs`): `[pool]`, `[[site]]`, `[health]`, `[timeouts]` and
//! `[limits]` take effect at once; `[http]`, `[https]` and `[service]` describe listeners and
//! need a restart.
//!
//! What one field can get wrong (a backend address, a weight, a site's name or hosts) is
//! checked while the file is read, so the error names its line and key; what needs several
//! tables is checked by `validate` (`config/validate.rs`). The default of every key, which a
//! file leaves out, is in `config/defaults.rs`. Both import this module's types and nothing
//! imports them: the tables here read alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use foobar_service::CommonConfig;
use serde::{Deserialize, Serialize};

mod defaults;
mod validate;

/// `balancer.toml`: the listener, the backend pool and how it is checked.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub service: CommonConfig,
    pub http: HttpConfig,
    pub https: HttpsConfig,
    pub pool: PoolConfig,
    /// `[[site]]`: pools of their own for some Host names; every other Host gets `[pool]`.
    #[serde(rename = "site", deserialize_with = "sites")]
    pub sites: Vec<SiteConfig>,
    pub health: HealthConfig,
    pub timeouts: TimeoutConfig,
    pub limits: LimitsConfig,
}

/// The `[http]` table: plain HTTP.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Answer plain HTTP with a redirect to HTTPS (when HTTPS is enabled) instead of proxying.
    pub redirect_to_https: bool,
    /// The HTTPS port clients use, for the redirect's Location (443 is left out of it).
    pub https_port: u16,
}

/// The `[https]` table: TLS termination.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    /// How often a backend given by host name is resolved again: each address it resolves to
    /// is a backend, so `docker compose up --scale web=3` is picked up without a restart.
    #[serde(with = "humantime_serde")]
    pub resolve_interval: Duration,
}

/// One `[[pool.backends]]` or `[[site.backends]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `ip:port`, or `name:port`: resolved every `pool.resolve_interval`, one backend per
    /// address (`name:port@ip`).
    #[serde(deserialize_with = "backend_address")]
    pub address: String,
    #[serde(default = "one", deserialize_with = "at_least_one")]
    pub weight: u32,
    /// A backup gets traffic only while every non-backup backend is down (active-passive).
    #[serde(default)]
    pub backup: bool,
}

/// Where a `[[pool.backends]]` entry points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IP address: one backend, named by the address as written.
    Fixed(std::net::SocketAddr),
    /// A host name, resolved again and again; each address it has is a backend.
    Name { host: String, port: u16 },
}

impl BackendConfig {
    /// What `address` names; None when it is not `ip:port`, `[ipv6]:port` or `name:port`.
    pub fn target(&self) -> Option<Target> {
        if let Ok(addr) = self.address.parse() {
            return Some(Target::Fixed(addr));
        }
        let (host, port) = self.address.rsplit_once(':')?;
        let port = port.parse().ok()?;
        let valid_name = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        valid_name.then(|| Target::Name {
            host: host.to_owned(),
            port,
        })
    }
}

fn one() -> u32 {
    1
}

/// The name of `[pool]` in metrics, logs and the status page; no site may take it.
pub const DEFAULT_POOL: &str = "default";

/// One `[[site]]`: requests whose Host (HTTP/2: `:authority`) is one of `hosts` go to this
/// site's own backends, as HAProxy's `use_backend NAME if { hdr(host) -i ... }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Its name in metrics (`pool` label), logs and the status page.
    #[serde(deserialize_with = "site_name")]
    pub name: String,
    /// Host names, exact and without port, compared case-insensitively (kept lower-cased).
    #[serde(deserialize_with = "host_names")]
    pub hosts: Vec<String>,
    #[serde(default = "round_robin")]
    pub algorithm: Algorithm,
    /// Checks of this site's backends: each key given here over the one of `[health]`.
    #[serde(default)]
    pub health: SiteHealthConfig,
    #[serde(deserialize_with = "backend_list")]
    pub backends: Vec<BackendConfig>,
}

fn round_robin() -> Algorithm {
    Algorithm::RoundRobin
}

/// `[site.health]`: any key of `[health]`; those left out are `[health]`'s.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiteHealthConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_statuses: Option<Vec<u16>>,
}

/// One pool as the config describes it: `[pool]` or a site's.
pub struct PoolSpec<'a> {
    pub name: &'a str,
    pub algorithm: Algorithm,
    pub backends: &'a [BackendConfig],
}

impl Config {
    /// `[pool]` (named [`DEFAULT_POOL`]), then each site's, in the file's order.
    pub fn pools(&self) -> impl Iterator<Item = PoolSpec<'_>> {
        let default = PoolSpec {
            name: DEFAULT_POOL,
            algorithm: self.pool.algorithm,
            backends: &self.pool.backends,
        };
        std::iter::once(default).chain(self.sites.iter().map(|site| PoolSpec {
            name: &site.name,
            algorithm: site.algorithm,
            backends: &site.backends,
        }))
    }

    /// How the backends of the pool named `pool` are checked: `[health]`, with a site's own
    /// `[site.health]` keys over it.
    pub fn health_of(&self, pool: &str) -> HealthConfig {
        let base = self.health.clone();
        let Some(own) = self
            .sites
            .iter()
            .find(|s| s.name == pool)
            .map(|s| &s.health)
        else {
            return base;
        };
        HealthConfig {
            path: own.path.clone().unwrap_or(base.path),
            interval: own.interval.unwrap_or(base.interval),
            timeout: own.timeout.unwrap_or(base.timeout),
            rise: own.rise.unwrap_or(base.rise),
            fall: own.fall.unwrap_or(base.fall),
            healthy_statuses: own
                .healthy_statuses
                .clone()
                .unwrap_or(base.healthy_statuses),
        }
    }
}

/// A backend address that [`BackendConfig::target`] understands.
fn backend_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let address = String::deserialize(d)?;
    let entry = BackendConfig {
        address,
        weight: 1,
        backup: false,
    };
    match entry.target() {
        Some(_) => Ok(entry.address),
        None => Err(serde::de::Error::custom(format!(
            "{:?}: a backend address is ip:port or name:port",
            entry.address
        ))),
    }
}

fn at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(serde::de::Error::custom("must be at least 1")),
        n => Ok(n),
    }
}

/// A site's backends: at least one, and not all of them backups.
fn backend_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<BackendConfig>, D::Error> {
    let backends = Vec::<BackendConfig>::deserialize(d)?;
    if backends.is_empty() {
        return Err(serde::de::Error::custom(
            "no backend: there is nowhere to send this site's requests",
        ));
    }
    if backends.iter().all(|b| b.backup) {
        return Err(serde::de::Error::custom(
            "every backend is a backup; mark at least one not",
        ));
    }
    Ok(backends)
}

/// A site's name: letters, digits, `-` and `_`, and not [`DEFAULT_POOL`].
fn site_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(serde::de::Error::custom(format!(
            "{name:?}: a site's name is letters, digits, - and _"
        )));
    }
    if name == DEFAULT_POOL {
        return Err(serde::de::Error::custom(format!(
            "{DEFAULT_POOL:?} is [pool]'s name; choose another"
        )));
    }
    Ok(name)
}

/// A site's host names: at least one, each a DNS name without port; lower-cased.
fn host_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let hosts = Vec::<String>::deserialize(d)?;
    if hosts.is_empty() {
        return Err(serde::de::Error::custom(
            "no host: name at least one (a site's hosts are matched exactly)",
        ));
    }
    if let Some(bad) = hosts.iter().find(|h| !is_host_name(h)) {
        return Err(serde::de::Error::custom(format!(
            "{bad:?}: a host is a name such as status.foobar.com, without port or wildcard"
        )));
    }
    Ok(hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect())
}

fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The `[[site]]` list: no two sites share a name or a host.
fn sites<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SiteConfig>, D::Error> {
    let sites = Vec::<SiteConfig>::deserialize(d)?;
    for (i, site) in sites.iter().enumerate() {
        for earlier in &sites[..i] {
            if earlier.name == site.name {
                return Err(serde::de::Error::custom(format!(
                    "two sites are named {:?}",
                    site.name
                )));
            }
            if let Some(host) = site.hosts.iter().find(|h| earlier.hosts.contains(h)) {
                return Err(serde::de::Error::custom(format!(
                    "host {host:?} is in site {:?} and in site {:?}",
                    earlier.name, site.name
                )));
            }
        }
    }
    Ok(sites)
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
    /// The statuses that count as healthy; empty: any 2xx. A backend behind its own login
    /// (Prometheus with basic auth answers 401 to a check without one) is alive when it
    /// answers that.
    pub healthy_statuses: Vec<u16>,
}

impl HealthConfig {
    /// Whether a check that got `status` passed.
    pub fn healthy(&self, status: u16) -> bool {
        if self.healthy_statuses.is_empty() {
            (200..300).contains(&status)
        } else {
            self.healthy_statuses.contains(&status)
        }
    }
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

/// The `[limits]` table: what one client may ask of the balancer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Client connections open at once. Past it, new connections wait in the kernel's accept
    /// queue until one closes (HAProxy's `maxconn`): slower, never refused.
    pub max_connections: usize,
    /// A client must send its TLS handshake, and each request's line and headers, within this
    /// (slowloris); a kept-alive connection idle this long is closed. HTTP/2: the preface
    /// within it, GOAWAY after it with no stream open, a stream reset when the client's
    /// window stays shut for it (`http2.rs`).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Bytes of request line and headers (HTTP/1.1), or of the header list (HTTP/2); past it:
    /// 431. At least 8192.
    pub max_header_size: usize,
    /// Bytes of request body, announced (Content-Length) or counted as it streams
    /// (chunked, HTTP/2); past it: 413.
    pub max_body_size: u64,
    /// Requests per second each client IP address may make on average; 0: no limit. Past it
    /// (and its burst): 429 with `Retry-After`.
    pub rate_limit_per_second: f64,
    /// Requests a client IP address may make at once before the rate applies.
    pub rate_limit_burst: u32,
}

/// The smallest `max_header_size`: a browser's request line and usual headers fit in 8 KiB,
/// and no smaller limit is worth the 431s it would cause.
pub const MIN_HEADER_SIZE: usize = 8192;

#[cfg(test)]
mod tests {
    use super::*;
    use foobar_service::ServiceConfig;

    fn target(address: &str) -> Option<Target> {
        BackendConfig {
            address: address.into(),
            weight: 1,
            backup: false,
        }
        .target()
    }

    #[test]
    fn backend_addresses_are_ips_or_names_with_a_port() {
        assert_eq!(
            target("10.0.0.5:8080"),
            Some(Target::Fixed("10.0.0.5:8080".parse().unwrap()))
        );
        assert_eq!(
            target("[::1]:80"),
            Some(Target::Fixed("[::1]:80".parse().unwrap()))
        );
        assert_eq!(
            target("web-a:8080"),
            Some(Target::Name {
                host: "web-a".into(),
                port: 8080
            })
        );
        for bad in ["web-a", "web-a:http", ":8080", "web a:80", "web:99999"] {
            assert_eq!(target(bad), None, "{bad}");
        }
    }

    const SITE: &str = "[[pool.backends]]\naddress = \"web-a:8080\"\n\n\
                        [[site]]\nname = \"status\"\nhosts = [\"Status.FooBar.com\"]\n\
                        [site.health]\npath = \"/-/ready\"\n\
                        [[site.backends]]\naddress = \"prometheus:9090\"\n";

    fn parse(text: &str) -> Result<Config, String> {
        let source = foobar_service::config::Source {
            path: "balancer.toml".into(),
            text: text.to_owned(),
        };
        let config: Config = foobar_service::config::parse(&source).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn a_site_has_its_own_backends_hosts_and_health_over_the_defaults() {
        let config = parse(SITE).unwrap();
        let names: Vec<_> = config.pools().map(|p| (p.name, p.backends.len())).collect();
        assert_eq!(names, [(DEFAULT_POOL, 1), ("status", 1)]);
        assert_eq!(config.sites[0].hosts, ["status.foobar.com"], "lower-cased");
        let health = config.health_of("status");
        assert_eq!(health.path, "/-/ready");
        assert_eq!(
            health.interval, config.health.interval,
            "the rest is [health]'s"
        );
        assert_eq!(config.health_of(DEFAULT_POOL).path, "/readyz");
        let rendered = foobar_service::config::render(&config);
        let again = parse(&rendered).unwrap();
        assert_eq!(again.health_of("status").path, "/-/ready", "{rendered}");
    }

    #[test]
    fn a_site_behind_a_login_is_healthy_when_it_answers_its_status() {
        let config = parse(&SITE.replace(
            "path = \"/-/ready\"\n",
            "path = \"/-/ready\"\nhealthy_statuses = [401]\n",
        ))
        .unwrap();
        let status = config.health_of("status");
        assert!(status.healthy(401) && !status.healthy(200) && !status.healthy(503));
        let default = config.health_of(DEFAULT_POOL);
        assert!(default.healthy(200) && default.healthy(204) && !default.healthy(401));
        assert!(!default.healthy(302) && !default.healthy(500));
        let rendered = foobar_service::config::render(&config);
        assert!(
            parse(&rendered).unwrap().health_of("status").healthy(401),
            "{rendered}"
        );
        for bad in ["[0]", "[99]", "[600]"] {
            let text = SITE.replace(
                "path = \"/-/ready\"\n",
                &format!("path = \"/-/ready\"\nhealthy_statuses = {bad}\n"),
            );
            let error = parse(&text).expect_err(bad);
            assert!(error.contains("healthy_statuses"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_bad_site_is_refused_with_its_line_and_key() {
        let cases = [
            (
                "name = \"status\"",
                "name = \"default\"",
                ":5:8: key `site[0].name`",
            ),
            (
                "hosts = [\"Status.FooBar.com\"]",
                "hosts = [\"status.foobar.com:8443\"]",
                ":6:9: key `site[0].hosts`",
            ),
            (
                "hosts = [\"Status.FooBar.com\"]",
                "hosts = []",
                ":6:9: key `site[0].hosts`",
            ),
            (
                "address = \"prometheus:9090\"",
                "address = \"prometheus\"",
                ":10:11: key `site[0].backends[0].address`",
            ),
            (
                "path = \"/-/ready\"",
                "paht = \"/-/ready\"",
                ":8:1: key `site[0].health.paht`",
            ),
            (
                "[site.health]",
                "colour = \"red\"\n[site.health]",
                ":7:1: key `site[0].colour`",
            ),
        ];
        for (from, to, expected) in cases {
            let err = parse(&SITE.replace(from, to)).unwrap_err();
            assert!(
                err.starts_with("balancer.toml") && err.contains(expected),
                "{to}: {err}"
            );
        }
        let site = &SITE[SITE.find("[[site]]").unwrap()..];
        let err = parse(&format!("{SITE}\n{site}")).unwrap_err();
        assert!(
            err.contains("key `site`") && err.contains("two sites are named"),
            "{err}"
        );
        let other = site.replace("name = \"status\"", "name = \"other\"");
        let err = parse(&format!("{SITE}\n{other}")).unwrap_err();
        assert!(
            err.contains("host \"status.foobar.com\" is in site"),
            "{err}"
        );
        let err = parse(&SITE.replace("path = \"/-/ready\"", "timeout = \"5s\"")).unwrap_err();
        assert_eq!(
            err,
            "site status: health.timeout must be shorter than health.interval"
        );
    }
}
