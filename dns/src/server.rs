//! The UDP and TCP listeners, on the same port, and what they share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::answer::{self, Served};
use crate::config::ListenerConfig;
use crate::metrics::Metrics;

/// What every listener answers from: the current generation of answers, swapped whole.
pub struct Dns {
    pub served: ArcSwap<Served>,
    pub metrics: Metrics,
    pub max_udp_payload: u16,
}

impl Dns {
    /// Answers one message into `out`; false when it deserves no answer.
    pub async fn answer(
        &self,
        packet: &mut [u8],
        peer: SocketAddr,
        tcp: bool,
        out: &mut Vec<u8>,
    ) -> bool {
        let served = self.served.load();
        answer::answer(
            &served,
            packet,
            peer,
            tcp,
            self.max_udp_payload,
            &self.metrics,
            out,
        )
        .await
    }
}

/// Answers datagrams until shutdown. One answer per query, sent before the next is read:
/// nothing is in flight when the loop ends.
pub async fn serve_udp(socket: UdpSocket, dns: Arc<Dns>, shutdown: CancellationToken) {
    let mut packet = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(4096);
    loop {
        let (len, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            received = socket.recv_from(&mut packet) => match received {
                Ok(received) => received,
                // ICMP errors from earlier sends surface here on some systems; not fatal.
                Err(e) => {
                    tracing::debug!("udp receive: {e}");
                    continue;
                }
            },
        };
        if dns.answer(&mut packet[..len], peer, false, &mut out).await {
            if let Err(e) = socket.send_to(&out, peer).await {
                tracing::debug!(%peer, "udp send: {e}");
            }
        }
    }
}

/// Accepts TCP connections until shutdown, at most `max_tcp_connections` at once; then waits
/// for the open ones to finish the query they are on.
pub async fn serve_tcp(
    listener: TcpListener,
    dns: Arc<Dns>,
    config: ListenerConfig,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(config.max_tcp_connections));
    let connections = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("tcp accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (dns, shutdown, idle) = (Arc::clone(&dns), shutdown.clone(), config.tcp_idle_timeout);
        connections.spawn(async move {
            if let Err(e) = serve_connection(stream, peer, &dns, idle, &shutdown).await {
                tracing::debug!(%peer, "tcp connection ended: {e}");
            }
            drop(slot);
        });
    }
    connections.close();
    connections.wait().await;
}

/// RFC 7766: length-prefixed messages, several per connection, answered in order. A client
/// idle for `idle` (between or inside messages) is disconnected.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    dns: &Dns,
    idle: Duration,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let mut message = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut prefix = [0u8; 2];
        let read = async {
            stream.read_exact(&mut prefix).await?;
            message.resize(usize::from(u16::from_be_bytes(prefix)), 0);
            stream.read_exact(&mut message).await
        };
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            read = tokio::time::timeout(idle, read) => match read {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle")),
            },
        }
        if !dns.answer(&mut message, peer, true, &mut out).await {
            return Ok(());
        }
        let len = u16::try_from(out.len()).map_err(|_| std::io::Error::other("answer too long"))?;
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(&out).await?;
    }
}
