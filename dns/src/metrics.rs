//! The DNS server's Prometheus metrics (names are prefixed `foobar_dns_`).

use std::sync::{Arc, OnceLock};

use foobar_service::histogram::LatencyHistogram;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use foobar_service::Context;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub protocol: &'static str,
    pub qtype: &'static str,
    pub rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub name: String,
    pub address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// Every metric the DNS server exports, registered once at start.
#[derive(Clone)]
pub struct Metrics {
    pub queries: Family<QueryLabels, Counter>,
    /// The counter of each (transport, type, rcode), looked up in `queries` on first use only:
    /// the hot path then costs an index and an atomic add.
    query_counters: Arc<[OnceLock<Counter>]>,
    pub latency_udp: LatencyHistogram,
    pub latency_tcp: LatencyHistogram,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub dropped: Counter,
    pub target_up: Family<TargetLabels, Gauge>,
    pub target_changes: Family<TargetLabels, Counter>,
    pub zone_loads: Family<ResultLabels, Counter>,
}

const RCODE_LABELS: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "OTHER",
];

impl Default for Metrics {
    fn default() -> Self {
        let slots = 2 * TYPE_LABELS.len() * RCODE_LABELS.len();
        Self {
            queries: Family::default(),
            query_counters: (0..slots).map(|_| OnceLock::new()).collect(),
            latency_udp: LatencyHistogram::default(),
            latency_tcp: LatencyHistogram::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            dropped: Counter::default(),
            target_up: Family::default(),
            target_changes: Family::default(),
            zone_loads: Family::default(),
        }
    }
}

impl Metrics {
    pub fn register(ctx: &Context) -> Self {
        let m = Self::default();
        ctx.register(
            "queries",
            "Queries answered, by transport, type and response code",
            m.queries.clone(),
        );
        ctx.register(
            "udp_answer_duration_seconds",
            "Time from a UDP query read to its answer built",
            m.latency_udp.clone(),
        );
        ctx.register(
            "tcp_answer_duration_seconds",
            "Time from a TCP query read to its answer built",
            m.latency_tcp.clone(),
        );
        ctx.register(
            "answer_cache_hits",
            "Queries answered from ready-made wire answers",
            m.cache_hits.clone(),
        );
        ctx.register(
            "answer_cache_misses",
            "Cacheable queries that went through the catalog",
            m.cache_misses.clone(),
        );
        ctx.register(
            "dropped_packets",
            "Packets given no answer (too short, or not a query)",
            m.dropped.clone(),
        );
        ctx.register(
            "health_target_up",
            "1 while a health-checked address is answered as up",
            m.target_up.clone(),
        );
        ctx.register(
            "health_target_changes",
            "Times a health-checked address went up or down",
            m.target_changes.clone(),
        );
        ctx.register(
            "zone_loads",
            "Zone (re)loads, by result",
            m.zone_loads.clone(),
        );
        m
    }

    /// Counts one answer by its transport, the question's type and the answer's RCODE.
    pub fn count(&self, tcp: bool, qtype: Option<u16>, answer: &[u8]) {
        let rcode = usize::from(crate::wire::rcode(answer)).min(RCODE_LABELS.len() - 1);
        let qtype = type_index(qtype);
        let slot = (usize::from(tcp) * TYPE_LABELS.len() + qtype) * RCODE_LABELS.len() + rcode;
        self.query_counters[slot]
            .get_or_init(|| {
                let labels = QueryLabels {
                    protocol: if tcp { "tcp" } else { "udp" },
                    qtype: TYPE_LABELS[qtype],
                    rcode: RCODE_LABELS[rcode],
                };
                self.queries.get_or_create(&labels).clone()
            })
            .inc();
    }
}

/// A fixed set of label values, so a flood of odd query types cannot grow the metrics.
/// `-` is a message with no single question to read.
const TYPE_LABELS: [&str; 18] = [
    "-", "A", "NS", "CNAME", "SOA", "PTR", "MX", "TXT", "AAAA", "SRV", "DS", "DNSKEY", "SVCB",
    "HTTPS", "AXFR", "ANY", "CAA", "other",
];

fn type_index(qtype: Option<u16>) -> usize {
    match qtype {
        None => 0,
        Some(1) => 1,
        Some(2) => 2,
        Some(5) => 3,
        Some(6) => 4,
        Some(12) => 5,
        Some(15) => 6,
        Some(16) => 7,
        Some(28) => 8,
        Some(33) => 9,
        Some(43) => 10,
        Some(48) => 11,
        Some(64) => 12,
        Some(65) => 13,
        Some(252) => 14,
        Some(255) => 15,
        Some(257) => 16,
        Some(_) => 17,
    }
}
