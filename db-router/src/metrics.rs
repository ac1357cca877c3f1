//! The router's Prometheus metrics (names are prefixed `foobar_db_router_`), on the shared
//! registry that the admin listener's `/metrics` serves.

use foobar_service::Context;
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

#[derive(Clone, Default)]
pub struct Metrics {
    pub queries: Family<QueryLabels, Counter>,
    pub errors: Family<ReasonLabels, Counter>,
    pub reader_fallbacks: Family<ReasonLabels, Counter>,
    pub gtid_waits: Family<ReasonLabels, Counter>,
    pub sessions: Gauge,
    pub sessions_total: Counter,
    pub logins: Family<TransportLabels, Counter>,
    pub backend_connections: Counter,
    pub load_data_local_bytes: Counter,
}

impl Metrics {
    pub fn register(ctx: &Context) -> Self {
        let m = Self::default();
        ctx.register(
            "queries",
            "Client commands sent to a backend, by where they ran and their kind",
            m.queries.clone(),
        );
        ctx.register(
            "errors",
            "Errors the router gave clients itself, or sessions it ended, by reason",
            m.errors.clone(),
        );
        ctx.register(
            "reader_fallbacks",
            "Reads sent to the writer instead of the reader, by reason",
            m.reader_fallbacks.clone(),
        );
        ctx.register(
            "gtid_waits",
            "Read-your-writes waits on the reader (MASTER_GTID_WAIT), by result",
            m.gtid_waits.clone(),
        );
        ctx.register("sessions", "Client sessions open now", m.sessions.clone());
        ctx.register(
            "sessions_started",
            "Client connections accepted",
            m.sessions_total.clone(),
        );
        ctx.register(
            "logins",
            "Client sessions logged in, by transport (tls, plain; +zlib when compressed)",
            m.logins.clone(),
        );
        ctx.register(
            "backend_connections_opened",
            "Connections the router opened to backends",
            m.backend_connections.clone(),
        );
        ctx.register(
            "load_data_local_bytes",
            "Bytes of LOAD DATA LOCAL files relayed from clients to the primary",
            m.load_data_local_bytes.clone(),
        );
        m
    }

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
