//! The connection phase, both sides: the router greets clients as a server would
//! (HandshakeV10), checks their login against `[[users]]`, and logs in to backends as a client
//! (HandshakeResponse41).
//!
//! With a certificate configured the greeting offers CLIENT_SSL. A client that wants TLS
//! answers with an SSLRequest (the first 32 bytes of a HandshakeResponse41, sequence id 1),
//! then the TLS handshake runs on the same TCP stream, and the whole HandshakeResponse41
//! follows inside TLS (sequence id 2). The backends are always reached without TLS.
//!
//! Message building and parsing are pure functions, here (the fuzz target drives the
//! parsers); [`accept::accept_client`] is the async flow towards a client. A client never reaches a backend before it has
//! proved its password: the backends are only contacted by the session afterwards.

pub mod accept;

use bytes::{BufMut, BytesMut};

use crate::auth::NATIVE_PASSWORD;
use crate::wire::{self, Cursor, cap};

/// The server version clients see: MariaDB's, so drivers enable what MariaDB supports, with
/// the router named after it. The `5.5.5-` prefix is MariaDB's own (its servers send
/// `5.5.5-10.11.18-MariaDB-...`; MariaDB's connectors strip it): a MySQL driver reads a
/// version of 8 or more as MySQL 8 and asks for MySQL-only collations. Without it,
/// mysql-connector-python (pure) failed every login with 1273 Unknown collation
/// `utf8mb4_0900_ai_ci` (db-router/tests/clients.rs).
pub const SERVER_VERSION: &str = "5.5.5-10.11.0-MariaDB-foobar-db-router";

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

/// Whether a client's answer to the greeting is an SSLRequest: a HandshakeResponse41 that
/// stops after the capabilities (with CLIENT_SSL), max packet size, collation and filler.
pub fn is_ssl_request(payload: &[u8]) -> bool {
    payload.len() == SSL_REQUEST_LEN
        && Cursor::new(payload)
            .u32()
            .is_some_and(|caps| caps & cap::SSL != 0 && caps & cap::PROTOCOL_41 != 0)
}

/// An SSLRequest's length: 4 + 4 + 1 + 23 bytes.
const SSL_REQUEST_LEN: usize = 32;

/// Parses a HandshakeResponse41. An SSLRequest (which [`accept_client`] takes first when it
/// offers TLS) or a pre-4.1 response is refused.
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
    Ok(request_from(&mut c, caps, collation, user, auth, database))
}

/// Why a login must be refused for asking a capability that changes the wire format and was
/// not offered (see [`cap::WIRE_CHANGING`]); None when it asks for none.
pub fn unoffered_wire_change(asked: u32, offered: u32) -> Option<&'static str> {
    cap::WIRE_CHANGING
        .iter()
        .find(|(flag, _)| asked & flag != 0 && offered & flag == 0)
        .map(|(flag, _)| match *flag {
            cap::ZSTD_COMPRESSION => {
                "this router does not offer zstd compression; connect without it"
            }
            _ => "this router does not offer optional result set metadata; connect without it",
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
    Ok(request_from(&mut c, caps, collation, user, auth, database))
}

/// The end of both a HandshakeResponse41 and a COM_CHANGE_USER: the client's auth plugin
/// (named only under CLIENT_PLUGIN_AUTH), then the request from the fields read before it.
fn request_from(
    c: &mut Cursor<'_>,
    caps: u32,
    collation: u8,
    user: &[u8],
    auth: &[u8],
    database: Option<String>,
) -> LoginRequest {
    let plugin = if caps & cap::PLUGIN_AUTH != 0 {
        c.nul_terminated().map(lossy)
    } else {
        None
    };
    LoginRequest {
        caps,
        collation,
        user: lossy(user),
        auth: auth.to_vec(),
        database,
        plugin,
    }
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
        let scramble = crate::auth::new_scramble();
        let parsed = parse_greeting(&greeting(42, &scramble, cap::ROUTER)).unwrap();
        assert_eq!(parsed.connection_id, 42);
        assert_eq!(parsed.scramble, scramble);
        assert_eq!(parsed.plugin, NATIVE_PASSWORD);
        assert_eq!(parsed.caps & cap::SSL, 0, "no TLS offered");
        let offered = parse_greeting(&greeting(42, &scramble, cap::ROUTER | cap::SSL)).unwrap();
        assert_ne!(offered.caps & cap::SSL, 0, "TLS offered");
    }

    /// An SSLRequest as clients send it: a HandshakeResponse41 cut after the filler.
    pub(super) fn ssl_request(caps: u32) -> BytesMut {
        let mut payload = login_request(caps, 45, "app", &[7; 20], None);
        payload.truncate(SSL_REQUEST_LEN);
        payload
    }

    #[test]
    fn an_ssl_request_is_told_from_a_login() {
        let caps = cap::BACKEND_BASE | cap::SSL;
        assert!(is_ssl_request(&ssl_request(caps)));
        // The login that follows inside TLS keeps CLIENT_SSL and is a login.
        let login = login_request(caps, 45, "app", &[7; 20], None);
        assert!(!is_ssl_request(&login));
        assert_eq!(parse_login(&login).unwrap().user, "app");
        // 32 bytes without CLIENT_SSL, or one byte short, or pre-4.1: not an SSLRequest.
        assert!(!is_ssl_request(&ssl_request(cap::BACKEND_BASE)));
        assert!(!is_ssl_request(&ssl_request(caps)[..31]));
        assert!(!is_ssl_request(&ssl_request(caps & !cap::PROTOCOL_41)));
        // Where TLS is not offered, the parser refuses it with the reason.
        let refused = parse_login(&ssl_request(caps)).unwrap_err();
        assert!(refused.contains("TLS is not configured"), "{refused}");
    }

    #[test]
    fn wire_changing_capabilities_not_offered_are_refused() {
        assert_eq!(unoffered_wire_change(cap::ROUTER, cap::ROUTER), None);
        // LOCAL_FILES and other bits not offered are not a reason to refuse.
        assert_eq!(
            unoffered_wire_change(cap::ROUTER | 1 << 6, cap::ROUTER & !cap::LOCAL_FILES),
            None
        );
        for (flag, _) in cap::WIRE_CHANGING {
            let why = unoffered_wire_change(cap::ROUTER | flag, cap::ROUTER);
            assert!(
                why.is_some_and(|w| w.contains("connect without")),
                "{flag:#x}"
            );
            assert_eq!(
                unoffered_wire_change(cap::ROUTER | flag, cap::ROUTER | flag),
                None
            );
        }
        let why = unoffered_wire_change(cap::ROUTER | cap::ZSTD_COMPRESSION, cap::ROUTER).unwrap();
        assert!(why.contains("zstd"), "{why}");
    }

    /// A handshake cut before the end of its required fields is refused with an error, never
    /// a panic; cut in the optional fields after them (database, plugin name), it keeps what
    /// it was sent.
    #[test]
    fn truncated_handshakes_are_refused_not_panicked_on() {
        let caps = cap::BACKEND_BASE;
        let scramble = [7u8; 20];
        let plugin_name = NATIVE_PASSWORD.len() + 1;

        let login = login_request(caps, 45, "app", &scramble, None);
        // Capabilities, max packet, collation and filler; "app" and its NUL; the auth data.
        let required = 4 + 4 + 1 + 23 + 4 + 1 + 20;
        for len in 0..login.len() {
            match parse_login(&login[..len]) {
                Err(_) => assert!(len < required, "a whole login cut at {len} refused"),
                Ok(parsed) => {
                    assert!(len >= required, "a login cut at {len} bytes accepted");
                    assert_eq!(
                        (parsed.user.as_str(), &parsed.auth[..]),
                        ("app", &scramble[..])
                    );
                }
            }
        }

        let mut change_user = vec![0x11];
        change_user.extend_from_slice(b"app\0");
        change_user.push(20);
        change_user.extend_from_slice(&scramble);
        let required = change_user.len();
        change_user.extend_from_slice(b"foobar\0");
        change_user.extend_from_slice(&45u16.to_le_bytes());
        change_user.extend_from_slice(NATIVE_PASSWORD.as_bytes());
        change_user.push(0);
        for len in 0..change_user.len() {
            match parse_change_user(&change_user[..len], caps) {
                Err(_) => assert!(
                    len < required,
                    "a whole COM_CHANGE_USER cut at {len} refused"
                ),
                Ok(parsed) => {
                    assert!(
                        len >= required,
                        "a COM_CHANGE_USER cut at {len} bytes accepted"
                    );
                    assert_eq!(
                        (parsed.user.as_str(), &parsed.auth[..]),
                        ("app", &scramble[..])
                    );
                }
            }
        }

        let greeting = greeting(42, &scramble, caps);
        let required = greeting.len() - plugin_name;
        for len in 0..greeting.len() {
            match parse_greeting(&greeting[..len]) {
                Err(_) => assert!(len < required, "a whole greeting cut at {len} refused"),
                Ok(parsed) => {
                    assert!(len >= required, "a greeting cut at {len} bytes accepted");
                    assert_eq!(
                        (parsed.connection_id, &parsed.scramble[..]),
                        (42, &scramble[..])
                    );
                }
            }
        }
    }
}
