//! The `[backends]` and `[monitor]` tables, and the passwords they name.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[backends]` table: the two database nodes and the account the router's sessions log
/// into them with.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendsConfig {
    /// `host:port` of the node that is the primary when the stack starts.
    pub primary: String,
    /// `host:port` of the node that is the replica when the stack starts.
    pub replica: String,
    /// The account sessions use on the backends. The monitor kills its connections on a
    /// node it fences, so open sessions cannot keep writing there.
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
///
/// The defaults keep writes failing for at most about 4 s after the primary dies or freezes
/// (the target is 5 s): a dead node is seen within `interval` + `timeout` (1 s; at once when
/// its connections are reset, as a killed container's are), failover starts `failover_after`
/// (1 s) later once the replica has lost the primary too (a frozen one: within the image's
/// `slave_net_timeout`, 1 s), and promotion takes about a second (`STOP SLAVE` waits for
/// the replica's reconnect attempt in progress: a name lookup of a dead node, which the
/// database image bounds to 1 s, or a connect to a frozen one, bounded by
/// `slave_net_timeout`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// How often each node is checked.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long a check (connecting included) may take before it counts as failed: a killed
    /// container's address that drops packets must not stall the monitor.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A replica further behind than this gets no reads; they go to the writer.
    #[serde(with = "humantime_serde")]
    pub max_replication_lag: Duration,
    /// Promote the replica when the writer has been down `failover_after`. This only rides
    /// out blips; what makes a promotion safe is checked on the replica itself: it must have
    /// lost the primary too (its IO thread not connected), else the router's own link is
    /// what failed and no promotion happens, however long the primary looks down.
    pub auto_failover: bool,
    #[serde(with = "humantime_serde")]
    pub failover_after: Duration,
    /// How long a promotion waits for the replica to apply the relay log it already has
    /// (every write a client saw acknowledged is in it). Past this the promotion is given up
    /// and tried again at the next check: a replica is never promoted with writes missing.
    #[serde(with = "humantime_serde")]
    pub catch_up_timeout: Duration,
    /// The monitor's account on the nodes (the database image's `DB_MONITOR_USER`): it reads
    /// replication status, promotes, fences and rejoins. Not the sessions' account, which
    /// may do none of that.
    pub user: String,
    pub password: String,
    pub password_file: PathBuf,
    /// The replication account (the image's `DB_REPLICATION_USER`), which a rejoined node
    /// logs into the new primary with.
    pub replication_user: String,
    pub replication_password: String,
    pub replication_password_file: PathBuf,
    /// The other routers' admin listeners (`router-b:9306`). Before promoting, a router asks
    /// each what it acknowledged to clients and last saw on the primary, and promotes only a
    /// replica that holds all of it; a router that does not answer within `peer_timeout`
    /// stops the promotion (writes keep failing: the data is kept, the write refused).
    pub peers: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub peer_timeout: Duration,
    /// The admin token the peers' state-changing routes require (`Authorization: Bearer`),
    /// read from this file; empty: none sent.
    pub peer_token_file: PathBuf,
    /// A router that answered a promoter acknowledges no writes until it sees the new
    /// primary or the promoter calls the promotion off. Past this, it checks whether that
    /// promotion can still be under way (the replica's promotion lock free, no newer record)
    /// and, if not, ends the promise itself.
    #[serde(with = "humantime_serde")]
    pub seal_timeout: Duration,
    /// Make a fenced node a replica of the primary by itself when its GTID history is a
    /// prefix of the primary's (no errant transactions); a node with errant transactions
    /// stays fenced, with the reason in the log, `GET /topology` and a metric.
    pub auto_rejoin: bool,
    /// Rebuild by itself a fenced node whose errant transactions no router acknowledged (a
    /// primary frozen or killed while commits were under way): its data is set aside on its
    /// volume and it is made again as a replica of the primary (`topology::rebuild` says
    /// when this is refused). Off: such a node stays fenced for an operator.
    pub auto_rebuild: bool,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(500),
            max_replication_lag: Duration::from_secs(5),
            auto_failover: true,
            failover_after: Duration::from_secs(1),
            catch_up_timeout: Duration::from_secs(30),
            user: "monitor".into(),
            password: String::new(),
            password_file: PathBuf::new(),
            replication_user: "repl".into(),
            replication_password: String::new(),
            replication_password_file: PathBuf::new(),
            peers: Vec::new(),
            peer_timeout: Duration::from_secs(1),
            peer_token_file: PathBuf::new(),
            seal_timeout: Duration::from_secs(30),
            auto_rejoin: true,
            auto_rebuild: true,
        }
    }
}
