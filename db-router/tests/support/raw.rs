//! A minimal MySQL client for the tests that need control no driver gives: omitting the
//! parameter types on an EXECUTE, sending malformed packets, holding a transaction open and
//! vanishing. It speaks the protocol through the router crate's own packet codec.

use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::{BufMut, BytesMut};
use foobar_db_router::packet::PacketStream;
use foobar_db_router::wire::{self, Cursor, ServerError, cap};
use foobar_db_router::{auth, handshake};
use tokio::net::TcpStream;

/// Capabilities of this client: DEPRECATE_EOF on, SESSION_TRACK off (so the router's
/// rewriting of OK packets is exercised; drivers cover the other combination).
pub const CAPS: u32 = cap::LONG_PASSWORD
    | cap::PROTOCOL_41
    | cap::SECURE_CONNECTION
    | cap::PLUGIN_AUTH
    | cap::PLUGIN_AUTH_LENENC_DATA
    | cap::MULTI_STATEMENTS
    | cap::MULTI_RESULTS
    | cap::PS_MULTI_RESULTS
    | cap::TRANSACTIONS
    | cap::DEPRECATE_EOF;

pub type Rows = Vec<Vec<Option<String>>>;

/// An SSLRequest: the first 32 bytes of a HandshakeResponse41 with CLIENT_SSL, which a
/// client sends (sequence id 1) before it starts TLS.
pub fn ssl_request() -> BytesMut {
    let mut payload = handshake::login_request(CAPS | cap::SSL, 45, "", &[], None);
    payload.truncate(32);
    payload
}

pub struct RawClient {
    pub stream: PacketStream<TcpStream>,
    /// The greeting's scramble, which COM_CHANGE_USER answers too.
    scramble: Vec<u8>,
}

impl RawClient {
    /// Connects and logs in; the inner error is the server's answer to a refused login.
    pub async fn connect(
        addr: SocketAddr,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Result<Self, ServerError>> {
        Self::connect_with(addr, user, password, CAPS).await
    }

    /// [`RawClient::connect`] with capabilities `caps` instead of [`CAPS`].
    pub async fn connect_with(
        addr: SocketAddr,
        user: &str,
        password: &str,
        caps: u32,
    ) -> anyhow::Result<Result<Self, ServerError>> {
        let tcp = TcpStream::connect(addr).await?;
        let mut stream = PacketStream::new(tcp, 64 << 20);
        let (seq, greeting) = stream.read_packet().await?;
        if greeting.first() == Some(&0xFF) {
            return Ok(Err(wire::parse_err(&greeting)));
        }
        let greeting = handshake::parse_greeting(&greeting).map_err(anyhow::Error::msg)?;
        let answer = auth::answer(password.as_bytes(), &greeting.scramble);
        let login = handshake::login_request(caps, 45, user, &answer, None);
        stream.send(seq.wrapping_add(1), &login).await?;
        let (_, reply) = stream.read_packet().await?;
        match reply.first() {
            Some(0x00) => Ok(Ok(Self {
                stream,
                scramble: greeting.scramble,
            })),
            Some(0xFF) => Ok(Err(wire::parse_err(&reply))),
            other => anyhow::bail!("unexpected login reply {other:?}"),
        }
    }

    /// COM_CHANGE_USER to `user` with `password`: OK, or the server's error.
    pub async fn change_user(
        &mut self,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Result<(), ServerError>> {
        let answer = auth::answer(password.as_bytes(), &self.scramble);
        let mut payload = vec![0x11];
        payload.extend_from_slice(user.as_bytes());
        payload.push(0);
        payload.push(answer.len() as u8);
        payload.extend_from_slice(&answer);
        payload.extend_from_slice(b"foobar\0");
        payload.extend_from_slice(&45u16.to_le_bytes());
        payload.extend_from_slice(auth::NATIVE_PASSWORD.as_bytes());
        payload.push(0);
        self.send(&payload).await?;
        let (_, reply) = self.stream.read_packet().await?;
        match reply.first() {
            Some(0x00) => Ok(Ok(())),
            Some(0xFF) => Ok(Err(wire::parse_err(&reply))),
            other => anyhow::bail!("unexpected COM_CHANGE_USER reply {other:?}"),
        }
    }

    /// Sends one command payload (sequence id 0).
    pub async fn send(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        self.stream.send(0, payload).await?;
        Ok(())
    }

    /// A text query; the rows of its (last) result set, or the server's error.
    pub async fn query(&mut self, sql: &str) -> anyhow::Result<Result<Rows, ServerError>> {
        let mut payload = vec![0x03];
        payload.extend_from_slice(sql.as_bytes());
        self.send(&payload).await?;
        self.read_results(false).await
    }

    /// Like [`RawClient::query`], for a query that must succeed.
    pub async fn rows(&mut self, sql: &str) -> anyhow::Result<Rows> {
        self.query(sql)
            .await?
            .map_err(|e| anyhow::anyhow!("{sql}: {e}"))
    }

    /// Reads OK / ERR / result sets (text or binary rows of strings) until the last one.
    pub async fn read_results(
        &mut self,
        binary: bool,
    ) -> anyhow::Result<Result<Rows, ServerError>> {
        let mut rows = Vec::new();
        loop {
            let (_, first) = self.stream.read_packet().await?;
            let status = match first.first() {
                Some(0xFF) => return Ok(Err(wire::parse_err(&first))),
                Some(0x00) => ok_status(&first)?,
                _ => {
                    rows.clear();
                    let columns = Cursor::new(&first).lenenc_int().context("column count")?;
                    for _ in 0..columns {
                        self.stream.read_packet().await?;
                    }
                    loop {
                        let (_, row) = self.stream.read_packet().await?;
                        if row.first() == Some(&0xFF) {
                            return Ok(Err(wire::parse_err(&row)));
                        }
                        if wire::is_eof(&row) {
                            break ok_status(&row)?;
                        }
                        rows.push(if binary {
                            binary_row(&row, columns as usize)?
                        } else {
                            text_row(&row, columns as usize)?
                        });
                    }
                }
            };
            if status & wire::status::MORE_RESULTS_EXISTS == 0 {
                return Ok(Ok(rows));
            }
        }
    }

    /// COM_STMT_PREPARE: the statement id and its parameter count.
    pub async fn prepare(&mut self, sql: &str) -> anyhow::Result<(u32, u16)> {
        let mut payload = vec![0x16];
        payload.extend_from_slice(sql.as_bytes());
        self.send(&payload).await?;
        let (_, ok) = self.stream.read_packet().await?;
        anyhow::ensure!(
            ok.first() == Some(&0),
            "prepare {sql}: {}",
            wire::parse_err(&ok)
        );
        let mut c = Cursor::new(&ok[1..]);
        let (id, columns, params) = (c.u32().unwrap(), c.u16().unwrap(), c.u16().unwrap());
        for _ in 0..params + columns {
            self.stream.read_packet().await?;
        }
        Ok((id, params))
    }

    /// COM_STMT_EXECUTE with integer parameters, their types sent only if `send_types`.
    pub async fn execute(
        &mut self,
        id: u32,
        params: &[i64],
        send_types: bool,
    ) -> anyhow::Result<Result<Rows, ServerError>> {
        let mut payload = BytesMut::new();
        payload.put_u8(0x17);
        payload.put_u32_le(id);
        payload.put_u8(0);
        payload.put_u32_le(1);
        if !params.is_empty() {
            payload.put_bytes(0, params.len().div_ceil(8));
            payload.put_u8(u8::from(send_types));
            if send_types {
                for _ in params {
                    payload.put_u16_le(8);
                }
            }
            for p in params {
                payload.put_i64_le(*p);
            }
        }
        self.send(&payload).await?;
        self.read_results(true).await
    }
}

impl RawClient {
    /// After an EXECUTE that opened a cursor: the column count, once the columns are read.
    pub async fn read_cursor_open(&mut self) -> anyhow::Result<u64> {
        let (_, first) = self.stream.read_packet().await?;
        anyhow::ensure!(first.first() != Some(&0xFF), "{}", wire::parse_err(&first));
        let columns = Cursor::new(&first).lenenc_int().context("column count")?;
        for _ in 0..columns {
            self.stream.read_packet().await?;
        }
        let (_, end) = self.stream.read_packet().await?;
        anyhow::ensure!(wire::is_eof(&end), "no end of columns: {end:?}");
        Ok(columns)
    }

    /// COM_STMT_FETCH of `rows` rows of an open cursor (string columns).
    pub async fn fetch(&mut self, id: u32, rows: u32, columns: u64) -> anyhow::Result<Rows> {
        let mut payload = vec![0x1c];
        payload.extend_from_slice(&id.to_le_bytes());
        payload.extend_from_slice(&rows.to_le_bytes());
        self.send(&payload).await?;
        let mut out = Vec::new();
        loop {
            let (_, row) = self.stream.read_packet().await?;
            anyhow::ensure!(row.first() != Some(&0xFF), "{}", wire::parse_err(&row));
            if wire::is_eof(&row) {
                return Ok(out);
            }
            out.push(binary_row(&row, columns as usize)?);
        }
    }
}

fn ok_status(payload: &[u8]) -> anyhow::Result<u16> {
    let mut c = Cursor::new(payload);
    c.u8();
    c.lenenc_int().context("affected rows")?;
    c.lenenc_int().context("insert id")?;
    c.u16().context("status")
}

fn text_row(row: &[u8], columns: usize) -> anyhow::Result<Vec<Option<String>>> {
    let mut c = Cursor::new(row);
    (0..columns)
        .map(|_| {
            if c.rest().first() == Some(&0xFB) {
                c.u8();
                return Ok(None);
            }
            let value = c.lenenc_bytes().context("text value")?;
            Ok(Some(String::from_utf8_lossy(value).into_owned()))
        })
        .collect()
}

/// A binary row whose columns are all strings (the tests CAST to CHAR).
fn binary_row(row: &[u8], columns: usize) -> anyhow::Result<Vec<Option<String>>> {
    let mut c = Cursor::new(row);
    c.u8();
    let bitmap = c.bytes((columns + 9) / 8).context("null bitmap")?.to_vec();
    (0..columns)
        .map(|i| {
            let bit = i + 2;
            if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
                return Ok(None);
            }
            let value = c.lenenc_bytes().context("binary value")?;
            Ok(Some(String::from_utf8_lossy(value).into_owned()))
        })
        .collect()
}
