//! A response on the wire to an HTTP/1.1 client: the head written from a backend's raw head
//! (`message::RawHead`) and the balancer's own fields, then the body framed by length,
//! chunks or the connection's end.

use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header;
use http::{Method, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::io::AsyncWriteExt;

use super::conn::{Conn, Io};
use crate::framing::push_field;
use crate::message::{ProxyBody, RawHead, X_REQUEST_ID};

/// How a response body goes on the wire to the client.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Out {
    /// None at all: HEAD, 1xx, 204, 304.
    Bodiless,
    Length,
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, a body of unknown size).
    UntilClose,
}

/// Writes `response` to the request made with `method` and `version`: the head, and the
/// body as it streams. Ok(true) when the connection may carry another request.
pub(super) async fn write_response<S: Io>(
    conn: &mut Conn<S>,
    response: Response<ProxyBody>,
    method: &Method,
    version: Version,
    mut close: bool,
    out: &mut Vec<u8>,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let out_framing = if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Out::Bodiless
    } else if body.size_hint().exact().is_some() {
        Out::Length
    } else if version == Version::HTTP_11 {
        Out::Chunked
    } else {
        close = true;
        Out::UntilClose
    };
    out.clear();
    // What the client is owed before this (a 1xx head, 100 Continue) that a failed or
    // unfinished write left behind: in the same write, first.
    out.extend_from_slice(&conn.owed.split());
    encode_head(
        out,
        &parts,
        out_framing,
        body.size_hint().exact(),
        close,
        version,
    );
    if out_framing == Out::Bodiless {
        drop(body);
        conn.io.write_all(out).await?;
        conn.io.flush().await?;
        return Ok(!close);
    }
    // The first part of the body, when it is already here, goes in the head's write.
    let ready = {
        let mut noop = Context::from_waker(std::task::Waker::noop());
        match Pin::new(&mut body).poll_frame(&mut noop) {
            Poll::Ready(frame) => Some(frame),
            Poll::Pending => None,
        }
    };
    let mut first = match ready {
        Some(frame) => Some(frame),
        None => {
            conn.io.write_all(out).await?;
            out.clear();
            None
        }
    };
    let mut complete = false;
    loop {
        let frame = match first.take() {
            Some(frame) => frame,
            None => body.frame().await,
        };
        match frame {
            None => {
                complete = true;
                break;
            }
            Some(Err(e)) => {
                tracing::debug!("response body failed: {e}");
                break;
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                if out_framing == Out::Chunked {
                    let _ = write!(out, "{:x}\r\n", data.len()); // into a Vec: cannot fail
                    out.extend_from_slice(&data);
                    out.extend_from_slice(b"\r\n");
                } else if out.is_empty() {
                    conn.io.write_all(&data).await?;
                    continue;
                } else {
                    out.extend_from_slice(&data);
                }
                conn.io.write_all(out).await?;
                out.clear();
            }
        }
    }
    if complete && out_framing == Out::Chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !out.is_empty() {
        conn.io.write_all(out).await?;
        out.clear();
    }
    conn.io.flush().await?;
    // A body that failed half-way ends the connection: the client sees it cut short.
    Ok(complete && !close && out_framing != Out::UntilClose)
}

/// A backend's 1xx head as an HTTP/1.1 client gets it: status line, fields, blank line.
pub(crate) fn encode_interim(out: &mut bytes::BytesMut, head: &Response<()>) {
    let status = head.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in head.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `HTTP/1.1 200 OK`, the headers but the framing ones, ours, and the blank line.
pub(crate) fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    framing: Out,
    length: Option<u64>,
    close: bool,
    version: Version,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    let mut dated = false;
    // RFC 9110 8.6, RFC 9112 6.1: never a length or a coding on 1xx and 204 (a 304 and a
    // response to HEAD may say what a GET would have had).
    let no_framing = parts.status.is_informational() || parts.status == StatusCode::NO_CONTENT;
    // A backend's head as it came (`message::RawHead`): its fields first, but those the
    // map overrides (HSTS), then this hop's.
    if let Some(head) = parts.extensions.get::<RawHead>() {
        for (name, value) in head.fields() {
            let framing_header = name.eq_ignore_ascii_case(b"content-length");
            let overridden = !parts.headers.is_empty()
                && std::str::from_utf8(name).is_ok_and(|name| parts.headers.contains_key(name));
            if (framing_header && (framing != Out::Bodiless || no_framing)) || overridden {
                continue;
            }
            dated |= name.eq_ignore_ascii_case(b"date");
            push_field(out, name, value);
        }
        for (name, value) in [(&header::VIA, &head.via), (&X_REQUEST_ID, &head.request_id)] {
            if let Some(value) = value {
                push_field(out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
    }
    for (name, value) in &parts.headers {
        let framing_header = name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING;
        if (framing_header && (framing != Out::Bodiless || no_framing))
            || name == header::CONNECTION
        {
            continue;
        }
        dated |= name == header::DATE;
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match (framing, length) {
        (Out::Length, Some(n)) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        (Out::Chunked, _) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
