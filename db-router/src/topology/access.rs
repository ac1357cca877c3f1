//! How to reach the nodes and as whom: the monitor's and the admin actions' credentials,
//! read once from `[backends]` and `[monitor]`.

use super::config::{BackendsConfig, MonitorConfig};
use super::node::Probe;
use super::peers::Peers;
use super::snapshot::Node;

/// How to reach the nodes and as whom: the monitor's and the admin actions' credentials.
#[derive(Clone)]
pub struct Access {
    pub nodes: Vec<Node>,
    pub monitor_user: String,
    pub monitor_password: String,
    pub replication_user: String,
    pub replication_password: String,
    /// The sessions' account, whose connections a fenced node loses.
    pub app_user: String,
    /// This router, as the promotion record names it (`promoted_by`).
    pub router: String,
    /// The other routers, asked before a promotion.
    pub peers: Peers,
}

impl Access {
    pub fn new(backends: &BackendsConfig, monitor: &MonitorConfig) -> anyhow::Result<Self> {
        let router = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "foobar-db-router".into());
        Ok(Self {
            nodes: [&backends.primary, &backends.replica]
                .into_iter()
                .map(|name| Node { name: name.clone() })
                .collect(),
            monitor_user: monitor.user.clone(),
            monitor_password: crate::config::password(
                &monitor.password,
                &monitor.password_file,
                "monitor.password",
            )?,
            replication_user: monitor.replication_user.clone(),
            replication_password: crate::config::password(
                &monitor.replication_password,
                &monitor.replication_password_file,
                "monitor.replication_password",
            )?,
            app_user: backends.user.clone(),
            router: format!("{router} (pid {})", std::process::id()),
            peers: Peers {
                addresses: monitor.peers.clone(),
                timeout: monitor.peer_timeout,
                token: peer_token(&monitor.peer_token_file)?,
            },
        })
    }

    pub fn probe(&self, node: &Node) -> anyhow::Result<Probe> {
        Probe::new(node.clone(), &self.monitor_user, &self.monitor_password)
    }
}

/// The admin token sent to the peers, from `monitor.peer_token_file` (none when unset).
fn peer_token(path: &std::path::Path) -> anyhow::Result<Option<String>> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let token = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("monitor.peer_token_file {}: {e}", path.display()))?;
    Ok(Some(token.trim().to_owned()))
}
