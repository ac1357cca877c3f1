//! The topology's Prometheus metrics (under the service's `foobar_db_router_` prefix):
//! per node `backend_up`, `backend_read_only`, `backend_replicating`,
//! `backend_replication_lag_seconds` (-1 while unknown), `backend_role` (writer/reader), and
//! `epoch`, `failovers_total`, `fencings_total`, `monitor_check_failures_total`.

use std::sync::atomic::AtomicU64;

use foobar_service::Context;
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

#[derive(Clone, Default)]
pub struct Metrics {
    pub up: Family<NodeLabels, Gauge>,
    pub read_only: Family<NodeLabels, Gauge>,
    pub replicating: Family<NodeLabels, Gauge>,
    pub lag_seconds: Family<NodeLabels, Gauge<f64, AtomicU64>>,
    pub role: Family<RoleLabels, Gauge>,
    pub check_failures: Family<NodeLabels, Counter>,
    pub epoch: Gauge,
    pub failovers: Counter,
    pub fencings: Counter,
    pub failovers_refused: Counter,
    pub failover_blocked: Gauge,
    pub errant: Family<NodeLabels, Gauge>,
}

impl Metrics {
    pub fn register(&self, ctx: &Context) {
        ctx.register(
            "backend_up",
            "1 while the node answers the monitor's checks",
            self.up.clone(),
        );
        ctx.register(
            "backend_read_only",
            "1 while the node is read_only",
            self.read_only.clone(),
        );
        ctx.register(
            "backend_replicating",
            "1 while both replication threads of the node run",
            self.replicating.clone(),
        );
        ctx.register(
            "backend_replication_lag_seconds",
            "Seconds_Behind_Master of the node; -1 unknown or not a replica",
            self.lag_seconds.clone(),
        );
        ctx.register(
            "backend_role",
            "1 for the node's current role: writer or reader",
            self.role.clone(),
        );
        ctx.register(
            "monitor_check_failures",
            "monitor checks of the node that failed",
            self.check_failures.clone(),
        );
        ctx.register(
            "epoch",
            "the primary's epoch (raised by every failover)",
            self.epoch.clone(),
        );
        ctx.register(
            "failovers",
            "promotions this router performed",
            self.failovers.clone(),
        );
        ctx.register(
            "fencings",
            "nodes this router made read-only",
            self.fencings.clone(),
        );
        ctx.register(
            "failovers_refused",
            "Promotions this router did not make: the replica lacked writes a router \
             acknowledged or saw on the primary, or a router did not answer",
            self.failovers_refused.clone(),
        );
        ctx.register(
            "failover_blocked",
            "1 while the primary is down and its replacement is refused (writes fail)",
            self.failover_blocked.clone(),
        );
        ctx.register(
            "backend_errant",
            "1 while a fenced node holds transactions the primary lacks: it is not rejoined \
             by itself and must be rebuilt",
            self.errant.clone(),
        );
    }
}
