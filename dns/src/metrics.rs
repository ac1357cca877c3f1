//! The DNS server's Prometheus metrics (names are prefixed `foobar_dns_`).

use std::sync::{Arc, OnceLock};

use foobar_service::histogram::LatencyHistogram;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

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

foobar_service::metrics! {
    /// Every metric the DNS server exports, registered once at start.
    #[derive(Clone)]
    pub struct Metrics {
        /// Queries answered, by transport, type and response code
        pub queries: Family<QueryLabels, Counter> = "queries",
        /// The counter of each (transport, type, rcode), looked up in `queries` on first use
        /// only: the hot path then costs an index and an atomic add.
        query_counters: Arc<[OnceLock<Counter>]>,
        /// Time from a UDP query read to its answer built
        pub latency_udp: LatencyHistogram = "udp_answer_duration_seconds",
        /// Time from a TCP query read to its answer built
        pub latency_tcp: LatencyHistogram = "tcp_answer_duration_seconds",
        /// Queries answered from ready-made wire answers
        pub cache_hits: Counter = "answer_cache_hits",
        /// Cacheable queries that went through the catalog
        pub cache_misses: Counter = "answer_cache_misses",
        /// Packets given no answer (too short, or not a query)
        pub dropped: Counter = "dropped_packets",
        /// 1 while a health-checked address is answered as up
        pub target_up: Family<TargetLabels, Gauge> = "health_target_up",
        /// Times a health-checked address went up or down
        pub target_changes: Family<TargetLabels, Counter> = "health_target_changes",
        /// Zone (re)loads, by result
        pub zone_loads: Family<ResultLabels, Counter> = "zone_loads",
    }
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
