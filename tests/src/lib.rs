//! Fixtures for tests across the stack: the project's own images, started with testcontainers
//! on private networks, so tests exercise what `docker compose up` runs.
//!
//! The images must exist locally (`make test` builds them first); nothing is pulled.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// The database image `make test` builds from docker/mariadb.
pub const MARIADB_IMAGE: (&str, &str) = ("foobar/mariadb", "dev");

/// The app account the image creates on the primary (and replication copies to the replica).
pub const APP_USER: &str = "foobar";
pub const APP_PASSWORD: &str = "app-test-password";
pub const APP_DATABASE: &str = "foobar";
pub const ROOT_PASSWORD: &str = "root-test-password";
/// The account foobar-db-router's monitor uses (the image's `DB_MONITOR_USER`).
pub const MONITOR_USER: &str = "monitor";
pub const MONITOR_PASSWORD: &str = "monitor-test-password";
pub const REPLICATION_USER: &str = "repl";
pub const REPLICATION_PASSWORD: &str = "repl-test-password";

/// A MariaDB first start on two cores takes tens of seconds; give it room.
const DB_STARTUP: Duration = Duration::from_secs(180);

/// A name no other test run uses, for networks and containers.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos:08x}", std::process::id())
}

/// A primary and a replica from the project's image, replicating on a private network.
/// Dropping it removes both containers (testcontainers does so).
///
/// Each node's port 3306 is published on a host port chosen once (`primary_port`,
/// `replica_port`), so it stays the same when a test kills and restarts the container. Each
/// node reports its container name as `report_host`, the name the other node reaches it by.
pub struct ReplicatedDatabase {
    pub network: String,
    pub primary: ContainerAsync<GenericImage>,
    pub replica: ContainerAsync<GenericImage>,
    pub primary_port: u16,
    pub replica_port: u16,
}

impl ReplicatedDatabase {
    pub async fn start() -> anyhow::Result<Self> {
        let network = unique("foobar-test");
        let primary_name = format!("{network}-db-primary");
        let primary_port = free_port()?;
        let primary = database_node(&network, &primary_name, "db-primary", "primary", 1)
            .with_mapped_port(primary_port, 3306.tcp())
            .start()
            .await?;
        let replica_port = free_port()?;
        let replica = database_node(
            &network,
            &format!("{network}-db-replica"),
            "db-replica",
            "replica",
            2,
        )
        .with_env_var("DB_PRIMARY_HOST", &primary_name)
        .with_mapped_port(replica_port, 3306.tcp())
        .start()
        .await?;
        Ok(Self {
            network,
            primary,
            replica,
            primary_port,
            replica_port,
        })
    }

    pub async fn primary_pool(&self) -> anyhow::Result<MySqlPool> {
        app_pool(&self.primary).await
    }

    pub async fn replica_pool(&self) -> anyhow::Result<MySqlPool> {
        app_pool(&self.replica).await
    }
}

/// A primary alone (no replica) whose port 3306 is published on the host's `host_port`, so a
/// test can stop and start it and find it again at the same address (a port Docker picks
/// changes when the container restarts).
pub async fn primary_on_port(host_port: u16) -> anyhow::Result<ContainerAsync<GenericImage>> {
    let network = unique("foobar-test");
    let container = database_node(
        &network,
        &format!("{network}-db-primary"),
        "db-primary",
        "primary",
        1,
    )
    .with_mapped_port(host_port, 3306.tcp())
    .start()
    .await?;
    Ok(container)
}

fn database_node(
    network: &str,
    container: &str,
    hostname: &str,
    role: &str,
    server_id: u32,
) -> testcontainers::ContainerRequest<GenericImage> {
    GenericImage::new(MARIADB_IMAGE.0, MARIADB_IMAGE.1)
        .with_exposed_port(3306.tcp())
        .with_wait_for(WaitFor::healthcheck())
        .with_network(network)
        .with_container_name(container)
        .with_hostname(hostname)
        .with_env_var("DB_ROLE", role)
        .with_env_var("DB_SERVER_ID", server_id.to_string())
        .with_env_var("DB_ROOT_PASSWORD", ROOT_PASSWORD)
        .with_env_var("DB_REPLICATION_PASSWORD", REPLICATION_PASSWORD)
        .with_env_var("DB_APP_PASSWORD", APP_PASSWORD)
        .with_env_var("DB_MONITOR_PASSWORD", MONITOR_PASSWORD)
        .with_env_var("DB_REPORT_HOST", container)
        .with_startup_timeout(DB_STARTUP)
}

/// A port nothing listens on now, for a fixed host port mapping.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("0.0.0.0:0")?
        .local_addr()?
        .port())
}

/// A small pool logged in as the app user, through the port Docker mapped on 127.0.0.1.
pub async fn app_pool(node: &ContainerAsync<GenericImage>) -> anyhow::Result<MySqlPool> {
    let port = node.get_host_port_ipv4(3306).await?;
    let options = MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username(APP_USER)
        .password(APP_PASSWORD)
        .database(APP_DATABASE);
    Ok(MySqlPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?)
}
