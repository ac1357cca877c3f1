//! The HTTP status of `GET path` on an address: health checks (DNS records, balancer
//! backends) and `--probe` all ask this one question, over a fresh connection each time so
//! that a check also proves the service still accepts connections.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The status code of `GET path` on `peer`, or why there was none within `timeout`.
pub async fn http_status(peer: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<u16> {
    match tokio::time::timeout(timeout, ask(peer, path)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        )),
    }
}

async fn ask(peer: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(peer).await?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {peer}\r\nUser-Agent: foobar health check\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    // "HTTP/1.1 200" is 12 bytes; read until we have them or the peer is done.
    let mut head = [0u8; 12];
    let mut filled = 0;
    while filled < head.len() {
        match stream.read(&mut head[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    let line = std::str::from_utf8(&head[..filled]).unwrap_or("");
    line.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn server(answer: &'static [u8]) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 256];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(answer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_the_status_or_says_why_not() {
        let ok = server(b"HTTP/1.1 200 OK\r\n\r\n").await;
        assert_eq!(
            http_status(ok, "/readyz", Duration::from_secs(2))
                .await
                .unwrap(),
            200
        );
        let unavailable = server(b"HTTP/1.0 503 Service Unavailable\r\n\r\n").await;
        assert_eq!(
            http_status(unavailable, "/", Duration::from_secs(2))
                .await
                .unwrap(),
            503
        );
        let junk = server(b"SSH-2.0-OpenSSH\r\n").await;
        assert!(
            http_status(junk, "/", Duration::from_secs(2))
                .await
                .is_err()
        );
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(
            http_status(closed, "/", Duration::from_secs(2))
                .await
                .is_err()
        );
    }
}
