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
//!
//! A result may instead be the server asking for a file (LOAD DATA LOCAL INFILE, 0xFB and the
//! file's name): the request goes to the client and the client's file back to the server,
//! packet by packet as it arrives, up to `router.load_data_local_max_bytes`
//! ([`stream_file`]); then the server's answer is relayed as any other.

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::backend::{Backend, BackendError};
use crate::packet::{PacketError, PacketStream, RawPacket};
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
    /// The backend connection was shut down in the middle of a statement (a LOAD DATA LOCAL
    /// file over the limit), so the server rolled the statement back: the session drops the
    /// connection, and what it held (its transaction) is gone. `error` says so to the client.
    pub backend_closed: bool,
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

    /// One result: OK, ERR or a result set, or a file the server asks for and then its OK or
    /// ERR. Returns its status, or None after an ERR.
    async fn result(&mut self) -> Result<Option<u16>, RelayError> {
        let mut first = self.next().await?;
        if first.payload().first() == Some(&LOCAL_INFILE) {
            if !self.local_infile(first).await? {
                return Ok(None);
            }
            first = self.next().await?;
        }
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

impl<C: AsyncRead + AsyncWrite + Unpin> Relay<'_, C> {
    /// LOAD DATA LOCAL INFILE: the server's request for a file goes to the client, and the
    /// client's file to the server ([`stream_file`]). Sequence ids pass unchanged: both sides
    /// count from the same command. True when the file went whole (the server's answer
    /// follows); false when it was over the limit and the client has its error.
    async fn local_infile(&mut self, request: RawPacket) -> Result<bool, RelayError> {
        let node = self.backend.node.name.clone();
        let Some(local_files) = self.backend.local_files.clone() else {
            // The connection was opened without CLIENT_LOCAL_FILES: a server that asks anyway
            // is not followed (a reader, or a client that did not allow files).
            return Err(RelayError::Backend {
                error: BackendError::Lost {
                    node,
                    why: "asked for a local file on a connection that does not allow it".into(),
                },
                forwarded: self.forwarded,
            });
        };
        // A transaction open before this statement is lost if the file is refused.
        let status = if self.forwarded {
            self.outcome.status
        } else {
            self.backend.status
        };
        tracing::debug!(
            node,
            file = %String::from_utf8_lossy(&request.payload()[1..]),
            "LOAD DATA LOCAL: the server asks the client for a file"
        );
        self.forward(&request).await?;
        self.client.flush().await.map_err(RelayError::Client)?;
        let limit = local_files.max_bytes;
        let sent = stream_file(
            self.client,
            &mut self.backend.stream,
            limit,
            &local_files.relayed,
        )
        .await;
        match sent {
            Ok(FileEnd::Sent { bytes }) => {
                tracing::debug!(node, bytes, "LOAD DATA LOCAL: file relayed whole");
                Ok(true)
            }
            Ok(FileEnd::TooLarge { sent, last_seq }) => {
                tracing::debug!(
                    node,
                    sent,
                    limit,
                    "LOAD DATA LOCAL: file over the limit; closed the backend connection"
                );
                let error = file_too_large(limit, status & wire::status::IN_TRANS != 0);
                self.client.queue(last_seq.wrapping_add(1), &error.packet());
                self.outcome.error = Some(error);
                self.outcome.backend_closed = true;
                Ok(false)
            }
            Err(FileError::Client(e)) => Err(RelayError::Client(std::io::Error::other(format!(
                "left in the middle of a LOAD DATA LOCAL file (the backend connection was \
                 closed, so nothing was loaded): {e}"
            )))),
            Err(FileError::Backend(e)) => Err(RelayError::Backend {
                error: BackendError::Lost {
                    node,
                    why: format!("sending a LOAD DATA LOCAL file: {e}"),
                },
                forwarded: true,
            }),
        }
    }
}

/// The error a client gets for a file over `limit` bytes. Outside a transaction:
/// ER_USER_LIMIT_REACHED (a limit, not a broken link: the session goes on as before). Inside
/// one the transaction went with the closed connection: ER_CONNECTION_KILLED, as for every
/// transaction the router loses with its writer connection.
fn file_too_large(limit: u64, in_transaction: bool) -> ServerError {
    let mut message = format!(
        "foobar-db-router: the file of LOAD DATA LOCAL INFILE is larger than \
         router.load_data_local_max_bytes ({limit} bytes); nothing was loaded"
    );
    let (code, sqlstate) = if in_transaction {
        message.push_str(
            ", and the transaction was rolled back (the router closed its connection to stop \
             the load)",
        );
        wire::code::BACKEND_LOST
    } else {
        wire::code::FILE_TOO_LARGE
    };
    ServerError {
        code,
        sqlstate: sqlstate.to_owned(),
        message,
    }
}

/// The first byte of a server's request for a local file (LOAD DATA LOCAL INFILE). Never a
/// column count: 251 columns are sent as 0xFC 0xFB 0x00.
const LOCAL_INFILE: u8 = 0xFB;

/// How a client's file ended (see [`stream_file`]).
#[derive(Debug, PartialEq, Eq)]
pub enum FileEnd {
    /// Passed on whole, the empty packet that ends it included: `bytes` of content.
    Sent { bytes: u64 },
    /// Longer than the limit: `sent` bytes were passed on, then the backend connection shut
    /// down (never the empty packet: the server cannot end the statement but with an error);
    /// the rest was read and dropped up to the empty packet, whose sequence id is `last_seq`.
    TooLarge { sent: u64, last_seq: u8 },
}

/// Why a file could not be passed on. The backend connection was shut down in both cases.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("client: {0}")]
    Client(PacketError),
    #[error("backend: {0}")]
    Backend(std::io::Error),
}

/// Where a client's file stands, packet by packet: pure, so that unit tests and the fuzz
/// target drive it without sockets.
#[derive(Debug)]
pub struct FileProgress {
    max_bytes: u64,
    sent: u64,
    over: bool,
    /// The last packet was exactly [`crate::packet::MAX_CHUNK`] long: the next one continues
    /// it, and an empty one then ends nothing.
    continued: bool,
}

/// What to do with a client's next file packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStep {
    /// Pass it on; more of the file follows.
    Forward,
    /// Pass it on: it is the empty packet that ends the file.
    ForwardEnd,
    /// It would take the file past the limit: drop it, and shut the backend connection down.
    Overflow,
    /// Drop it (the file is over the limit); more follows.
    Drop,
    /// Drop it: it ends a file that was over the limit.
    DropEnd,
}

impl FileProgress {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            sent: 0,
            over: false,
            continued: false,
        }
    }

    /// The step for the next wire packet, whose payload is `len` bytes long.
    pub fn step(&mut self, len: usize) -> FileStep {
        let end = len == 0 && !self.continued;
        self.continued = len == crate::packet::MAX_CHUNK;
        let len = len as u64;
        if self.over {
            return if end {
                FileStep::DropEnd
            } else {
                FileStep::Drop
            };
        }
        if self.sent.saturating_add(len) > self.max_bytes {
            self.over = true;
            return FileStep::Overflow;
        }
        self.sent += len;
        if end {
            FileStep::ForwardEnd
        } else {
            FileStep::Forward
        }
    }

    /// Bytes of content passed on so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }
}

/// Streams a client's file to a backend: each wire packet written as it arrives (clients send
/// files in packets of 16 KiB and more, so a write each costs little, and one held back to
/// fill a larger write would wait on a slow client), never the whole file in memory, until
/// the empty packet that ends it (see [`FileProgress`]). At most `max_bytes` of content reach the backend: the packet that would
/// pass the limit shuts the backend connection down instead, so the server rolls the
/// statement back, and the rest of the file is read and dropped so the client can be
/// answered. A client that leaves mid-file likewise gets the backend connection shut down
/// (never an empty packet that would load what came so far). Sequence ids are not checked
/// here: the server checks them.
pub async fn stream_file<C, B>(
    client: &mut PacketStream<C>,
    backend: &mut PacketStream<B>,
    max_bytes: u64,
    relayed: &Counter,
) -> Result<FileEnd, FileError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut progress = FileProgress::new(max_bytes);
    loop {
        let packet = match client.read_raw().await {
            Ok(packet) => packet,
            Err(e) => {
                backend.shutdown().await;
                return Err(FileError::Client(e));
            }
        };
        let len = packet.payload().len();
        let end = match progress.step(len) {
            FileStep::Overflow => {
                backend.shutdown().await;
                continue;
            }
            FileStep::Drop => continue,
            FileStep::DropEnd => {
                return Ok(FileEnd::TooLarge {
                    sent: progress.sent(),
                    last_seq: packet.seq(),
                });
            }
            FileStep::Forward => false,
            FileStep::ForwardEnd => true,
        };
        backend.queue_raw(&packet.bytes);
        relayed.inc_by(len as u64);
        if let Err(e) = backend.flush().await {
            backend.shutdown().await;
            return Err(FileError::Backend(e));
        }
        if end {
            return Ok(FileEnd::Sent {
                bytes: progress.sent(),
            });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::MAX_CHUNK;
    use bytes::BytesMut;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// The wire bytes of `payloads`, one packet each, from sequence id `seq` (a payload of
    /// MAX_CHUNK bytes gets no empty packet after it: the test writes it when it wants one).
    fn packets(mut seq: u8, payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for payload in payloads {
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
            out.extend_from_slice(&[seq]);
            out.extend_from_slice(payload);
            seq = seq.wrapping_add(1);
        }
        out.to_vec()
    }

    /// A client end the test writes to, a backend end the test reads from, and the router's
    /// streams between them.
    fn ends() -> (
        DuplexStream,
        PacketStream<DuplexStream>,
        PacketStream<DuplexStream>,
        DuplexStream,
    ) {
        let (client, from_client) = tokio::io::duplex(1 << 20);
        let (to_backend, backend) = tokio::io::duplex(1 << 20);
        (
            client,
            PacketStream::new(from_client, 64 << 20),
            PacketStream::new(to_backend, 64 << 20),
            backend,
        )
    }

    async fn read_all(mut end: DuplexStream) -> Vec<u8> {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), end.read_to_end(&mut out))
            .await
            .expect("the backend end was shut down")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn a_file_goes_to_the_backend_unchanged_up_to_its_empty_packet() {
        let (mut client, mut from_client, mut to_backend, backend) = ends();
        let file = packets(2, &[b"1,2\n", b"3,4\n5,6\n", b""]);
        let mut sent = file.clone();
        sent.extend_from_slice(b"next command, not the file's");
        client.write_all(&sent).await.unwrap();
        let relayed = Counter::default();
        let end = stream_file(&mut from_client, &mut to_backend, 12, &relayed).await;
        assert_eq!(
            end.unwrap(),
            FileEnd::Sent { bytes: 12 },
            "12 bytes: the limit"
        );
        assert_eq!(relayed.get(), 12);
        drop(to_backend);
        assert_eq!(read_all(backend).await, file);
        assert!(from_client.has_buffered_input(), "what follows is left");
    }

    #[tokio::test]
    async fn each_packet_reaches_the_backend_before_the_next_one_is_sent() {
        let (mut client, mut from_client, mut to_backend, mut backend) = ends();
        let streaming = tokio::spawn(async move {
            stream_file(
                &mut from_client,
                &mut to_backend,
                1 << 20,
                &Counter::default(),
            )
            .await
        });
        for (seq, payload) in [(2, &b"1,2\n"[..]), (3, &b"3,4\n"[..])] {
            let packet = packets(seq, &[payload]);
            client.write_all(&packet).await.unwrap();
            let mut got = vec![0; packet.len()];
            tokio::time::timeout(Duration::from_secs(10), backend.read_exact(&mut got))
                .await
                .expect("passed on at once")
                .unwrap();
            assert_eq!(got, packet);
        }
        client.write_all(&packets(4, &[b""])).await.unwrap();
        assert_eq!(
            streaming.await.unwrap().unwrap(),
            FileEnd::Sent { bytes: 8 }
        );
    }

    #[tokio::test]
    async fn a_file_over_the_limit_never_reaches_its_end_on_the_backend() {
        let (mut client, mut from_client, mut to_backend, backend) = ends();
        client
            .write_all(&packets(2, &[b"1,2\n", b"3,4\n5,6\n"]))
            .await
            .unwrap();
        let relayed = Counter::default();
        let streaming = tokio::spawn(async move {
            let end = stream_file(&mut from_client, &mut to_backend, 11, &relayed).await;
            (end, relayed.get())
        });
        // The backend connection is shut down at once, before the client's file ends.
        assert_eq!(read_all(backend).await, packets(2, &[b"1,2\n"]));
        client
            .write_all(&packets(4, &[b"more", b"even more", b""]))
            .await
            .unwrap();
        let (end, relayed) = streaming.await.unwrap();
        assert_eq!(
            end.unwrap(),
            FileEnd::TooLarge {
                sent: 4,
                last_seq: 6
            }
        );
        assert_eq!(relayed, 4);
    }

    #[tokio::test]
    async fn a_client_that_leaves_mid_file_loads_nothing() {
        let (mut client, mut from_client, mut to_backend, backend) = ends();
        let first = packets(2, &[b"1,2\n"]);
        client.write_all(&first).await.unwrap();
        client.write_all(&[9, 0, 0, 3, b'x']).await.unwrap();
        drop(client);
        let relayed = Counter::default();
        let end = stream_file(&mut from_client, &mut to_backend, 1 << 20, &relayed).await;
        assert!(matches!(
            end,
            Err(FileError::Client(PacketError::Truncated))
        ));
        // The backend got what came, then the end of the connection: no empty packet.
        assert_eq!(read_all(backend).await, first);
    }

    #[tokio::test]
    async fn an_empty_packet_after_a_full_one_continues_the_file() {
        let (mut client, mut from_client, mut to_backend, mut backend) = ends();
        let full = vec![b'a'; MAX_CHUNK];
        let file = packets(2, &[&full, b"", b"b\n", b""]);
        let writing = tokio::spawn({
            let file = file.clone();
            async move { client.write_all(&file).await.unwrap() }
        });
        let reading = tokio::spawn(async move {
            let mut out = Vec::new();
            backend.read_to_end(&mut out).await.unwrap();
            out
        });
        let relayed = Counter::default();
        let end = stream_file(&mut from_client, &mut to_backend, 1 << 30, &relayed).await;
        assert_eq!(
            end.unwrap(),
            FileEnd::Sent {
                bytes: MAX_CHUNK as u64 + 2
            }
        );
        writing.await.unwrap();
        drop(to_backend);
        assert!(reading.await.unwrap() == file, "relayed unchanged");
    }

    #[test]
    fn where_a_file_ends_and_what_passes_the_limit() {
        use FileStep::*;
        const FULL: usize = MAX_CHUNK;
        let table: &[(u64, &[usize], &[FileStep])] = &[
            (10, &[0], &[ForwardEnd]),
            (10, &[4, 6, 0], &[Forward, Forward, ForwardEnd]),
            (10, &[4, 7, 3, 0], &[Forward, Overflow, Drop, DropEnd]),
            (0, &[1, 0], &[Overflow, DropEnd]),
            (0, &[0], &[ForwardEnd]),
            // An empty packet after a full one continues it; the next empty one ends.
            (1 << 30, &[FULL, 0, 0], &[Forward, Forward, ForwardEnd]),
            (
                1 << 30,
                &[FULL, FULL, 5, 0],
                &[Forward, Forward, Forward, ForwardEnd],
            ),
            (FULL as u64, &[FULL, 0, 1], &[Forward, Forward, Overflow]),
            (FULL as u64 - 1, &[FULL, 0, 0], &[Overflow, Drop, DropEnd]),
            (u64::MAX, &[FULL, 0, 0], &[Forward, Forward, ForwardEnd]),
        ];
        for (limit, lens, steps) in table {
            let mut progress = FileProgress::new(*limit);
            let got: Vec<FileStep> = lens.iter().map(|len| progress.step(*len)).collect();
            assert_eq!(&got, steps, "limit {limit}, packets {lens:?}");
            assert!(progress.sent() <= *limit);
        }
    }

    #[test]
    fn the_too_large_error_says_what_happened_with_a_server_code() {
        let error = file_too_large(1024, false);
        assert_eq!((error.code, error.sqlstate.as_str()), (1226, "42000"));
        assert!(
            error
                .message
                .contains("load_data_local_max_bytes (1024 bytes)")
        );
        assert!(error.message.contains("nothing was loaded"));
        assert!(!error.message.contains("transaction"));
        let error = file_too_large(1024, true);
        assert_eq!((error.code, error.sqlstate.as_str()), (1927, "08S01"));
        assert!(error.message.contains("transaction was rolled back"));
    }
}
