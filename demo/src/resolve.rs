//! Asking foobar-dns for www.foobar.com's addresses, once for every new connection.
//!
//! No cache and no system resolver: the demo must follow the DNS server's health-checked
//! answers as soon as they change (TTL 5 s), so each connection asks again. UDP first, TCP
//! when the answer comes back truncated, as stub resolvers do.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

/// A DNS server and the name to ask it for.
#[derive(Debug, Clone)]
pub struct Resolver {
    server: SocketAddr,
    name: Name,
    timeout: Duration,
}

impl Resolver {
    pub fn new(server: SocketAddr, host: &str, timeout: Duration) -> anyhow::Result<Self> {
        let mut name = Name::from_ascii(host).with_context(|| format!("host name {host:?}"))?;
        name.set_fqdn(true);
        Ok(Self {
            server,
            name,
            timeout,
        })
    }

    /// The host's A records, in the server's order; an error when there are none.
    pub async fn lookup(&self) -> anyhow::Result<Vec<IpAddr>> {
        let mut query = Message::query();
        query.add_query(Query::query(self.name.clone(), RecordType::A));
        let id = query.metadata.id;
        let wire = query.to_vec()?;
        let mut answer = self.over_udp(&wire, id).await?;
        if answer.metadata.truncation {
            answer = self.over_tcp(&wire, id).await?;
        }
        ensure!(
            answer.metadata.response_code == ResponseCode::NoError,
            "{} answered {} for {}",
            self.server,
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
            "{} has no address for {}",
            self.server,
            self.name
        );
        Ok(addresses)
    }

    async fn over_udp(&self, wire: &[u8], id: u16) -> anyhow::Result<Message> {
        let local: SocketAddr = if self.server.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(self.server).await?;
        socket.send(wire).await?;
        let mut buffer = vec![0u8; 4096];
        let exchange = async {
            loop {
                let n = socket.recv(&mut buffer).await?;
                // A stray or stale datagram is ignored, as resolvers do.
                if let Some(answer) = parse_answer(&buffer[..n], id) {
                    return anyhow::Ok(answer);
                }
            }
        };
        timeout(self.timeout, exchange).await.with_context(|| {
            format!(
                "no DNS answer from {} within {:?}",
                self.server, self.timeout
            )
        })?
    }

    async fn over_tcp(&self, wire: &[u8], id: u16) -> anyhow::Result<Message> {
        let exchange = async {
            let mut stream = TcpStream::connect(self.server).await?;
            let length = u16::try_from(wire.len())?;
            let mut framed = length.to_be_bytes().to_vec();
            framed.extend_from_slice(wire);
            stream.write_all(&framed).await?;
            let length = stream.read_u16().await?;
            let mut buffer = vec![0u8; usize::from(length)];
            stream.read_exact(&mut buffer).await?;
            match parse_answer(&buffer, id) {
                Some(answer) => Ok(answer),
                None => bail!("{} sent no answer to the query over TCP", self.server),
            }
        };
        timeout(self.timeout, exchange).await.with_context(|| {
            format!(
                "no DNS answer over TCP from {} within {:?}",
                self.server, self.timeout
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
