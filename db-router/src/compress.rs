//! The compressed protocol (CLIENT_COMPRESS, zlib) towards clients that ask for it.
//!
//! Once a client that asked for compression has logged in, every byte both ways travels in
//! compressed frames: a 7-byte header (3-byte little-endian length of what follows, a
//! sequence id of the frame layer's own, 3-byte length of the payload once inflated, or 0
//! when it was sent as it is) and a payload holding ordinary packets, any number of them,
//! one split across frames freely. So the frames are a layer under the packets, and
//! [`Compressed`] is a byte stream over another: the packet layer above reads and writes
//! through it unchanged. The backends never see it: the router's own connections to them
//! stay uncompressed, as they are on one private network.
//!
//! Sequence ids, as MariaDB's server keeps them (`net_serv.cc`): a client starts each
//! command's frames at 0; the answer's frames continue from the last frame read, one per
//! frame written.
//!
//! What a client may send is bounded: a frame declares at most 16 MiB - 1 inflated, and it
//! must inflate to exactly what it declares (no more, so a small frame cannot expand
//! without limit; no bytes after the zlib stream). A frame is only inflated once the packet
//! layer has read everything before it, so one connection holds at most one inflated frame.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A frame header: compressed length (3), sequence id (1), inflated length (3).
pub const HEADER: usize = 7;
/// The longest payload one frame carries either way.
pub const MAX_FRAME: usize = 0xFF_FFFF;
/// Shorter payloads are sent as they are: deflating them gains nothing (MariaDB's
/// `MIN_COMPRESS_LENGTH`).
const MIN_COMPRESS: usize = 50;
/// The most deflate can shrink anything (a run of one byte value): 1032 to 1.
const MAX_RATIO: usize = 1032;

/// Why a compressed frame cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("compressed frame is not a valid zlib stream")]
    Corrupt,
    #[error("compressed frame inflates to more or fewer than the {declared} bytes it declares")]
    WrongLength { declared: usize },
    #[error("compressed frame has bytes after its zlib stream")]
    Trailing,
}

/// One frame read: its sequence id and its payload, inflated.
#[derive(Debug)]
pub struct Frame {
    pub seq: u8,
    pub payload: Bytes,
}

/// zlib both ways, its state kept between frames (each frame is a stream of its own: the
/// state is reset, not rebuilt, so a frame costs no allocation of it).
pub struct Codec {
    deflate: Compress,
    inflate: Decompress,
}

impl Default for Codec {
    fn default() -> Self {
        Self {
            // MariaDB's server and Connector/C call zlib's compress(), which uses its default
            // level (6).
            deflate: Compress::new(Compression::default(), true),
            inflate: Decompress::new(true),
        }
    }
}

impl Codec {
    /// The next frame in `buf`, or None when `buf` does not hold a whole one yet. Nothing is
    /// consumed until the whole frame is there. Pure (no I/O): the fuzz target drives it.
    pub fn next_frame(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER {
            return Ok(None);
        }
        let sent = le24(&buf[0..3]);
        let seq = buf[3];
        let inflated = le24(&buf[4..7]);
        // Deflate shrinks by 1032:1 at most: a frame declaring more cannot be honest, and
        // is refused before its declared size is allocated.
        if inflated > sent.saturating_mul(MAX_RATIO) + HEADER {
            return Err(FrameError::WrongLength { declared: inflated });
        }
        if buf.len() < HEADER + sent {
            return Ok(None);
        }
        buf.advance(HEADER);
        let body = buf.split_to(sent);
        if inflated == 0 {
            return Ok(Some(Frame {
                seq,
                payload: body.freeze(),
            }));
        }
        self.inflate.reset(true);
        let mut out = Vec::with_capacity(inflated);
        let status = self
            .inflate
            .decompress_vec(&body, &mut out, FlushDecompress::Finish)
            .map_err(|_| FrameError::Corrupt)?;
        if status != Status::StreamEnd || out.len() != inflated {
            return Err(FrameError::WrongLength { declared: inflated });
        }
        if self.inflate.total_in() != body.len() as u64 {
            return Err(FrameError::Trailing);
        }
        Ok(Some(Frame {
            seq,
            payload: Bytes::from(out),
        }))
    }

    /// Appends `payload` (at most [`MAX_FRAME`] bytes) as one frame with sequence id `seq`:
    /// deflated, or as it is when it is short or does not shrink.
    pub fn encode(&mut self, out: &mut BytesMut, seq: u8, payload: &[u8]) {
        debug_assert!(payload.len() <= MAX_FRAME);
        let start = out.len();
        out.reserve(HEADER + payload.len());
        out.put_bytes(0, HEADER);
        if payload.len() >= MIN_COMPRESS && self.deflate_into(out, payload) {
            let sent = out.len() - start - HEADER;
            write_header(&mut out[start..], sent, seq, payload.len());
        } else {
            out.put_slice(payload);
            write_header(&mut out[start..], payload.len(), seq, 0);
        }
    }

    /// Deflates `payload` onto `out`, straight into its buffer; false (and `out` as it was)
    /// when the result would not be shorter.
    fn deflate_into(&mut self, out: &mut BytesMut, payload: &[u8]) -> bool {
        self.deflate.reset();
        let start = out.len();
        out.resize(start + payload.len(), 0);
        let status = self
            .deflate
            .compress(payload, &mut out[start..], FlushCompress::Finish);
        let written = self.deflate.total_out() as usize;
        if matches!(status, Ok(Status::StreamEnd)) && written < payload.len() {
            out.truncate(start + written);
            true
        } else {
            out.truncate(start);
            false
        }
    }
}

fn le24(bytes: &[u8]) -> usize {
    usize::from(bytes[0]) | usize::from(bytes[1]) << 8 | usize::from(bytes[2]) << 16
}

fn write_header(header: &mut [u8], sent: usize, seq: u8, inflated: usize) {
    header[0..3].copy_from_slice(&(sent as u32).to_le_bytes()[..3]);
    header[3] = seq;
    header[4..7].copy_from_slice(&(inflated as u32).to_le_bytes()[..3]);
}

/// A byte stream carried in compressed frames over `S`. Reads give the inflated bytes;
/// writes are held until flushed, then sent as frames (so one flush of the packet layer,
/// a whole answer or 64 KiB of a long one, becomes one frame).
pub struct Compressed<S> {
    inner: S,
    codec: Codec,
    /// The frame layer's sequence id for the next frame written.
    seq: u8,
    /// Bytes received, not yet a whole frame.
    received: BytesMut,
    /// An inflated frame, not yet read.
    inflated: Bytes,
    /// Bytes written, not yet framed.
    pending: BytesMut,
    /// Frames not yet written to `inner`.
    framed: BytesMut,
}

impl<S> Compressed<S> {
    /// Compression over `inner` from now on; `received` is what was already read from it
    /// past the last uncompressed packet (a client that did not wait for the login's OK).
    pub fn new(inner: S, received: BytesMut) -> Self {
        Self {
            inner,
            codec: Codec::default(),
            seq: 0,
            received,
            inflated: Bytes::new(),
            pending: BytesMut::new(),
            framed: BytesMut::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Compressed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.inflated.is_empty() {
                let n = this.inflated.len().min(buf.remaining());
                buf.put_slice(&this.inflated.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match this.codec.next_frame(&mut this.received) {
                // An empty frame gives nothing to read, which must not look like the end.
                Ok(Some(frame)) => {
                    this.seq = frame.seq.wrapping_add(1);
                    this.inflated = frame.payload;
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e))),
            }
            this.received.reserve(16 * 1024);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.received
            ))?;
            if n == 0 {
                if this.received.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of a compressed frame",
                )));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Compressed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.pending.is_empty() {
            let chunk = this.pending.split_to(this.pending.len().min(MAX_FRAME));
            this.codec.encode(&mut this.framed, this.seq, &chunk);
            this.seq = this.seq.wrapping_add(1);
        }
        while !this.framed.is_empty() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &this.framed))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            this.framed.advance(n);
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn frame(sent: &[u8], seq: u8, inflated: usize) -> BytesMut {
        let mut out = BytesMut::zeroed(HEADER);
        write_header(&mut out, sent.len(), seq, inflated);
        out.put_slice(sent);
        out
    }

    fn deflated(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 64);
        Compress::new(Compression::default(), true)
            .compress_vec(payload, &mut out, FlushCompress::Finish)
            .unwrap();
        out
    }

    #[test]
    fn short_payloads_go_as_they_are_and_long_ones_deflated() {
        let mut codec = Codec::default();
        let mut out = BytesMut::new();
        codec.encode(&mut out, 3, b"short");
        assert_eq!(
            &out[..],
            &[5, 0, 0, 3, 0, 0, 0, b's', b'h', b'o', b'r', b't']
        );
        let long = b"foobar ".repeat(1000);
        let mut out = BytesMut::new();
        codec.encode(&mut out, 4, &long);
        assert!(out.len() < 200, "{} bytes", out.len());
        assert_eq!(le24(&out[4..7]), long.len());
        let frame = codec.next_frame(&mut out).unwrap().unwrap();
        assert_eq!((frame.seq, &frame.payload[..]), (4, &long[..]));
        assert!(out.is_empty());
    }

    #[test]
    fn random_bytes_that_do_not_shrink_go_as_they_are() {
        let mut noise = vec![0u8; 4096];
        getrandom::fill(&mut noise).unwrap();
        let mut codec = Codec::default();
        let mut out = BytesMut::new();
        codec.encode(&mut out, 0, &noise);
        assert_eq!(le24(&out[4..7]), 0, "sent uncompressed");
        assert_eq!(out.len(), HEADER + noise.len());
    }

    /// What a hostile or broken client may send, and what reading it gives.
    #[test]
    fn hostile_frames_are_refused_or_wait() {
        let text = b"SELECT 'foobar foobar foobar foobar foobar foobar foobar'".to_vec();
        let good = deflated(&text);
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"junk");
        let mut truncated = frame(&good, 0, text.len());
        truncated.truncate(truncated.len() - 1);
        // (what, the bytes, the length of the frame read or the error)
        type Case = (&'static str, BytesMut, Result<Option<usize>, FrameError>);
        let cases: Vec<Case> = vec![
            (
                "header only in part",
                BytesMut::from(&[9u8, 0, 0][..]),
                Ok(None),
            ),
            ("payload still to come", truncated, Ok(None)),
            (
                "declares 16 MiB, sends 3 bytes",
                frame(b"abc", 0, MAX_FRAME),
                Err(FrameError::WrongLength {
                    declared: MAX_FRAME,
                }),
            ),
            (
                "header declaring a bomb, body not here yet",
                frame(b"", 0, MAX_FRAME),
                Err(FrameError::WrongLength {
                    declared: MAX_FRAME,
                }),
            ),
            (
                "not zlib at all",
                frame(&[0xFF; 60], 0, 100),
                Err(FrameError::Corrupt),
            ),
            (
                "inflates to more than declared",
                frame(&good, 0, text.len() - 1),
                Err(FrameError::WrongLength {
                    declared: text.len() - 1,
                }),
            ),
            (
                "inflates to less than declared",
                frame(&good, 0, text.len() + 1),
                Err(FrameError::WrongLength {
                    declared: text.len() + 1,
                }),
            ),
            (
                "bytes after the zlib stream",
                frame(&trailing, 0, text.len()),
                Err(FrameError::Trailing),
            ),
            (
                "zlib stream cut short",
                frame(&good[..good.len() - 4], 0, text.len()),
                Err(FrameError::WrongLength {
                    declared: text.len(),
                }),
            ),
            ("an empty frame", frame(b"", 7, 0), Ok(Some(0))),
            (
                "a good one",
                frame(&good, 1, text.len()),
                Ok(Some(text.len())),
            ),
        ];
        for (what, mut input, expected) in cases {
            let got = Codec::default()
                .next_frame(&mut input)
                .map(|frame| frame.map(|f| f.payload.len()));
            assert_eq!(got, expected, "{what}");
        }
    }

    #[tokio::test]
    async fn packets_round_trip_through_frames_with_sequence_ids_as_the_server_keeps_them() {
        use crate::packet::PacketStream;
        let (client, router) = tokio::io::duplex(1 << 20);
        let mut router = PacketStream::new(Compressed::new(router, BytesMut::new()), 64 << 20);
        let mut client = Compressed::new(client, BytesMut::new());

        // A command in frame 0, split over two frames, with a second packet pipelined.
        let mut packets = BytesMut::new();
        crate::packet::encode(&mut packets, 0, &b"x".repeat(300));
        crate::packet::encode(&mut packets, 0, b"\x0eping");
        let mut codec = Codec::default();
        let mut frames = BytesMut::new();
        codec.encode(&mut frames, 0, &packets[..100]);
        codec.encode(&mut frames, 1, &packets[100..]);
        client.inner.write_all(&frames).await.unwrap();

        let (seq, payload) = router.read_packet().await.unwrap();
        assert_eq!((seq, payload.len()), (0, 300));
        let (_, payload) = router.read_packet().await.unwrap();
        assert_eq!(&payload[..], b"\x0eping");

        // The answer: one frame, sequence id 2 (after the client's 0 and 1).
        router.send(1, &b"y".repeat(1000)).await.unwrap();
        let mut header = [0u8; HEADER];
        client.inner.read_exact(&mut header).await.unwrap();
        assert_eq!(header[3], 2, "frame sequence id");
        let mut body = vec![0; le24(&header[0..3])];
        client.inner.read_exact(&mut body).await.unwrap();
        let mut whole = BytesMut::from(&header[..]);
        whole.extend_from_slice(&body);
        let frame = codec.next_frame(&mut whole).unwrap().unwrap();
        assert_eq!(
            &frame.payload[..4],
            &[0xE8, 0x03, 0, 1],
            "packet of 1000 bytes, seq 1"
        );
    }

    #[tokio::test]
    async fn a_stream_ending_inside_a_frame_is_an_error_and_between_frames_the_end() {
        let (mut client, router) = tokio::io::duplex(1024);
        client.write_all(&frame(b"abc", 0, 0)[..5]).await.unwrap();
        drop(client);
        let mut router = Compressed::new(router, BytesMut::new());
        let mut out = Vec::new();
        let e = router.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);

        let (mut client, router) = tokio::io::duplex(1024);
        client.write_all(&frame(b"abc", 0, 0)).await.unwrap();
        drop(client);
        let mut out = Vec::new();
        Compressed::new(router, BytesMut::new())
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert_eq!(out, b"abc");
    }
}
