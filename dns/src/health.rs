//! Health checks of the addresses behind a record set (www.foobar.com's balancers).
//!
//! Each address gets an HTTP GET of the configured path every `interval`; `fall` failures in
//! a row mark it down, `rise` successes in a row mark it up again, as HAProxy counts. An
//! address starts up, so a fresh server answers everything until checks say otherwise. Every
//! change is logged, counted, and signalled on `changes` so the answers are rebuilt.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use foobar_service::probe::http_status;
use hickory_proto::rr::LowerName;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::answer::HealthView;
use crate::config::HealthCheckConfig;
use crate::metrics::{Metrics, TargetLabels};

/// One probed address of one health-checked name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Target {
    name: LowerName,
    address: IpAddr,
}

struct Probe {
    up: bool,
    task: JoinHandle<()>,
}

/// The probes that run, and what they found.
pub struct HealthChecker {
    checks: Vec<(LowerName, HealthCheckConfig)>,
    probes: Mutex<HashMap<Target, Probe>>,
    changes: watch::Sender<u64>,
    metrics: Metrics,
    shutdown: CancellationToken,
}

impl HealthChecker {
    pub fn new(
        checks: Vec<(LowerName, HealthCheckConfig)>,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            checks,
            probes: Mutex::new(HashMap::new()),
            changes: watch::channel(0).0,
            metrics,
            shutdown,
        })
    }

    /// Changes whenever an address goes up or down.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Probes exactly the addresses `addresses_of` finds for each checked name: new ones
    /// start (as up), gone ones stop, the others keep their state.
    pub fn reconcile(self: &Arc<Self>, addresses_of: impl Fn(&LowerName) -> Vec<IpAddr>) {
        let mut probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
        let mut wanted = Vec::new();
        for (index, (name, _)) in self.checks.iter().enumerate() {
            for address in addresses_of(name) {
                wanted.push((
                    index,
                    Target {
                        name: name.clone(),
                        address,
                    },
                ));
            }
        }
        probes.retain(|target, probe| {
            let keep = wanted.iter().any(|(_, t)| t == target);
            if !keep {
                probe.task.abort();
                self.metrics.target_up.remove(&labels(target));
            }
            keep
        });
        for (index, target) in wanted {
            if probes.contains_key(&target) {
                continue;
            }
            self.metrics
                .target_up
                .get_or_create(&labels(&target))
                .set(1);
            let task = tokio::spawn(Arc::clone(self).probe_loop(index, target.clone()));
            probes.insert(target, Probe { up: true, task });
        }
    }

    /// The healthy addresses of each checked name, with the TTL to answer them with.
    pub fn view(&self) -> HealthView {
        let probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
        let mut view = HealthView::default();
        for (name, check) in &self.checks {
            let ttl = u32::try_from(check.ttl.as_secs()).unwrap_or(u32::MAX);
            view.names
                .entry(name.clone())
                .or_insert_with(|| (Default::default(), ttl));
        }
        for (target, _) in probes.iter().filter(|(_, p)| p.up) {
            if let Some((healthy, _)) = view.names.get_mut(&target.name) {
                healthy.insert(target.address);
            }
        }
        view
    }

    async fn probe_loop(self: Arc<Self>, index: usize, target: Target) {
        let check = self.checks[index].1.clone();
        let peer = SocketAddr::new(target.address, check.port);
        let mut ticker = tokio::time::interval(check.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut successes, mut failures) = (0u32, 0u32);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = self.shutdown.cancelled() => return,
            }
            let result = match http_status(peer, &check.path, check.timeout).await {
                Ok(status) if (200..300).contains(&status) => Ok(()),
                Ok(status) => Err(format!("answered {status}")),
                Err(e) => Err(e.to_string()),
            };
            let turned = match &result {
                Ok(()) => {
                    failures = 0;
                    successes = successes.saturating_add(1);
                    (successes >= check.rise).then_some(true)
                }
                Err(_) => {
                    successes = 0;
                    failures = failures.saturating_add(1);
                    (failures >= check.fall).then_some(false)
                }
            };
            if let Some(up) = turned {
                self.set(&target, up, &check, result.err());
            }
        }
    }

    fn set(&self, target: &Target, up: bool, check: &HealthCheckConfig, why: Option<String>) {
        let mut probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(probe) = probes.get_mut(target) else {
            return;
        };
        if probe.up == up {
            return;
        }
        probe.up = up;
        drop(probes);
        let (name, address) = (&target.name, target.address);
        if up {
            tracing::info!(%name, %address, "up: {} good checks of {}", check.rise, check.path);
        } else {
            let why = why.unwrap_or_default();
            tracing::warn!(%name, %address, "down: {} failed checks of {} ({why})", check.fall, check.path);
        }
        self.metrics
            .target_up
            .get_or_create(&labels(target))
            .set(i64::from(up));
        self.metrics
            .target_changes
            .get_or_create(&labels(target))
            .inc();
        self.changes.send_modify(|n| *n += 1);
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        for probe in self
            .probes
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            probe.task.abort();
        }
    }
}

fn labels(target: &Target) -> TargetLabels {
    TargetLabels {
        name: target.name.to_string(),
        address: target.address.to_string(),
    }
}
