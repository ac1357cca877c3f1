//! The MySQL packet layer: a 3-byte little-endian length, a 1-byte sequence id, a payload.
//!
//! A payload of 16 MiB - 1 bytes or more is split into packets of exactly `MAX_CHUNK` bytes
//! followed by a shorter one (possibly empty); the receiver joins them. Two views are needed:
//! - [`Decoder::next_packet`] gives *logical* packets (chunks joined), for what the router
//!   must understand whole: a client's command, a handshake, a result it inspects.
//! - [`Decoder::next_raw`] gives *wire* packets unchanged (header included), for relaying a
//!   backend's result set to the client one packet at a time without ever holding it whole.
//!
//! [`PacketStream`] puts the decoder and a write buffer around any async byte stream. Writes
//! are buffered until [`PacketStream::flush`], so a relayed result costs few syscalls.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest payload one wire packet carries; a payload this long continues in the next.
pub const MAX_CHUNK: usize = 0xFF_FFFF;

/// Why a stream of packets cannot be read further.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("connection closed")]
    Closed,
    #[error("connection closed in the middle of a packet")]
    Truncated,
    #[error("packet of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A packet as it was on the wire: header and payload, ready to be written elsewhere.
#[derive(Debug)]
pub struct RawPacket {
    pub bytes: Bytes,
}

impl RawPacket {
    pub fn seq(&self) -> u8 {
        self.bytes[3]
    }

    pub fn payload(&self) -> &[u8] {
        &self.bytes[4..]
    }

    /// True when the next wire packet continues this payload.
    pub fn continues(&self) -> bool {
        self.bytes.len() - 4 == MAX_CHUNK
    }
}

/// Splits bytes into packets. Pure (no I/O), so the fuzz target drives it directly.
#[derive(Debug)]
pub struct Decoder {
    /// The largest logical payload [`Decoder::next_packet`] accepts.
    pub max_payload: usize,
}

impl Decoder {
    /// The next wire packet in `buf`, or None when `buf` does not hold a whole one yet.
    pub fn next_raw(&self, buf: &mut BytesMut) -> Option<RawPacket> {
        let len = wire_len(buf)?;
        if buf.len() < 4 + len {
            return None;
        }
        Some(RawPacket {
            bytes: buf.split_to(4 + len).freeze(),
        })
    }

    /// The next logical packet in `buf` (sequence id of its first chunk, joined payload), or
    /// None when more bytes are needed. Nothing is consumed until the whole payload is there.
    pub fn next_packet(&self, buf: &mut BytesMut) -> Result<Option<(u8, BytesMut)>, PacketError> {
        let mut offset = 0;
        let mut total = 0;
        loop {
            let Some(len) = wire_len(&buf[offset..]) else {
                return Ok(None);
            };
            total += len;
            if total > self.max_payload {
                return Err(PacketError::TooLarge {
                    size: total,
                    limit: self.max_payload,
                });
            }
            if buf.len() < offset + 4 + len {
                return Ok(None);
            }
            offset += 4 + len;
            if len < MAX_CHUNK {
                break;
            }
        }
        let seq = buf[3];
        let mut packet = buf.split_to(offset);
        if offset == total + 4 {
            packet.advance(4);
            return Ok(Some((seq, packet)));
        }
        let mut payload = BytesMut::with_capacity(total);
        while packet.has_remaining() {
            let len = wire_len(&packet).unwrap_or(0);
            packet.advance(4);
            payload.extend_from_slice(&packet.split_to(len));
        }
        Ok(Some((seq, payload)))
    }
}

fn wire_len(buf: &[u8]) -> Option<usize> {
    (buf.len() >= 4)
        .then(|| usize::from(buf[0]) | usize::from(buf[1]) << 8 | usize::from(buf[2]) << 16)
}

/// Appends `payload` as one or more wire packets starting at sequence id `seq`; returns the
/// sequence id the next packet takes.
pub fn encode(out: &mut BytesMut, mut seq: u8, payload: &[u8]) -> u8 {
    let mut rest = payload;
    loop {
        let chunk = rest.len().min(MAX_CHUNK);
        out.reserve(4 + chunk);
        out.put_uint_le(chunk as u64, 3);
        out.put_u8(seq);
        out.put_slice(&rest[..chunk]);
        seq = seq.wrapping_add(1);
        rest = &rest[chunk..];
        if chunk < MAX_CHUNK {
            return seq;
        }
    }
}

/// A byte stream read and written as MySQL packets.
pub struct PacketStream<S> {
    stream: S,
    decoder: Decoder,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

/// Above this many buffered bytes, a relay writes them out before reading on.
const WRITE_HIGH_WATER: usize = 64 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> PacketStream<S> {
    pub fn new(stream: S, max_payload: usize) -> Self {
        Self {
            stream,
            decoder: Decoder { max_payload },
            read_buf: BytesMut::with_capacity(16 * 1024),
            write_buf: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// The next logical packet: its first sequence id and the joined payload.
    pub async fn read_packet(&mut self) -> Result<(u8, BytesMut), PacketError> {
        loop {
            if let Some(packet) = self.decoder.next_packet(&mut self.read_buf)? {
                return Ok(packet);
            }
            self.fill().await?;
        }
    }

    /// The next packet, read without reading a byte past it: after a client's SSLRequest the
    /// bytes that follow are the TLS handshake's, for rustls to read. Only for a packet that
    /// comes first (nothing buffered before it) and fits one wire packet (a handshake does).
    pub async fn read_packet_unbuffered(&mut self) -> Result<(u8, BytesMut), PacketError> {
        debug_assert!(self.read_buf.is_empty(), "bytes were read ahead");
        let mut header = [0; 4];
        self.read_exactly(&mut header, PacketError::Closed).await?;
        let len = wire_len(&header).unwrap_or(0);
        let limit = self.decoder.max_payload.min(MAX_CHUNK - 1);
        if len > limit {
            return Err(PacketError::TooLarge { size: len, limit });
        }
        let mut payload = BytesMut::zeroed(len);
        self.read_exactly(&mut payload, PacketError::Truncated)
            .await?;
        Ok((header[3], payload))
    }

    /// Fills `buf`; `empty` is the error when the stream ends before its first byte.
    async fn read_exactly(
        &mut self,
        buf: &mut [u8],
        empty: PacketError,
    ) -> Result<(), PacketError> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.stream.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Err(if filled == 0 {
                    empty
                } else {
                    PacketError::Truncated
                });
            }
            filled += n;
        }
        Ok(())
    }

    /// The next wire packet, unchanged.
    pub async fn read_raw(&mut self) -> Result<RawPacket, PacketError> {
        loop {
            if let Some(packet) = self.decoder.next_raw(&mut self.read_buf) {
                return Ok(packet);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), PacketError> {
        if self.read_buf.capacity() - self.read_buf.len() < 4096 {
            self.read_buf.reserve(16 * 1024);
        }
        if self.stream.read_buf(&mut self.read_buf).await? == 0 {
            return Err(if self.read_buf.is_empty() {
                PacketError::Closed
            } else {
                PacketError::Truncated
            });
        }
        Ok(())
    }

    /// Queues `payload` as packets from sequence id `seq`; returns the next sequence id.
    pub fn queue(&mut self, seq: u8, payload: &[u8]) -> u8 {
        encode(&mut self.write_buf, seq, payload)
    }

    /// Queues wire bytes as they are (a relayed packet).
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.write_buf.extend_from_slice(bytes);
    }

    /// Writes out what is queued once it is large, so a long result streams through.
    pub async fn flush_if_full(&mut self) -> std::io::Result<()> {
        if self.write_buf.len() >= WRITE_HIGH_WATER {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes out everything queued.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.write_buf.is_empty() {
            self.stream.write_all(&self.write_buf).await?;
            // A TLS stream may hold the last record until flushed; TCP's flush does nothing.
            self.stream.flush().await?;
            self.write_buf.clear();
        }
        Ok(())
    }

    /// Queues and writes one payload.
    pub async fn send(&mut self, seq: u8, payload: &[u8]) -> std::io::Result<u8> {
        let next = self.queue(seq, payload);
        self.flush().await?;
        Ok(next)
    }

    /// Bytes received but not yet read as packets (a client that pipelines, or garbage).
    pub fn has_buffered_input(&self) -> bool {
        !self.read_buf.is_empty()
    }

    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream itself, for another layer over it (TLS). Whatever was queued and not
    /// flushed, or read and not taken as packets, is dropped: call it between packets.
    pub fn into_inner(self) -> S {
        debug_assert!(self.read_buf.is_empty() && self.write_buf.is_empty());
        self.stream
    }

    /// The stream and the bytes read from it past the last packet taken, for a layer that
    /// starts between two packets (compression, after the login's OK). Whatever was queued
    /// and not flushed is dropped.
    pub fn into_parts(self) -> (S, BytesMut) {
        debug_assert!(self.write_buf.is_empty());
        (self.stream, self.read_buf)
    }

    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        Decoder {
            max_payload: 64 << 20,
        }
    }

    #[test]
    fn small_packet_round_trips() {
        let mut buf = BytesMut::new();
        assert_eq!(encode(&mut buf, 7, b"hello"), 8);
        assert_eq!(&buf[..4], &[5, 0, 0, 7]);
        let (seq, payload) = decoder().next_packet(&mut buf).unwrap().unwrap();
        assert_eq!((seq, &payload[..]), (7, &b"hello"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn payload_of_exactly_max_chunk_ends_with_an_empty_packet() {
        let payload = vec![0xAB; MAX_CHUNK];
        let mut buf = BytesMut::new();
        assert_eq!(encode(&mut buf, 0, &payload), 2);
        assert_eq!(buf.len(), 4 + MAX_CHUNK + 4);
        assert_eq!(&buf[4 + MAX_CHUNK..], &[0, 0, 0, 1]);
        let (seq, joined) = decoder().next_packet(&mut buf).unwrap().unwrap();
        assert_eq!(seq, 0);
        assert_eq!(joined.len(), MAX_CHUNK);
    }

    #[test]
    fn large_payload_is_split_and_joined() {
        let payload: Vec<u8> = (0..MAX_CHUNK * 2 + 10).map(|i| i as u8).collect();
        let mut buf = BytesMut::new();
        assert_eq!(encode(&mut buf, 3, &payload), 6);
        let raw = decoder().next_raw(&mut buf.clone()).unwrap();
        assert!(raw.continues());
        let (_, joined) = decoder().next_packet(&mut buf).unwrap().unwrap();
        assert_eq!(&joined[..], &payload[..]);
    }

    #[tokio::test]
    async fn an_unbuffered_read_leaves_what_follows_in_the_stream() {
        use tokio::io::AsyncWriteExt;
        let (mut ours, theirs) = tokio::io::duplex(1024);
        let mut bytes = BytesMut::new();
        encode(&mut bytes, 1, b"first");
        bytes.extend_from_slice(b"\x16\x03\x01 the TLS handshake");
        ours.write_all(&bytes).await.unwrap();
        drop(ours);
        let mut stream = PacketStream::new(theirs, 1024);
        let (seq, payload) = stream.read_packet_unbuffered().await.unwrap();
        assert_eq!((seq, &payload[..]), (1, &b"first"[..]));
        let mut rest = Vec::new();
        stream.into_inner().read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"\x16\x03\x01 the TLS handshake");

        let (mut ours, theirs) = tokio::io::duplex(1024);
        ours.write_all(&[9, 0, 0, 1, b'x']).await.unwrap();
        drop(ours);
        let mut stream = PacketStream::new(theirs, 1024);
        assert!(matches!(
            stream.read_packet_unbuffered().await,
            Err(PacketError::Truncated)
        ));
    }

    #[test]
    fn partial_input_waits_and_oversized_input_is_refused() {
        let mut buf = BytesMut::from(&[10u8, 0, 0, 0, 1, 2][..]);
        assert!(decoder().next_packet(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), 6, "nothing consumed");
        let small = Decoder { max_payload: 4 };
        assert!(matches!(
            small.next_packet(&mut buf),
            Err(PacketError::TooLarge { size: 10, .. })
        ));
    }
}
