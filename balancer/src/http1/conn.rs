//! A client's connection as the HTTP/1.1 server keeps it: the byte stream, what was read
//! and not yet used, the state of the current request's body, and what the client is owed
//! before anything else. The request reader's loop (`http1.rs`) and the response writer
//! (`response.rs`) both work on it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::framing::Framing;
use crate::message::Span;

/// A client connection's byte stream: TCP, or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The connection: its stream, what was read and not yet used, and the state of the
/// current request's body.
pub(super) struct Conn<S> {
    pub(super) io: S,
    pub(super) read: BytesMut,
    /// The current request's body still to be read (Done when it has none, or was read).
    pub(super) body: Framing,
    /// `100 Continue` is owed, to be queued in `owed` when the body is first read.
    pub(super) continue_pending: bool,
    /// Bytes owed the client before anything else: 100 Continue, a backend's 1xx heads.
    pub(super) owed: BytesMut,
    /// A read or write failed: the connection carries nothing more.
    pub(super) broken: bool,
    /// Where a request head's fields lie, kept to reuse the allocation.
    pub(super) spans: Vec<Span>,
}

impl<S: Io> Conn<S> {
    /// Writes what the client is owed before anything else (`owed`), then flushes.
    pub(super) fn poll_owed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.owed.is_empty() {
            match ready!(Pin::new(&mut self.io).poll_write(cx, &self.owed)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => bytes::Buf::advance(&mut self.owed, n),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }
}
