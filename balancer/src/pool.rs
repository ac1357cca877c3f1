//! The backends and how one is chosen for a request.
//!
//! A backend is up or down (active checks and failed connections decide, see `health.rs`).
//! Requests go to the up primaries (non-backup backends); only when none is up do the up
//! backups get them (active-passive). Among the candidates, the pool's algorithm chooses:
//! smooth weighted round robin (nginx's: spreads a weight-3 backend's turns evenly instead of
//! three in a row) or least connections relative to weight.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use prometheus_client::metrics::gauge::Gauge;

use crate::config::Algorithm;

/// One backend server.
#[derive(Debug)]
pub struct Backend {
    /// As configured (`web-a:8080`), for logs, metrics and the status page.
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub backup: bool,
    up: AtomicBool,
    /// Put aside by an operator: no new requests, in-flight ones finish.
    draining: AtomicBool,
    /// Requests assigned and not yet answered in full (also exported as a metric).
    pub in_flight: Gauge,
    /// Responses received from it, and exchanges that failed or answered 5xx.
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// Requests per second over the last second, kept by the balancer's sampler.
    pub rate: AtomicU64,
    /// When the last active check ran, and what it found.
    pub last_check: Mutex<Option<(SystemTime, String)>>,
    /// Failures in a row, from checks or traffic; reset by any success.
    failures: AtomicU32,
    successes: AtomicU32,
}

impl Backend {
    pub fn new(name: String, addr: SocketAddr, weight: u32, backup: bool) -> Self {
        Self {
            name,
            addr,
            weight,
            backup,
            up: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            in_flight: Gauge::default(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rate: AtomicU64::new(0),
            last_check: Mutex::new(None),
            failures: AtomicU32::new(0),
            successes: AtomicU32::new(0),
        }
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

/// The backends of the pool, and the algorithm's memory.
#[derive(Debug)]
pub struct Pool {
    pub backends: Vec<Backend>,
    algorithm: Algorithm,
    /// Smooth weighted round robin's current weights, one per backend; also the lock that
    /// makes choosing and counting a request one step.
    current: Mutex<Vec<i64>>,
    /// Where least connections starts looking, so ties rotate.
    next_start: AtomicUsize,
}

impl Pool {
    pub fn new(backends: Vec<Backend>, algorithm: Algorithm) -> Self {
        let current = Mutex::new(vec![0; backends.len()]);
        Self {
            backends,
            algorithm,
            current,
            next_start: AtomicUsize::new(0),
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
        let usable = |i: &usize, backup: bool| {
            let b = &self.backends[*i];
            b.backup == backup && b.is_up() && !b.is_draining() && !tried.contains(i)
        };
        let all = 0..self.backends.len();
        let mut candidates: Vec<usize> = all.clone().filter(|i| usable(i, false)).collect();
        if candidates.is_empty()
            && !self
                .backends
                .iter()
                .any(|b| !b.backup && b.is_up() && !b.is_draining())
        {
            candidates = all.filter(|i| usable(i, true)).collect();
        }
        match (candidates.len(), self.algorithm) {
            (0, _) => None,
            (1, _) => Some(candidates[0]),
            (_, Algorithm::RoundRobin) => Some(self.smooth_weighted(&candidates, current)),
            (_, Algorithm::LeastConnections) => Some(self.least_connections(&candidates)),
        }
    }

    fn smooth_weighted(&self, candidates: &[usize], current: &mut [i64]) -> usize {
        let mut total = 0i64;
        let mut best = candidates[0];
        for &i in candidates {
            let weight = i64::from(self.backends[i].weight);
            current[i] += weight;
            total += weight;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        best
    }

    fn least_connections(&self, candidates: &[usize]) -> usize {
        let start = self.next_start.fetch_add(1, Ordering::Relaxed) % candidates.len();
        let load = |i: usize| {
            let b = &self.backends[i];
            (b.in_flight.get().max(0) as u64, u64::from(b.weight))
        };
        let mut best = candidates[start];
        for k in 1..candidates.len() {
            let i = candidates[(start + k) % candidates.len()];
            let ((a, wa), (b, wb)) = (load(i), load(best));
            // a / wa < b / wb, without division.
            if a * wb < b * wa {
                best = i;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(specs: &[(u32, bool)], algorithm: Algorithm) -> Pool {
        let backends = specs
            .iter()
            .enumerate()
            .map(|(i, &(weight, backup))| {
                Backend::new(
                    format!("b{i}"),
                    SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                    weight,
                    backup,
                )
            })
            .collect();
        Pool::new(backends, algorithm)
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
        let b = Backend::new("b".into(), SocketAddr::from(([127, 0, 0, 1], 1)), 1, false);
        assert!(!b.record_failure(2));
        assert!(!b.record_success(2));
        assert!(!b.record_failure(2));
        assert!(b.record_failure(2), "two in a row");
        assert!(!b.record_success(2));
        assert!(b.record_success(2));
    }
}
