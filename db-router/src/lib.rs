//! foobar-db-router: a MySQL wire-protocol proxy beside each web server that splits reads and writes.
//!
//! A client logs in to the router (as a `[[users]]` account); each of its statements is
//! classified and sent to the writer or the reader over the session's own backend
//! connections, with the session's state (`SET`, `USE`, prepared statements) replayed on
//! each, and the answer relayed packet by packet. The modules, from the wire up:
//!
//! - [`compress`]: the compressed protocol's frames (zlib), a byte stream under the packets,
//!   for clients that ask for it.
//! - [`packet`]: 3-byte length + sequence id framing, 16 MiB splitting and joining.
//! - [`wire`]: capability and status flags, length-encoded values, OK / ERR / EOF packets,
//!   the statement id of a COM_STMT_* packet (read and rewritten).
//! - [`auth`]: mysql_native_password, checked for clients and answered for backends, and
//!   MariaDB's client_ed25519, answered for backends.
//! - [`handshake`]: the connection phase towards clients (TLS when configured) and towards
//!   backends.
//! - [`tokenizer`] and [`classifier`]: where a statement may run and what it changes.
//! - [`backend`]: one logged-in backend connection, and the [`backend::Connector`] that
//!   bounds and opens them.
//! - [`relay`]: a backend's response streamed to the client (and a client's LOAD DATA LOCAL
//!   file to the backend).
//! - [`prepared`]: one client statement id over statements prepared on several backends.
//! - [`session`]: a client's session: routing, state replay, read-your-writes.
//! - [`topology`]: which node takes writes and which takes reads; the monitor and failover.
//! - [`config`], [`metrics`]: the `[router]` and `[[users]]` tables; Prometheus counters.
//!
//! The shared parts (command line, config loading, admin listener, shutdown) come from
//! [`foobar_service`]; this crate holds only what is particular to the service.

pub mod auth;
pub mod backend;
pub mod classifier;
pub mod compress;
pub mod config;
pub mod handshake;
pub mod metrics;
pub mod packet;
pub mod prepared;
pub mod relay;
pub mod session;
pub mod tokenizer;
pub mod topology;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use foobar_service::{CommonConfig, Context, ServiceConfig, ServiceInfo, admin};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

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
    pub router: config::RouterConfig,
    /// The accounts clients log in to the router with.
    pub users: Vec<config::UserConfig>,
    pub backends: topology::BackendsConfig,
    pub monitor: topology::MonitorConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            service: CommonConfig::with_admin_port(9306),
            router: config::RouterConfig::default(),
            users: Vec::new(),
            backends: topology::BackendsConfig::default(),
            monitor: topology::MonitorConfig::default(),
        }
    }
}

impl ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.service
    }

    fn validate(&self) -> Result<(), String> {
        self.router.validate()
    }
}

/// Runs the service until `ctx.shutdown` is cancelled: accepts MySQL clients, one session
/// task each, then waits for the sessions to finish their current command.
pub async fn run(config: Config, ctx: Context) -> anyhow::Result<()> {
    let users = config::Users::resolve(&config.users)?;
    let backend_password = config::password(
        &config.backends.password,
        &config.backends.password_file,
        "backends.password",
    )
    .map_err(|e| anyhow::anyhow!("[backends]: {e:#}"))?;
    // The monitor: checks both nodes once before the first client, then keeps watching.
    let topology = topology::start(&config.backends, &config.monitor, &ctx).await?;
    ctx.add_admin_routes(topology::admin_routes(&topology));
    let metrics = metrics::Metrics::register(&ctx);
    let local_files = (config.router.load_data_local_max_bytes > 0).then(|| backend::LocalFiles {
        max_bytes: config.router.load_data_local_max_bytes,
        relayed: metrics.load_data_local_bytes.clone(),
    });
    let connector = backend::Connector::new(backend::ConnectorSettings {
        user: config.backends.user.clone(),
        password: backend_password,
        connect_timeout: config.router.connect_timeout,
        retry_after: config.router.reader_retry_after,
        max_per_node: config.router.max_backend_connections,
        max_packet: config.router.max_packet_size,
        local_files,
    });
    let tls = client_tls(&config.router)?;
    let shared = Arc::new(session::Shared {
        metrics,
        config: config.router.clone(),
        tls,
        users,
        topology,
        connector,
        next_connection_id: AtomicU32::new(1),
    });

    let listener = admin::bind("mysql", config.router.listen).await?;
    ctx.readiness.set(true);
    let limit = Arc::new(Semaphore::new(config.router.max_client_connections));
    let sessions = TaskTracker::new();
    while let Some((stream, peer)) = admin::accept(&listener, &ctx.shutdown).await {
        let _ = stream.set_nodelay(true);
        shared.metrics.sessions_total.inc();
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            shared.metrics.error("too_many_connections");
            sessions.spawn(refuse_too_many(stream, config.router.max_packet_size));
            continue;
        };
        let shared = Arc::clone(&shared);
        let shutdown = ctx.shutdown.clone();
        sessions.spawn(async move {
            shared.metrics.sessions.inc();
            session::serve(Arc::clone(&shared), stream, peer, shutdown).await;
            shared.metrics.sessions.dec();
            drop(permit);
        });
    }
    sessions.close();
    sessions.wait().await;
    Ok(())
}

/// TLS towards clients when `router.tls_cert` is set.
fn client_tls(
    router: &config::RouterConfig,
) -> anyhow::Result<Option<handshake::accept::ClientTls>> {
    if router.tls_cert.as_os_str().is_empty() {
        return Ok(None);
    }
    let server = foobar_service::tls::server_config(&router.tls_cert, &router.tls_key)
        .map_err(|e| anyhow::anyhow!("router.tls_cert, router.tls_key: {e:#}"))?;
    Ok(Some(handshake::accept::ClientTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        required: router.require_tls,
    }))
}

/// Error 1040 instead of a greeting, as a server at its connection limit answers.
async fn refuse_too_many(stream: tokio::net::TcpStream, max_packet: usize) {
    let mut client = packet::PacketStream::new(stream, max_packet);
    let err = wire::err_packet(wire::code::CON_COUNT, "Too many connections");
    let _ = client.send(0, &err).await;
    client.shutdown().await;
}
