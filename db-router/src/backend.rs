//! One connection from the router to a database node, owned by one client session, and the
//! [`Connector`] that opens them: bounded per node, with a connect timeout, and a short
//! memory of nodes that just failed so sessions do not all wait on a dead one.
//!
//! A connection logs in with the `[backends]` account, using the client's own capability
//! choices for everything that shapes a response (so responses relay unchanged) plus
//! SESSION_TRACK, and asks the server to report `last_gtid` in its OK packets. It has
//! CLIENT_LOCAL_FILES only when the session asks for it (its writer, for a client that
//! allows files) and `router.load_data_local_max_bytes` is not 0, so a server asks for a
//! file only a client that allows it. It remembers
//! what the session has already applied to it (replayed `SET`s, current database, prepared
//! statements), so the session knows what to replay before the next statement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth;
use crate::handshake;
use crate::packet::{PacketError, PacketStream};
use crate::topology::snapshot::Node;
use crate::wire::{self, OkInfo, ServerError, cap, com};

/// The system variables a backend reports in OK packets: the server's defaults, and
/// `last_gtid` for read-your-writes.
const SESSION_TRACKING: &str = "SET SESSION session_track_system_variables = \
     'autocommit,character_set_client,character_set_connection,character_set_results,time_zone,last_gtid', \
     session_track_schema = ON";

/// Why a backend connection could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to {node}: {why}")]
    Connect { node: String, why: String },
    #[error("{node} refused the router's login: {error}")]
    Login { node: String, error: ServerError },
    #[error("lost the connection to {node}: {why}")]
    Lost { node: String, why: String },
    #[error("{node} has reached the router's limit of connections")]
    Busy { node: String },
}

/// How a connection that lets the server ask for the client's files (LOAD DATA LOCAL
/// INFILE) passes them on.
#[derive(Debug, Clone)]
pub struct LocalFiles {
    /// The most bytes of one file that reach the server (`router.load_data_local_max_bytes`).
    pub max_bytes: u64,
    /// Counts the bytes of files passed on.
    pub relayed: Counter,
}

/// What a [`Connector`] opens connections with.
pub struct ConnectorSettings {
    /// The backends' account (`backends.user` and its password).
    pub user: String,
    pub password: String,
    /// The longest a connection waits for a free place at its node, and then to connect and
    /// log in (`router.connect_timeout`).
    pub connect_timeout: Duration,
    /// After a connection fails, how long its node counts as recently failed
    /// (`router.reader_retry_after`).
    pub retry_after: Duration,
    /// The most connections open to one node at once (`router.max_backend_connections`).
    pub max_per_node: usize,
    /// The largest packet a connection reads (`router.max_packet_size`).
    pub max_packet: usize,
    /// None: no connection has CLIENT_LOCAL_FILES (the server refuses LOAD DATA LOCAL).
    pub local_files: Option<LocalFiles>,
}

/// Opens backend connections; shared by all sessions.
pub struct Connector {
    settings: ConnectorSettings,
    nodes: Mutex<HashMap<String, NodeState>>,
}

struct NodeState {
    permits: Arc<Semaphore>,
    failed_at: Option<Instant>,
}

impl Connector {
    pub fn new(settings: ConnectorSettings) -> Self {
        Self {
            settings,
            nodes: Mutex::new(HashMap::new()),
        }
    }

    fn permits(&self, node: &Node) -> Arc<Semaphore> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let state = nodes.entry(node.name.clone()).or_insert_with(|| NodeState {
            permits: Arc::new(Semaphore::new(self.settings.max_per_node)),
            failed_at: None,
        });
        Arc::clone(&state.permits)
    }

    /// True when a connection to `node` failed less than `retry_after` ago.
    pub fn recently_failed(&self, node: &Node) -> bool {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes
            .get(&node.name)
            .and_then(|s| s.failed_at)
            .is_some_and(|at| at.elapsed() < self.settings.retry_after)
    }

    pub fn mark_failed(&self, node: &Node) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = nodes.get_mut(&node.name) {
            state.failed_at = Some(Instant::now());
        }
    }

    /// Connects and logs in to `node` for a client with capabilities `client_caps`;
    /// CLIENT_LOCAL_FILES among them asks for a connection the server may ask for files.
    pub async fn connect(
        &self,
        node: &Node,
        client_caps: u32,
        collation: u8,
        database: Option<&str>,
    ) -> Result<Backend, BackendError> {
        let permits = self.permits(node);
        let permit = tokio::time::timeout(self.settings.connect_timeout, permits.acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| BackendError::Busy {
                node: node.name.clone(),
            })?;
        let connecting = self.login(node, client_caps, collation, database, permit);
        let result = match tokio::time::timeout(self.settings.connect_timeout, connecting).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::Connect {
                node: node.name.clone(),
                why: format!("no answer within {:?}", self.settings.connect_timeout),
            }),
        };
        if result.is_err() {
            self.mark_failed(node);
        } else {
            let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(state) = nodes.get_mut(&node.name) {
                state.failed_at = None;
            }
        }
        result
    }

    async fn login(
        &self,
        node: &Node,
        client_caps: u32,
        collation: u8,
        database: Option<&str>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Backend, BackendError> {
        let connect_err = |why: String| BackendError::Connect {
            node: node.name.clone(),
            why,
        };
        let tcp = TcpStream::connect(&node.name)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut stream = PacketStream::new(tcp, self.settings.max_packet);
        let lost = |e: PacketError| connect_err(e.to_string());
        let (seq, greeting) = stream.read_packet().await.map_err(lost)?;
        if greeting.first() == Some(&0xFF) {
            return Err(BackendError::Login {
                node: node.name.clone(),
                error: wire::parse_err(&greeting),
            });
        }
        let greeting = handshake::parse_greeting(&greeting).map_err(|e| connect_err(e.into()))?;
        let mut caps = (client_caps & cap::RESPONSE_SHAPING) | cap::BACKEND_BASE;
        if database.is_some() {
            caps |= cap::CONNECT_WITH_DB;
        }
        if self.settings.local_files.is_some() {
            caps |= client_caps & cap::LOCAL_FILES;
        }
        caps &= greeting.caps;
        let answer = auth::answer(self.settings.password.as_bytes(), &greeting.scramble);
        let request =
            handshake::login_request(caps, collation, &self.settings.user, &answer, database);
        stream
            .send(seq.wrapping_add(1), &request)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        loop {
            let (seq, reply) = stream.read_packet().await.map_err(lost)?;
            match reply.first() {
                Some(0x00) => break,
                Some(0xFE) => {
                    let mut c = wire::Cursor::new(&reply[1..]);
                    let plugin = c.nul_terminated().unwrap_or_default();
                    let password = self.settings.password.as_bytes();
                    let answer = if plugin == auth::NATIVE_PASSWORD.as_bytes() {
                        let scramble = c.rest().strip_suffix(&[0]).unwrap_or(c.rest());
                        auth::answer(password, scramble)
                    } else if plugin == auth::ED25519.as_bytes() {
                        // 32 random bytes, sent as they are (no NUL after them).
                        auth::ed25519_answer(password, c.rest())
                    } else {
                        return Err(connect_err(format!(
                            "backends.user's account asks for auth plugin {:?}; the router \
                             logs in with {} or {} only",
                            String::from_utf8_lossy(plugin),
                            auth::NATIVE_PASSWORD,
                            auth::ED25519
                        )));
                    };
                    stream
                        .send(seq.wrapping_add(1), &answer)
                        .await
                        .map_err(|e| connect_err(e.to_string()))?;
                }
                Some(0xFF) => {
                    return Err(BackendError::Login {
                        node: node.name.clone(),
                        error: wire::parse_err(&reply),
                    });
                }
                _ => return Err(connect_err("unexpected packet during login".into())),
            }
        }
        let mut backend = Backend {
            node: node.clone(),
            stream,
            caps,
            status: wire::status::AUTOCOMMIT,
            replayed: 0,
            database: database.map(str::to_owned),
            statements: HashMap::new(),
            confirmed_gtid: None,
            connection_id: greeting.connection_id,
            local_files: self
                .settings
                .local_files
                .clone()
                .filter(|_| caps & cap::LOCAL_FILES != 0),
            _permit: permit,
        };
        match backend.query(SESSION_TRACKING).await? {
            Collected {
                error: Some(error), ..
            } => Err(BackendError::Login {
                node: node.name.clone(),
                error,
            }),
            _ => Ok(backend),
        }
    }
}

/// A statement prepared on one backend connection.
#[derive(Debug, Clone, Copy)]
pub struct PreparedOn {
    pub id: u32,
    /// Whether this backend has been sent the parameter types yet (the first EXECUTE must
    /// carry them).
    pub types_sent: bool,
}

/// A logged-in connection to one node.
pub struct Backend {
    pub node: Node,
    pub stream: PacketStream<TcpStream>,
    /// Capabilities in effect on this connection.
    pub caps: u32,
    /// Server status flags from the last response.
    pub status: u16,
    /// The number of the last replayed session statement applied here.
    pub replayed: u64,
    /// The database this connection is in.
    pub database: Option<String>,
    /// Client statement id -> this connection's statement.
    pub statements: HashMap<u32, PreparedOn>,
    /// The newest write GTID this replica connection is known to have applied.
    pub confirmed_gtid: Option<String>,
    pub connection_id: u32,
    /// Some: opened with CLIENT_LOCAL_FILES, the server may ask for the client's files.
    pub local_files: Option<LocalFiles>,
    _permit: OwnedSemaphorePermit,
}

/// What an internal query (one the router sends for itself) returned.
#[derive(Debug, Default)]
pub struct Collected {
    pub ok: Option<OkInfo>,
    pub error: Option<ServerError>,
    /// The first column of the first row, when there was a result set (None inside: NULL).
    pub first_value: Option<Option<String>>,
}

impl Backend {
    fn lost(&self, why: impl std::fmt::Display) -> BackendError {
        BackendError::Lost {
            node: self.node.name.clone(),
            why: why.to_string(),
        }
    }

    /// Sends one command (a whole payload, command byte first) from sequence id 0.
    pub async fn send_command(&mut self, payload: &[u8]) -> Result<(), BackendError> {
        self.stream.queue(0, payload);
        self.stream.flush().await.map_err(|e| self.lost(e))
    }

    /// COM_SET_OPTION: multi-statements on or off on this connection, as the client's session
    /// has them now. The server's error, if it refused.
    pub async fn set_multi_statements(
        &mut self,
        on: bool,
    ) -> Result<Option<ServerError>, BackendError> {
        let option: u16 = if on { 0 } else { 1 };
        let [low, high] = option.to_le_bytes();
        self.send_command(&[com::SET_OPTION, low, high]).await?;
        let (_, reply) = self.read_packet().await?;
        if reply.first() == Some(&0xFF) {
            return Ok(Some(wire::parse_err(&reply)));
        }
        if on {
            self.caps |= cap::MULTI_STATEMENTS;
        } else {
            self.caps &= !cap::MULTI_STATEMENTS;
        }
        Ok(None)
    }

    /// Reads the next whole packet of a response.
    pub async fn read_packet(&mut self) -> Result<(u8, BytesMut), BackendError> {
        match self.stream.read_packet().await {
            Ok(packet) => Ok(packet),
            Err(e) => Err(self.lost(e)),
        }
    }

    /// Runs a text query for the router itself and reads its whole response.
    pub async fn query(&mut self, sql: impl AsRef<[u8]>) -> Result<Collected, BackendError> {
        let sql = sql.as_ref();
        let mut payload = BytesMut::with_capacity(sql.len() + 1);
        payload.put_u8(com::QUERY);
        payload.put_slice(sql);
        self.send_command(&payload).await?;
        self.collect().await
    }

    /// Sends COM_INIT_DB for the router itself.
    pub async fn init_db(&mut self, database: &str) -> Result<Collected, BackendError> {
        let mut payload = BytesMut::with_capacity(database.len() + 1);
        payload.put_u8(com::INIT_DB);
        payload.put_slice(database.as_bytes());
        self.send_command(&payload).await?;
        let collected = self.collect().await?;
        if collected.error.is_none() {
            self.database = Some(database.to_owned());
        }
        Ok(collected)
    }

    /// Reads a whole OK / ERR / result-set response without relaying it.
    pub async fn collect(&mut self) -> Result<Collected, BackendError> {
        let deprecate_eof = self.caps & cap::DEPRECATE_EOF != 0;
        let mut collected = Collected::default();
        loop {
            let (_, first) = self.read_packet().await?;
            let status = match first.first() {
                Some(0x00) => {
                    let ok = wire::parse_ok(&first).ok_or_else(|| self.lost("malformed OK"))?;
                    let status = ok.status;
                    collected.ok = Some(ok);
                    status
                }
                Some(0xFF) => {
                    collected.error = Some(wire::parse_err(&first));
                    return Ok(collected);
                }
                _ => {
                    let columns = wire::Cursor::new(&first).lenenc_int().unwrap_or(0);
                    for _ in 0..columns {
                        self.read_packet().await?;
                    }
                    if !deprecate_eof {
                        self.read_packet().await?;
                    }
                    loop {
                        let (_, row) = self.read_packet().await?;
                        if row.first() == Some(&0xFF) {
                            collected.error = Some(wire::parse_err(&row));
                            return Ok(collected);
                        }
                        if wire::is_eof(&row) {
                            break if wire::is_classic_eof(&row) {
                                wire::eof_status(&row).unwrap_or(0)
                            } else {
                                wire::parse_ok(&row).map_or(0, |ok| ok.status)
                            };
                        }
                        if collected.first_value.is_none() {
                            let mut c = wire::Cursor::new(&row);
                            collected.first_value = Some(if row.first() == Some(&0xFB) {
                                None
                            } else {
                                c.lenenc_bytes()
                                    .map(|v| String::from_utf8_lossy(v).into_owned())
                            });
                        }
                    }
                }
            };
            self.status = status;
            if status & wire::status::MORE_RESULTS_EXISTS == 0 {
                return Ok(collected);
            }
        }
    }

    /// Tells the server goodbye; the connection is dropped after.
    pub async fn quit(mut self) {
        let _ = self.send_command(&[com::QUIT]).await;
        self.stream.shutdown().await;
    }
}
