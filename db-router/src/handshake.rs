//! The connection phase, both sides: the router greets clients as a server would
//! (HandshakeV10), checks their login against `[[users]]`, and logs in to backends as a client
//! (HandshakeResponse41).
//!
//! With a certificate configured the greeting offers CLIENT_SSL. A client that wants TLS
//! answers with an SSLRequest (the first 32 bytes of a HandshakeResponse41, sequence id 1),
//! then the TLS handshake runs on the same TCP stream, and the whole HandshakeResponse41
//! follows inside TLS (sequence id 2). The backends are always reached without TLS.
//!
//! Message building and parsing are pure functions (the fuzz target drives the parsers);
//! [`accept_client`] is the async flow. A client never reaches a backend before it has
//! proved its password: the backends are only contacted by the session afterwards.

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

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

/// Why a login must be refused for asking a capability that changes the wire format and was
/// not offered (see [`cap::WIRE_CHANGING`]); None when it asks for none.
pub fn unoffered_wire_change(asked: u32, offered: u32) -> Option<&'static str> {
    cap::WIRE_CHANGING
        .iter()
        .find(|(flag, _)| asked & flag != 0 && offered & flag == 0)
        .map(|(flag, _)| match *flag {
            cap::COMPRESS => {
                "this router does not offer compression (CLIENT_COMPRESS); connect without it"
            }
            cap::ZSTD_COMPRESSION => {
                "this router does not offer zstd compression; connect without it"
            }
            cap::OPTIONAL_RESULTSET_METADATA => {
                "this router does not offer optional result set metadata; connect without it"
            }
            _ => "this router does not offer query attributes; connect without them",
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
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("refused a login without TLS (require_tls)")]
    InsecureTransport,
    #[error("bad handshake: {0}")]
    Malformed(&'static str),
    #[error("{0}")]
    Packet(#[from] PacketError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What the router offers clients for TLS, from `[router]`'s `tls_*` keys.
pub struct ClientTls {
    pub acceptor: TlsAcceptor,
    /// Refuse a client that logs in without TLS.
    pub required: bool,
}

/// A logged-in client's connection, plain or TLS: two types rather than one stream behind a
/// `dyn`, so the session is compiled for each and a plain one pays nothing for TLS. The TLS
/// state (over a kilobyte) lives on the heap, so a TLS session's task stays as small.
pub enum ClientConnection<S> {
    Plain(PacketStream<S>),
    Tls(PacketStream<Box<TlsStream<S>>>),
}

/// Greets a client, takes it through TLS when it asks (and `tls` is configured), and checks
/// its login; on failure the client has been sent its ERR packet when there was a way to.
pub async fn accept_client<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    tls: Option<&ClientTls>,
    users: &Users,
    connection_id: u32,
    peer: &str,
    max_packet: usize,
) -> Result<(ClientConnection<S>, ClientLogin), LoginError> {
    let mut client = PacketStream::new(stream, max_packet);
    let scramble = auth::new_scramble();
    let offered = match tls {
        Some(_) => cap::ROUTER | cap::SSL,
        None => cap::ROUTER,
    };
    client
        .send(0, &greeting(connection_id, &scramble, offered))
        .await?;
    // Read alone: what follows an SSLRequest is the TLS handshake, rustls's to read.
    let (seq, payload) = client.read_packet_unbuffered().await?;
    match tls {
        Some(tls) if is_ssl_request(&payload) => {
            let stream = tls
                .acceptor
                .accept(client.into_inner())
                .await
                .map_err(LoginError::Tls)?;
            let mut client = PacketStream::new(Box::new(stream), max_packet);
            let (seq, payload) = client.read_packet().await?;
            if is_ssl_request(&payload) {
                refuse(
                    &mut client,
                    seq,
                    code::HANDSHAKE,
                    "Bad handshake: TLS has already started",
                )
                .await?;
                return Err(LoginError::Malformed("a second SSLRequest"));
            }
            let login = login(&mut client, users, &scramble, seq, &payload, peer, offered).await?;
            Ok((ClientConnection::Tls(client), login))
        }
        Some(tls) if tls.required => {
            let message = "Connections using insecure transport are prohibited while \
                           --require_secure_transport=ON.";
            refuse(&mut client, seq, code::INSECURE_TRANSPORT, message).await?;
            Err(LoginError::InsecureTransport)
        }
        _ => {
            let login = login(&mut client, users, &scramble, seq, &payload, peer, offered).await?;
            Ok((ClientConnection::Plain(client), login))
        }
    }
}

/// Answers the client's packet `seq` with an error.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut PacketStream<S>,
    seq: u8,
    code: (u16, &str),
    message: &str,
) -> std::io::Result<()> {
    client
        .send(seq.wrapping_add(1), &wire::err_packet(code, message))
        .await
        .map(drop)
}

/// Checks the HandshakeResponse41 `payload` (packet `seq`) and answers OK or the error.
async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut PacketStream<S>,
    users: &Users,
    scramble: &[u8; 20],
    seq: u8,
    payload: &[u8],
    peer: &str,
    offered: u32,
) -> Result<ClientLogin, LoginError> {
    let request =
        match parse_login(payload).and_then(|r| match unoffered_wire_change(r.caps, offered) {
            Some(why) => Err(why),
            None => Ok(r),
        }) {
            Ok(request) => request,
            Err(why) => {
                refuse(
                    client,
                    seq,
                    code::HANDSHAKE,
                    &format!("Bad handshake: {why}"),
                )
                .await?;
                return Err(LoginError::Malformed(why));
            }
        };
    let caps = request.caps & cap::ROUTER;
    let seq = authenticate(client, users, &request, scramble, seq, peer).await?;
    client
        .send(seq, &wire::ok_packet(wire::status::AUTOCOMMIT, caps))
        .await?;
    Ok(ClientLogin {
        caps,
        scramble: *scramble,
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
        let offered = parse_greeting(&greeting(42, &scramble, cap::ROUTER | cap::SSL)).unwrap();
        assert_ne!(offered.caps & cap::SSL, 0, "TLS offered");
    }

    /// An SSLRequest as clients send it: a HandshakeResponse41 cut after the filler.
    fn ssl_request(caps: u32) -> BytesMut {
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
            unoffered_wire_change(cap::ROUTER | cap::LOCAL_FILES | 1 << 6, cap::ROUTER),
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
        let why = unoffered_wire_change(cap::ROUTER | cap::COMPRESS, cap::ROUTER).unwrap();
        assert!(why.contains("CLIENT_COMPRESS"), "{why}");
    }

    mod flow {
        use super::*;
        use crate::config::UserConfig;
        use crate::packet::PacketStream;
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
        use tokio_rustls::rustls;

        fn users() -> Users {
            Users::resolve(&[UserConfig {
                name: "app".into(),
                password: "pw".into(),
                ..UserConfig::default()
            }])
            .unwrap()
        }

        /// A router's TLS settings with a fresh self-signed certificate for `localhost`, and
        /// a client configuration that trusts exactly it.
        fn tls(required: bool) -> (ClientTls, tokio_rustls::TlsConnector) {
            let dir = tempfile::tempdir().unwrap();
            let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&cert, made.cert.pem()).unwrap();
            std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
            let server = foobar_service::tls::server_config(&cert, &key).unwrap();
            let mut roots = rustls::RootCertStore::empty();
            roots.add(made.cert.der().clone()).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let client = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let acceptor = TlsAcceptor::from(Arc::new(server));
            let tls = ClientTls { acceptor, required };
            (tls, tokio_rustls::TlsConnector::from(Arc::new(client)))
        }

        /// The router's side of the connection phase, run on a task.
        fn router(
            stream: DuplexStream,
            tls: Option<ClientTls>,
        ) -> tokio::task::JoinHandle<Result<(bool, ClientLogin), LoginError>> {
            tokio::spawn(async move {
                let (client, login) =
                    accept_client(stream, tls.as_ref(), &users(), 7, "peer", 1 << 20).await?;
                Ok((matches!(client, ClientConnection::Tls(_)), login))
            })
        }

        /// Sends a login (`caps`, the right password, database foobar); returns the answer.
        async fn log_in<S: AsyncRead + AsyncWrite + Unpin>(
            client: &mut PacketStream<S>,
            scramble: &[u8],
            caps: u32,
            seq: u8,
        ) -> BytesMut {
            let answer = auth::answer(b"pw", scramble);
            let caps = caps | cap::CONNECT_WITH_DB;
            let login = login_request(caps, 45, "app", &answer, Some("foobar"));
            client.send(seq, &login).await.unwrap();
            client.read_packet().await.unwrap().1
        }

        #[tokio::test]
        async fn a_client_logs_in_inside_tls_after_an_ssl_request() {
            // Bounded: bytes lost between the SSLRequest and TLS would hang both sides.
            let login_over_tls = async {
                let (tls, connector) = tls(true);
                let (ours, theirs) = tokio::io::duplex(64 * 1024);
                let router = router(theirs, Some(tls));
                let mut client = PacketStream::new(ours, 1 << 20);
                let (seq, greeting) = client.read_packet().await.unwrap();
                let greeting = parse_greeting(&greeting).unwrap();
                assert_ne!(greeting.caps & cap::SSL, 0, "TLS offered");
                let caps = cap::BACKEND_BASE | cap::SSL;
                client.send(seq + 1, &ssl_request(caps)).await.unwrap();
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let stream = connector.connect(name, client.into_inner()).await.unwrap();
                let mut client = PacketStream::new(stream, 1 << 20);
                let reply = log_in(&mut client, &greeting.scramble, caps, seq + 2).await;
                assert_eq!(reply.first(), Some(&0x00), "OK: {reply:?}");
                let (over_tls, login) = router.await.unwrap().unwrap();
                assert!(over_tls);
                assert_eq!(login.user, "app");
                assert_eq!(login.database.as_deref(), Some("foobar"));
            };
            let ten_seconds = std::time::Duration::from_secs(10);
            tokio::time::timeout(ten_seconds, login_over_tls)
                .await
                .expect("logged in within 10 s");
        }

        /// A login without an SSLRequest to a router with TLS configured (`required` or only
        /// offered): the router's answer, and how its side ended.
        async fn plain_login(
            required: bool,
        ) -> (BytesMut, Result<(bool, ClientLogin), LoginError>) {
            let (tls, _) = tls(required);
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            let router = router(theirs, Some(tls));
            let mut client = PacketStream::new(ours, 1 << 20);
            let (seq, greeting) = client.read_packet().await.unwrap();
            let scramble = parse_greeting(&greeting).unwrap().scramble;
            let reply = log_in(&mut client, &scramble, cap::BACKEND_BASE, seq + 1).await;
            (reply, router.await.unwrap())
        }

        #[tokio::test]
        async fn a_plain_login_is_refused_when_tls_is_required() {
            let (reply, ended) = plain_login(true).await;
            let error = wire::parse_err(&reply);
            assert_eq!(error.code, 3159, "{error:?}");
            assert!(matches!(ended, Err(LoginError::InsecureTransport)));
        }

        #[tokio::test]
        async fn a_plain_login_is_served_when_tls_is_offered_not_required() {
            let (reply, ended) = plain_login(false).await;
            assert_eq!(reply.first(), Some(&0x00), "OK: {reply:?}");
            let (over_tls, _) = ended.unwrap();
            assert!(!over_tls);
        }

        #[tokio::test]
        async fn a_login_asking_for_compression_is_refused_not_left_hanging() {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            let router = router(theirs, None);
            let mut client = PacketStream::new(ours, 1 << 20);
            let (seq, greeting) = client.read_packet().await.unwrap();
            let greeting = parse_greeting(&greeting).unwrap();
            assert_eq!(greeting.caps & cap::COMPRESS, 0, "compression not offered");
            let caps = cap::BACKEND_BASE | cap::COMPRESS;
            let reply = log_in(&mut client, &greeting.scramble, caps, seq + 1).await;
            let error = wire::parse_err(&reply);
            assert_eq!((error.code, error.sqlstate.as_str()), (1043, "08S01"));
            assert!(error.message.contains("CLIENT_COMPRESS"), "{error:?}");
            assert!(matches!(
                router.await.unwrap(),
                Err(LoginError::Malformed(_))
            ));
        }

        #[tokio::test]
        async fn garbage_after_an_ssl_request_is_a_tls_error() {
            let (tls, _) = tls(false);
            let (mut ours, theirs) = tokio::io::duplex(64 * 1024);
            let router = router(theirs, Some(tls));
            let mut greeting = [0; 128];
            let _ = ours.read(&mut greeting).await.unwrap();
            // The SSLRequest and the garbage in one write: nothing of it may be taken as MySQL.
            let mut bytes = BytesMut::new();
            crate::packet::encode(&mut bytes, 1, &ssl_request(cap::BACKEND_BASE | cap::SSL));
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            ours.write_all(&bytes).await.unwrap();
            let ended = tokio::time::timeout(std::time::Duration::from_secs(5), router).await;
            let ended = ended.expect("the handshake must end, not wait for more");
            assert!(matches!(ended.unwrap(), Err(LoginError::Tls(_))));
        }

        #[tokio::test]
        async fn an_ssl_request_without_tls_configured_gets_a_clear_error() {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            let router = router(theirs, None);
            let mut client = PacketStream::new(ours, 1 << 20);
            let (seq, greeting) = client.read_packet().await.unwrap();
            assert_eq!(parse_greeting(&greeting).unwrap().caps & cap::SSL, 0);
            let request = ssl_request(cap::BACKEND_BASE | cap::SSL);
            client.send(seq + 1, &request).await.unwrap();
            let error = wire::parse_err(&client.read_packet().await.unwrap().1);
            assert_eq!(error.code, 1043);
            assert!(error.message.contains("TLS is not configured"), "{error:?}");
            assert!(matches!(
                router.await.unwrap(),
                Err(LoginError::Malformed(_))
            ));
        }
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
