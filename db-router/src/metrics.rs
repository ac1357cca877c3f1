//! The router's Prometheus metrics (names are prefixed `foobar_db_router_`), on the shared
//! registry that the admin listener's `/metrics` serves.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// `writer` or `reader`: where the statement ran.
    pub route: &'static str,
    /// `read`, `write`, `session`, `last_used`, `prepare`, `fetch` (a cursor's rows), `other`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    /// `tls` or `plain`, with `+zlib` for the compressed protocol: how the client reached the
    /// router.
    pub transport: &'static str,
}

foobar_service::metrics! {
    #[derive(Clone, Default)]
    pub struct Metrics {
        /// Client commands sent to a backend, by where they ran and their kind
        pub queries: Family<QueryLabels, Counter> = "queries",
        /// Errors the router gave clients itself, or sessions it ended, by reason
        pub errors: Family<ReasonLabels, Counter> = "errors",
        /// Reads sent to the writer instead of the reader, by reason
        pub reader_fallbacks: Family<ReasonLabels, Counter> = "reader_fallbacks",
        /// Read-your-writes waits on the reader (MASTER_GTID_WAIT), by result
        pub gtid_waits: Family<ReasonLabels, Counter> = "gtid_waits",
        /// Client sessions open now
        pub sessions: Gauge = "sessions",
        /// Client connections accepted
        pub sessions_total: Counter = "sessions_started",
        /// Client sessions logged in, by transport (tls, plain; +zlib when compressed)
        pub logins: Family<TransportLabels, Counter> = "logins",
        /// Connections the router opened to backends
        pub backend_connections: Counter = "backend_connections_opened",
        /// Bytes of LOAD DATA LOCAL files relayed from clients to the primary
        pub load_data_local_bytes: Counter = "load_data_local_bytes",
    }
}

impl Metrics {
    pub fn query(&self, route: &'static str, kind: &'static str) {
        self.queries
            .get_or_create(&QueryLabels { route, kind })
            .inc();
    }

    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn login(&self, transport: &'static str) {
        self.logins
            .get_or_create(&TransportLabels { transport })
            .inc();
    }

    pub fn fallback(&self, reason: &'static str) {
        self.reader_fallbacks
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn gtid_wait(&self, reason: &'static str) {
        self.gtid_waits
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}
