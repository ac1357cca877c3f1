//! Headless Chromium driven over the DevTools protocol, for page tests that must act like a
//! person: type into a form, press its button, read the page that follows.
//!
//! `--dump-dom` can only load a page; typing needs the protocol. Chromium prints
//! `DevTools listening on ws://...` on stderr; we connect to that browser endpoint, open a
//! tab, attach to it in flattened mode (commands carry a `sessionId`) and speak JSON.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A running headless Chromium with one tab. Dropping it kills the browser.
pub struct Browser {
    _child: Child,
    _profile: tempfile::TempDir,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
}

impl Browser {
    pub async fn start() -> anyhow::Result<Self> {
        let profile = tempfile::tempdir()?;
        let mut child = foobar_service::testing::chromium(profile.path())
            .arg("--remote-debugging-port=0")
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("chromium: {e} (scripts/install-tools.sh installs it)"))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let endpoint = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return Ok(url.trim().to_owned());
                }
            }
            anyhow::bail!("chromium exited before it listened")
        })
        .await
        .map_err(|_| anyhow::anyhow!("chromium did not listen within 30 s"))??;
        // Keep reading stderr so Chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str()).await?;
        let mut browser = Self {
            _child: child,
            _profile: profile,
            socket,
            session: String::new(),
            next_id: 0,
        };
        let target = browser
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await?;
        browser.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no sessionId in {attached}"))?
            .to_owned();
        Ok(browser)
    }

    /// One DevTools command; its result, or its error as an error. Events are skipped.
    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            command["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::Text(command.to_string().into()))
            .await?;
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(message) = self.socket.next().await {
                let Message::Text(text) = message? else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text)?;
                if value["id"] == id {
                    return Ok(value);
                }
            }
            anyhow::bail!("chromium closed the DevTools connection")
        })
        .await
        .map_err(|_| anyhow::anyhow!("{method}: no answer within 30 s"))??;
        if let Some(error) = answer.get("error") {
            anyhow::bail!("{method}: {error}");
        }
        Ok(answer["result"].clone())
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    pub async fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await?;
        if let Some(exception) = result.get("exceptionDetails") {
            anyhow::bail!("{expression}: {exception}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// Loads `url` and waits until the page has loaded.
    pub async fn goto(&mut self, url: &str) -> anyhow::Result<()> {
        self.call("Page.navigate", json!({ "url": url })).await?;
        self.wait_for_page(|href| href == url).await
    }

    /// Focuses the element with this id and types `text` into it, as a keyboard would.
    pub async fn type_into(&mut self, element_id: &str, text: &str) -> anyhow::Result<()> {
        let found = self
            .eval(&format!(
                "(() => {{ const e = document.getElementById({}); if (!e) return false; e.focus(); return true; }})()",
                json!(element_id)
            ))
            .await?;
        anyhow::ensure!(found == json!(true), "no element #{element_id} on the page");
        self.call("Input.insertText", json!({ "text": text }))
            .await?;
        Ok(())
    }

    /// Polls until the loaded page's address satisfies `wanted` (a form submission or a
    /// navigation has finished), for up to 20 s.
    pub async fn wait_for_page(&mut self, wanted: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let state = self
                .eval("[document.readyState, location.href]")
                .await
                .unwrap_or(Value::Null);
            if state[0] == "complete" && state[1].as_str().is_some_and(&wanted) {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "page did not arrive; last state {state}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
