//! A visitor's connections to https://www.foobar.com, made the way browsers and curl make
//! them, so that the demo sees what they would see.
//!
//! - Every new connection asks foobar-dns again ([`crate::resolve`]), so a balancer taken out
//!   of DNS stops getting new connections within the TTL; a DNS server that does not answer
//!   within `dns_timeout` is left for the next one.
//! - The addresses are tried in order; a refused connection or a connect timeout moves on to
//!   the next one (a dead balancer's address may not refuse at all: its IP is simply gone).
//! - TLS trusts only the stack's CA, with SNI www.foobar.com; HTTP/1.1 with keep-alive, a
//!   connection living a bounded number of requests and seconds, so DNS changes are followed.
//! - An idle connection the server has closed is not reused (checked without waiting).
//! - A request whose established connection died before any answer byte goes once more on a
//!   new connection only if it is a GET. A POST is never sent twice by the visitor: it fails,
//!   and whether it was stored is found out at the end ([`crate::verify`]). It carries its
//!   write's `Idempotency-Key` all the same ([`crate::http1::Request`]), so a balancer may pass
//!   it to another web server safely.

use std::net::SocketAddr;
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

use crate::http1::{self, Failure, Method, Request, Response};
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
    /// A TCP connect slower than this moves on to the next address.
    pub connect_timeout: Duration,
    /// The longest a request may take, connecting included.
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
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            max_requests_per_connection: 100,
            max_connection_age: Duration::from_secs(10),
        }
    }
}

/// What happened to one request.
#[derive(Debug)]
pub struct Answer {
    pub result: Result<Response, String>,
    /// It was sent a second time on a new connection.
    pub retried: bool,
    /// The balancer address that answered (or was last tried).
    pub address: Option<SocketAddr>,
}

/// Counters of one visitor, for tests and progress lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VisitorStats {
    pub lookups: u64,
    pub connections: u64,
    /// Addresses that refused or did not accept within the connect timeout.
    pub skipped_addresses: u64,
    pub retries: u64,
}

/// One browser tab: one connection at a time, opened when needed.
pub struct Visitor {
    config: Arc<VisitorConfig>,
    resolver: Resolver,
    tls: TlsConnector,
    server_name: ServerName<'static>,
    connection: Option<Connection>,
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
            stats: VisitorStats::default(),
        })
    }

    /// Sends `request` and waits for its answer, within the request timeout.
    pub async fn send(&mut self, request: &Request) -> Answer {
        let config = Arc::clone(&self.config);
        let limit = config.request_timeout;
        let mut address = None;
        let mut retried = false;
        let attempt = async {
            loop {
                let connection = self.connection().await?;
                address = Some(connection.address);
                match http1::exchange(&mut connection.stream, &config.host, request).await {
                    Ok(response) => {
                        connection.requests += 1;
                        if !response.reusable {
                            self.connection = None;
                        }
                        return Ok(response);
                    }
                    Err(failure) => {
                        self.connection = None;
                        let may_retry = matches!(failure, Failure::DeadBeforeAnswer(_))
                            && request.method == Method::Get
                            && !retried;
                        if !may_retry {
                            return Err(failure.to_string());
                        }
                        retried = true;
                        self.stats.retries += 1;
                    }
                }
            }
        };
        let result = match timeout(limit, attempt).await {
            Ok(result) => result,
            Err(_) => {
                // The connection is in an unknown state: never reuse it.
                self.connection = None;
                Err(format!("no answer within {limit:?}"))
            }
        };
        Answer {
            result,
            retried,
            address,
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
        let addresses = self
            .resolver
            .lookup()
            .await
            .map_err(|e| format!("DNS: {e:#}"))?;
        let mut errors = Vec::new();
        for ip in addresses {
            let address = SocketAddr::new(ip, self.config.port);
            let tcp = match timeout(self.config.connect_timeout, TcpStream::connect(address)).await
            {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => {
                    self.stats.skipped_addresses += 1;
                    errors.push(format!("{address}: {e}"));
                    continue;
                }
                Err(_) => {
                    self.stats.skipped_addresses += 1;
                    errors.push(format!("{address}: connect timeout"));
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let handshake = self.tls.connect(self.server_name.clone(), tcp);
            let stream = match timeout(self.config.connect_timeout * 2, handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(format!("{address}: TLS: {e}")),
                Err(_) => return Err(format!("{address}: TLS handshake timeout")),
            };
            self.stats.connections += 1;
            return Ok(Connection {
                stream,
                address,
                requests: 0,
                opened: Instant::now(),
            });
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
