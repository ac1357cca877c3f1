//! The balancer's Prometheus metrics (names are prefixed `foobar_balancer_`).

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

foobar_service::metrics! {
    #[derive(Clone, Default)]
    pub struct Metrics {
        /// Responses from backends, by pool (default or a site), backend and status code
        pub requests: Family<RequestLabels, Counter> = "requests",
        /// Requests sent to another backend after a failure that sent nothing (or was safe
        /// to repeat)
        pub retries: Counter = "retries",
        /// From a request's head read to its response's head ready
        pub latency: LatencyHistogram = "request_duration_seconds",
        /// 1 while a backend gets traffic
        pub backend_up: Family<BackendLabels, Gauge> = "backend_up",
        /// Times a backend went up or down
        pub backend_changes: Family<BackendLabels, Counter> = "backend_changes",
        /// Requests assigned to the backend and not yet answered in full
        pub in_flight: Family<BackendLabels, Gauge> = "in_flight",
        /// Requests answered by the balancer itself or connections cut off, by limit:
        /// rate_limit (429), body_too_large (413), header_too_large (431), header_timeout
        pub rejected: Family<RejectLabels, Counter> = "rejected",
        /// Client connections open now
        pub client_connections: Gauge = "client_connections",
        /// Connections left in the accept queue for a while because
        /// limits.max_connections were open
        pub connections_waited: Counter = "connections_waited",
        /// SIGHUP reloads, by result: applied or refused (the running config stayed)
        pub reloads: Family<ReloadLabels, Counter> = "config_reloads",
    }
}

impl Metrics {
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
