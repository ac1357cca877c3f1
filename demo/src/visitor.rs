//! A visitor's connections to https://www.foobar.com, made the way browsers and curl make
//! them, so that the demo sees what they would see.
//!
//! - Every new connection asks foobar-dns again ([`crate::resolve`]), so a balancer taken out
//!   of DNS stops getting new connections within the TTL; a DNS server that does not answer
//!   within `dns_timeout` is left for the next one.
//! - The addresses are tried in order; a refused connection, a connect timeout or a TLS
//!   handshake that does not finish moves on to the next one (a dead balancer's address may
//!   not refuse at all: its IP is simply gone; a frozen one's kernel accepts TCP and nothing
//!   more). An address that failed is tried last for [`FAILED_ADDRESS_MEMORY`], as browsers
//!   remember a failed address, so a dead balancer costs a visitor its timeout once.
//! - TLS trusts only the stack's CA, with SNI www.foobar.com; HTTP/1.1 with keep-alive, a
//!   connection living a bounded number of requests and seconds, so DNS changes are followed.
//! - An idle connection the server has closed is not reused (checked without waiting).
//! - Each attempt has `attempt_timeout`; a request that may be sent again (a GET, or a POST
//!   carrying its write's `Idempotency-Key`, [`crate::http1::Request`]: the site stores it
//!   once however often it arrives) goes again on a new connection, to another address when
//!   DNS gives one, when its attempt failed in any way (no connection, the connection died,
//!   no answer in time), up to [`MAX_ATTEMPTS`] within `request_timeout`. A POST without a key
//!   is never sent twice. An HTTP answer, 5xx included, is an answer: never retried. A
//!   request fails only when every attempt failed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::http1::{self, Method, Request, Response};
use crate::resolve::Resolver;

/// Where the site is and how a visitor connects to it.
#[derive(Debug, Clone)]
pub struct VisitorConfig {
    /// The stack's DNS servers (dns-1, dns-2), asked for every new connection: the one that
    /// answered last first, the next when it does not answer within `dns_timeout`.
    pub dns_servers: Vec<SocketAddr>,
    /// How long one DNS server has to answer before the next is asked.
    pub dns_timeout: Duration,
    /// The site's name: asked in DNS, sent as SNI and `Host`.
    pub host: String,
    /// The HTTPS port on every address DNS gives.
    pub port: u16,
    /// The CA certificate (PEM) that signed the balancers' certificate.
    pub ca_file: PathBuf,
    /// A TCP connect, or a TLS handshake, slower than this moves on to the next address.
    pub connect_timeout: Duration,
    /// One attempt of a request, connecting included; past it a request that may be sent
    /// again goes to another address.
    pub attempt_timeout: Duration,
    /// The longest a request may take, every attempt included.
    pub request_timeout: Duration,
    /// A connection is closed after this many requests ...
    pub max_requests_per_connection: u32,
    /// ... or after this long, whichever comes first.
    pub max_connection_age: Duration,
}

impl Default for VisitorConfig {
    fn default() -> Self {
        Self {
            dns_servers: vec![
                SocketAddr::from(([127, 0, 0, 1], 5353)),
                SocketAddr::from(([127, 0, 0, 1], 5354)),
            ],
            dns_timeout: Duration::from_millis(300),
            host: "www.foobar.com".into(),
            port: 443,
            ca_file: PathBuf::from("tls/ca.pem"),
            connect_timeout: Duration::from_millis(500),
            // Longer than any answer of a healthy stack (a write's commit may wait 1 s for
            // semi-sync; p99 is about 0.2 s on this machine), shorter than the balancers'
            // health checks take to drop a frozen one (2 failures 1 s apart).
            attempt_timeout: Duration::from_millis(1500),
            request_timeout: Duration::from_secs(10),
            max_requests_per_connection: 100,
            max_connection_age: Duration::from_secs(10),
        }
    }
}

/// Attempts of one request at most.
pub const MAX_ATTEMPTS: u32 = 3;

/// How long an address that failed is tried after the others.
pub const FAILED_ADDRESS_MEMORY: Duration = Duration::from_secs(10);

/// What happened to one request.
#[derive(Debug)]
pub struct Answer {
    /// The answer, or every attempt's failure.
    pub result: Result<Response, String>,
    /// It was attempted more than once.
    pub retried: bool,
    /// The balancer address that answered (or was last tried).
    pub address: Option<SocketAddr>,
}

/// Counters of one visitor, for tests and progress lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VisitorStats {
    pub lookups: u64,
    pub connections: u64,
    /// Addresses that refused, or did not accept or finish TLS within the connect timeout.
    pub skipped_addresses: u64,
    /// Attempts after a request's first.
    pub retries: u64,
}

/// One browser tab: one connection at a time, opened when needed.
pub struct Visitor {
    config: Arc<VisitorConfig>,
    resolver: Resolver,
    tls: TlsConnector,
    server_name: ServerName<'static>,
    connection: Option<Connection>,
    /// Addresses that failed, and when: tried last until [`FAILED_ADDRESS_MEMORY`] has passed.
    failed: HashMap<IpAddr, Instant>,
    pub stats: VisitorStats,
}

struct Connection {
    stream: TlsStream<TcpStream>,
    address: SocketAddr,
    requests: u32,
    opened: Instant,
}

impl Connection {
    /// Whether the server has closed this idle connection (or sent something unasked), seen
    /// without waiting: browsers check this before reusing a connection, so a crashed
    /// balancer's closed connections cost no request.
    async fn closed_by_peer(&mut self) -> bool {
        let mut byte = [0u8; 1];
        // A zero timeout still polls the read once: a pending close is seen, nothing waits.
        timeout(Duration::ZERO, self.stream.read(&mut byte))
            .await
            .is_ok()
    }
}

impl Visitor {
    pub fn new(config: Arc<VisitorConfig>) -> anyhow::Result<Self> {
        let resolver = Resolver::new(&config.dns_servers, &config.host, config.dns_timeout)?;
        Ok(Self {
            tls: tls_connector(&config)?,
            server_name: ServerName::try_from(config.host.clone())
                .with_context(|| format!("{:?} as a TLS server name", config.host))?,
            resolver,
            config,
            connection: None,
            failed: HashMap::new(),
            stats: VisitorStats::default(),
        })
    }

    /// Sends `request` and waits for its answer: each attempt within the attempt timeout, all
    /// of them within the request timeout.
    pub async fn send(&mut self, request: &Request) -> Answer {
        let config = Arc::clone(&self.config);
        let deadline = Instant::now() + config.request_timeout;
        let repeatable = request.method == Method::Get || request.idempotency_key.is_some();
        let mut address = None;
        let mut failures = Vec::new();
        for attempt in 1..=MAX_ATTEMPTS {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if attempt > 1 {
                self.stats.retries += 1;
            }
            address = None;
            let limit = config.attempt_timeout.min(left);
            let (result, sent) = match timeout(limit, self.attempt(request, &mut address)).await {
                Ok(result) => result,
                // The connection is in an unknown state: never reuse it.
                Err(_) => (Err(format!("no answer within {limit:?}")), true),
            };
            match result {
                Ok(response) => {
                    return Answer {
                        result: Ok(response),
                        retried: attempt > 1,
                        address,
                    };
                }
                Err(failure) => {
                    self.connection = None;
                    if let Some(failed) = address {
                        self.failed.insert(failed.ip(), Instant::now());
                    }
                    failures.push(match address {
                        Some(address) => format!("{address}: {failure}"),
                        None => failure,
                    });
                    if sent && !repeatable {
                        break;
                    }
                }
            }
        }
        Answer {
            result: Err(failures.join("; then ")),
            retried: failures.len() > 1,
            address,
        }
    }

    /// One attempt: a connection (the open one, or a new one) and one exchange on it; the
    /// failure says whether the request may have reached a server (false: nothing was sent).
    async fn attempt(
        &mut self,
        request: &Request,
        address: &mut Option<SocketAddr>,
    ) -> (Result<Response, String>, bool) {
        let host = self.config.host.clone();
        let connection = match self.connection().await {
            Ok(connection) => connection,
            Err(e) => return (Err(e), false),
        };
        *address = Some(connection.address);
        match http1::exchange(&mut connection.stream, &host, request).await {
            Ok(response) => {
                connection.requests += 1;
                if !response.reusable {
                    self.connection = None;
                }
                (Ok(response), true)
            }
            Err(failure) => (Err(failure.to_string()), true),
        }
    }

    /// The open connection, or a new one if there is none or it has served its share.
    async fn connection(&mut self) -> Result<&mut Connection, String> {
        let config = &self.config;
        let worn_out = self.connection.as_ref().is_some_and(|c| {
            c.requests >= config.max_requests_per_connection
                || c.opened.elapsed() >= config.max_connection_age
        });
        if worn_out {
            self.connection = None;
        }
        if let Some(connection) = &mut self.connection {
            if connection.closed_by_peer().await {
                self.connection = None;
            }
        }
        if self.connection.is_none() {
            self.connection = Some(self.connect().await?);
        }
        Ok(self.connection.as_mut().expect("set just above"))
    }

    async fn connect(&mut self) -> Result<Connection, String> {
        self.stats.lookups += 1;
        let mut addresses = self
            .resolver
            .lookup()
            .await
            .map_err(|e| format!("DNS: {e:#}"))?;
        self.failed
            .retain(|_, at| at.elapsed() < FAILED_ADDRESS_MEMORY);
        // Stable: DNS's order among the good ones, and among the failed ones.
        addresses.sort_by_key(|ip| self.failed.contains_key(ip));
        let limit = self.config.connect_timeout;
        let mut errors = Vec::new();
        for ip in addresses {
            let address = SocketAddr::new(ip, self.config.port);
            let connected = async {
                let tcp = match timeout(limit, TcpStream::connect(address)).await {
                    Ok(Ok(tcp)) => tcp,
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err("connect timeout".to_owned()),
                };
                let _ = tcp.set_nodelay(true);
                let handshake = self.tls.connect(self.server_name.clone(), tcp);
                match timeout(limit, handshake).await {
                    Ok(Ok(stream)) => Ok(stream),
                    Ok(Err(e)) => Err(format!("TLS: {e}")),
                    Err(_) => Err("TLS handshake timeout".to_owned()),
                }
            };
            match connected.await {
                Ok(stream) => {
                    self.stats.connections += 1;
                    return Ok(Connection {
                        stream,
                        address,
                        requests: 0,
                        opened: Instant::now(),
                    });
                }
                Err(e) => {
                    self.stats.skipped_addresses += 1;
                    self.failed.insert(ip, Instant::now());
                    errors.push(format!("{address}: {e}"));
                }
            }
        }
        Err(format!("no address accepted: {}", errors.join("; ")))
    }
}

/// rustls trusting the CA file alone, HTTP/1.1 by ALPN.
fn tls_connector(config: &VisitorConfig) -> anyhow::Result<TlsConnector> {
    let path = &config.ca_file;
    let mut roots = rustls::RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{}: {e} (make up copies the CA there)", path.display()))?;
    anyhow::ensure!(
        !certificates.is_empty(),
        "{}: no certificate in it",
        path.display()
    );
    for certificate in certificates {
        roots.add(certificate)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(client)))
}
