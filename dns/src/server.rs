//! The UDP and TCP listeners, on the same port, and what they share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// A UDP socket on `addr` with a receive buffer of `receive_buffer` bytes.
pub fn bind_udp(addr: SocketAddr, receive_buffer: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_recv_buffer_size(receive_buffer)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Answers datagrams until shutdown, a batch at a time: every query of a batch is answered
/// and sent before the next batch is read, so nothing is in flight when the loop ends.
#[cfg(target_os = "linux")]
pub async fn serve_udp(socket: UdpSocket, dns: Arc<Dns>, shutdown: CancellationToken) {
    use crate::batch::{BATCH, Batch};
    let mut batch = Batch::new();
    let mut answers: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
    let mut to = Vec::with_capacity(BATCH);
    // Made once: a fresh `cancelled()` per batch would register a waiter each time.
    let mut stopping = std::pin::pin!(shutdown.cancelled());
    loop {
        let received = tokio::select! {
            biased;
            () = &mut stopping => return,
            received = batch.receive(&socket) => match received {
                Ok(n) => n,
                // ICMP errors from earlier sends surface here on some systems; not fatal.
                Err(e) => {
                    tracing::debug!("udp receive: {e}");
                    continue;
                }
            },
        };
        to.clear();
        for i in 0..received {
            let (packet, peer, cut) = batch.datagram(i);
            let Some(peer) = peer else { continue };
            let started = Instant::now();
            let out = &mut answers[to.len()];
            let answered = if cut {
                // Longer than any query we answer: FORMERR if the header is there.
                out.clear();
                if packet.len() >= crate::wire::HEADER_LEN {
                    out.extend_from_slice(&crate::wire::format_error(packet));
                }
                !out.is_empty()
            } else {
                dns.answer(packet, peer, false, out).await
            };
            dns.metrics.latency_udp.observe(started.elapsed());
            if answered {
                to.push(i);
            }
        }
        if let Err(e) = batch.send(&socket, &answers[..to.len()], &to).await {
            tracing::debug!("udp send: {e}");
        }
    }
}

/// Answers datagrams until shutdown, one at a time (where `recvmmsg` is not available).
#[cfg(not(target_os = "linux"))]
pub async fn serve_udp(socket: UdpSocket, dns: Arc<Dns>, shutdown: CancellationToken) {
    let mut packet = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(4096);
    let mut stopping = std::pin::pin!(shutdown.cancelled());
    loop {
        let (len, peer) = tokio::select! {
            biased;
            () = &mut stopping => return,
            received = socket.recv_from(&mut packet) => match received {
                Ok(received) => received,
                Err(e) => {
                    tracing::debug!("udp receive: {e}");
                    continue;
                }
            },
        };
        let started = Instant::now();
        let answered = dns.answer(&mut packet[..len], peer, false, &mut out).await;
        dns.metrics.latency_udp.observe(started.elapsed());
        if answered {
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
        let Some((stream, peer)) = foobar_service::admin::accept(&listener, &shutdown).await else {
            break;
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

/// Bytes asked for in one read from a TCP client: a client that pipelines (dnsperf keeps up
/// to 200 queries in flight on one connection) gets many queries read by one system call.
const READ_CHUNK: usize = 16 * 1024;

/// Answers gathered before they are written, even while more queries are waiting: bounds
/// what one connection holds (plus at most one answer of 64 KiB).
const WRITE_FLUSH: usize = 16 * 1024;

/// RFC 7766: length-prefixed messages, several per connection, pipelined, answered in order.
/// Every whole message read is answered before the next read, and the answers go out in one
/// write, so a pipelining client costs one read and one write per batch instead of two of
/// each per query (bench/dns.sh over TCP). A client that sends no whole message for `idle`
/// (a slow one dribbling bytes included), or does not take a batch of answers within `idle`,
/// is disconnected.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    dns: &Dns,
    idle: Duration,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    // Answers leave in one write each batch: nothing is left waiting for an acknowledgement.
    stream.set_nodelay(true)?;
    let mut input: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut answers: Vec<u8> = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        let mut used = 0;
        while let Some(len) = whole_message(&input[used..]) {
            let message = &mut input[used + 2..used + 2 + len];
            used += 2 + len;
            let started = Instant::now();
            let answered = dns.answer(message, peer, true, &mut out).await;
            dns.metrics.latency_tcp.observe(started.elapsed());
            if !answered {
                return write(&mut stream, &answers, idle).await;
            }
            let len =
                u16::try_from(out.len()).map_err(|_| std::io::Error::other("answer too long"))?;
            answers.extend_from_slice(&len.to_be_bytes());
            answers.extend_from_slice(&out);
            if answers.len() >= WRITE_FLUSH {
                write(&mut stream, &answers, idle).await?;
                answers.clear();
            }
        }
        if !answers.is_empty() {
            write(&mut stream, &answers, idle).await?;
            answers.clear();
        }
        if used > 0 {
            // Whole messages came: the client has `idle` again for the next one (one clock
            // read per batch, not per query).
            deadline = tokio::time::Instant::now() + idle;
        }
        // What is left is the start of a message: keep it at the front and read the rest.
        input.drain(..used);
        input.reserve(READ_CHUNK);
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            read = tokio::time::timeout_at(deadline, stream.read_buf(&mut input)) => match read {
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle")),
            },
        }
    }
}

/// The length of the message at the start of `input` when all of it has been read.
fn whole_message(input: &[u8]) -> Option<usize> {
    let prefix = input.get(..2)?;
    let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    (input.len() >= 2 + len).then_some(len)
}

/// Writes `bytes` whole, or fails when the client has not taken them all within `idle`.
async fn write(stream: &mut TcpStream, bytes: &[u8], idle: Duration) -> std::io::Result<()> {
    match tokio::time::timeout(idle, stream.write_all(bytes)).await {
        Ok(written) => written,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "answers not read",
        )),
    }
}
