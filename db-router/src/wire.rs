//! The vocabulary of the MySQL client/server protocol the router needs: capability and
//! status flags, command bytes, length-encoded integers and strings, and the OK, ERR and EOF
//! packets (read and written), and the statement id a COM_STMT_* packet names (read and
//! rewritten).
//!
//! Parsing is done through [`Cursor`], which never panics on short or malformed input: every
//! read returns `None` instead, and the caller turns that into a clear protocol error.

use bytes::{BufMut, BytesMut};

/// Capability flags (`CLIENT_*`).
pub mod cap {
    pub const LONG_PASSWORD: u32 = 1;
    pub const FOUND_ROWS: u32 = 1 << 1;
    pub const LONG_FLAG: u32 = 1 << 2;
    pub const CONNECT_WITH_DB: u32 = 1 << 3;
    pub const LOCAL_FILES: u32 = 1 << 7;
    pub const IGNORE_SPACE: u32 = 1 << 8;
    pub const PROTOCOL_41: u32 = 1 << 9;
    pub const INTERACTIVE: u32 = 1 << 10;
    pub const SSL: u32 = 1 << 11;
    pub const TRANSACTIONS: u32 = 1 << 13;
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    pub const MULTI_STATEMENTS: u32 = 1 << 16;
    pub const MULTI_RESULTS: u32 = 1 << 17;
    pub const PS_MULTI_RESULTS: u32 = 1 << 18;
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    pub const CONNECT_ATTRS: u32 = 1 << 20;
    pub const PLUGIN_AUTH_LENENC_DATA: u32 = 1 << 21;
    pub const COMPRESS: u32 = 1 << 5;
    pub const SESSION_TRACK: u32 = 1 << 23;
    pub const DEPRECATE_EOF: u32 = 1 << 24;
    pub const OPTIONAL_RESULTSET_METADATA: u32 = 1 << 25;
    pub const ZSTD_COMPRESSION: u32 = 1 << 26;
    pub const QUERY_ATTRIBUTES: u32 = 1 << 27;

    /// Capabilities that change how every later packet is framed or laid out. A client that
    /// asks for one the router did not offer would speak a protocol the router cannot read
    /// (a compressed command answered uncompressed hangs the client), so its login is
    /// refused. Others it asks for and was not offered (ODBC ...) are permissions or hints
    /// and are simply not used. So is
    /// QUERY_ATTRIBUTES: MySQL's libmysqlclient (mysql-connector-python's C extension) asks
    /// for it unoffered and then sends attributes only to a server that offered them, as
    /// MariaDB, which ignores the flag and serves that client, shows.
    pub const WIRE_CHANGING: &[(u32, &str)] = &[
        (
            ZSTD_COMPRESSION,
            "zstd compression (CLIENT_ZSTD_COMPRESSION_ALGORITHM)",
        ),
        (
            OPTIONAL_RESULTSET_METADATA,
            "optional result set metadata (CLIENT_OPTIONAL_RESULTSET_METADATA)",
        ),
    ];

    /// What the router offers clients, and SSL when a certificate is configured. COMPRESS is
    /// zlib between the client and the router only ([`crate::compress`]); no zstd.
    /// LOCAL_FILES: the router relays the files of LOAD DATA LOCAL (`relay::stream_file`). No
    /// CONNECT_ATTRS forwarding.
    pub const ROUTER: u32 = LONG_PASSWORD
        | FOUND_ROWS
        | LONG_FLAG
        | CONNECT_WITH_DB
        | LOCAL_FILES
        | IGNORE_SPACE
        | PROTOCOL_41
        | INTERACTIVE
        | TRANSACTIONS
        | SECURE_CONNECTION
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS
        | PLUGIN_AUTH
        | CONNECT_ATTRS
        | PLUGIN_AUTH_LENENC_DATA
        | SESSION_TRACK
        | DEPRECATE_EOF
        | COMPRESS;

    /// The client's choices that change what a backend sends back; a session's backend
    /// connections use exactly these, so their responses can be relayed unchanged.
    pub const RESPONSE_SHAPING: u32 = FOUND_ROWS
        | LONG_FLAG
        | IGNORE_SPACE
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS
        | DEPRECATE_EOF
        | INTERACTIVE;

    /// Always on towards backends. SESSION_TRACK is how the router learns `last_gtid` and
    /// schema changes; OK packets are rewritten for clients that did not ask for it.
    pub const BACKEND_BASE: u32 = LONG_PASSWORD
        | PROTOCOL_41
        | TRANSACTIONS
        | SECURE_CONNECTION
        | PLUGIN_AUTH
        | PLUGIN_AUTH_LENENC_DATA
        | SESSION_TRACK;
}

/// Server status flags (`SERVER_STATUS_*`).
pub mod status {
    pub const IN_TRANS: u16 = 0x0001;
    pub const AUTOCOMMIT: u16 = 0x0002;
    pub const MORE_RESULTS_EXISTS: u16 = 0x0008;
    pub const SESSION_STATE_CHANGED: u16 = 0x4000;
}

/// Command bytes (`COM_*`), the first byte of every client request.
pub mod com {
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const STATISTICS: u8 = 0x09;
    pub const PING: u8 = 0x0e;
    pub const CHANGE_USER: u8 = 0x11;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1a;
    pub const SET_OPTION: u8 = 0x1b;
    pub const STMT_FETCH: u8 = 0x1c;
    pub const RESET_CONNECTION: u8 = 0x1f;
}

/// Server error codes the router sends itself, with their SQLSTATE.
///
/// Only codes of the server's range: MariaDB Connector/C 3.3.9 and later (the `mariadb`
/// client, sysbench, DBD::MariaDB) takes an ERR packet whose code is in the client range
/// (2000-2999, e.g. 2003, 2013) for a malformed packet and shows 2027 instead of the message.
pub mod code {
    pub const CON_COUNT: (u16, &str) = (1040, "08004");
    pub const ACCESS_DENIED: (u16, &str) = (1045, "28000");
    pub const UNKNOWN_COM: (u16, &str) = (1047, "08S01");
    pub const HANDSHAKE: (u16, &str) = (1043, "08S01");
    pub const PACKETS_OUT_OF_ORDER: (u16, &str) = (1156, "08S01");
    pub const NET_READ: (u16, &str) = (1158, "08S01");
    pub const PACKET_TOO_LARGE: (u16, &str) = (1153, "08S01");
    pub const UNKNOWN_STMT: (u16, &str) = (1243, "HY000");
    pub const READ_ONLY: (u16, &str) = (1290, "HY000");
    pub const NOT_SUPPORTED: (u16, &str) = (1235, "42000");
    pub const INSECURE_TRANSPORT: (u16, &str) = (3159, "HY000");
    /// ER_CONNECT_TO_FOREIGN_DATA_SOURCE, what MariaDB itself answers when it cannot reach
    /// another server on a client's behalf: no node could be connected to, so the statement
    /// did not run and may be sent again. The client's connection is fine (HY000, not 08).
    pub const BACKEND_UNREACHABLE: (u16, &str) = (1429, "HY000");
    /// ER_CONNECTION_KILLED with "communication link failure": the node's connection broke
    /// after the statement was sent (it may or may not have run), or during a transaction
    /// (it was rolled back). MaxScale answers the same case with the same code.
    pub const BACKEND_LOST: (u16, &str) = (1927, "08S01");
    /// ER_ERROR_DURING_COMMIT: a commit whose OK the router withheld (a failover).
    pub const WITHHELD: (u16, &str) = (1180, "HY000");
    /// ER_USER_LIMIT_REACHED: a LOAD DATA LOCAL file over `load_data_local_max_bytes`;
    /// nothing of it was loaded, and the session goes on.
    pub const FILE_TOO_LARGE: (u16, &str) = (1226, "42000");
    /// ER_USER_LIMIT_REACHED too: a `SET` past what a session keeps to replay
    /// (`session::routing::MAX_REPLAYS`); it did not run, and the session goes on.
    pub const SESSION_STATEMENTS: (u16, &str) = (1226, "42000");
    /// ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION: a LOAD DATA LOCAL inside a `START
    /// TRANSACTION READ ONLY` (on the reader), answered as the primary answers it.
    pub const READ_ONLY_TRANSACTION: (u16, &str) = (1792, "25006");

    /// Every code above, for the test that keeps them out of the client range.
    pub const ALL: &[(u16, &str)] = &[
        CON_COUNT,
        ACCESS_DENIED,
        UNKNOWN_COM,
        HANDSHAKE,
        PACKETS_OUT_OF_ORDER,
        NET_READ,
        PACKET_TOO_LARGE,
        UNKNOWN_STMT,
        READ_ONLY,
        NOT_SUPPORTED,
        INSECURE_TRANSPORT,
        BACKEND_UNREACHABLE,
        BACKEND_LOST,
        WITHHELD,
        FILE_TOO_LARGE,
        SESSION_STATEMENTS,
        READ_ONLY_TRANSACTION,
    ];
}

/// The default collation the router announces: utf8mb4_general_ci.
pub const DEFAULT_COLLATION: u8 = 45;

/// A read position in a payload. Every read returns None past the end.
#[derive(Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    pub fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        let b = self.bytes(2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        let b = self.bytes(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length-encoded integer. 0xFB (NULL) and 0xFF are not integers: None.
    pub fn lenenc_int(&mut self) -> Option<u64> {
        match self.u8()? {
            n @ 0..=0xFA => Some(u64::from(n)),
            0xFC => Some(u64::from(self.u16()?)),
            0xFD => {
                let b = self.bytes(3)?;
                Some(u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16)
            }
            0xFE => {
                let b = self.bytes(8)?;
                Some(u64::from_le_bytes(b.try_into().ok()?))
            }
            _ => None,
        }
    }

    pub fn lenenc_bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.lenenc_int()?).ok()?;
        self.bytes(len)
    }

    /// Bytes up to a NUL, which is consumed.
    pub fn nul_terminated(&mut self) -> Option<&'a [u8]> {
        let end = self.buf.iter().position(|&b| b == 0)?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Some(s)
    }
}

pub fn put_lenenc_int(out: &mut BytesMut, n: u64) {
    match n {
        0..=0xFA => out.put_u8(n as u8),
        0xFB..=0xFFFF => {
            out.put_u8(0xFC);
            out.put_u16_le(n as u16);
        }
        0x1_0000..=0xFF_FFFF => {
            out.put_u8(0xFD);
            out.put_uint_le(n, 3);
        }
        _ => {
            out.put_u8(0xFE);
            out.put_u64_le(n);
        }
    }
}

pub fn put_lenenc_bytes(out: &mut BytesMut, bytes: &[u8]) {
    put_lenenc_int(out, bytes.len() as u64);
    out.put_slice(bytes);
}

/// An ERR packet's payload. The SQLSTATE takes exactly five bytes (cut or padded with `0`),
/// as the protocol fixes.
pub fn err_packet((code, sqlstate): (u16, &str), message: &str) -> BytesMut {
    let mut out = BytesMut::with_capacity(9 + message.len());
    out.put_u8(0xFF);
    out.put_u16_le(code);
    out.put_u8(b'#');
    let state = sqlstate.as_bytes();
    for i in 0..5 {
        out.put_u8(state.get(i).copied().unwrap_or(b'0'));
    }
    out.put_slice(message.as_bytes());
    out
}

/// An OK packet's payload, as the router sends it itself (no session state).
pub fn ok_packet(status_flags: u16, client_caps: u32) -> BytesMut {
    let mut out = BytesMut::with_capacity(11);
    out.put_u8(0x00);
    put_lenenc_int(&mut out, 0);
    put_lenenc_int(&mut out, 0);
    out.put_u16_le(status_flags);
    out.put_u16_le(0);
    if client_caps & cap::SESSION_TRACK != 0 {
        put_lenenc_int(&mut out, 0);
    }
    out
}

/// The parts of an ERR packet a log line or a test needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: u16,
    /// The SQLSTATE the server sent ("HY000" when it sent none).
    pub sqlstate: String,
    pub message: String,
}

impl ServerError {
    /// The error as the router passes it on: the server's code, SQLSTATE and message.
    pub fn packet(&self) -> BytesMut {
        err_packet((self.code, &self.sqlstate), &self.message)
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error {}: {}", self.code, self.message)
    }
}

pub fn parse_err(payload: &[u8]) -> ServerError {
    let mut c = Cursor::new(payload);
    let _ = c.u8();
    let code = c.u16().unwrap_or(0);
    let mut rest = c.rest();
    let mut sqlstate = "HY000".to_owned();
    if rest.first() == Some(&b'#') && rest.len() >= 6 {
        sqlstate = String::from_utf8_lossy(&rest[1..6]).into_owned();
        rest = &rest[6..];
    }
    ServerError {
        code,
        sqlstate,
        message: String::from_utf8_lossy(rest).into_owned(),
    }
}

/// What the router learns from an OK packet (or a DEPRECATE_EOF terminator).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OkInfo {
    pub status: u16,
    /// `last_gtid` when the session tracker reported it.
    pub last_gtid: Option<String>,
    /// The current database when the session tracker reported a change.
    pub schema: Option<String>,
}

/// Parts of an OK packet, sent with SESSION_TRACK on.
struct OkParts<'a> {
    affected: u64,
    insert_id: u64,
    status: u16,
    warnings: u16,
    info: &'a [u8],
    state: &'a [u8],
}

fn split_ok(payload: &[u8]) -> Option<OkParts<'_>> {
    let mut c = Cursor::new(payload);
    c.u8()?;
    let affected = c.lenenc_int()?;
    let insert_id = c.lenenc_int()?;
    let status = c.u16()?;
    let warnings = c.u16()?;
    let info = if c.remaining() > 0 {
        c.lenenc_bytes()?
    } else {
        &[]
    };
    let state = if status & status::SESSION_STATE_CHANGED != 0 && c.remaining() > 0 {
        c.lenenc_bytes()?
    } else {
        &[]
    };
    Some(OkParts {
        affected,
        insert_id,
        status,
        warnings,
        info,
        state,
    })
}

/// Reads an OK packet a backend sent with SESSION_TRACK on.
pub fn parse_ok(payload: &[u8]) -> Option<OkInfo> {
    let parts = split_ok(payload)?;
    let mut info = OkInfo {
        status: parts.status,
        ..OkInfo::default()
    };
    let mut state = Cursor::new(parts.state);
    while state.remaining() > 0 {
        let kind = state.u8()?;
        let mut item = Cursor::new(state.lenenc_bytes()?);
        match kind {
            0 => {
                let name = item.lenenc_bytes()?;
                let value = item.lenenc_bytes()?;
                if name.eq_ignore_ascii_case(b"last_gtid") && !value.is_empty() {
                    info.last_gtid = Some(String::from_utf8_lossy(value).into_owned());
                }
            }
            1 => info.schema = Some(String::from_utf8_lossy(item.lenenc_bytes()?).into_owned()),
            _ => {}
        }
    }
    Some(info)
}

/// An OK packet from a backend (SESSION_TRACK on) rewritten for a client without
/// SESSION_TRACK: the info string unprefixed, no session state, its status bit cleared.
pub fn ok_without_session_track(payload: &[u8]) -> Option<BytesMut> {
    let parts = split_ok(payload)?;
    let mut out = BytesMut::with_capacity(payload.len());
    out.put_u8(payload[0]);
    put_lenenc_int(&mut out, parts.affected);
    put_lenenc_int(&mut out, parts.insert_id);
    out.put_u16_le(parts.status & !status::SESSION_STATE_CHANGED);
    out.put_u16_le(parts.warnings);
    out.put_slice(parts.info);
    Some(out)
}

/// The status flags of a classic EOF packet (0xFE, warnings, status).
pub fn eof_status(payload: &[u8]) -> Option<u16> {
    let mut c = Cursor::new(payload);
    c.u8()?;
    c.u16()?;
    c.u16()
}

/// True for an EOF packet, or an OK packet standing in for one (DEPRECATE_EOF): a 0xFE
/// header on a payload shorter than a row that starts with an 8-byte length could be.
pub fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&0xFE) && payload.len() < crate::packet::MAX_CHUNK
}

/// True for a classic 5-byte EOF packet. Servers still send one where DEPRECATE_EOF is on in
/// places (after the columns of a cursor), so the length, not the capability, tells it from
/// an OK packet (7 bytes at least).
pub fn is_classic_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&0xFE) && payload.len() == 5
}

/// The statement id a COM_STMT_* payload names (bytes 1..5).
pub fn statement_id(payload: &[u8]) -> Option<u32> {
    let mut c = Cursor::new(payload.get(1..)?);
    c.u32()
}

/// A copy of a COM_STMT_* payload naming `id` instead.
pub fn with_id(payload: &[u8], id: u32) -> BytesMut {
    let mut out = BytesMut::from(payload);
    if let Some(bytes) = out.get_mut(1..5) {
        bytes.copy_from_slice(&id.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_id_names_another_statement_and_keeps_the_rest() {
        let close = [com::STMT_CLOSE, 9, 0, 0, 0];
        let execute = [com::STMT_EXECUTE, 9, 0, 0, 0, 0, 1, 0, 0, 0];
        assert_eq!(statement_id(&close), Some(9));
        assert_eq!(
            &with_id(&close, 0x0102_0304)[..],
            &[com::STMT_CLOSE, 4, 3, 2, 1]
        );
        let rewritten = with_id(&execute, 77);
        assert_eq!(statement_id(&rewritten), Some(77));
        assert_eq!(rewritten[5..], execute[5..]);
        assert_eq!(statement_id(&close[..4]), None);
        assert_eq!(&with_id(&close[..4], 77)[..], &close[..4]);
    }

    #[test]
    fn lenenc_round_trips_at_every_width() {
        for n in [
            0,
            250,
            251,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut out = BytesMut::new();
            put_lenenc_int(&mut out, n);
            assert_eq!(Cursor::new(&out).lenenc_int(), Some(n), "{n}");
        }
        assert_eq!(Cursor::new(&[0xFC, 1]).lenenc_int(), None, "truncated");
        assert_eq!(
            Cursor::new(&[0xFB]).lenenc_int(),
            None,
            "NULL is no integer"
        );
    }

    /// An OK packet as MariaDB sends it after a commit with last_gtid tracked.
    fn ok_with_gtid() -> BytesMut {
        let mut item = BytesMut::new();
        put_lenenc_bytes(&mut item, b"last_gtid");
        put_lenenc_bytes(&mut item, b"0-1-42");
        let mut state = BytesMut::new();
        state.put_u8(0);
        put_lenenc_bytes(&mut state, &item);
        let mut ok = BytesMut::new();
        ok.put_u8(0);
        put_lenenc_int(&mut ok, 1);
        put_lenenc_int(&mut ok, 7);
        ok.put_u16_le(status::AUTOCOMMIT | status::SESSION_STATE_CHANGED);
        ok.put_u16_le(0);
        put_lenenc_bytes(&mut ok, b"");
        put_lenenc_bytes(&mut ok, &state);
        ok
    }

    #[test]
    fn ok_packet_yields_the_tracked_gtid() {
        let info = parse_ok(&ok_with_gtid()).unwrap();
        assert_eq!(info.last_gtid.as_deref(), Some("0-1-42"));
        assert_eq!(info.status & status::AUTOCOMMIT, status::AUTOCOMMIT);
    }

    #[test]
    fn ok_packet_is_rewritten_for_a_client_without_session_track() {
        let plain = ok_without_session_track(&ok_with_gtid()).unwrap();
        assert_eq!(&plain[..], &[0, 1, 7, 2, 0, 0, 0]);
    }

    #[test]
    fn err_packet_round_trips() {
        let err = err_packet(code::ACCESS_DENIED, "Access denied");
        assert_eq!(
            parse_err(&err),
            ServerError {
                code: 1045,
                sqlstate: "28000".into(),
                message: "Access denied".into()
            }
        );
    }

    #[test]
    fn the_routers_own_codes_are_server_codes() {
        for (code, sqlstate) in code::ALL {
            assert!(
                !(2000..3000).contains(code),
                "{code} is a client-side code: Connector/C shows 2027 instead"
            );
            assert_eq!(sqlstate.len(), 5, "{code}: SQLSTATE {sqlstate:?}");
        }
    }
}
