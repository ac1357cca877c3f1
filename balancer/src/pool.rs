//! The backends and how one is chosen for a request.
//!
//! A backend is up or down (active checks and failed connections decide, see `health.rs`).
//! Requests go to the up primaries (non-backup backends); only when none is up do the up
//! backups get them (active-passive). Among the candidates, the pool's algorithm chooses:
//! smooth weighted round robin (nginx's: spreads a weight-3 backend's turns evenly instead of
//! three in a row) or least connections relative to weight.
//!
//! A pool is immutable once built; a reload or a new DNS answer builds the next one with
//! [`Pool::rebuild`], which keeps every backend that stays (same name and address: its state,
//! counters and idle connections) and says which ones joined and which left. A backend that
//! left gets no new requests; requests in flight hold an `Arc` to it and finish.
//!
//! A backend keeps its idle keep-alive connections: [`checkout`] takes one (or connects), and
//! a response body ([`Tracked`]) gives it back when it ends cleanly.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::config::Algorithm;
use crate::metrics::{Metrics, ResponseCounters};
use crate::upstream::{Connection, Incoming};

/// What a backend is, as the config (and DNS) describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// The pool it belongs to: `default` (`[pool]`) or a site's name.
    pub pool: String,
    /// `web-a:8080` for an address in the config, `web:8080@10.0.0.5` for one found by DNS.
    pub name: String,
    /// The config entry it comes from (`web:8080`): draining it drains all its addresses.
    pub group: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub backup: bool,
}

/// One backend server.
#[derive(Debug)]
pub struct Backend {
    /// Its pool's name: which `[health]` checks it, and its `pool` label in metrics.
    pub pool: String,
    /// For logs, metrics, the status page and the drain action.
    pub name: String,
    pub group: String,
    pub addr: SocketAddr,
    weight: AtomicU32,
    backup: AtomicBool,
    up: AtomicBool,
    /// Put aside by an operator: no new requests, in-flight ones finish.
    draining: AtomicBool,
    /// Requests assigned and not yet answered in full (also exported as a metric).
    pub in_flight: Gauge,
    /// Responses received from it, and exchanges that failed or answered 5xx.
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// Requests per second over the last second, and the count it was measured from.
    pub rate: AtomicU64,
    pub rate_base: AtomicU64,
    /// When the last active check ran, and what it found.
    pub last_check: Mutex<Option<(SystemTime, String)>>,
    /// Failures in a row, from checks or traffic; reset by any success.
    failures: AtomicU32,
    successes: AtomicU32,
    /// Its responses by status code, for `/metrics`.
    pub responses: ResponseCounters,
    /// Kept-alive connections to it, ready for the next request.
    pub(crate) idle: Mutex<Vec<Connection>>,
    /// Cancelled when it leaves the pool: its health check stops.
    pub retired: CancellationToken,
}

impl Backend {
    /// A backend that starts `up` (those present at start) or down (those that join later
    /// and must pass `rise` checks first).
    pub fn new(spec: BackendSpec, up: bool, metrics: &Metrics) -> Self {
        Self {
            in_flight: metrics.in_flight_of(&spec.pool, &spec.name),
            responses: metrics.responses_of(&spec.pool, &spec.name),
            pool: spec.pool,
            name: spec.name,
            group: spec.group,
            addr: spec.addr,
            weight: AtomicU32::new(spec.weight),
            backup: AtomicBool::new(spec.backup),
            up: AtomicBool::new(up),
            draining: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rate: AtomicU64::new(0),
            rate_base: AtomicU64::new(0),
            last_check: Mutex::new(None),
            failures: AtomicU32::new(0),
            successes: AtomicU32::new(0),
            idle: Mutex::new(Vec::new()),
            retired: CancellationToken::new(),
        }
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn is_backup(&self) -> bool {
        self.backup.load(Ordering::Relaxed)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Drain (true) or return to service (false).
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// What the status page says of it.
    pub fn state(&self) -> &'static str {
        match (self.is_up(), self.is_draining()) {
            (_, true) => "DRAIN",
            (true, false) => "UP",
            (false, false) => "DOWN",
        }
    }

    /// Records a good check or exchange; `rise` in a row bring a down backend up. Returns
    /// true when this changed the backend's state.
    pub fn record_success(&self, rise: u32) -> bool {
        self.failures.store(0, Ordering::Relaxed);
        let successes = self
            .successes
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        successes >= rise && !self.up.swap(true, Ordering::Relaxed)
    }

    /// Records a failed check or connection; `fall` in a row take an up backend down.
    /// Returns true when this changed the backend's state.
    pub fn record_failure(&self, fall: u32) -> bool {
        self.successes.store(0, Ordering::Relaxed);
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        failures >= fall && self.up.swap(false, Ordering::Relaxed)
    }
}

/// The backends of one pool (`[pool]` or a site's), and the algorithm's memory.
#[derive(Debug)]
pub struct Pool {
    /// `default` for `[pool]`, else the site's name.
    pub name: String,
    pub backends: Vec<Arc<Backend>>,
    algorithm: Algorithm,
    /// Smooth weighted round robin's current weights, one per backend; also the lock that
    /// makes choosing and counting a request one step.
    current: Mutex<Vec<i64>>,
    /// Where least connections starts looking, so ties rotate.
    next_start: AtomicUsize,
}

/// What [`Pool::rebuild`] changed.
pub struct Rebuilt {
    pub pool: Pool,
    /// New backends: they need a health check.
    pub joined: Vec<Arc<Backend>>,
    /// Backends no longer in the pool: their health checks stop; requests in flight finish.
    pub left: Vec<Arc<Backend>>,
}

impl Pool {
    pub fn new(name: &str, backends: Vec<Arc<Backend>>, algorithm: Algorithm) -> Self {
        let current = Mutex::new(vec![0; backends.len()]);
        Self {
            name: name.to_owned(),
            backends,
            algorithm,
            current,
            next_start: AtomicUsize::new(0),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The pool that `wanted` describes. A backend of `self` with the same name and address
    /// is kept, with its state, counters and connections, and takes the new weight and role;
    /// a new one is made by `make` (so the caller decides whether it starts up).
    pub fn rebuild(
        &self,
        wanted: Vec<BackendSpec>,
        algorithm: Algorithm,
        mut make: impl FnMut(BackendSpec) -> Backend,
    ) -> Rebuilt {
        let mut joined = Vec::new();
        let mut backends = Vec::with_capacity(wanted.len());
        for spec in wanted {
            if backends.iter().any(|b: &Arc<Backend>| b.name == spec.name) {
                continue; // the same address twice in the config: one backend
            }
            let kept = self
                .backends
                .iter()
                .find(|b| b.name == spec.name && b.addr == spec.addr);
            match kept {
                Some(backend) => {
                    backend.weight.store(spec.weight, Ordering::Relaxed);
                    backend.backup.store(spec.backup, Ordering::Relaxed);
                    backends.push(Arc::clone(backend));
                }
                None => {
                    let backend = Arc::new(make(spec));
                    joined.push(Arc::clone(&backend));
                    backends.push(backend);
                }
            }
        }
        let left = self
            .backends
            .iter()
            .filter(|old| !backends.iter().any(|b| Arc::ptr_eq(b, old)))
            .cloned()
            .collect();
        Rebuilt {
            pool: Pool::new(&self.name, backends, algorithm),
            joined,
            left,
        }
    }

    /// The index of the backend for the next request, skipping those in `tried` (a request
    /// retried elsewhere); None when no backend is up. The request is counted in the chosen
    /// backend's `in_flight` before the pool's lock is released, so concurrent picks see each
    /// other (least connections depends on it); the caller releases it when done.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let chosen = self.choose(tried, &mut current)?;
        self.backends[chosen].in_flight.inc();
        Some(chosen)
    }

    fn choose(&self, tried: &[usize], current: &mut [i64]) -> Option<usize> {
        // Backups stand in only while no primary can take requests at all; a request that
        // has tried every up primary gets no backup.
        let backups = !self
            .backends
            .iter()
            .any(|b| !b.is_backup() && b.is_up() && !b.is_draining());
        let candidate = |i: usize| {
            let b = &self.backends[i];
            b.is_backup() == backups && b.is_up() && !b.is_draining() && !tried.contains(&i)
        };
        match self.algorithm {
            Algorithm::RoundRobin => self.smooth_weighted(candidate, current),
            Algorithm::LeastConnections => self.least_connections(candidate),
        }
    }

    fn smooth_weighted(
        &self,
        candidate: impl Fn(usize) -> bool,
        current: &mut [i64],
    ) -> Option<usize> {
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in (0..self.backends.len()).filter(|&i| candidate(i)) {
            let weight = i64::from(self.backends[i].weight());
            current[i] += weight;
            total += weight;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(best)
    }

    fn least_connections(&self, candidate: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.backends.len();
        let start = self.next_start.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let load = |i: usize| {
            let b = &self.backends[i];
            (b.in_flight.get().max(0) as u64, u64::from(b.weight()))
        };
        let mut best: Option<usize> = None;
        // From a rotating start, so ties take turns.
        for i in (0..n).map(|k| (start + k) % n).filter(|&i| candidate(i)) {
            let ((a, wa), better) = (load(i), best.map(load));
            // a / wa < b / wb, without division.
            if better.is_none_or(|(b, wb)| a * wb < b * wa) {
                best = Some(i);
            }
        }
        best
    }
}

/// Most idle keep-alive connections kept per backend.
const MAX_IDLE_PER_BACKEND: usize = 64;

/// A kept-alive connection to `backend`, or a new one.
pub async fn checkout(backend: &Backend, timeout: Duration) -> Result<Connection, String> {
    loop {
        let cached = backend.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match cached {
            Some(connection) if connection.is_reusable() => return Ok(connection),
            Some(_) => continue, // closed by the backend since: drop it
            None => break,
        }
    }
    tokio::time::timeout(timeout, Connection::connect(backend.addr))
        .await
        .map_err(|_| format!("no connection within {timeout:?}"))?
        .map_err(|e| e.to_string())
}

fn checkin(backend: &Backend, connection: Connection) {
    let mut idle = backend.idle.lock().unwrap_or_else(|e| e.into_inner());
    if idle.len() < MAX_IDLE_PER_BACKEND {
        idle.push(connection);
    }
}

/// A request counted in a backend's `in_flight` (by `Pool::pick`), from the pick to the end
/// of its response body; dropping it releases the count. It holds the backend, so a backend
/// that leaves the pool lives until its last request is answered.
pub struct InFlight(Arc<Backend>);

impl InFlight {
    /// Holds `backend`, whose `in_flight` the pick counted.
    pub fn new(backend: Arc<Backend>) -> Self {
        Self(backend)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// Holds the request's place in its backend's `in_flight` until the response body ends or is
/// dropped; a body read to its end gives its connection back to the backend's idle list, a
/// body dropped half-read takes its connection with it.
struct ReturnOnEnd {
    in_flight: InFlight,
    connection: Option<Connection>,
}

impl Drop for ReturnOnEnd {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            checkin(&self.in_flight.0, connection);
        }
    }
}

/// A backend's response body on its way to the client.
pub struct Tracked {
    inner: Incoming,
    guard: Option<ReturnOnEnd>,
}

impl Tracked {
    /// A backend's response body, returning its connection when it ends cleanly.
    pub fn new(inner: Incoming, in_flight: InFlight) -> Self {
        Self {
            inner,
            guard: Some(ReturnOnEnd {
                in_flight,
                connection: None,
            }),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // A body that was empty from the start (204, 304, HEAD) is complete even if the
        // client side never polled it.
        if let Some(guard) = self.guard.as_mut() {
            guard.connection = self.inner.take_reusable();
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            if let Some(mut guard) = self.guard.take() {
                guard.connection = self.inner.take_reusable();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, port: u16, weight: u32, backup: bool) -> BackendSpec {
        BackendSpec {
            pool: "default".into(),
            name: name.into(),
            group: name.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
            backup,
        }
    }

    fn pool(specs: &[(u32, bool)], algorithm: Algorithm) -> Pool {
        let backends = specs
            .iter()
            .enumerate()
            .map(|(i, &(weight, backup))| {
                let spec = spec(&format!("b{i}"), 1000 + i as u16, weight, backup);
                Arc::new(Backend::new(spec, true, &Metrics::default()))
            })
            .collect();
        Pool::new("default", backends, algorithm)
    }

    fn counts(pool: &Pool, n: usize) -> Vec<usize> {
        let mut counts = vec![0; pool.backends.len()];
        for _ in 0..n {
            counts[pool.pick(&[]).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_alternates_and_weights_spread_evenly() {
        let even = pool(&[(1, false), (1, false)], Algorithm::RoundRobin);
        let order: Vec<usize> = (0..6).map(|_| even.pick(&[]).unwrap()).collect();
        assert_eq!(order, [0, 1, 0, 1, 0, 1]);
        let weighted = pool(&[(3, false), (1, false)], Algorithm::RoundRobin);
        let order: Vec<usize> = (0..8).map(|_| weighted.pick(&[]).unwrap()).collect();
        assert_eq!(
            order,
            [0, 0, 1, 0, 0, 0, 1, 0],
            "smooth: the light backend is not starved"
        );
        assert_eq!(counts(&weighted, 400), [300, 100]);
    }

    #[test]
    fn least_connections_prefers_the_idle_backend_relative_to_weight() {
        let pool = pool(&[(1, false), (2, false)], Algorithm::LeastConnections);
        pool.backends[0].in_flight.set(1);
        pool.backends[1].in_flight.set(1);
        assert_eq!(
            pool.pick(&[]),
            Some(1),
            "1 of weight 2 is lighter than 1 of weight 1"
        );
        pool.backends[1].in_flight.set(3);
        assert_eq!(pool.pick(&[]), Some(0));
    }

    #[test]
    fn backups_serve_only_while_every_primary_is_down() {
        let pool = pool(&[(1, false), (1, false), (1, true)], Algorithm::RoundRobin);
        assert_eq!(counts(&pool, 100)[2], 0);
        assert!(pool.backends[0].record_failure(1));
        assert_eq!(counts(&pool, 10), [0, 10, 0]);
        pool.backends[1].record_failure(1);
        assert_eq!(counts(&pool, 10), [0, 0, 10]);
        pool.backends[2].record_failure(1);
        assert_eq!(pool.pick(&[]), None);
        assert!(pool.backends[0].record_success(1));
        assert_eq!(counts(&pool, 10), [10, 0, 0]);
    }

    #[test]
    fn a_draining_backend_gets_nothing_new() {
        let pool = pool(&[(1, false), (1, false)], Algorithm::RoundRobin);
        pool.backends[0].set_draining(true);
        assert_eq!(counts(&pool, 10), [0, 10]);
        pool.backends[0].set_draining(false);
        assert_eq!(counts(&pool, 10), [5, 5]);
    }

    #[test]
    fn a_retry_skips_the_backends_already_tried() {
        let pool = pool(&[(1, false), (1, false), (1, true)], Algorithm::RoundRobin);
        assert_eq!(pool.pick(&[0]), Some(1));
        assert_eq!(
            pool.pick(&[0, 1]),
            None,
            "primaries are up: the backup is not used"
        );
    }

    #[test]
    fn rise_and_fall_count_in_a_row() {
        let b = Backend::new(spec("b", 1, 1, false), true, &Metrics::default());
        assert!(!b.record_failure(2));
        assert!(!b.record_success(2));
        assert!(!b.record_failure(2));
        assert!(b.record_failure(2), "two in a row");
        assert!(!b.record_success(2));
        assert!(b.record_success(2));
    }

    #[test]
    fn a_rebuild_keeps_the_backends_that_stay_and_names_who_joined_and_left() {
        let dns = |ip: u8, weight: u32| BackendSpec {
            pool: "default".into(),
            name: format!("web:80@10.0.0.{ip}"),
            group: "web:80".into(),
            addr: SocketAddr::from(([10, 0, 0, ip], 80)),
            weight,
            backup: false,
        };
        let metrics = Metrics::default();
        let make = |spec: BackendSpec| Backend::new(spec, false, &metrics);
        let first = Pool::new("default", vec![], Algorithm::RoundRobin).rebuild(
            vec![dns(1, 1), dns(2, 1)],
            Algorithm::RoundRobin,
            make,
        );
        assert_eq!(first.joined.len(), 2);
        assert!(first.left.is_empty());
        let two = Arc::clone(&first.pool.backends[1]);
        two.set_draining(true);
        two.requests.store(7, Ordering::Relaxed);

        let second = first.pool.rebuild(
            vec![dns(2, 5), dns(3, 1)],
            Algorithm::LeastConnections,
            make,
        );
        let names: Vec<&str> = second
            .pool
            .backends
            .iter()
            .map(|b| b.name.as_str())
            .collect();
        assert_eq!(names, ["web:80@10.0.0.2", "web:80@10.0.0.3"]);
        assert!(
            Arc::ptr_eq(&second.pool.backends[0], &two),
            "kept, not remade"
        );
        assert!(two.is_draining() && two.requests.load(Ordering::Relaxed) == 7);
        assert_eq!(two.weight(), 5, "the new weight applies");
        assert_eq!(
            second
                .joined
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>(),
            ["web:80@10.0.0.3"]
        );
        assert!(!second.joined[0].is_up(), "a newcomer waits for its checks");
        assert_eq!(
            second
                .left
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>(),
            ["web:80@10.0.0.1"]
        );

        let moved = BackendSpec {
            addr: SocketAddr::from(([10, 0, 0, 9], 80)),
            ..dns(2, 5)
        };
        let third = second
            .pool
            .rebuild(vec![moved, dns(3, 1)], Algorithm::RoundRobin, make);
        assert_eq!(
            third.joined.len(),
            1,
            "same name, new address: a new backend"
        );
        assert_eq!(third.left.len(), 1);
    }
}
