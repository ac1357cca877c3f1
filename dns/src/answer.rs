//! Answering one DNS message: the answer cache first, hickory's catalog for the rest.
//!
//! [`Served`] is everything one generation of answers comes from: the catalog built from the
//! zones (with health-checked record sets filtered) and the cache of wire answers made from
//! it. A reload or a health change builds a new `Served` and swaps it in whole, so a query
//! sees one consistent generation and the cache never outlives the data it was made from.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};

use hickory_net::NetError;
use hickory_net::runtime::{TokioRuntimeProvider, TokioTime};
use hickory_net::xfer::Protocol;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::HINFO;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponse, ZoneType};

use crate::metrics::Metrics;
use crate::wire::{self, Inspection, MAX_KEY_LEN};
use crate::zones::Zone;

/// The healthy addresses of each health-checked name, and the TTL its answers carry.
#[derive(Debug, Clone, Default)]
pub struct HealthView {
    pub names: HashMap<LowerName, (HashSet<IpAddr>, u32)>,
}

/// One generation of answers.
pub struct Served {
    catalog: Catalog,
    /// Every owner name in the zones, for RFC 8482 answers to ANY.
    owners: HashMap<LowerName, u32>,
    /// The A and AAAA records of each name (health-filtered), for additional sections.
    addresses: HashMap<LowerName, Vec<Record>>,
    cache: AnswerCache,
}

impl Served {
    /// Builds the catalog from `zones`, with each health-checked A/AAAA set cut down to its
    /// healthy addresses (all of them when none is healthy: fail open) and given its short TTL.
    pub fn build(
        zones: &[Zone],
        health: &HealthView,
        cache_entries: usize,
    ) -> Result<Self, String> {
        let mut catalog = Catalog::new();
        let mut owners = HashMap::new();
        let mut addresses: HashMap<LowerName, Vec<Record>> = HashMap::new();
        for zone in zones {
            let mut records = zone.records.clone();
            for (name, (healthy, ttl)) in &health.names {
                for rtype in [RecordType::A, RecordType::AAAA] {
                    let key = RrKey::new(name.clone(), rtype);
                    if let Some(set) = records.get(&key) {
                        records.insert(key, health_filtered(set, healthy, *ttl));
                    }
                }
            }
            for (key, set) in &records {
                owners.entry(key.name.clone()).or_insert(set.ttl());
                if matches!(key.record_type, RecordType::A | RecordType::AAAA) {
                    addresses
                        .entry(key.name.clone())
                        .or_default()
                        .extend(set.records_without_rrsigs().cloned());
                }
            }
            let handler = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
                zone.origin.clone(),
                records,
                ZoneType::Primary,
                AxfrPolicy::Deny,
            )?;
            catalog.upsert(zone.origin.clone().into(), vec![Arc::new(handler)]);
        }
        Ok(Self {
            catalog,
            owners,
            addresses,
            cache: AnswerCache::new(cache_entries),
        })
    }
}

fn health_filtered(set: &RecordSet, healthy: &HashSet<IpAddr>, ttl: u32) -> RecordSet {
    let address = |r: &Record| match &r.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    };
    let any_healthy = set
        .records_without_rrsigs()
        .any(|r| address(r).is_some_and(|a| healthy.contains(&a)));
    let mut filtered = RecordSet::new(set.name().clone(), set.record_type(), 0);
    for record in set.records_without_rrsigs() {
        if !any_healthy || address(record).is_some_and(|a| healthy.contains(&a)) {
            let mut record = record.clone();
            record.ttl = ttl;
            filtered.insert(record, 0);
        }
    }
    filtered
}

/// A cache key ([`wire::inspect`]'s) and the wire answer stored under it.
type WireAnswers = HashMap<Box<[u8]>, Box<[u8]>>;

/// Ready-made answers keyed by [`wire::inspect`]'s key. Bounded: full means emptied.
struct AnswerCache {
    answers: RwLock<WireAnswers>,
    capacity: usize,
}

impl AnswerCache {
    fn new(capacity: usize) -> Self {
        Self {
            answers: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    /// Copies the answer for `key` into `out`; false when there is none.
    fn copy_into(&self, key: &[u8], out: &mut Vec<u8>) -> bool {
        let answers = self.answers.read().unwrap_or_else(|e| e.into_inner());
        let Some(answer) = answers.get(key) else {
            return false;
        };
        out.clear();
        out.extend_from_slice(answer);
        true
    }

    fn insert(&self, key: &[u8], answer: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        let mut answers = self.answers.write().unwrap_or_else(|e| e.into_inner());
        if answers.len() >= self.capacity {
            answers.clear();
        }
        answers.insert(key.into(), answer.into());
    }
}

/// Answers `packet` from `served` into `out`; false when the packet deserves no answer.
/// `packet` may be changed: an EDNS buffer size above `max_udp_payload` is capped in place.
pub async fn answer(
    served: &Served,
    packet: &mut [u8],
    peer: SocketAddr,
    tcp: bool,
    max_udp_payload: u16,
    metrics: &Metrics,
    out: &mut Vec<u8>,
) -> bool {
    let mut key = [0u8; MAX_KEY_LEN];
    match wire::inspect(packet, tcp, &mut key) {
        Inspection::Drop => {
            metrics.dropped.inc();
            false
        }
        Inspection::Malformed => {
            out.clear();
            out.extend_from_slice(&wire::format_error(packet));
            metrics.count(tcp, None, out);
            true
        }
        Inspection::Cacheable(query) => {
            if let Some(at) = query
                .opt_class_at
                .filter(|_| !tcp && query.udp_payload > max_udp_payload)
            {
                packet[at..at + 2].copy_from_slice(&max_udp_payload.to_be_bytes());
                key[query.key_len - 3..query.key_len - 1]
                    .copy_from_slice(&max_udp_payload.to_be_bytes());
            }
            let key = &key[..query.key_len];
            if served.cache.copy_into(key, out) {
                wire::personalise(out, packet, query.question_end);
                metrics.cache_hits.inc();
            } else {
                general(served, packet, peer, tcp, Some(query.qtype), out).await;
                if matches!(wire::rcode(out), 0 | 3 | 5) {
                    served.cache.insert(key, out);
                }
                metrics.cache_misses.inc();
            }
            metrics.count(tcp, Some(query.qtype), out);
            true
        }
        Inspection::General(qtype) => {
            general(served, packet, peer, tcp, qtype, out).await;
            metrics.count(tcp, qtype, out);
            true
        }
    }
}

/// The general path: hickory parses the message and its catalog answers it.
async fn general(
    served: &Served,
    packet: &[u8],
    peer: SocketAddr,
    tcp: bool,
    qtype: Option<u16>,
    out: &mut Vec<u8>,
) {
    let protocol = if tcp { Protocol::Tcp } else { Protocol::Udp };
    let request = match Request::from_bytes(packet.to_vec(), peer, protocol) {
        Ok(request) => request,
        Err(_) => {
            out.clear();
            out.extend_from_slice(&wire::format_error(packet));
            return;
        }
    };
    let max_size = match (&request.edns, tcp) {
        (_, true) => u16::MAX,
        (Some(edns), false) => edns.max_payload().max(512),
        (None, false) => 512,
    };
    let dnssec_ok = request
        .edns
        .as_ref()
        .is_some_and(|edns| edns.flags().dnssec_ok);
    let whole = if let Some(refusal) = refused_transfer(&request) {
        refusal
    } else if let Some(answer) = (qtype == Some(u16::from(RecordType::ANY)))
        .then(|| minimal_any(served, &request))
        .flatten()
    {
        answer
    } else {
        let capture = Capture {
            encoded: Arc::new(Mutex::new(Vec::new())),
        };
        served
            .catalog
            .handle_request::<_, TokioTime>(&request, capture.clone())
            .await;
        let whole = std::mem::take(&mut *capture.encoded.lock().unwrap_or_else(|e| e.into_inner()));
        if matches!(
            qtype.map(RecordType::from),
            Some(RecordType::NS | RecordType::MX)
        ) {
            with_every_address(served, whole)
        } else {
            whole
        }
    };
    *out = if whole.is_empty() {
        server_failure(packet)
    } else {
        finish(whole, dnssec_ok, max_size).unwrap_or_else(|| server_failure(packet))
    };
}

/// RFC 1034 4.3.2 step 6: the additional section holds the addresses of every name server
/// and mail exchanger the answer names, where our zones have them (the NS records' glue).
/// hickory adds those of the first record only, so `dig foobar.com NS` lacked ns2's address.
fn with_every_address(served: &Served, whole: Vec<u8>) -> Vec<u8> {
    let Ok(mut message) = Message::from_vec(&whole) else {
        return whole;
    };
    let targets: Vec<LowerName> = message
        .answers
        .iter()
        .chain(&message.authorities)
        .filter_map(|record| match &record.data {
            RData::NS(ns) => Some(LowerName::from(&ns.0)),
            RData::MX(mx) => Some(LowerName::from(&mx.exchange)),
            _ => None,
        })
        .collect();
    let mut added = false;
    for target in &targets {
        for record in served.addresses.get(target).into_iter().flatten() {
            if !message.additionals.contains(record) {
                message.additionals.push(record.clone());
                added = true;
            }
        }
    }
    match added.then(|| message.to_vec()) {
        Some(Ok(bytes)) => bytes,
        _ => whole,
    }
}

/// The answer as sent, from the whole answer encoded without a size limit: the query's DO bit
/// copied into its OPT record (RFC 3225 3), and an answer longer than `max_size` (the
/// client's UDP buffer) cut to the header, the question and the OPT record, with TC set and
/// nothing else (RFC 2181 9: a resolver retries over TCP and never uses part of a set).
/// hickory's own truncation stops at the record that does not fit but leaves the bytes of that
/// record behind the counted ones, which clients report as trailing garbage. `None` when the
/// answer cannot be read back (never expected: hickory encoded it).
fn finish(whole: Vec<u8>, dnssec_ok: bool, max_size: u16) -> Option<Vec<u8>> {
    if !dnssec_ok && whole.len() <= usize::from(max_size) {
        return Some(whole);
    }
    let mut message = Message::from_vec(&whole).ok()?;
    if let Some(edns) = message.edns.as_mut() {
        edns.set_dnssec_ok(dnssec_ok);
    }
    let mut bytes = message.to_vec().ok()?;
    if bytes.len() > usize::from(max_size) {
        bytes = message.truncate().to_vec().ok()?;
    }
    Some(bytes)
}

/// Zone transfers: foobar-dns serves no secondaries (every server of the stack reads the same
/// zone files), so AXFR and IXFR are both REFUSED, over UDP and TCP alike, before the catalog
/// sees them (hickory refuses AXFR under `AxfrPolicy::Deny` but answers IXFR as an ordinary
/// query with no data).
fn refused_transfer(request: &Request) -> Option<Vec<u8>> {
    let query = request.queries.queries().first()?;
    if !matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) {
        return None;
    }
    let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.op_code = request.metadata.op_code;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.response_code = ResponseCode::Refused;
    response.add_query(query.original().clone());
    if let Some(edns) = &request.edns {
        let mut ours = hickory_proto::op::Edns::new();
        ours.set_max_payload(edns.max_payload().max(512));
        response.set_edns(ours);
    }
    response.to_vec().ok()
}

/// RFC 8482: an ANY query for a name that exists gets one synthesized HINFO record, not
/// every record set the name has.
fn minimal_any(served: &Served, request: &Request) -> Option<Vec<u8>> {
    let query = request.queries.queries().first()?;
    let ttl = *served.owners.get(query.name())?;
    let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.response_code = ResponseCode::NoError;
    response.add_query(query.original().clone());
    let hinfo = HINFO::new("RFC8482".to_owned(), String::new());
    response.add_answer(Record::from_rdata(
        Name::from(query.name().clone()),
        ttl,
        RData::HINFO(hinfo),
    ));
    if let Some(edns) = &request.edns {
        let mut ours = hickory_proto::op::Edns::new();
        ours.set_max_payload(edns.max_payload().max(512));
        response.set_edns(ours);
    }
    response.to_vec().ok()
}

fn server_failure(packet: &[u8]) -> Vec<u8> {
    let mut answer = wire::format_error(packet);
    answer[3] = 2; // SERVFAIL
    answer.to_vec()
}

/// A response handler that keeps the whole encoded answer instead of sending it, so the
/// caller can fit it to the transport ([`finish`]) and cache it.
#[derive(Clone)]
struct Capture {
    encoded: Arc<Mutex<Vec<u8>>>,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        let info = response.destructive_emit(&mut encoder)?;
        *self.encoded.lock().unwrap_or_else(|e| e.into_inner()) = bytes;
        Ok(info)
    }
}

/// Record sets of a zone by owner name, for the health checker to find addresses in.
pub fn addresses_of(zones: &[Zone], name: &LowerName) -> Vec<IpAddr> {
    let mut found = Vec::new();
    for zone in zones {
        for rtype in [RecordType::A, RecordType::AAAA] {
            let records: &BTreeMap<RrKey, RecordSet> = &zone.records;
            if let Some(set) = records.get(&RrKey::new(name.clone(), rtype)) {
                for record in set.records_without_rrsigs() {
                    match &record.data {
                        RData::A(a) => found.push(IpAddr::V4(a.0)),
                        RData::AAAA(a) => found.push(IpAddr::V6(a.0)),
                        _ => {}
                    }
                }
            }
        }
    }
    found
}
