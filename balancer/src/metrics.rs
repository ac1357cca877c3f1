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
    pub backend: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Clone, Default)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub retries: Counter,
    pub latency: LatencyHistogram,
    pub backend_up: Family<BackendLabels, Gauge>,
    pub backend_changes: Family<BackendLabels, Counter>,
}

impl Metrics {
    pub fn register(ctx: &Context) -> Self {
        let m = Self::default();
        ctx.register(
            "requests",
            "Responses from backends, by backend and status code",
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
        m
    }

    pub fn count(&self, backend: &str, status: StatusCode) {
        self.requests
            .get_or_create(&RequestLabels {
                backend: backend.to_owned(),
                code: status.as_u16(),
            })
            .inc();
    }

    pub fn set_up(&self, backend: &str, up: bool) {
        let labels = BackendLabels {
            backend: backend.to_owned(),
        };
        self.backend_up.get_or_create(&labels).set(i64::from(up));
        self.backend_changes.get_or_create(&labels).inc();
    }
}
