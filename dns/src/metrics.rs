//! The DNS server's Prometheus metrics (names are prefixed `foobar_dns_`).

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
#[derive(Clone, Default)]
pub struct Metrics {
    pub queries: Family<QueryLabels, Counter>,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub dropped: Counter,
    pub target_up: Family<TargetLabels, Gauge>,
    pub target_changes: Family<TargetLabels, Counter>,
    pub zone_loads: Family<ResultLabels, Counter>,
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
        let rcode = match crate::wire::rcode(answer) {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            _ => "OTHER",
        };
        let qtype = qtype.map_or("-", type_label);
        let protocol = if tcp { "tcp" } else { "udp" };
        self.queries
            .get_or_create(&QueryLabels {
                protocol,
                qtype,
                rcode,
            })
            .inc();
    }
}

/// A fixed set of label values, so a flood of odd query types cannot grow the metrics.
fn type_label(qtype: u16) -> &'static str {
    match qtype {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        43 => "DS",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        252 => "AXFR",
        255 => "ANY",
        257 => "CAA",
        _ => "other",
    }
}
