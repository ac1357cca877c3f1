//! One client's session: read a command, decide where it runs, make that backend connection
//! ready (open, logged in, session state replayed), send the command, relay the answer.
//!
//! A session has at most one connection to the writer and one to the reader, opened when
//! first needed and closed with the session (so a killed client's open transaction is rolled
//! back by the server). Where a command goes, and how what it did changes that, is decided
//! by [`routing::Routing`], without I/O; this module does the I/O. With `consistency =
//! "session"` a read on the reader first waits (briefly) for the session's last write GTID
//! there, and goes to the writer if it does not arrive.
//!
//! A read whose reader cannot be reached goes to the writer. A write that reached a backend
//! is never sent again: if the connection breaks, the client is told it may or may not have
//! run.

mod ready;
pub mod routing;
mod statements;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, BackendError, Connector};
use crate::classifier::{self, Route};
use crate::config::{RouterConfig, Users};
use crate::handshake;
use crate::handshake::accept::{self, ClientConnection, ClientLogin, ClientTls, LoginError};
use crate::metrics::Metrics;
use crate::packet::{PacketError, PacketStream};
use crate::prepared::Statements;
use crate::relay::{self, Outcome, RelayError, Shape};
use crate::topology::{Role, Topology};
use crate::wire::{self, cap, code, com, status};

use routing::{Applied, Open, Routing};

/// What every session shares.
pub struct Shared {
    pub config: RouterConfig,
    /// TLS towards clients, when a certificate is configured.
    pub tls: Option<ClientTls>,
    pub users: Users,
    pub topology: Topology,
    pub connector: Connector,
    pub metrics: Metrics,
    pub next_connection_id: AtomicU32,
}

/// Whether the session goes on after a command.
enum Flow {
    Continue,
    Close,
}

/// An error the router answers a command with itself.
struct Refusal {
    code: u16,
    sqlstate: String,
    message: String,
    reason: &'static str,
}

impl Refusal {
    /// The backend connection broke after the statement was sent, before its answer.
    fn lost_mid_statement(error: &BackendError) -> Self {
        Self::new(
            code::BACKEND_LOST,
            format!("foobar-db-router: {error}; the statement may or may not have run"),
            "backend_lost",
        )
    }

    /// CREATE TEMPORARY TABLE inside `START TRANSACTION READ ONLY`, as a query or a prepared
    /// statement. Made there, the table would be made on the reader, where the read-only
    /// transaction runs, while a session's temporary tables pin it to the writer (every
    /// statement after it, the COMMIT too, would go to a connection that has neither the
    /// table nor the transaction). MariaDB itself allows it; the router cannot keep it, so it
    /// says so before anything runs.
    fn temporary_in_read_only() -> Self {
        Self::new(
            code::NOT_SUPPORTED,
            "foobar-db-router: CREATE TEMPORARY TABLE inside START TRANSACTION READ ONLY is \
             not supported (the transaction runs on the replica, a session's temporary tables \
             on the primary); create the table before the transaction, or start it without \
             READ ONLY",
            "temporary_in_read_only",
        )
    }

    fn new(
        (code, sqlstate): (u16, &str),
        message: impl Into<String>,
        reason: &'static str,
    ) -> Self {
        Self {
            code,
            sqlstate: sqlstate.to_owned(),
            message: message.into(),
            reason,
        }
    }
}

/// Serves one accepted client connection to its end.
pub async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
    let peer_host = peer.ip().to_string();
    let accepting = accept::accept_client(
        stream,
        shared.tls.as_ref(),
        &shared.users,
        id,
        &peer_host,
        shared.config.max_packet_size,
    );
    let (client, login) = match tokio::time::timeout(shared.config.login_timeout, accepting).await {
        Ok(Ok(accepted)) => accepted,
        Err(_) => {
            shared.metrics.error("login_timeout");
            tracing::debug!(%peer, "not logged in within router.login_timeout");
            return;
        }
        Ok(Err(LoginError::Denied(user))) => {
            shared.metrics.error("access_denied");
            tracing::info!(%peer, user, "access denied");
            return;
        }
        Ok(Err(LoginError::Tls(e))) => {
            shared.metrics.error("tls_handshake");
            tracing::warn!(%peer, "TLS handshake failed: {e}");
            return;
        }
        Ok(Err(LoginError::InsecureTransport)) => {
            shared.metrics.error("tls_required");
            tracing::info!(%peer, "refused a login without TLS (router.require_tls)");
            return;
        }
        Ok(Err(e)) => {
            shared.metrics.error("handshake");
            tracing::debug!(%peer, "handshake failed: {e}");
            return;
        }
    };
    tracing::debug!(%peer, user = login.user, "client logged in");
    match client {
        ClientConnection::Plain(c) => start(shared, c, login, peer_host, "plain", shutdown).await,
        ClientConnection::Tls(c) => start(shared, c, login, peer_host, "tls", shutdown).await,
        ClientConnection::Compressed(c) => {
            start(shared, c, login, peer_host, "plain+zlib", shutdown).await;
        }
        ClientConnection::TlsCompressed(c) => {
            start(shared, c, login, peer_host, "tls+zlib", shutdown).await;
        }
    }
}

/// Counts the login by `transport` and serves the session to its end.
async fn start<C: AsyncRead + AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    client: PacketStream<C>,
    login: ClientLogin,
    peer: String,
    transport: &'static str,
    shutdown: CancellationToken,
) {
    shared.metrics.login(transport);
    Session::new(shared, client, login, peer)
        .serve(shutdown)
        .await;
}

struct Session<C> {
    shared: Arc<Shared>,
    client: PacketStream<C>,
    login: ClientLogin,
    peer: String,
    writer: Option<Backend>,
    reader: Option<Backend>,
    /// Where statements go, and the state every backend connection is brought to.
    routing: Routing,
    statements: Statements,
}

impl<C: AsyncRead + AsyncWrite + Unpin> Session<C> {
    fn new(shared: Arc<Shared>, client: PacketStream<C>, login: ClientLogin, peer: String) -> Self {
        Self {
            routing: Routing::new(login.database.clone()),
            login,
            shared,
            client,
            peer,
            writer: None,
            reader: None,
            statements: Statements::default(),
        }
    }

    /// Runs the session until the client leaves or the router shuts down, then closes it.
    async fn serve(mut self, shutdown: CancellationToken) {
        self.run(shutdown).await;
        self.close().await;
    }

    async fn run(&mut self, shutdown: CancellationToken) {
        let idle = self.shared.config.client_idle_timeout;
        loop {
            let read = tokio::select! {
                () = shutdown.cancelled() => return,
                read = tokio::time::timeout(idle, self.client.read_packet()) => read,
            };
            let (seq, payload) = match read {
                Err(_) => {
                    tracing::debug!(peer = self.peer, "idle timeout");
                    return;
                }
                Ok(Ok(packet)) => packet,
                Ok(Err(PacketError::Closed)) => return,
                Ok(Err(e @ PacketError::TooLarge { .. })) => {
                    let refusal =
                        Refusal::new(code::PACKET_TOO_LARGE, e.to_string(), "packet_too_large");
                    let _ = self.refuse(refusal).await;
                    return;
                }
                Ok(Err(e)) => {
                    let message = format!("Got an error reading communication packets: {e}");
                    let _ = self
                        .refuse(Refusal::new(code::NET_READ, message, "protocol"))
                        .await;
                    return;
                }
            };
            if seq != 0 {
                self.shared.metrics.error("protocol");
                let _ = self
                    .fail(
                        seq.wrapping_add(1),
                        code::PACKETS_OUT_OF_ORDER,
                        "Got packets out of order",
                    )
                    .await;
                return;
            }
            match self.command(payload).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close) => return,
                Err(e) => {
                    tracing::debug!(peer = self.peer, "client connection: {e}");
                    return;
                }
            }
        }
    }

    /// Sends an ERR packet to the client.
    async fn fail(&mut self, seq: u8, code: (u16, &str), message: &str) -> std::io::Result<()> {
        self.client
            .send(seq, &wire::err_packet(code, message))
            .await
            .map(drop)
    }

    async fn refuse(&mut self, refusal: Refusal) -> std::io::Result<()> {
        self.shared.metrics.error(refusal.reason);
        self.fail(1, (refusal.code, &refusal.sqlstate), &refusal.message)
            .await
    }

    async fn command(&mut self, payload: BytesMut) -> std::io::Result<Flow> {
        let Some(&command) = payload.first() else {
            return self.malformed("empty command").await;
        };
        match command {
            com::QUIT => return Ok(Flow::Close),
            com::PING => {
                let ok = wire::ok_packet(self.routing.client_status(), self.login.caps);
                self.client.send(1, &ok).await?;
            }
            com::QUERY => self.query(&payload).await?,
            com::INIT_DB => {
                let database = String::from_utf8_lossy(&payload[1..]).into_owned();
                let role = self.routing.choose(self.open(), Route::Session, None);
                if let Some((_, outcome)) = self
                    .run_command(&payload, Route::Session, role, Shape::Results, "session")
                    .await?
                    && outcome.error.is_none()
                {
                    self.set_database(role, database);
                }
            }
            com::FIELD_LIST => {
                let role = self.routing.choose(self.open(), Route::Read, None);
                self.run_command(&payload, Route::Read, role, Shape::Columns, "read")
                    .await?;
            }
            com::STATISTICS => {
                self.run_command(&payload, Route::Write, Role::Writer, Shape::Single, "other")
                    .await?;
            }
            com::RESET_CONNECTION => {
                self.reset().await;
                let ok = wire::ok_packet(status::AUTOCOMMIT, self.login.caps);
                self.client.send(1, &ok).await?;
            }
            com::CHANGE_USER => return self.change_user(&payload).await,
            com::STMT_PREPARE => self.prepare(&payload).await?,
            com::STMT_EXECUTE => return self.execute(&payload).await,
            com::STMT_SEND_LONG_DATA => return self.long_data(payload).await,
            com::STMT_CLOSE => self.close_statement(&payload).await,
            com::STMT_RESET => return self.reset_statement(&payload).await,
            com::STMT_FETCH => return self.fetch(&payload).await,
            com::SET_OPTION => self.set_option(&payload).await?,
            other => {
                let message = format!("Unknown command 0x{other:02x}");
                self.refuse(Refusal::new(code::UNKNOWN_COM, message, "unknown_command"))
                    .await?;
            }
        }
        Ok(Flow::Continue)
    }

    /// What the open backend connections tell the routing decision.
    fn open(&self) -> Open {
        Open {
            writer: self.writer.is_some(),
            reader_in_transaction: self
                .reader
                .as_ref()
                .is_some_and(|r| r.status & status::IN_TRANS != 0),
        }
    }

    fn slot(&mut self, role: Role) -> &mut Option<Backend> {
        self.slot_and_client(role).0
    }

    /// The `role` connection and the client, borrowed together for a relay.
    fn slot_and_client(&mut self, role: Role) -> (&mut Option<Backend>, &mut PacketStream<C>) {
        match role {
            Role::Writer => (&mut self.writer, &mut self.client),
            Role::Reader => (&mut self.reader, &mut self.client),
        }
    }

    /// Counts a query of `kind` on `role`, sends `payload` to that connection and relays its
    /// answer (of `shape`) to the client, recording a writer's GTIDs in the topology's
    /// ledger. None when the role has no connection open.
    async fn send_and_relay(
        &mut self,
        role: Role,
        kind: &'static str,
        payload: &[u8],
        shape: Shape,
    ) -> Option<Result<Outcome, RelayError>> {
        self.shared.metrics.query(role.label(), kind);
        let caps = self.login.caps;
        let shared = Arc::clone(&self.shared);
        let ledger = (role == Role::Writer).then(|| shared.topology.ledger());
        let (slot, client) = self.slot_and_client(role);
        let backend = slot.as_mut()?;
        Some(match backend.send_command(payload).await {
            Ok(()) => relay::relay(backend, client, ledger, caps, shape).await,
            Err(error) => Err(RelayError::Backend {
                error,
                forwarded: false,
            }),
        })
    }

    /// Sends `payload` to a backend of `want` (see [`Session::acquire`]) and relays the
    /// answer. A read whose reader connection breaks before answering is run on the writer;
    /// anything else that may have reached a backend is never sent again.
    async fn run_command(
        &mut self,
        payload: &[u8],
        route: Route,
        want: Role,
        shape: Shape,
        kind: &'static str,
    ) -> std::io::Result<Option<(Role, Outcome)>> {
        let mut want = want;
        loop {
            let role = match self.acquire(want).await {
                Ok(role) => role,
                Err(refusal) => {
                    self.refuse(refusal).await?;
                    return Ok(None);
                }
            };
            let Some(result) = self.send_and_relay(role, kind, payload, shape).await else {
                return Ok(None);
            };
            match result {
                Ok(outcome) => {
                    if outcome.backend_closed {
                        self.drop_closed(role);
                    }
                    self.after(role, &outcome);
                    return Ok(Some((role, outcome)));
                }
                Err(RelayError::Client(e)) => return Err(e),
                Err(RelayError::Backend { error, forwarded }) => {
                    self.lose(role, &error);
                    if forwarded {
                        return Err(std::io::Error::other(error.to_string()));
                    }
                    if Routing::retry_on_writer(role, route) {
                        self.shared.metrics.fallback("reader_lost");
                        want = Role::Writer;
                        continue;
                    }
                    self.refuse(Refusal::lost_mid_statement(&error)).await?;
                    return Ok(None);
                }
            }
        }
    }

    /// A backend connection broke: drop it, tell the topology, forget its transaction.
    fn lose(&mut self, role: Role, error: &BackendError) {
        tracing::warn!(peer = self.peer, "{error}");
        if let Some(backend) = self.slot(role).take() {
            self.shared
                .topology
                .report_failure(&backend.node, &error.to_string());
        }
        self.routing.lost(role);
    }

    /// The relay shut the `role` connection down mid-statement (a LOAD DATA LOCAL file over
    /// the limit): the node is fine, but what the connection held is gone, as when it breaks.
    fn drop_closed(&mut self, role: Role) {
        self.shared.metrics.error("load_data_local_too_large");
        self.slot(role).take();
        self.routing.lost(role);
    }

    /// What the session learns from a relayed response.
    fn after(&mut self, role: Role, outcome: &Outcome) {
        let status = match (role, &self.writer) {
            (Role::Writer, Some(writer)) => writer.status,
            _ => self.routing.writer_status,
        };
        self.routing
            .answered(role, status, outcome.last_gtid.as_deref());
        if let Some(schema) = &outcome.schema {
            self.set_database(role, schema.clone());
        }
    }

    fn set_database(&mut self, role: Role, database: String) {
        if let Some(backend) = self.slot(role).as_mut() {
            backend.database = Some(database.clone());
        }
        self.routing.database = Some(database);
    }

    async fn query(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let class = classifier::classify(&payload[1..]);
        let open = self.open();
        let role = self.routing.query(open, &class);
        let in_read_only = open.in_read_only(role);
        if class.loads_local_file
            && in_read_only
            && self.login.caps & cap::LOCAL_FILES != 0
            && self.shared.config.load_data_local_max_bytes > 0
        {
            // Inside `START TRANSACTION READ ONLY` the session is on the reader, whose
            // connection never lets the server ask for a file (a replica is never asked to
            // load one): the replica would answer 4166, as if the client did not allow files.
            // The primary, asked directly, refuses the load for the transaction's sake;
            // the router answers the same, sends nothing, and the transaction goes on.
            // (Without CLIENT_LOCAL_FILES, or with LOAD DATA LOCAL off in the router, 4166
            // from the replica is what the primary would answer too.)
            return self
                .refuse(Refusal::new(
                    code::READ_ONLY_TRANSACTION,
                    "Cannot execute statement in a READ ONLY transaction",
                    "read_only_transaction",
                ))
                .await;
        }
        if in_read_only && class.creates_temporary() {
            return self.refuse(Refusal::temporary_in_read_only()).await;
        }
        if let Err(message) = self.routing.admits(&class, None) {
            return self
                .refuse(Refusal::new(
                    code::SESSION_STATEMENTS,
                    message,
                    "session_statements",
                ))
                .await;
        }
        let kind = match class.route {
            Route::Read => "read",
            Route::Write => "write",
            Route::Session => "session",
            Route::LastUsed => "last_used",
        };
        let ran = self
            .run_command(payload, class.route, role, Shape::Results, kind)
            .await?;
        if let Some((role, outcome)) = ran {
            // Even a failed CALL may have set variables before its error.
            self.routing.ran(role, class.route);
            if outcome.error.is_none() {
                let applied = self.routing.apply(&class, &payload[1..]);
                self.applied(role, applied);
            }
        }
        Ok(())
    }

    /// The `role` connection ran a statement whose effects were just recorded: it has them.
    fn applied(&mut self, role: Role, applied: Applied) {
        if let Some(backend) = self.slot(role).as_mut() {
            if let Some(replayed) = applied.replayed {
                backend.replayed = replayed;
            }
            if let Some(database) = applied.database {
                backend.database = Some(database);
            }
        }
    }

    async fn malformed(&mut self, why: &str) -> std::io::Result<Flow> {
        let message = format!("Malformed communication packet: {why}");
        self.refuse(Refusal::new(code::NET_READ, message, "protocol"))
            .await?;
        Ok(Flow::Close)
    }

    /// COM_CHANGE_USER: log in again (as another configured user), with a fresh session.
    async fn change_user(&mut self, payload: &[u8]) -> std::io::Result<Flow> {
        let request = match handshake::parse_change_user(payload, self.login.caps) {
            Ok(request) => request,
            Err(why) => return self.malformed(why).await,
        };
        let scramble = self.login.scramble;
        let users = &self.shared.users;
        match accept::authenticate(&mut self.client, users, &request, &scramble, 0, &self.peer)
            .await
        {
            Ok(seq) => {
                self.reset().await;
                self.login.user = request.user;
                self.login.collation = request.collation;
                self.routing.database = request.database;
                let ok = wire::ok_packet(status::AUTOCOMMIT, self.login.caps);
                self.client.send(seq, &ok).await?;
                Ok(Flow::Continue)
            }
            Err(LoginError::Denied(_)) => {
                self.shared.metrics.error("access_denied");
                Ok(Flow::Close)
            }
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    /// COM_SET_OPTION: multi-statements on (0) or off (1) for the rest of the session. Like a
    /// session statement, it reaches each backend connection before that connection's next
    /// command (`sync`), and new connections log in with it.
    async fn set_option(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let on = match payload.get(1..3) {
            Some([0, 0]) => true,
            Some([1, 0]) => false,
            _ => {
                self.shared.metrics.error("protocol");
                return self
                    .fail(1, code::UNKNOWN_COM, "Unknown COM_SET_OPTION option")
                    .await;
            }
        };
        if on {
            self.login.caps |= cap::MULTI_STATEMENTS;
        } else {
            self.login.caps &= !cap::MULTI_STATEMENTS;
        }
        // The server answers EOF, an OK packet for a client that deprecated EOF.
        let status = self.routing.client_status();
        let reply = if self.login.caps & cap::DEPRECATE_EOF != 0 {
            wire::ok_packet(status, self.login.caps)
        } else {
            let [low, high] = status.to_le_bytes();
            BytesMut::from(&[0xFE, 0, 0, low, high][..])
        };
        self.client.send(1, &reply).await.map(drop)
    }

    /// Forgets all session state and closes the backend connections (the server rolls back
    /// what was open); the database stays.
    async fn reset(&mut self) {
        for backend in [self.writer.take(), self.reader.take()]
            .into_iter()
            .flatten()
        {
            backend.quit().await;
        }
        self.routing.reset();
        self.statements.clear();
    }

    async fn close(mut self) {
        for backend in [self.writer.take(), self.reader.take()]
            .into_iter()
            .flatten()
        {
            backend.quit().await;
        }
        self.client.shutdown().await;
    }
}
