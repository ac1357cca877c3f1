//! What the router's tests share: a router process in front of a replicated pair, and the
//! real clients (the `mariadb` command line, PyMySQL, sysbench) run against it.

pub mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::Context as _;
use foobar_service::testing::{self, RunningService};
use foobar_stack_tests::{
    APP_DATABASE, APP_PASSWORD, APP_USER, MONITOR_PASSWORD, MONITOR_USER, REPLICATION_PASSWORD,
    REPLICATION_USER,
};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

pub const BINARY: &str = env!("CARGO_BIN_EXE_foobar-db-router");

/// The account clients log in to the router with (a `[[users]]` entry).
pub const USER: &str = "app";
pub const PASSWORD: &str = "router-test-password";

/// The primary's and the replica's `@@server_id` in the image's test pair.
pub const PRIMARY_ID: &str = "1";
pub const REPLICA_ID: &str = "2";

/// A router config in front of `primary` and `replica` (watched by the monitor with the
/// image's monitor account), with `extra` TOML appended to the `[router]` table.
pub fn config(primary: &str, replica: &str, extra_router: &str) -> String {
    format!(
        r#"[service]
admin_listen = "127.0.0.1:0"
shutdown_timeout = "5s"

[router]
listen = "127.0.0.1:0"
connect_timeout = "2s"
{extra_router}

[[users]]
name = "{USER}"
password = "{PASSWORD}"

[backends]
primary = "{primary}"
replica = "{replica}"
user = "{APP_USER}"
password = "{APP_PASSWORD}"

[monitor]
user = "{MONITOR_USER}"
password = "{MONITOR_PASSWORD}"
replication_user = "{REPLICATION_USER}"
replication_password = "{REPLICATION_PASSWORD}"
"#
    )
}

/// A router process started from `config_toml`; its MySQL and admin addresses.
pub struct Router {
    pub service: RunningService,
    pub mysql: SocketAddr,
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Router {
    pub async fn start(config_toml: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db-router.toml");
        std::fs::write(&path, config_toml)?;
        let service =
            RunningService::start_ready(Path::new(BINARY), &path, &[], &["admin", "mysql"]).await?;
        let admin = service.addr("admin");
        Ok(Self {
            mysql: service.addr("mysql"),
            admin,
            service,
            _dir: dir,
        })
    }

    /// An sqlx pool through the router (sqlx sends its connect-time SET on each connection).
    pub async fn pool(&self, connections: u32) -> anyhow::Result<MySqlPool> {
        Ok(MySqlPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(self.options())
            .await?)
    }

    pub fn options(&self) -> MySqlConnectOptions {
        MySqlConnectOptions::new()
            .host("127.0.0.1")
            .port(self.mysql.port())
            .username(USER)
            .password(PASSWORD)
            .database(APP_DATABASE)
    }

    /// The value of one counter or gauge sample on `/metrics` (0 when absent).
    pub async fn metric(&self, sample: &str) -> anyhow::Result<f64> {
        let (_, body) = testing::http_get(self.admin, "/metrics").await?;
        Ok(body
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0))
    }
}

/// Runs a Python script (PyMySQL's steps) to its end: its stdout lines, or its stderr as
/// the error when it failed.
pub async fn python(script: &str) -> anyhow::Result<Vec<String>> {
    let out = tokio::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "PyMySQL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Runs `mariadb -N -B -e SQL` through `addr` in database foobar: stdout lines, tab-split.
pub async fn mariadb(addr: SocketAddr, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
    mariadb_rows(mariadb_with(addr, &[], sql).await?).with_context(|| format!("mariadb -e {sql:?}"))
}

/// A `mariadb -N -B` run's stdout lines, tab-split; its stderr when it failed.
pub fn mariadb_rows(out: Output) -> anyhow::Result<Vec<Vec<String>>> {
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect())
}

/// Runs `mariadb -N -B` with `options` (TLS flags) and `-e SQL` through `addr`, as the
/// account `USER`, in database foobar; whether it succeeded or not.
pub async fn mariadb_with(
    addr: SocketAddr,
    options: &[String],
    sql: &str,
) -> anyhow::Result<Output> {
    Ok(tokio::process::Command::new("mariadb")
        .args(["--protocol=TCP", "-h", "127.0.0.1", "-N", "-B"])
        .arg(format!("-P{}", addr.port()))
        .arg(format!("-u{USER}"))
        .arg(format!("-p{PASSWORD}"))
        .args(options)
        .arg(APP_DATABASE)
        .arg("-e")
        .arg(sql)
        .output()
        .await?)
}

/// A local CA and a certificate for 127.0.0.1 signed by it, as PEM files: what a TLS router
/// is configured with, and what its clients are told to trust.
pub struct Certificates {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl Certificates {
    pub fn generate() -> anyhow::Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "db-router test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca_key = KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, &ca_key);
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "db-router test");
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), ca.pem())?;
        std::fs::write(path("cert.pem"), cert.pem())?;
        std::fs::write(path("key.pem"), key.serialize_pem())?;
        Ok(Self {
            ca: path("ca.pem"),
            cert: path("cert.pem"),
            key: path("key.pem"),
            _dir: dir,
        })
    }

    /// The `[router]` keys of a router presenting this certificate.
    pub fn router_keys(&self, require_tls: bool) -> String {
        format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\nrequire_tls = {require_tls}\n",
            self.cert.display(),
            self.key.display()
        )
    }

    /// The `mariadb` options that make it use TLS and verify the router against this CA.
    pub fn verified(&self) -> Vec<String> {
        vec![
            "--ssl".to_owned(),
            format!("--ssl-ca={}", self.ca.display()),
            "--ssl-verify-server-cert".to_owned(),
        ]
    }
}
