//! The topology's Prometheus metrics (under the service's `foobar_db_router_` prefix):
//! per node `backend_up`, `backend_read_only`, `backend_replicating`,
//! `backend_replication_lag_seconds` (-1 while unknown), `backend_role` (writer/reader), and
//! `epoch`, `failovers_total`, `fencings_total`, `monitor_check_failures_total`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub node: String,
    pub role: &'static str,
}

foobar_service::metrics! {
    #[derive(Clone, Default)]
    pub struct Metrics {
        /// 1 while the node answers the monitor's checks
        pub up: Family<NodeLabels, Gauge> = "backend_up",
        /// 1 while the node is read_only
        pub read_only: Family<NodeLabels, Gauge> = "backend_read_only",
        /// 1 while both replication threads of the node run
        pub replicating: Family<NodeLabels, Gauge> = "backend_replicating",
        /// Seconds_Behind_Master of the node; -1 unknown or not a replica
        pub lag_seconds: Family<NodeLabels, Gauge<f64, AtomicU64>> =
            "backend_replication_lag_seconds",
        /// 1 for the node's current role: writer or reader
        pub role: Family<RoleLabels, Gauge> = "backend_role",
        /// monitor checks of the node that failed
        pub check_failures: Family<NodeLabels, Counter> = "monitor_check_failures",
        /// the primary's epoch (raised by every failover)
        pub epoch: Gauge = "epoch",
        /// promotions this router performed
        pub failovers: Counter = "failovers",
        /// nodes this router made read-only
        pub fencings: Counter = "fencings",
        /// Promotions this router did not make: the replica lacked writes a router
        /// acknowledged or saw on the primary, or a router did not answer
        pub failovers_refused: Counter = "failovers_refused",
        /// 1 while the primary is down and its replacement is refused (writes fail)
        pub failover_blocked: Gauge = "failover_blocked",
        /// 1 while a fenced node holds transactions the primary lacks: it is not rejoined
        /// by itself and must be rebuilt
        pub errant: Family<NodeLabels, Gauge> = "backend_errant",
    }
}
