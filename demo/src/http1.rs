//! One HTTP/1.1 exchange on an open stream, small enough to know exactly what happened.
//!
//! A failure's reason depends on one fact a general client library hides: did the connection
//! die before a single byte of the answer came back, or inside the answer? So this module
//! writes the request and reads the answer itself (Content-Length, chunked, or until close)
//! and says which of the two ways it failed.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest answer head and body this client accepts.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 8 * 1024 * 1024;

/// A request: GET without a body, or POST with a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub body: Vec<u8>,
    /// A write's `Idempotency-Key` (IETF draft-ietf-httpapi-idempotency-key-header), made with
    /// the request: one request is one logical write, so every time it is sent (a retry by
    /// anyone: this client, or a balancer passing it to another web server) it names the same
    /// write, and the site stores it once.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Request {
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: Method::Get,
            path: path.into(),
            body: Vec::new(),
            idempotency_key: None,
        }
    }

    /// A new write, with a fresh idempotency key.
    pub fn post_json(path: impl Into<String>, body: &serde_json::Value) -> Self {
        Self {
            method: Method::Post,
            path: path.into(),
            body: body.to_string().into_bytes(),
            idempotency_key: Some(fresh_key()),
        }
    }

    fn encode(&self, host: &str) -> Vec<u8> {
        let mut head = match self.method {
            Method::Get => format!("GET {} HTTP/1.1\r\nHost: {host}\r\n", self.path),
            Method::Post => format!(
                "POST {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n",
                self.path,
                self.body.len()
            ),
        };
        if let Some(key) = &self.idempotency_key {
            // The draft's form: a structured-field string (the key is hex: nothing to escape).
            head.push_str(&format!("Idempotency-Key: \"{key}\"\r\n"));
        }
        head.push_str("Accept: application/json\r\nUser-Agent: foobar-demo\r\n\r\n");
        let mut wire = head.into_bytes();
        wire.extend_from_slice(&self.body);
        wire
    }
}

/// 128 random bits as 32 hex digits: unique to one write, whoever else writes.
fn fresh_key() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    format!("{:032x}", u128::from_be_bytes(bytes))
}

/// An answer: status, headers (names lower-cased), body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The connection may carry another request.
    pub reusable: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum Failure {
    /// The connection was closed or reset before any byte of the answer arrived: the server
    /// may or may not have started on the request.
    DeadBeforeAnswer(String),
    /// Part of an answer came, then the connection broke or the answer made no sense.
    Broken(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::DeadBeforeAnswer(why) => write!(f, "connection died before answering: {why}"),
            Failure::Broken(why) => write!(f, "broken answer: {why}"),
        }
    }
}

/// Sends `request` on `stream` and reads its answer.
pub async fn exchange<S>(stream: &mut S, host: &str, request: &Request) -> Result<Response, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let dead = |e: std::io::Error| Failure::DeadBeforeAnswer(e.to_string());
    stream
        .write_all(&request.encode(host))
        .await
        .map_err(dead)?;
    stream.flush().await.map_err(dead)?;

    let mut buffer = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            break end;
        }
        if buffer.len() > MAX_HEAD {
            return Err(Failure::Broken("answer head too long".into()));
        }
        let n = read_more(stream, &mut buffer).await.map_err(|e| {
            if buffer.is_empty() {
                Failure::DeadBeforeAnswer(e.to_string())
            } else {
                Failure::Broken(e.to_string())
            }
        })?;
        if n == 0 {
            return Err(if buffer.is_empty() {
                Failure::DeadBeforeAnswer("closed".into())
            } else {
                Failure::Broken("closed inside the answer head".into())
            });
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut rest = buffer.split_off(head_end + 4);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| Failure::Broken(format!("not an HTTP/1 status line: {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let mut reusable = status_line.starts_with("HTTP/1.1")
        && !header("connection").is_some_and(|v| v.contains("close"));

    let broken = |e: std::io::Error| Failure::Broken(e.to_string());
    let body = if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(stream, rest).await?
    } else if let Some(length) = header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| Failure::Broken(format!("Content-Length {length:?}")))?;
        if length > MAX_BODY {
            return Err(Failure::Broken(format!("body of {length} bytes")));
        }
        while rest.len() < length {
            if read_more(stream, &mut rest).await.map_err(broken)? == 0 {
                return Err(Failure::Broken("closed inside the body".into()));
            }
        }
        rest.truncate(length);
        rest
    } else {
        // No length: the body ends when the server closes.
        reusable = false;
        while read_more(stream, &mut rest).await.map_err(broken)? > 0 {
            if rest.len() > MAX_BODY {
                return Err(Failure::Broken("body too long".into()));
            }
        }
        rest
    };
    Ok(Response {
        status,
        headers,
        body,
        reusable,
    })
}

async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    buffer.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// A chunked body, starting with the bytes already read after the head.
async fn read_chunked<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut pending: Vec<u8>,
) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(end) = find(&pending, b"\r\n") {
                break end;
            }
            fill(stream, &mut pending).await?;
        };
        let size_text = String::from_utf8_lossy(&pending[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| Failure::Broken(format!("chunk size {size_text:?}")))?;
        pending.drain(..line_end + 2);
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                if let Some(end) = find(&pending, b"\r\n") {
                    pending.drain(..end + 2);
                    if end == 0 {
                        return Ok(body);
                    }
                } else {
                    fill(stream, &mut pending).await?;
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(Failure::Broken("body too long".into()));
        }
        while pending.len() < size + 2 {
            fill(stream, &mut pending).await?;
        }
        body.extend_from_slice(&pending[..size]);
        pending.drain(..size + 2);
    }
}

async fn fill<S: AsyncRead + Unpin>(stream: &mut S, pending: &mut Vec<u8>) -> Result<(), Failure> {
    match read_more(stream, pending).await {
        Ok(0) => Err(Failure::Broken("closed inside a chunked body".into())),
        Ok(_) => Ok(()),
        Err(e) => Err(Failure::Broken(e.to_string())),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one exchange against a peer that answers `answer` and then closes (or not).
    async fn against(answer: &'static [u8], close: bool) -> (Result<Response, Failure>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let peer = tokio::spawn(async move {
            let mut request = vec![0u8; 4096];
            let n = server.read(&mut request).await.unwrap();
            server.write_all(answer).await.unwrap();
            if !close {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
            request.truncate(n);
            request
        });
        let post = Request::post_json("/api/posts", &serde_json::json!({"name": "n"}));
        let result = exchange(&mut client, "www.foobar.com", &post).await;
        drop(client);
        let request = if close {
            peer.await.unwrap()
        } else {
            Vec::new()
        };
        (result, request)
    }

    #[tokio::test]
    async fn content_length_body_and_the_request_it_sent() {
        let (result, request) = against(
            b"HTTP/1.1 201 Created\r\nX-Served-By: web-a\r\nContent-Length: 2\r\n\r\n{}",
            true,
        )
        .await;
        let response = result.unwrap();
        assert_eq!(response.status, 201);
        assert_eq!(response.header("x-served-by"), Some("web-a"));
        assert_eq!(response.body, b"{}");
        assert!(response.reusable);
        let request = String::from_utf8(request).unwrap();
        assert!(request.starts_with("POST /api/posts HTTP/1.1\r\nHost: www.foobar.com\r\n"));
        assert!(request.contains("Content-Length: 12\r\n"));
        assert!(request.ends_with("\r\n\r\n{\"name\":\"n\"}"));
        let key = request
            .split("\r\n")
            .find_map(|line| line.strip_prefix("Idempotency-Key: "))
            .expect("a write carries a key");
        assert!(
            key.len() == 34 && key.starts_with('"') && key.ends_with('"'),
            "{key}"
        );
    }

    #[test]
    fn each_write_has_its_own_key_and_a_copy_of_it_the_same() {
        let body = serde_json::json!({"name": "n"});
        let write = Request::post_json("/api/posts", &body);
        let another = Request::post_json("/api/posts", &body);
        assert_ne!(write.idempotency_key, another.idempotency_key);
        assert_eq!(write.clone().idempotency_key, write.idempotency_key);
        assert_eq!(Request::get("/").idempotency_key, None);
        assert!(
            !String::from_utf8(Request::get("/").encode("h"))
                .unwrap()
                .contains("Idempotency")
        );
    }

    #[tokio::test]
    async fn chunked_body_with_trailers() {
        let (result, _) = against(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n",
            false,
        )
        .await;
        assert_eq!(result.unwrap().body, b"abcde");
    }

    #[tokio::test]
    async fn body_until_close_is_not_reusable() {
        let (result, _) = against(b"HTTP/1.1 200 OK\r\n\r\nall of it", true).await;
        let response = result.unwrap();
        assert_eq!(response.body, b"all of it");
        assert!(!response.reusable);
    }

    #[tokio::test]
    async fn closed_before_any_byte_differs_from_closed_in_the_middle() {
        let (result, _) = against(b"", true).await;
        assert!(
            matches!(result, Err(Failure::DeadBeforeAnswer(_))),
            "{result:?}"
        );
        let (result, _) = against(b"HTTP/1.1 200 OK\r\nContent-Le", true).await;
        assert!(matches!(result, Err(Failure::Broken(_))), "{result:?}");
        let (result, _) = against(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true).await;
        assert!(matches!(result, Err(Failure::Broken(_))), "{result:?}");
    }
}
