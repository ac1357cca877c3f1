//! Which database node takes writes and which takes reads, kept current by the monitor.
//!
//! This is the one seam between the two halves of the router:
//! - the sessions (`session.rs` and the protocol modules) ask [`Topology::snapshot`] where a
//!   statement goes, and tell [`Topology::report_failure`] when a backend connection fails;
//! - the monitor watches both nodes (connect, ping, `read_only`, replication lag), fails
//!   over when the primary is gone for `monitor.failover_after`, and publishes a new
//!   [`Snapshot`] whenever the answer changes.
//!
//! A snapshot is immutable and swapped whole, so a session that read one sees a consistent
//! pair (writer, reader) even while the monitor changes the next one.
//!
//! Child modules, one concern each:
//! - [`snapshot`]: [`Node`], [`Snapshot`] and the [`Role`] a node plays for a session;
//! - [`config`]: the `[backends]` and `[monitor]` tables;
//! - [`access`]: how to reach the nodes and as whom;
//! - [`node`]: the monitor's connection to a node and what a check reads;
//! - [`decide`]: the routing rules, a pure function of the checks (unit-tested);
//! - [`actions`]: promote, finish a promotion, fence, rejoin;
//! - [`gtid`]: GTID positions as sets, and what a node lacks of them;
//! - [`ledger`]: what this router acknowledged to clients, and its promise to a promoter;
//! - [`peers`]: the other routers, asked before a promotion;
//! - [`monitor`]: the loop that checks, decides, acts and publishes, and [`start`], which
//!   starts it;
//! - [`report`]: the monitor's last round in full ([`Report`]);
//! - [`admin`]: `GET /topology`, `POST /rejoin`, `POST /seal` and `POST /release` for the
//!   admin listener;
//! - [`command`]: `foobar-db-router rejoin` and `topology`, through the running router;
//! - [`metrics`]: the Prometheus metrics.

pub mod access;
pub mod actions;
pub mod admin;
pub mod command;
pub mod config;
pub mod decide;
pub mod gtid;
pub mod ledger;
pub mod metrics;
pub mod monitor;
pub mod node;
pub mod peers;
pub mod rebuild;
pub mod report;
pub mod snapshot;

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};

use access::Access;

pub use admin::admin_routes;
pub use config::{BackendsConfig, MonitorConfig};
pub use monitor::start;
pub use report::Report;
pub use snapshot::{Node, Role, Snapshot};

/// The live topology, shared by every session; cheap to clone.
#[derive(Clone)]
pub struct Topology {
    current: Arc<watch::Sender<Arc<Snapshot>>>,
    shared: Arc<Shared>,
}

/// What the monitor shares with the admin routes and the sessions, beside the snapshot.
#[derive(Default)]
struct Shared {
    /// Wakes the monitor for a check now (a session's failure, an admin action).
    wake: Notify,
    /// The last round, in full: the admin endpoint's JSON and what rejoin acts on.
    report: Mutex<Report>,
    /// How to reach the nodes for admin actions; `None` for a topology without a monitor.
    access: Option<Access>,
    /// One admin action at a time.
    admin_action: tokio::sync::Mutex<()>,
    /// What this router acknowledged, and whether it may acknowledge more.
    ledger: ledger::Ledger,
    /// What an operator gave up (`POST /promote`): the next promotion may go ahead without it.
    forced: Mutex<Forced>,
}

/// An operator's forced promotion (`POST /promote?give_up=GTIDS&without=PEER`): what the next
/// promotion attempt may go ahead without. Empty when nothing is forced.
#[derive(Debug, Clone, Default)]
struct Forced {
    /// Transactions given up: the candidate need not hold them.
    give_up: gtid::GtidSet,
    /// Peer routers (as `monitor.peers` names them) not asked: whatever they acknowledged
    /// beyond the candidate is given up too, unknown.
    without: Vec<String>,
}

impl Forced {
    fn is_empty(&self) -> bool {
        self.give_up.is_empty() && self.without.is_empty()
    }
}

impl std::fmt::Display for Forced {
    /// What the promotion record's `promoted_by` says after [`rebuild::FORCED`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.give_up.is_empty() {
            parts.push(self.give_up.to_string());
        }
        for peer in &self.without {
            parts.push(format!("what router {peer} acknowledged"));
        }
        f.write_str(&parts.join(" and "))
    }
}

impl Topology {
    /// A topology that starts as configured: writes to `backends.primary`, reads from
    /// `backends.replica`. Nothing watches it: see [`start`] for the monitored one.
    pub fn new(backends: &BackendsConfig) -> Self {
        Self::with_shared(backends, Shared::default())
    }

    fn with_shared(backends: &BackendsConfig, shared: Shared) -> Self {
        let snapshot = Snapshot {
            epoch: 0,
            writer: Some(Node {
                name: backends.primary.clone(),
            }),
            reader: Some(Node {
                name: backends.replica.clone(),
            }),
        };
        // Until a monitor says otherwise, the configured primary's commits are acknowledged.
        shared.ledger.observe(snapshot.writer.clone(), 0, None);
        Self {
            current: Arc::new(watch::channel(Arc::new(snapshot)).0),
            shared: Arc::new(shared),
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
        tracing::debug!(node = %node.name, "session reports a failure, checking now: {why}");
        self.shared.wake.notify_one();
    }

    /// What this router acknowledged: a session records each write's GTID here before the
    /// client sees its OK ([`ledger::Ledger::acknowledge`]).
    pub fn ledger(&self) -> &ledger::Ledger {
        &self.shared.ledger
    }

    /// Stops writes at once (no writer in the snapshot) until the monitor's next round
    /// decides again: this router promised a promoter to acknowledge no more of them.
    fn withdraw_writer(&self) {
        self.current.send_if_modified(|current| {
            if current.writer.is_none() {
                return false;
            }
            *current = Arc::new(Snapshot {
                writer: None,
                ..(**current).clone()
            });
            true
        });
    }

    /// The monitor's last round in full (what `GET /topology` shows).
    pub fn report(&self) -> Report {
        self.shared
            .report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
