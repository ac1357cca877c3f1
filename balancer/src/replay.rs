//! Which requests may go to a second backend after a first one may have processed them, and
//! the copy kept to send them again (see the rules at the top of `proxy.rs`).
//!
//! - An idempotent method (RFC 9110 9.2.2) without a body: its head is kept.
//! - Any request with an `Idempotency-Key` header (draft-ietf-httpapi-idempotency-key-header:
//!   the web server answers a repeated key with the first outcome instead of acting twice)
//!   whose body is at most [`MAX_REPLAYABLE_BODY`]: the body, announced that small by
//!   Content-Length or streamed and ended within it, is read in full before anything is sent,
//!   and kept with the head. Trailers of such a body are not forwarded.
//!
//! A keyed body found longer while it is read ahead is sent as it streams (the part already
//! read first) and is not replayable; so is every other request with a body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::Method;
use http::header::HeaderName;
use http::request::Parts;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};

use crate::message::{BoxError, ProxyBody};

/// The most body bytes read ahead (and held per request) to make a keyed request replayable.
pub const MAX_REPLAYABLE_BODY: usize = 64 * 1024;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// What it takes to send a request again: its body (the proxy keeps the head, which is never
/// consumed by sending it).
pub struct Replay {
    body: Bytes,
}

impl Replay {
    fn of(body: Bytes) -> Self {
        Self { body }
    }

    /// A new copy of the body, to send.
    pub fn body(&self) -> ProxyBody {
        full(self.body.clone())
    }
}

/// The body to send first, and the copy to send again when the request may be. An error is
/// the client's body failing while it was read ahead (cut off, or over a limit).
pub async fn prepare<B>(parts: &Parts, mut body: B) -> Result<(ProxyBody, Option<Replay>), BoxError>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin + Send + Sync + 'static,
{
    if body.is_end_stream() {
        return Ok((body.boxed(), without_body(parts)));
    }
    let keyed = parts.headers.contains_key(IDEMPOTENCY_KEY);
    if !keyed || body.size_hint().lower() > MAX_REPLAYABLE_BODY as u64 {
        return Ok((body.boxed(), None));
    }
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            read.extend_from_slice(&data);
            if read.len() > MAX_REPLAYABLE_BODY {
                let rest = Prefixed {
                    first: Some(read.freeze()),
                    rest: body,
                };
                return Ok((rest.boxed(), None));
            }
        }
    }
    let read = read.freeze();
    Ok((full(read.clone()), Some(Replay::of(read))))
}

/// The copy kept of a request without a body: one, when it is idempotent or has a key.
pub fn without_body(parts: &Parts) -> Option<Replay> {
    let keyed = parts.headers.contains_key(IDEMPOTENCY_KEY);
    (keyed || is_idempotent(&parts.method)).then(|| Replay::of(Bytes::new()))
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn full(body: Bytes) -> ProxyBody {
    Full::new(body).map_err(|never| match never {}).boxed()
}

/// A body of which `first` was read ahead: `first`, then the rest as it streams.
struct Prefixed<B> {
    first: Option<Bytes>,
    rest: B,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Prefixed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.first.take() {
            Some(first) => Poll::Ready(Some(Ok(Frame::data(first)))),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let first = self.first.as_ref().map_or(0, |f| f.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + first);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + first);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, key: bool) -> Parts {
        let mut request = http::Request::builder().method(method).uri("/api/posts");
        if key {
            request = request.header(
                "idempotency-key",
                "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"",
            );
        }
        request.body(()).unwrap().into_parts().0
    }

    /// A body that streams its chunks with no length announced, as a chunked upload does.
    struct Streamed(std::collections::VecDeque<Bytes>);

    impl Body for Streamed {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
        }
    }

    fn streamed(chunks: &[(u8, usize)]) -> Streamed {
        Streamed(
            chunks
                .iter()
                .map(|&(byte, n)| Bytes::from(vec![byte; n]))
                .collect(),
        )
    }

    fn whole(
        body: &'static [u8],
    ) -> impl Body<Data = Bytes, Error = BoxError> + Unpin + Send + Sync + 'static {
        Full::new(Bytes::from_static(body)).map_err(|never| match never {})
    }

    async fn sent(body: ProxyBody) -> Bytes {
        body.collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_keyed_body_within_64_kib_is_read_ahead_and_kept() {
        let chunks = streamed(&[(b'a', 40_000), (b'b', 24_000)]);
        let (body, replay) = prepare(&parts(Method::POST, true), chunks).await.unwrap();
        let replay = replay.expect("replayable");
        assert_eq!(sent(body).await.len(), 64_000);
        let again = sent(replay.body()).await;
        assert_eq!((again.len(), again[0], again[63_999]), (64_000, b'a', b'b'));
    }

    #[tokio::test]
    async fn a_longer_keyed_body_is_sent_whole_and_not_kept() {
        let chunks = streamed(&[(b'a', 60_000), (b'b', 10_000), (b'c', 5)]);
        let (body, replay) = prepare(&parts(Method::POST, true), chunks).await.unwrap();
        assert!(replay.is_none());
        let body = sent(body).await;
        assert_eq!(
            (body.len(), body[69_999], body[70_004]),
            (70_005, b'b', b'c')
        );

        let announced = whole(&[b'a'; MAX_REPLAYABLE_BODY + 1]);
        let (_, replay) = prepare(&parts(Method::POST, true), announced)
            .await
            .unwrap();
        assert!(
            replay.is_none(),
            "over 64 KiB by its length: not even read ahead"
        );
    }

    #[tokio::test]
    async fn without_a_key_only_an_idempotent_request_without_body_is_kept() {
        let cases: [(Method, bool, &'static [u8], bool); 5] = [
            (Method::POST, false, b"order=1", false),
            (Method::PUT, false, b"order=1", false),
            (Method::POST, false, b"", false),
            (Method::GET, false, b"", true),
            (Method::POST, true, b"", true),
        ];
        for (method, key, body, kept) in cases {
            let what = format!("{method} key {key} body {body:?}");
            let (_, replay) = prepare(&parts(method, key), whole(body)).await.unwrap();
            assert_eq!(replay.is_some(), kept, "{what}");
        }
    }
}
