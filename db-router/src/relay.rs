//! Relaying a backend's response to the client, packet by packet, as it arrives.
//!
//! The router never holds a whole result set: each wire packet is queued to the client as it
//! is read, and the queue is written out whenever it passes 64 KiB. To know where a response
//! ends it follows the protocol's shape (OK / ERR, or column count, column definitions,
//! optional EOF, rows, terminator; again while MORE_RESULTS_EXISTS is set) and skips over
//! the continuation chunks of rows longer than 16 MiB.
//!
//! On the way it reads what the session needs from OK and EOF packets (status flags, tracked
//! `last_gtid` and schema), and rewrites OK packets for clients that did not ask for
//! SESSION_TRACK (backends always have it on).

use tokio::io::{AsyncRead, AsyncWrite};

use crate::backend::{Backend, BackendError};
use crate::packet::{PacketStream, RawPacket};
use crate::topology::ledger::Ledger;
use crate::wire::{self, ServerError, cap};

/// The shape of the response to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// OK, ERR or result sets (COM_QUERY, COM_STMT_EXECUTE, COM_PING, COM_INIT_DB ...).
    Results,
    /// Rows and a terminator only (COM_STMT_FETCH).
    Rows,
    /// Column definitions until EOF (COM_FIELD_LIST).
    Columns,
    /// One packet (COM_STATISTICS).
    Single,
}

/// What a relayed response told the session.
#[derive(Debug, Default)]
pub struct Outcome {
    pub status: u16,
    pub last_gtid: Option<String>,
    pub schema: Option<String>,
    pub error: Option<ServerError>,
}

/// Why a relay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The backend failed; `forwarded` says whether the client already got part of the answer.
    #[error("{error}")]
    Backend {
        error: BackendError,
        forwarded: bool,
    },
    #[error("client: {0}")]
    Client(std::io::Error),
}

struct Relay<'a, C> {
    backend: &'a mut Backend,
    client: &'a mut PacketStream<C>,
    /// On the writer: where each commit's GTID is recorded before its OK goes out.
    ledger: Option<&'a Ledger>,
    client_caps: u32,
    forwarded: bool,
    outcome: Outcome,
}

impl<C: AsyncRead + AsyncWrite + Unpin> Relay<'_, C> {
    async fn next(&mut self) -> Result<RawPacket, RelayError> {
        match self.backend.stream.read_raw().await {
            Ok(packet) => Ok(packet),
            Err(e) => Err(RelayError::Backend {
                error: BackendError::Lost {
                    node: self.backend.node.name.clone(),
                    why: e.to_string(),
                },
                forwarded: self.forwarded,
            }),
        }
    }

    async fn forward(&mut self, packet: &RawPacket) -> Result<(), RelayError> {
        self.forwarded = true;
        self.client.queue_raw(&packet.bytes);
        self.client
            .flush_if_full()
            .await
            .map_err(RelayError::Client)
    }

    /// Forwards `packet` and any continuation chunks after it.
    async fn forward_whole(&mut self, packet: RawPacket) -> Result<(), RelayError> {
        let mut continues = packet.continues();
        self.forward(&packet).await?;
        while continues {
            let chunk = self.next().await?;
            continues = chunk.continues();
            self.forward(&chunk).await?;
        }
        Ok(())
    }

    /// An OK packet (0x00, or 0xFE ending rows under DEPRECATE_EOF): learn from it, and
    /// forward it, rewritten when the client has no SESSION_TRACK.
    async fn forward_ok(&mut self, packet: RawPacket) -> Result<u16, RelayError> {
        let info = wire::parse_ok(packet.payload()).unwrap_or_default();
        if let (Some(gtid), Some(ledger)) = (&info.last_gtid, self.ledger)
            && !ledger.acknowledge(&self.backend.node, gtid)
        {
            return Err(self.withhold(&packet, gtid).await);
        }
        if info.last_gtid.is_some() {
            self.outcome.last_gtid = info.last_gtid;
        }
        if info.schema.is_some() {
            self.outcome.schema = info.schema;
        }
        if self.client_caps & cap::SESSION_TRACK == 0 {
            if let Some(plain) = wire::ok_without_session_track(packet.payload()) {
                self.forwarded = true;
                self.client.queue(packet.seq(), &plain);
                self.client
                    .flush_if_full()
                    .await
                    .map_err(RelayError::Client)?;
                return Ok(info.status);
            }
        }
        self.forward(&packet).await?;
        Ok(info.status)
    }

    /// A commit on a node that is no longer the writer (it was replaced, or a promotion is
    /// being prepared): the client gets an error instead of the OK, and the connection ends
    /// (the session's state on the writer is gone with it). Its write is not acknowledged,
    /// so a failover may give it up.
    async fn withhold(&mut self, ok: &RawPacket, gtid: &str) -> RelayError {
        let node = self.backend.node.name.clone();
        let message = format!(
            "foobar-db-router: the database is failing over; this write (GTID {gtid} on \
             {node}) was not acknowledged and may be lost: run it again"
        );
        self.client
            .queue(ok.seq(), &wire::err_packet(wire::code::WITHHELD, &message));
        if let Err(e) = self.client.flush().await {
            return RelayError::Client(e);
        }
        RelayError::Backend {
            error: BackendError::Lost {
                node,
                why: format!("its commit {gtid} was withheld: it is no longer the writer"),
            },
            forwarded: true,
        }
    }

    async fn forward_err(&mut self, packet: RawPacket) -> Result<(), RelayError> {
        self.outcome.error = Some(wire::parse_err(packet.payload()));
        self.forward(&packet).await
    }

    /// Rows until the terminator; returns its status flags, or None after an ERR.
    async fn rows(&mut self) -> Result<Option<u16>, RelayError> {
        loop {
            let packet = self.next().await?;
            let payload = packet.payload();
            if payload.first() == Some(&0xFF) {
                self.forward_err(packet).await?;
                return Ok(None);
            }
            if wire::is_eof(payload) {
                if !wire::is_classic_eof(payload) {
                    return self.forward_ok(packet).await.map(Some);
                }
                let status = wire::eof_status(payload).unwrap_or(0);
                self.forward(&packet).await?;
                return Ok(Some(status));
            }
            self.forward_whole(packet).await?;
        }
    }

    /// One result: OK, ERR or a result set. Returns its status, or None after an ERR.
    async fn result(&mut self) -> Result<Option<u16>, RelayError> {
        let first = self.next().await?;
        match first.payload().first() {
            Some(0x00) => self.forward_ok(first).await.map(Some),
            Some(0xFF) => {
                self.forward_err(first).await?;
                Ok(None)
            }
            _ => {
                let columns = wire::Cursor::new(first.payload()).lenenc_int().unwrap_or(0);
                self.forward(&first).await?;
                for _ in 0..columns {
                    let column = self.next().await?;
                    self.forward_whole(column).await?;
                }
                if self.backend.caps & cap::DEPRECATE_EOF == 0 {
                    let eof = self.next().await?;
                    let status = wire::eof_status(eof.payload()).unwrap_or(0);
                    self.forward(&eof).await?;
                    if status & CURSOR_EXISTS != 0 {
                        return Ok(Some(status));
                    }
                }
                self.rows().await
            }
        }
    }
}

/// SERVER_STATUS_CURSOR_EXISTS: an EXECUTE opened a cursor; rows come with COM_STMT_FETCH.
const CURSOR_EXISTS: u16 = 0x0040;

/// Relays the response to the command just sent to `backend`, ending with the client's
/// queue flushed.
pub async fn relay<C: AsyncRead + AsyncWrite + Unpin>(
    backend: &mut Backend,
    client: &mut PacketStream<C>,
    ledger: Option<&Ledger>,
    client_caps: u32,
    shape: Shape,
) -> Result<Outcome, RelayError> {
    let mut relay = Relay {
        backend,
        client,
        ledger,
        client_caps,
        forwarded: false,
        outcome: Outcome::default(),
    };
    match shape {
        Shape::Single => {
            let packet = relay.next().await?;
            relay.forward_whole(packet).await?;
        }
        Shape::Columns => loop {
            let packet = relay.next().await?;
            let payload = packet.payload();
            if payload.first() == Some(&0xFF) {
                relay.forward_err(packet).await?;
                break;
            }
            let end = wire::is_eof(payload);
            relay.forward_whole(packet).await?;
            if end {
                break;
            }
        },
        Shape::Rows => {
            if let Some(status) = relay.rows().await? {
                relay.outcome.status = status;
            }
        }
        Shape::Results => {
            while let Some(status) = relay.result().await? {
                relay.outcome.status = status;
                if status & wire::status::MORE_RESULTS_EXISTS == 0 {
                    break;
                }
            }
        }
    }
    relay.client.flush().await.map_err(RelayError::Client)?;
    let outcome = relay.outcome;
    if outcome.error.is_none() && shape != Shape::Single && shape != Shape::Columns {
        backend.status = outcome.status;
    }
    Ok(outcome)
}

/// A statement prepared on a backend: its id there and its shape.
#[derive(Debug, Clone, Copy)]
pub struct PrepareOk {
    pub id: u32,
    pub columns: u16,
    pub params: u16,
}

impl PrepareOk {
    fn parse(payload: &[u8]) -> Option<Self> {
        let mut c = wire::Cursor::new(payload);
        c.u8()?;
        Some(Self {
            id: c.u32()?,
            columns: c.u16()?,
            params: c.u16()?,
        })
    }

    /// Definition packets that follow the first one (with their EOFs).
    fn following_packets(&self, caps: u32) -> usize {
        let eof = |n: u16| usize::from(n > 0 && caps & cap::DEPRECATE_EOF == 0);
        usize::from(self.params) + eof(self.params) + usize::from(self.columns) + eof(self.columns)
    }
}

/// Relays the response to a COM_STMT_PREPARE, showing the client `client_id` as the
/// statement's id. Returns the backend's statement, or the server's error.
pub async fn relay_prepare<C: AsyncRead + AsyncWrite + Unpin>(
    backend: &mut Backend,
    client: &mut PacketStream<C>,
    client_id: u32,
) -> Result<Result<PrepareOk, ServerError>, RelayError> {
    let caps = backend.caps;
    let mut relay = Relay {
        backend,
        client,
        ledger: None,
        client_caps: 0,
        forwarded: false,
        outcome: Outcome::default(),
    };
    let first = relay.next().await?;
    let result = if first.payload().first() == Some(&0xFF) {
        relay.forward_err(first).await?;
        Err(relay
            .outcome
            .error
            .take()
            .unwrap_or_else(|| wire::parse_err(&[])))
    } else {
        let Some(ok) = PrepareOk::parse(first.payload()) else {
            return Err(RelayError::Backend {
                error: BackendError::Lost {
                    node: relay.backend.node.name.clone(),
                    why: "malformed COM_STMT_PREPARE response".into(),
                },
                forwarded: false,
            });
        };
        let shown = wire::with_id(first.payload(), client_id);
        relay.forwarded = true;
        relay.client.queue(first.seq(), &shown);
        for _ in 0..ok.following_packets(caps) {
            let packet = relay.next().await?;
            relay.forward_whole(packet).await?;
        }
        Ok(ok)
    };
    relay.client.flush().await.map_err(RelayError::Client)?;
    Ok(result)
}

/// Prepares `sql` on `backend` for the router itself (the client prepared it elsewhere).
pub async fn prepare_silently(
    backend: &mut Backend,
    sql: &[u8],
) -> Result<Result<PrepareOk, ServerError>, BackendError> {
    let mut payload = Vec::with_capacity(sql.len() + 1);
    payload.push(crate::wire::com::STMT_PREPARE);
    payload.extend_from_slice(sql);
    backend.send_command(&payload).await?;
    let (_, first) = backend.read_packet().await?;
    if first.first() == Some(&0xFF) {
        return Ok(Err(wire::parse_err(&first)));
    }
    let ok = PrepareOk::parse(&first).ok_or_else(|| BackendError::Lost {
        node: backend.node.name.clone(),
        why: "malformed COM_STMT_PREPARE response".into(),
    })?;
    for _ in 0..ok.following_packets(backend.caps) {
        backend.read_packet().await?;
    }
    Ok(Ok(ok))
}
