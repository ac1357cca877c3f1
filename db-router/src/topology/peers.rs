//! The other routers, asked before a promotion: what each acknowledged and last saw on the
//! primary (`POST /seal` on its admin listener, which also makes it acknowledge nothing more
//! from the old primary), and told when the promotion is called off (`POST /release`).
//!
//! Every peer must answer: one that does not may have acknowledged writes the candidate
//! lacks, so the promotion does not happen (writes keep failing, the data is kept), unless an
//! operator forces it without that peer (`promote --without PEER`), giving up whatever the
//! peer acknowledged.
//!
//! [`ask`] is the one HTTP exchange with a router's admin listener, which the operator's
//! commands ([`super::command`]) use too.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::gtid::GtidSet;
use super::ledger::Holdings;

/// How to reach the other routers' admin listeners.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    pub addresses: Vec<String>,
    pub timeout: Duration,
    pub token: Option<String>,
}

impl Peers {
    /// Seals every peer but those an operator gave up (`without`) for a promotion past
    /// `epoch` by `by`; their holdings, or why not.
    pub async fn seal(
        &self,
        epoch: u64,
        by: &str,
        without: &[String],
    ) -> Result<Vec<Holdings>, String> {
        let path = format!("/seal?epoch={epoch}&by={}", encode(by));
        let asked: Vec<&String> = self
            .addresses
            .iter()
            .filter(|peer| !without.contains(peer))
            .collect();
        let answers =
            futures_util::future::join_all(asked.iter().map(|peer| self.post(peer, &path))).await;
        let mut holdings = Vec::with_capacity(answers.len());
        for (peer, answer) in asked.into_iter().zip(answers) {
            let body = answer.map_err(|e| {
                format!(
                    "router {peer} did not answer ({e}): it may have acknowledged writes the \
                     candidate lacks"
                )
            })?;
            let held: Holdings = serde_json::from_str(&body)
                .map_err(|e| format!("router {peer} answered {body:?}: {e}"))?;
            holdings.push(held);
        }
        Ok(holdings)
    }

    /// Tells every peer the promotion `by` prepared is off (best effort: a peer that misses
    /// it ends its promise after `monitor.seal_timeout`).
    pub async fn release(&self, by: &str) {
        let path = format!("/release?by={}", encode(by));
        let answers = futures_util::future::join_all(
            self.addresses.iter().map(|peer| self.post(peer, &path)),
        )
        .await;
        for (peer, answer) in self.addresses.iter().zip(answers) {
            if let Err(e) = answer {
                tracing::warn!("telling router {peer} the promotion is off: {e}");
            }
        }
    }

    async fn post(&self, peer: &str, path: &str) -> Result<String, String> {
        match ask(peer, "POST", path, self.token.as_deref(), self.timeout).await {
            Ok((200, body)) => Ok(body),
            Ok((status, body)) => Err(format!("status {status}: {}", body.trim())),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Everything a candidate must hold: every router's acknowledged writes and the primary's
/// last binary-log position any of them saw.
pub fn required(holdings: &[Holdings]) -> GtidSet {
    let mut set = GtidSet::default();
    for held in holdings {
        set.insert_pos(&held.acknowledged);
        set.insert_pos(&held.primary_seen);
    }
    set
}

/// A query-string value: the router names (`router-a (pid 7)`) carry spaces and parentheses.
pub(super) fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `METHOD path` on `peer` (`host:port`), with the admin `token` if any: the status and
/// the body, within `timeout`.
pub(crate) async fn ask(
    peer: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(peer).await?;
        let authorization = token
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {peer}\r\nContent-Length: 0\r\n\
             {authorization}User-Agent: foobar-db-router\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| std::io::Error::other(format!("no answer within {timeout:?}")))??;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head:?}")))?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_is_every_routers_acknowledged_and_seen_writes() {
        let held = |acked: &str, seen: &str| Holdings {
            router: "r".into(),
            acknowledged: acked.into(),
            primary_seen: seen.into(),
        };
        let need = required(&[held("0-1-40", "0-1-38"), held("0-1-35", "0-1-41,1-1-2")]);
        assert_eq!(need.to_string(), "0-1-41,1-1-2");
    }

    #[test]
    fn names_are_encoded_for_the_query_string() {
        assert_eq!(encode("router-a (pid 7)"), "router-a%20%28pid%207%29");
    }
}
