//! The connection phase, both sides: the router greets clients as a server would
//! (HandshakeV10), checks their login against `[[users]]`, and logs in to backends as a client
//! (HandshakeResponse41).
//!
//! Message building and parsing are pure functions (the fuzz target drives the parsers);
//! [`accept_client`] is the async flow. A client never reaches a backend before it has
//! proved its password: the backends are only contacted by the session afterwards.

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::auth::{self, NATIVE_PASSWORD};
use crate::config::Users;
use crate::packet::{PacketError, PacketStream};
use crate::wire::{self, Cursor, cap, code};

/// The server version clients see: MariaDB's, so drivers enable what MariaDB supports, with
/// the router named after it.
pub const SERVER_VERSION: &str = "10.11.0-MariaDB-foobar-db-router";

/// HandshakeV10, the first packet a server sends.
pub fn greeting(connection_id: u32, scramble: &[u8; 20], caps: u32) -> BytesMut {
    let mut out = BytesMut::with_capacity(128);
    out.put_u8(10);
    out.put_slice(SERVER_VERSION.as_bytes());
    out.put_u8(0);
    out.put_u32_le(connection_id);
    out.put_slice(&scramble[..8]);
    out.put_u8(0);
    out.put_u16_le(caps as u16);
    out.put_u8(wire::DEFAULT_COLLATION);
    out.put_u16_le(wire::status::AUTOCOMMIT);
    out.put_u16_le((caps >> 16) as u16);
    out.put_u8(21);
    out.put_bytes(0, 10);
    out.put_slice(&scramble[8..]);
    out.put_u8(0);
    out.put_slice(NATIVE_PASSWORD.as_bytes());
    out.put_u8(0);
    out
}

/// A client's HandshakeResponse41.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    pub caps: u32,
    pub collation: u8,
    pub user: String,
    pub auth: Vec<u8>,
    pub database: Option<String>,
    pub plugin: Option<String>,
}

/// Parses a HandshakeResponse41. A short SSLRequest (32 bytes) or a pre-4.1 response is
/// refused: the router offers neither.
pub fn parse_login(payload: &[u8]) -> Result<LoginRequest, &'static str> {
    let mut c = Cursor::new(payload);
    let caps = c.u32().ok_or("handshake response too short")?;
    if caps & cap::PROTOCOL_41 == 0 {
        return Err("clients older than protocol 4.1 are not supported");
    }
    c.u32().ok_or("handshake response too short")?;
    let collation = c.u8().ok_or("handshake response too short")?;
    c.bytes(23).ok_or("handshake response too short")?;
    if caps & cap::SSL != 0 && c.remaining() == 0 {
        return Err("TLS is not configured on this router; connect without TLS");
    }
    let user = c.nul_terminated().ok_or("user name missing")?;
    let auth = read_auth(&mut c, caps).ok_or("auth data malformed")?;
    let database = if caps & cap::CONNECT_WITH_DB != 0 {
        c.nul_terminated().map(lossy).filter(|db| !db.is_empty())
    } else {
        None
    };
    let plugin = if caps & cap::PLUGIN_AUTH != 0 {
        c.nul_terminated().map(lossy)
    } else {
        None
    };
    Ok(LoginRequest {
        caps,
        collation,
        user: lossy(user),
        auth: auth.to_vec(),
        database,
        plugin,
    })
}

fn read_auth<'a>(c: &mut Cursor<'a>, caps: u32) -> Option<&'a [u8]> {
    if caps & cap::PLUGIN_AUTH_LENENC_DATA != 0 {
        c.lenenc_bytes()
    } else if caps & cap::SECURE_CONNECTION != 0 {
        let len = c.u8()?;
        c.bytes(usize::from(len))
    } else {
        c.nul_terminated()
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A COM_CHANGE_USER request (the command byte included in `payload`).
pub fn parse_change_user(payload: &[u8], caps: u32) -> Result<LoginRequest, &'static str> {
    let mut c = Cursor::new(payload);
    c.u8().ok_or("empty")?;
    let user = c.nul_terminated().ok_or("user name missing")?;
    let auth = if caps & cap::SECURE_CONNECTION != 0 {
        let len = c.u8().ok_or("auth data missing")?;
        c.bytes(usize::from(len)).ok_or("auth data truncated")?
    } else {
        c.nul_terminated().ok_or("auth data missing")?
    };
    let database = c.nul_terminated().map(lossy).filter(|db| !db.is_empty());
    let collation = c.u16().map(|n| n as u8).unwrap_or(wire::DEFAULT_COLLATION);
    let plugin = if caps & cap::PLUGIN_AUTH != 0 {
        c.nul_terminated().map(lossy)
    } else {
        None
    };
    Ok(LoginRequest {
        caps,
        collation,
        user: lossy(user),
        auth: auth.to_vec(),
        database,
        plugin,
    })
}

/// AuthSwitchRequest: "answer this new scramble with mysql_native_password".
pub fn auth_switch(scramble: &[u8; 20]) -> BytesMut {
    let mut out = BytesMut::with_capacity(64);
    out.put_u8(0xFE);
    out.put_slice(NATIVE_PASSWORD.as_bytes());
    out.put_u8(0);
    out.put_slice(scramble);
    out.put_u8(0);
    out
}

/// A logged-in client: who, with what capabilities, in which database.
#[derive(Debug, Clone)]
pub struct ClientLogin {
    pub caps: u32,
    /// The scramble of the greeting; COM_CHANGE_USER answers are computed from it.
    pub scramble: [u8; 20],
    pub collation: u8,
    pub user: String,
    pub database: Option<String>,
}

/// Why the connection phase ended without a session.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("access denied for user {0:?}")]
    Denied(String),
    #[error("bad handshake: {0}")]
    Malformed(&'static str),
    #[error("{0}")]
    Packet(#[from] PacketError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Greets a client and checks its login; on failure the client has been sent its ERR packet.
pub async fn accept_client<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut PacketStream<S>,
    users: &Users,
    connection_id: u32,
    peer: &str,
) -> Result<ClientLogin, LoginError> {
    let scramble = auth::new_scramble();
    client
        .send(0, &greeting(connection_id, &scramble, cap::ROUTER))
        .await?;
    let (seq, payload) = client.read_packet().await?;
    let request = match parse_login(&payload) {
        Ok(request) => request,
        Err(why) => {
            let err = wire::err_packet(code::HANDSHAKE, &format!("Bad handshake: {why}"));
            client.send(seq.wrapping_add(1), &err).await?;
            return Err(LoginError::Malformed(why));
        }
    };
    let caps = request.caps & cap::ROUTER;
    let seq = authenticate(client, users, &request, &scramble, seq, peer).await?;
    client
        .send(seq, &wire::ok_packet(wire::status::AUTOCOMMIT, caps))
        .await?;
    Ok(ClientLogin {
        caps,
        scramble,
        collation: request.collation,
        user: request.user,
        database: request.database,
    })
}

/// Checks `request` against the configured users, switching the client to
/// mysql_native_password first when it answered with another plugin. Returns the sequence id
/// of the router's next packet (the OK). On a wrong password the client gets error 1045.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut PacketStream<S>,
    users: &Users,
    request: &LoginRequest,
    scramble: &[u8; 20],
    mut seq: u8,
    peer: &str,
) -> Result<u8, LoginError> {
    let mut scramble = *scramble;
    let mut answer = request.auth.clone();
    let native = request
        .plugin
        .as_deref()
        .is_none_or(|p| p == NATIVE_PASSWORD);
    if !native || !(answer.is_empty() || answer.len() == 20) {
        scramble = auth::new_scramble();
        client
            .send(seq.wrapping_add(1), &auth_switch(&scramble))
            .await?;
        let (next, reply) = client.read_packet().await?;
        seq = next;
        answer = reply.to_vec();
    }
    let known = users.get(&request.user);
    if known.is_some_and(|stored| auth::verify(stored.as_ref(), &scramble, &answer)) {
        return Ok(seq.wrapping_add(1));
    }
    let message = format!(
        "Access denied for user '{}'@'{peer}' (using password: {})",
        request.user,
        if answer.is_empty() { "NO" } else { "YES" }
    );
    client
        .send(
            seq.wrapping_add(1),
            &wire::err_packet(code::ACCESS_DENIED, &message),
        )
        .await?;
    Err(LoginError::Denied(request.user.clone()))
}

/// A backend's HandshakeV10, as far as logging in needs it.
#[derive(Debug)]
pub struct ServerGreeting {
    pub connection_id: u32,
    pub caps: u32,
    pub scramble: Vec<u8>,
    pub plugin: String,
}

pub fn parse_greeting(payload: &[u8]) -> Result<ServerGreeting, &'static str> {
    let mut c = Cursor::new(payload);
    if c.u8() != Some(10) {
        return Err("not a protocol 10 greeting");
    }
    c.nul_terminated().ok_or("server version missing")?;
    let connection_id = c.u32().ok_or("greeting truncated")?;
    let mut scramble = c.bytes(8).ok_or("greeting truncated")?.to_vec();
    c.u8().ok_or("greeting truncated")?;
    let low = c.u16().ok_or("greeting truncated")?;
    c.u8().ok_or("greeting truncated")?;
    c.u16().ok_or("greeting truncated")?;
    let high = c.u16().ok_or("greeting truncated")?;
    let caps = u32::from(low) | u32::from(high) << 16;
    let auth_len = c.u8().ok_or("greeting truncated")?;
    c.bytes(10).ok_or("greeting truncated")?;
    if caps & cap::SECURE_CONNECTION != 0 {
        let len = usize::from(auth_len).saturating_sub(8).max(13);
        let part = c.bytes(len).ok_or("greeting truncated")?;
        scramble.extend_from_slice(part.strip_suffix(&[0]).unwrap_or(part));
    }
    let plugin = if caps & cap::PLUGIN_AUTH != 0 {
        c.nul_terminated().map(lossy).unwrap_or_default()
    } else {
        NATIVE_PASSWORD.to_owned()
    };
    Ok(ServerGreeting {
        connection_id,
        caps,
        scramble,
        plugin,
    })
}

/// The router's HandshakeResponse41 to a backend.
pub fn login_request(
    caps: u32,
    collation: u8,
    user: &str,
    auth: &[u8],
    database: Option<&str>,
) -> BytesMut {
    let mut out = BytesMut::with_capacity(128);
    out.put_u32_le(caps);
    out.put_u32_le(crate::packet::MAX_CHUNK as u32);
    out.put_u8(collation);
    out.put_bytes(0, 23);
    out.put_slice(user.as_bytes());
    out.put_u8(0);
    wire::put_lenenc_bytes(&mut out, auth);
    if let Some(db) = database {
        out.put_slice(db.as_bytes());
        out.put_u8(0);
    }
    out.put_slice(NATIVE_PASSWORD.as_bytes());
    out.put_u8(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_request_round_trips_through_the_parser() {
        let caps = cap::BACKEND_BASE | cap::CONNECT_WITH_DB;
        let payload = login_request(caps, 45, "app", &[7; 20], Some("foobar"));
        let parsed = parse_login(&payload).unwrap();
        assert_eq!(parsed.user, "app");
        assert_eq!(parsed.auth, vec![7; 20]);
        assert_eq!(parsed.database.as_deref(), Some("foobar"));
        assert_eq!(parsed.plugin.as_deref(), Some(NATIVE_PASSWORD));
    }

    #[test]
    fn the_router_greeting_parses_as_a_backend_greeting() {
        let scramble = auth::new_scramble();
        let parsed = parse_greeting(&greeting(42, &scramble, cap::ROUTER)).unwrap();
        assert_eq!(parsed.connection_id, 42);
        assert_eq!(parsed.scramble, scramble);
        assert_eq!(parsed.plugin, NATIVE_PASSWORD);
        assert_eq!(parsed.caps & cap::SSL, 0, "no TLS offered");
    }

    #[test]
    fn truncated_handshakes_are_refused_not_panicked_on() {
        let payload = login_request(cap::BACKEND_BASE, 45, "app", &[7; 20], None);
        for len in 0..payload.len() {
            let _ = parse_login(&payload[..len]);
            let _ = parse_change_user(&payload[..len], cap::ROUTER);
            let _ = parse_greeting(&payload[..len]);
        }
    }
}
