//! The connection phase towards a client, as an async flow: greet it, take it through TLS
//! when it asks (and TLS is configured), check its login, answer OK or the error. The
//! messages it reads and writes are the parent module's pure functions.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::{
    LoginRequest, auth_switch, greeting, is_ssl_request, parse_login, unoffered_wire_change,
};
use crate::auth::{self, NATIVE_PASSWORD};
use crate::compress::Compressed;
use crate::config::Users;
use crate::packet::{PacketError, PacketStream};
use crate::wire::{self, cap, code};

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

/// A logged-in client's connection, plain or TLS, compressed or not: four types rather than
/// one stream behind a `dyn`, so the session is compiled for each and a plain one pays
/// nothing for TLS or compression. The TLS state (over a kilobyte) lives on the heap, so a
/// TLS session's task stays as small.
pub enum ClientConnection<S> {
    Plain(PacketStream<S>),
    Tls(PacketStream<Box<TlsStream<S>>>),
    Compressed(PacketStream<Compressed<S>>),
    TlsCompressed(PacketStream<Compressed<Box<TlsStream<S>>>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientConnection<S> {
    fn plain(client: PacketStream<S>, login: &ClientLogin, max_packet: usize) -> Self {
        match login.caps & cap::COMPRESS {
            0 => Self::Plain(client),
            _ => Self::Compressed(compressed(client, max_packet)),
        }
    }

    fn tls(
        client: PacketStream<Box<TlsStream<S>>>,
        login: &ClientLogin,
        max_packet: usize,
    ) -> Self {
        match login.caps & cap::COMPRESS {
            0 => Self::Tls(client),
            _ => Self::TlsCompressed(compressed(client, max_packet)),
        }
    }
}

/// The client's connection from its login's OK on, which went uncompressed.
fn compressed<T: AsyncRead + AsyncWrite + Unpin>(
    client: PacketStream<T>,
    max_packet: usize,
) -> PacketStream<Compressed<T>> {
    let (stream, received) = client.into_parts();
    PacketStream::new(Compressed::new(stream, received), max_packet)
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
            let client = ClientConnection::tls(client, &login, max_packet);
            Ok((client, login))
        }
        Some(tls) if tls.required => {
            let message = "Connections using insecure transport are prohibited while \
                           --require_secure_transport=ON.";
            refuse(&mut client, seq, code::INSECURE_TRANSPORT, message).await?;
            Err(LoginError::InsecureTransport)
        }
        _ => {
            let login = login(&mut client, users, &scramble, seq, &payload, peer, offered).await?;
            let client = ClientConnection::plain(client, &login, max_packet);
            Ok((client, login))
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

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::config::UserConfig;
    use crate::handshake::tests::ssl_request;
    use crate::handshake::{login_request, parse_greeting};
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
    async fn plain_login(required: bool) -> (BytesMut, Result<(bool, ClientLogin), LoginError>) {
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
    async fn a_login_asking_for_compression_is_answered_uncompressed_then_compressed() {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let router = tokio::spawn(async move {
            let (client, login) = accept_client(theirs, None, &users(), 7, "peer", 1 << 20)
                .await
                .unwrap();
            let ClientConnection::Compressed(mut client) = client else {
                panic!("not a compressed connection");
            };
            let (seq, command) = client.read_packet().await.unwrap();
            client.send(seq + 1, &command).await.unwrap();
            login
        });
        let mut client = PacketStream::new(ours, 1 << 20);
        let (seq, greeting) = client.read_packet().await.unwrap();
        let greeting = parse_greeting(&greeting).unwrap();
        assert_ne!(greeting.caps & cap::COMPRESS, 0, "compression offered");
        let caps = cap::BACKEND_BASE | cap::COMPRESS;
        let reply = log_in(&mut client, &greeting.scramble, caps, seq + 1).await;
        assert_eq!(reply.first(), Some(&0x00), "an uncompressed OK: {reply:?}");
        let (stream, _) = client.into_parts();
        let mut client = PacketStream::new(Compressed::new(stream, BytesMut::new()), 1 << 20);
        let command = b"\x03SELECT 'an echo long enough to be deflated, deflated, deflated'";
        client.send(0, command).await.unwrap();
        let (seq, echo) = client.read_packet().await.unwrap();
        assert_eq!((seq, &echo[..]), (1, &command[..]));
        assert_ne!(router.await.unwrap().caps & cap::COMPRESS, 0);
    }

    #[tokio::test]
    async fn a_login_asking_for_zstd_is_refused_not_left_hanging() {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let router = router(theirs, None);
        let mut client = PacketStream::new(ours, 1 << 20);
        let (seq, greeting) = client.read_packet().await.unwrap();
        let greeting = parse_greeting(&greeting).unwrap();
        assert_eq!(greeting.caps & cap::ZSTD_COMPRESSION, 0, "zstd not offered");
        let caps = cap::BACKEND_BASE | cap::COMPRESS | cap::ZSTD_COMPRESSION;
        let reply = log_in(&mut client, &greeting.scramble, caps, seq + 1).await;
        let error = wire::parse_err(&reply);
        assert_eq!((error.code, error.sqlstate.as_str()), (1043, "08S01"));
        assert!(error.message.contains("zstd"), "{error:?}");
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
