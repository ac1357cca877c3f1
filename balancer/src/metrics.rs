//! The balancer's Prometheus metrics (names are prefixed `foobar_balancer_`).

use foobar_service::Context;
use foobar_service::histogram::LatencyHistogram;
use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `default` (`[pool]`) or a site's name.
    pub pool: String,
    pub backend: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub pool: String,
    pub backend: String,
}

impl BackendLabels {
    pub fn new(pool: &str, backend: &str) -> Self {
        Self {
            pool: pool.to_owned(),
            backend: backend.to_owned(),
        }
    }
}

/// Why the balancer answered a request itself, or cut a connection off.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

/// `requests{backend,code}` for one backend, with the counters of the codes it has answered
/// kept at hand: counting a response is then a short scan and an atomic add, not a label
/// string made and hashed under the family's lock.
#[derive(Debug)]
pub struct ResponseCounters {
    family: Family<RequestLabels, Counter>,
    pool: String,
    backend: String,
    seen: std::sync::Mutex<Vec<(u16, Counter)>>,
}

impl ResponseCounters {
    pub fn count(&self, status: StatusCode) {
        let code = status.as_u16();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, counter)) = seen.iter().find(|(c, _)| *c == code) {
            counter.inc();
            return;
        }
        let counter = self
            .family
            .get_or_create(&RequestLabels {
                pool: self.pool.clone(),
                backend: self.backend.clone(),
                code,
            })
            .clone();
        counter.inc();
        seen.push((code, counter));
    }
}

#[derive(Clone, Default)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub retries: Counter,
    pub latency: LatencyHistogram,
    pub backend_up: Family<BackendLabels, Gauge>,
    pub backend_changes: Family<BackendLabels, Counter>,
    pub in_flight: Family<BackendLabels, Gauge>,
    pub rejected: Family<RejectLabels, Counter>,
    pub client_connections: Gauge,
    pub connections_waited: Counter,
    pub reloads: Family<ReloadLabels, Counter>,
}

impl Metrics {
    pub fn register(ctx: &Context) -> Self {
        let m = Self::default();
        ctx.register(
            "requests",
            "Responses from backends, by pool (default or a site), backend and status code",
            m.requests.clone(),
        );
        ctx.register("retries", "Requests sent to another backend after a failure that sent nothing (or was safe to repeat)", m.retries.clone());
        ctx.register(
            "request_duration_seconds",
            "From a request's head read to its response's head ready",
            m.latency.clone(),
        );
        ctx.register(
            "backend_up",
            "1 while a backend gets traffic",
            m.backend_up.clone(),
        );
        ctx.register(
            "backend_changes",
            "Times a backend went up or down",
            m.backend_changes.clone(),
        );
        ctx.register(
            "in_flight",
            "Requests assigned to the backend and not yet answered in full",
            m.in_flight.clone(),
        );
        ctx.register(
            "rejected",
            "Requests answered by the balancer itself or connections cut off, by limit: \
             rate_limit (429), body_too_large (413), header_too_large (431), header_timeout",
            m.rejected.clone(),
        );
        ctx.register(
            "client_connections",
            "Client connections open now",
            m.client_connections.clone(),
        );
        ctx.register(
            "connections_waited",
            "Connections left in the accept queue for a while because limits.max_connections were open",
            m.connections_waited.clone(),
        );
        ctx.register(
            "config_reloads",
            "SIGHUP reloads, by result: applied or refused (the running config stayed)",
            m.reloads.clone(),
        );
        m
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }

    pub fn reloaded(&self, result: &'static str) {
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// The in-flight gauge of a backend, shared by the backend and `/metrics`.
    pub fn in_flight_of(&self, pool: &str, backend: &str) -> Gauge {
        self.in_flight
            .get_or_create(&BackendLabels::new(pool, backend))
            .clone()
    }

    /// A backend left its pool: its gauges go, its counters stay.
    pub fn forget(&self, pool: &str, backend: &str) {
        let labels = BackendLabels::new(pool, backend);
        self.in_flight.remove(&labels);
        self.backend_up.remove(&labels);
    }

    /// The response counters of one backend.
    pub fn responses_of(&self, pool: &str, backend: &str) -> ResponseCounters {
        ResponseCounters {
            family: self.requests.clone(),
            pool: pool.to_owned(),
            backend: backend.to_owned(),
            seen: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn set_up(&self, pool: &str, backend: &str, up: bool) {
        let labels = BackendLabels::new(pool, backend);
        self.backend_up.get_or_create(&labels).set(i64::from(up));
        self.backend_changes.get_or_create(&labels).inc();
    }
}
