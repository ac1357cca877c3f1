//! Starting a service binary as a process, the way a user or an orchestrator does, for tests.
//!
//! A test writes a config with port 0 everywhere, starts the binary, and learns each
//! listener's real address from its `listening on ADDR listener=NAME` log line. A watchdog
//! kills the process when the handle is dropped, so a failing test leaves nothing behind.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// A running service binary.
pub struct RunningService {
    child: Child,
    /// Listener name (`admin`, `http`, `dns-udp` ...) to the address it accepts on.
    pub listeners: HashMap<String, SocketAddr>,
    /// Every log line so far and from now on, for assertions.
    pub logs: mpsc::UnboundedReceiver<String>,
}

impl RunningService {
    /// Starts `binary --config config` and waits until it has logged `expected` listeners.
    pub async fn start(
        binary: &Path,
        config: &Path,
        envs: &[(&str, &str)],
        expected: &[&str],
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(config)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        let mut listeners = HashMap::new();
        let mut seen = Vec::new();
        let wait = async {
            while expected.iter().any(|name| !listeners.contains_key(*name)) {
                let Some(line) = rx.recv().await else {
                    anyhow::bail!("the process exited before listening:\n{}", seen.join("\n"));
                };
                if let Some((name, addr)) = parse_listening(&line) {
                    listeners.insert(name, addr);
                }
                seen.push(line);
            }
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .map_err(|_| anyhow::anyhow!("no `listening on` line within 20 s"))??;
        Ok(Self {
            child,
            listeners,
            logs: rx,
        })
    }

    /// Starts the binary as [`start`](Self::start) does, then waits up to 10 s until its
    /// `admin` listener (which `expected` must name) says it is ready: how a test begins
    /// that needs the service serving, not just listening.
    pub async fn start_ready(
        binary: &Path,
        config: &Path,
        envs: &[(&str, &str)],
        expected: &[&str],
    ) -> anyhow::Result<Self> {
        let service = Self::start(binary, config, envs, expected).await?;
        wait_ready(service.addr("admin"), Duration::from_secs(10)).await?;
        Ok(service)
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.listeners[listener]
    }

    /// Sends a signal (`"HUP"`, `"TERM"` ...) to the process.
    pub async fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("already exited"))?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .await?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// Waits up to `within` for a log line containing `needle`, and returns it.
    pub async fn wait_for_log(&mut self, needle: &str, within: Duration) -> anyhow::Result<String> {
        let wait = async {
            while let Some(line) = self.logs.recv().await {
                if line.contains(needle) {
                    return Ok(line);
                }
            }
            anyhow::bail!("the process exited")
        };
        tokio::time::timeout(within, wait)
            .await
            .map_err(|_| anyhow::anyhow!("no log line with {needle:?} within {within:?}"))?
    }

    /// Waits up to `within` for the process to exit by itself (after a signal already sent).
    pub async fn wait(mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .map_err(|_| anyhow::anyhow!("still running after {within:?}"))?
            .map_err(Into::into)
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit.
    pub async fn terminate(mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        self.signal("TERM").await?;
        tokio::time::timeout(within, self.child.wait())
            .await
            .map_err(|_| anyhow::anyhow!("still running {within:?} after SIGTERM"))?
            .map_err(Into::into)
    }
}

/// `... listening on 127.0.0.1:1234 listener="admin"` -> `("admin", 127.0.0.1:1234)`.
pub fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    let rest = line.split("listening on ").nth(1)?;
    let addr = rest.split_whitespace().next()?.parse().ok()?;
    let name = rest
        .split("listener=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .trim_matches('"');
    Some((name.to_owned(), addr))
}

/// Plain HTTP GET for tests: the status code and body, with no client library in between.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let (status, _, body) = http_request(addr, "GET", path, &[], "").await?;
    Ok((status, body))
}

/// One HTTP/1.0 exchange over a fresh connection: status, response headers (lower-cased
/// names), body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<(u16, Vec<(String, String)>, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut request = format!("{method} {path} HTTP/1.0\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP response: {response:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok((status, headers, body.to_owned()))
}

/// What every service binary must do, end to end: start from `config_toml` (whose listeners
/// use port 0), log `listening on` for each of `listeners`, become ready, answer `/healthz`
/// and `/metrics` on its admin listener, and exit 0 within 10 s of SIGTERM.
pub async fn assert_lifecycle(
    binary: &Path,
    config_toml: &str,
    listeners: &[&str],
) -> anyhow::Result<RunningService> {
    let dir = tempfile_dir()?;
    let config = dir.join("service.toml");
    std::fs::write(&config, config_toml)?;
    let service = RunningService::start_ready(binary, &config, &[], listeners).await?;
    let admin = service.addr("admin");
    let (status, _) = http_get(admin, "/healthz").await?;
    anyhow::ensure!(status == 200, "/healthz answered {status}");
    let (status, body) = http_get(admin, "/metrics").await?;
    anyhow::ensure!(
        status == 200 && body.contains("# EOF"),
        "/metrics: {status} {body}"
    );
    Ok(service)
}

/// Headless Chromium as every page test runs it, with its profile in `profile` (a folder
/// the test removes): add what it should do (`--dump-dom URL`, `--remote-debugging-port=0`).
pub fn chromium(profile: &Path) -> Command {
    let mut command = Command::new("chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// Polls `/readyz` until it answers 200.
pub async fn wait_ready(admin: SocketAddr, within: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok((200, _)) = http_get(admin, "/readyz").await {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not ready within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `--check-config` accepts `good_toml` (exit 0, prints the effective config) and refuses it
/// with an unknown key appended (exit 2, naming the file, the line and the key).
pub fn assert_check_config(binary: &Path, good_toml: &str) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let good = dir.join("good.toml");
    std::fs::write(&good, good_toml)?;
    let out = std::process::Command::new(binary)
        .arg("--check-config")
        .arg("--config")
        .arg(&good)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "good config refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        String::from_utf8_lossy(&out.stdout).contains("[service]"),
        "effective config not printed"
    );

    let bad = dir.join("bad.toml");
    // The unknown key goes before any table, so it is a top-level key on line 1.
    let text = format!("no_such_key = 1\n{good_toml}");
    let bad_line = 1;
    std::fs::write(&bad, &text)?;
    let out = std::process::Command::new(binary)
        .arg("--check-config")
        .arg("--config")
        .arg(&bad)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.code() == Some(2),
        "bad config: exit {:?}: {stderr}",
        out.status
    );
    let expected = format!("{}:{bad_line}:", bad.display());
    anyhow::ensure!(
        stderr.contains(&expected) && stderr.contains("no_such_key"),
        "unclear error: {stderr}"
    );
    Ok(())
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "foobar-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_listening_line() {
        let line = "2026-11-22T03:00:00Z  INFO foobar_service::admin: listening on \
                    127.0.0.1:4321 listener=\"admin\"";
        let (name, addr) = super::parse_listening(line).unwrap();
        assert_eq!(name, "admin");
        assert_eq!(addr, "127.0.0.1:4321".parse().unwrap());
        assert!(super::parse_listening("INFO starting").is_none());
    }
}
