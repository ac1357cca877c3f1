//! The monitor's last round in full, as `GET /topology` shows it.

use serde::Serialize;

use super::node::{Record, Status};

/// The monitor's last round, as `GET /topology` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub epoch: u64,
    pub writer: Option<String>,
    pub reader: Option<String>,
    /// The highest promotion record seen: who is primary since which epoch.
    pub record: Option<Record>,
    /// How long the primary has been unreachable, while it is.
    pub primary_down_ms: Option<u64>,
    pub auto_failover: bool,
    /// Promotions this router performed since it started.
    pub failovers: u64,
    /// Nodes this router fenced since it started.
    pub fencings: u64,
    /// Why the last promotion this router tried did not happen, while the primary stays
    /// down: a replica lacking acknowledged writes, a router that did not answer.
    pub failover_blocked: Option<String>,
    /// This router promised another one (named) to acknowledge no writes: a promotion is
    /// being prepared.
    pub sealed_by: Option<String>,
    /// The highest GTID per domain this router acknowledged to a client.
    pub acknowledged: String,
    pub nodes: Vec<NodeReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    pub name: String,
    pub up: bool,
    /// writer, reader, replica (not read from: lagging or stopped), fenced, or down.
    pub role: &'static str,
    pub server_id: Option<u32>,
    /// What the last check saw (`null` while down): read_only, replication and lag, GTIDs.
    pub status: Option<Status>,
    pub last_check_unix_ms: u64,
    pub last_error: Option<String>,
    pub consecutive_failures: u64,
    /// Why a fenced node is not rejoined by itself: the transactions it holds that the
    /// primary lacks (it must be rebuilt: docs/failover.md, "Rebuilding a node").
    pub errant: Option<String>,
}
