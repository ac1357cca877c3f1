//! Asking foobar-dns for www.foobar.com's addresses, once for every new connection.
//!
//! No cache and no system resolver: the demo must follow the DNS server's health-checked
//! answers as soon as they change (TTL 5 s), so each connection asks again. UDP first, TCP
//! when the answer comes back truncated, as stub resolvers do.
//!
//! The stack has two DNS servers (RFC 2182). A server that does not answer within the
//! per-server timeout (300 ms in the demo), refuses, or answers with an error is left for the
//! next one, as glibc does with `options timeout:` and several `nameserver` lines; the
//! server that answered last is asked first next time, so a dead or frozen one costs its
//! timeout once, not on every lookup.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

/// The DNS servers and the name to ask them for.
#[derive(Debug, Clone)]
pub struct Resolver {
    servers: Vec<SocketAddr>,
    name: Name,
    /// How long one server has to answer before the next is asked.
    timeout: Duration,
    /// The index of the server that answered last: asked first. Shared by the clones.
    preferred: Arc<AtomicUsize>,
}

impl Resolver {
    /// `servers` in the order to try them first; `timeout` per server and query.
    pub fn new(servers: &[SocketAddr], host: &str, timeout: Duration) -> anyhow::Result<Self> {
        ensure!(!servers.is_empty(), "no DNS server to ask for {host}");
        let mut name = Name::from_ascii(host).with_context(|| format!("host name {host:?}"))?;
        name.set_fqdn(true);
        Ok(Self {
            servers: servers.to_vec(),
            name,
            timeout,
            preferred: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The host's A records, in the server's order, from the first server that answers
    /// them; an error only when no server does.
    pub async fn lookup(&self) -> anyhow::Result<Vec<IpAddr>> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for i in (0..self.servers.len()).map(|n| (first + n) % self.servers.len()) {
            match self.lookup_at(self.servers[i]).await {
                Ok(addresses) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(addresses);
                }
                Err(error) => errors.push(format!("{error:#}")),
            }
        }
        bail!("{}", errors.join("; "))
    }

    /// The host's A records as `server` answers them.
    async fn lookup_at(&self, server: SocketAddr) -> anyhow::Result<Vec<IpAddr>> {
        let mut query = Message::query();
        query.add_query(Query::query(self.name.clone(), RecordType::A));
        let id = query.metadata.id;
        let wire = query.to_vec()?;
        let mut answer = self.over_udp(server, &wire, id).await?;
        if answer.metadata.truncation {
            answer = self.over_tcp(server, &wire, id).await?;
        }
        ensure!(
            answer.metadata.response_code == ResponseCode::NoError,
            "{server} answered {} for {}",
            answer.metadata.response_code,
            self.name
        );
        let addresses: Vec<IpAddr> = answer
            .answers
            .iter()
            .filter_map(|record| match &record.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                _ => None,
            })
            .collect();
        ensure!(
            !addresses.is_empty(),
            "{server} has no address for {}",
            self.name
        );
        Ok(addresses)
    }

    async fn over_udp(&self, server: SocketAddr, wire: &[u8], id: u16) -> anyhow::Result<Message> {
        let local: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(server).await?;
        let mut buffer = vec![0u8; 4096];
        let exchange = async {
            socket.send(wire).await?;
            loop {
                let n = socket.recv(&mut buffer).await?;
                // A stray or stale datagram is ignored, as resolvers do.
                if let Some(answer) = parse_answer(&buffer[..n], id) {
                    return anyhow::Ok(answer);
                }
            }
        };
        timeout(self.timeout, exchange)
            .await
            .with_context(|| format!("no DNS answer from {server} within {:?}", self.timeout))?
    }

    async fn over_tcp(&self, server: SocketAddr, wire: &[u8], id: u16) -> anyhow::Result<Message> {
        let exchange = async {
            let mut stream = TcpStream::connect(server).await?;
            let length = u16::try_from(wire.len())?;
            let mut framed = length.to_be_bytes().to_vec();
            framed.extend_from_slice(wire);
            stream.write_all(&framed).await?;
            let length = stream.read_u16().await?;
            let mut buffer = vec![0u8; usize::from(length)];
            stream.read_exact(&mut buffer).await?;
            match parse_answer(&buffer, id) {
                Some(answer) => Ok(answer),
                None => bail!("{server} sent no answer to the query over TCP"),
            }
        };
        timeout(self.timeout, exchange).await.with_context(|| {
            format!(
                "no DNS answer over TCP from {server} within {:?}",
                self.timeout
            )
        })?
    }
}

/// The message in `wire` if it is the answer to query `id`.
fn parse_answer(wire: &[u8], id: u16) -> Option<Message> {
    let message = Message::from_vec(wire).ok()?;
    (message.metadata.id == id && message.metadata.message_type == MessageType::Response)
        .then_some(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::A;

    const LB: [u8; 4] = [192, 0, 2, 11];

    /// A real UDP server on 127.0.0.1 that answers every query with `rcode` (and, for
    /// NOERROR, one A record); the count of queries it got.
    async fn server(rcode: ResponseCode) -> (SocketAddr, Arc<AtomicUsize>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&asked);
        tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            while let Ok((n, peer)) = socket.recv_from(&mut buffer).await {
                counter.fetch_add(1, Ordering::SeqCst);
                let query = Message::from_vec(&buffer[..n]).unwrap();
                let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
                answer.metadata.response_code = rcode;
                answer.add_queries(query.queries.clone());
                if rcode == ResponseCode::NoError {
                    answer.add_answer(Record::from_rdata(
                        query.queries[0].name().clone(),
                        5,
                        RData::A(A::from(std::net::Ipv4Addr::from(LB))),
                    ));
                }
                socket
                    .send_to(&answer.to_vec().unwrap(), peer)
                    .await
                    .unwrap();
            }
        });
        (addr, asked)
    }

    /// Queries waiting in a silent server's socket.
    fn queued(socket: &UdpSocket) -> usize {
        let mut buffer = [0u8; 512];
        std::iter::from_fn(|| socket.try_recv_from(&mut buffer).ok()).count()
    }

    fn resolver(servers: &[SocketAddr]) -> Resolver {
        Resolver::new(servers, "www.foobar.com", Duration::from_millis(300)).unwrap()
    }

    #[tokio::test]
    async fn a_silent_server_is_passed_over_and_then_asked_last() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (answering, asked) = server(ResponseCode::NoError).await;
        let resolver = resolver(&[silent.local_addr().unwrap(), answering]);
        for _ in 0..3 {
            assert_eq!(resolver.lookup().await.unwrap(), vec![IpAddr::from(LB)]);
        }
        assert_eq!(queued(&silent), 1, "the silent server is asked once");
        assert_eq!(asked.load(Ordering::SeqCst), 3);

        // A clone (another visitor's connection) starts where the last answer came from too.
        let clone = resolver.clone();
        assert_eq!(clone.lookup().await.unwrap(), vec![IpAddr::from(LB)]);
        assert_eq!(queued(&silent), 0);
    }

    #[tokio::test]
    async fn a_closed_port_and_an_error_answer_are_passed_over() {
        let closed = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let (refusing, refused) = server(ResponseCode::Refused).await;
        let (answering, asked) = server(ResponseCode::NoError).await;
        let resolver = resolver(&[closed, refusing, answering]);
        assert_eq!(resolver.lookup().await.unwrap(), vec![IpAddr::from(LB)]);
        assert_eq!(refused.load(Ordering::SeqCst), 1);
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn no_server_answering_is_an_error_that_names_each() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (refusing, _) = server(ResponseCode::Refused).await;
        let silent_addr = silent.local_addr().unwrap();
        let error = resolver(&[silent_addr, refusing])
            .lookup()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("no DNS answer from {silent_addr}")),
            "{error}"
        );
        assert!(
            error.contains(&format!("{refusing} answered Query Refused")),
            "{error}"
        );
    }

    #[test]
    fn no_server_at_all_is_refused() {
        assert!(Resolver::new(&[], "www.foobar.com", Duration::from_millis(300)).is_err());
    }
}
