//! Batched writes for HTTP/2 connections: what every stream of a connection has ready goes
//! out in one write, not one write per response.
//!
//! h2 encodes a connection's frames when the connection is polled and flushes them at once.
//! A stream that has its response wakes the connection, which encodes its frames and flushes
//! them: over TLS, one record, one `writev` and one wake-up of the client per response. With 10
//! streams in flight on each of 10 connections (`bench/https.sh`, mode h2) foobar-balancer
//! made 10 437 writes to clients for 10 460 responses (strace, 2 s), HAProxy 854 for 8 017;
//! those writes were a quarter of the balancer's CPU time (perf), and the reason it needed
//! 1.8 times HAProxy's CPU per request.
//!
//! [`Batched`] keeps what is written in a buffer and, at the first flush, defers it once
//! (`tokio::task::yield_now`): the connection task waits until the runtime has run the other
//! tasks already woken and looked at the sockets again, so the streams whose backends
//! answered meanwhile add their frames; then everything goes out in one write. The cost is
//! one more pass through the runtime's queue per flush, microseconds. Measured with
//! `MODES=h2 bench/https.sh` (one round of 10 s each, the machine otherwise idle): CPU per
//! request 1.47x and 1.65x HAProxy's before, 1.19x to 1.36x after, requests per second 0.78x
//! to 0.89x before, 0.89x to 0.96x after; the default three rounds afterwards gave 1.44x and
//! 0.82x (docs/benchmarks.md), so the gap to HAProxy is narrower, not closed. Deferring two or four times instead of once gave
//! no more (within the runs' noise).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Past this many buffered bytes, a write first writes what is buffered: memory per
/// connection stays bounded whatever the streams produce in one turn.
const MAX_BUFFERED: usize = 64 * 1024;

/// A connection whose writes are gathered and written at a deferred flush.
pub struct Batched<S> {
    inner: S,
    buffer: Vec<u8>,
    /// Bytes of `buffer` already written to `inner`.
    written: usize,
    /// The current flush waits for this: the task's turn after the runtime's next look at
    /// the sockets (`tokio::task::yield_now`).
    deferred: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The current flush has waited its turn.
    waited: bool,
}

impl<S> Batched<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buffer: Vec::new(),
            written: 0,
            deferred: None,
            waited: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> Batched<S> {
    /// Writes the whole buffer to the connection.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buffer.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buffer[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buffer.clear();
        self.written = 0;
        // A long burst's buffer is not kept for the connection's whole life.
        if self.buffer.capacity() > MAX_BUFFERED {
            self.buffer.shrink_to(MAX_BUFFERED);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Batched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Batched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.buffer.len() + buf.len() > MAX_BUFFERED {
            ready!(self.poll_drain(cx))?;
        }
        self.buffer.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if self.buffer.len() + len > MAX_BUFFERED {
            ready!(self.poll_drain(cx))?;
        }
        for buf in bufs {
            self.buffer.extend_from_slice(buf);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buffer.len() > self.written && !self.waited {
            let deferred = self
                .deferred
                .get_or_insert_with(|| Box::pin(tokio::task::yield_now()));
            ready!(deferred.as_mut().poll(cx));
            self.deferred = None;
            self.waited = true;
        }
        ready!(self.poll_drain(cx))?;
        self.waited = false;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_wait_for_the_flush_and_go_out_whole() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut batched = Batched::new(near);
        batched.write_all(b"one ").await.unwrap();
        batched.write_all(b"two").await.unwrap();
        let mut got = [0u8; 16];
        let nothing_yet =
            tokio::time::timeout(std::time::Duration::from_millis(50), far.read(&mut got)).await;
        assert!(nothing_yet.is_err(), "written before the flush");
        batched.flush().await.unwrap();
        let n = far.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"one two");
    }

    #[tokio::test]
    async fn a_burst_larger_than_the_buffer_goes_out_in_order() {
        let (near, mut far) = tokio::io::duplex(16 * 1024);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            far.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut batched = Batched::new(near);
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in sent.chunks(7_000) {
            batched.write_all(chunk).await.unwrap();
        }
        batched.shutdown().await.unwrap();
        drop(batched);
        assert_eq!(reader.await.unwrap(), sent);
    }

    #[tokio::test]
    async fn a_flush_with_nothing_buffered_is_not_deferred() {
        let (near, _far) = tokio::io::duplex(64);
        let mut batched = Batched::new(near);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(
            Pin::new(&mut batched).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
    }
}
