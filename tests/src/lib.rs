//! Fixtures for tests across the stack: the project's own images, started with testcontainers
//! on private networks, so tests exercise what `docker compose up` runs.
//!
//! The images must exist locally (`make test` builds them first); nothing is pulled.

use std::net::SocketAddr;
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
/// Each node reports its container name as `report_host`, the name the other node reaches it
/// by. Where the host reaches a node's port 3306 (`primary_addr`, `replica_addr`):
/// - [`ReplicatedDatabase::start`]: a host port on 127.0.0.1 chosen once, so it stays the same
///   when a test kills and restarts the container;
/// - [`ReplicatedDatabase::start_internal`]: the container's own address on an internal
///   network, as compose's `data` network is. What a crash does there differs from a
///   published port: a killed node's address stops answering at all (no refusal from a
///   proxy), and a name lookup of it hangs in Docker's resolver (an internal network has no
///   upstream to answer "no such name"), as it does for the replica's reconnects in compose.
pub struct ReplicatedDatabase {
    pub network: String,
    pub primary: ContainerAsync<GenericImage>,
    pub replica: ContainerAsync<GenericImage>,
    pub primary_addr: SocketAddr,
    pub replica_addr: SocketAddr,
    internal: bool,
}

impl ReplicatedDatabase {
    pub async fn start() -> anyhow::Result<Self> {
        let network = unique("foobar-test");
        let (primary_port, replica_port) = (free_port()?, free_port()?);
        let (primary, replica) = start_pair(&network, |node, request| {
            let port = if node == "db-primary" {
                primary_port
            } else {
                replica_port
            };
            request.with_mapped_port(port, 3306.tcp())
        })
        .await?;
        let localhost = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Ok(Self {
            network,
            primary,
            replica,
            primary_addr: localhost(primary_port),
            replica_addr: localhost(replica_port),
            internal: false,
        })
    }

    /// The pair on an internal network (no published ports), reached at the containers' own
    /// addresses, which a restarted container keeps (Docker gives it the lowest free one
    /// again: check with [`ReplicatedDatabase::address`]).
    pub async fn start_internal() -> anyhow::Result<Self> {
        let network = unique("foobar-test");
        docker(&["network", "create", "--internal", &network]).await?;
        let pair = start_pair(&network, |_, request| request).await;
        let (primary, replica) = match pair {
            Ok(pair) => pair,
            Err(e) => {
                let _ = docker(&["network", "rm", &network]).await;
                return Err(e);
            }
        };
        let mut db = Self {
            primary_addr: SocketAddr::from(([0, 0, 0, 0], 3306)),
            replica_addr: SocketAddr::from(([0, 0, 0, 0], 3306)),
            network,
            primary,
            replica,
            internal: true,
        };
        db.primary_addr = db.address(&db.primary).await?;
        db.replica_addr = db.address(&db.replica).await?;
        Ok(db)
    }

    /// A running node's port 3306 at its address on the network.
    pub async fn address(&self, node: &ContainerAsync<GenericImage>) -> anyhow::Result<SocketAddr> {
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network
        );
        let ip = docker(&["inspect", "-f", &format, node.id()]).await?;
        Ok(SocketAddr::new(ip.trim().parse()?, 3306))
    }

    pub async fn primary_pool(&self) -> anyhow::Result<MySqlPool> {
        app_pool(&self.primary).await
    }

    pub async fn replica_pool(&self) -> anyhow::Result<MySqlPool> {
        app_pool(&self.replica).await
    }
}

impl Drop for ReplicatedDatabase {
    /// The internal network is this fixture's own (testcontainers removes only the networks
    /// it created): its containers go first, then it.
    fn drop(&mut self) {
        if self.internal {
            let run = |args: &[&str]| {
                let _ = std::process::Command::new("docker")
                    .args(args)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            };
            run(&["rm", "-f", "-v", self.primary.id(), self.replica.id()]);
            run(&["network", "rm", &self.network]);
        }
    }
}

/// Starts the primary, then the replica of it, on `network`; `publish` adds what differs per
/// node (its published port, or nothing).
async fn start_pair(
    network: &str,
    publish: impl Fn(
        &str,
        testcontainers::ContainerRequest<GenericImage>,
    ) -> testcontainers::ContainerRequest<GenericImage>,
) -> anyhow::Result<(ContainerAsync<GenericImage>, ContainerAsync<GenericImage>)> {
    let primary_name = format!("{network}-db-primary");
    let primary = publish(
        "db-primary",
        database_node(network, &primary_name, "db-primary", "primary", 1),
    )
    .start()
    .await?;
    let replica = publish(
        "db-replica",
        database_node(
            network,
            &format!("{network}-db-replica"),
            "db-replica",
            "replica",
            2,
        )
        .with_env_var("DB_PRIMARY_HOST", &primary_name),
    )
    .start()
    .await?;
    Ok((primary, replica))
}

/// Runs the docker CLI; its standard output, or an error with what it said.
pub async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "docker {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

/// Runs one check of a test that runs many in order against one costly fixture (the whole
/// stack, a swarm): says through `report` that it starts, then `ok` with its time or `FAILED`
/// with why. A failure joins `failures` and does not stop the checks after it.
pub async fn check(
    failures: &mut Vec<String>,
    report: fn(&str),
    name: &str,
    body: impl std::future::Future<Output = anyhow::Result<()>>,
) {
    report(name);
    let started = std::time::Instant::now();
    match body.await {
        Ok(()) => report(&format!(
            "ok ({:.1} s): {name}",
            started.elapsed().as_secs_f64()
        )),
        Err(error) => {
            report(&format!("FAILED: {name}: {error:#}"));
            failures.push(format!("{name}: {error:#}"));
        }
    }
}
