//! Which database node takes writes and which takes reads, kept current by the monitor.
//!
//! This is the one seam between the two halves of the router:
//! - the sessions (`session.rs` and the protocol modules) ask [`Topology::snapshot`] where a
//!   statement goes, and tell [`Topology::report_failure`] when a backend connection fails;
//! - the monitor (this module and its children) watches both nodes (connect, ping,
//!   `read_only`, replication lag), fails over when the writer is gone for
//!   `monitor.failover_after`, and publishes a new [`Snapshot`] whenever the answer changes.
//!
//! A snapshot is immutable and swapped whole, so a session that read one sees a consistent
//! pair (writer, reader) even while the monitor changes the next one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The `[backends]` table: the two database nodes and the account the router's sessions log
/// into them with.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendsConfig {
    /// `host:port` of the node that is the primary when the stack starts.
    pub primary: String,
    /// `host:port` of the node that is the replica when the stack starts.
    pub replica: String,
    /// The account sessions use on the backends.
    pub user: String,
    /// Its password; `password_file` instead keeps it out of the config (Docker secrets).
    pub password: String,
    pub password_file: PathBuf,
}

impl Default for BackendsConfig {
    fn default() -> Self {
        Self {
            primary: "db-primary:3306".into(),
            replica: "db-replica:3306".into(),
            user: "foobar".into(),
            password: String::new(),
            password_file: PathBuf::new(),
        }
    }
}

/// The `[monitor]` table: how the nodes are watched and when the router fails over.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// How often each node is checked.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long a check may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A replica further behind than this gets no reads; they go to the writer.
    #[serde(with = "humantime_serde")]
    pub max_replication_lag: Duration,
    /// Promote the replica when the writer has been down this long.
    pub auto_failover: bool,
    #[serde(with = "humantime_serde")]
    pub failover_after: Duration,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(500),
            max_replication_lag: Duration::from_secs(5),
            auto_failover: true,
            failover_after: Duration::from_secs(3),
        }
    }
}

/// One database node, named as configured (`db-primary:3306`); sessions resolve the name
/// when they connect, so a restarted container's new address is found.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Node {
    pub name: String,
}

/// Where statements go right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Raised by every failover; recorded on the chosen primary so that a second router
    /// recognises the choice.
    pub epoch: u64,
    /// Where writes and everything that is not a plain read go. `None` while no node may
    /// take writes (the primary is down and not yet replaced): writes fail at once.
    pub writer: Option<Node>,
    /// Where autocommit reads go. `None` when the replica is down or lags too far: reads go
    /// to the writer.
    pub reader: Option<Node>,
}

/// The live topology, shared by every session; cheap to clone.
#[derive(Clone)]
pub struct Topology {
    current: Arc<watch::Sender<Arc<Snapshot>>>,
}

impl Topology {
    /// A topology that starts as configured: writes to `backends.primary`, reads from
    /// `backends.replica`.
    pub fn new(backends: &BackendsConfig) -> Self {
        let snapshot = Snapshot {
            epoch: 0,
            writer: Some(Node {
                name: backends.primary.clone(),
            }),
            reader: Some(Node {
                name: backends.replica.clone(),
            }),
        };
        Self {
            current: Arc::new(watch::channel(Arc::new(snapshot)).0),
        }
    }

    /// Where statements go now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.borrow())
    }

    /// A receiver that sees every new snapshot.
    pub fn changes(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.current.subscribe()
    }

    /// A session could not reach `node` (connect or I/O error): the monitor checks it at once
    /// instead of waiting for its next round.
    pub fn report_failure(&self, node: &Node, why: &str) {
        tracing::debug!(node = %node.name, "session reports a failure: {why}");
    }

    /// Publishes a new snapshot (the monitor's job).
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.send_if_modified(|current| {
            let changed = **current != snapshot;
            if changed {
                *current = Arc::new(snapshot);
            }
            changed
        });
    }
}
