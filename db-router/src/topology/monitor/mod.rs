//! The monitor's loop: check every node (at once, each within `monitor.timeout`), decide
//! ([`super::decide`]), act (fence, finish or perform a promotion), publish the snapshot,
//! the report and the metrics; then wait `monitor.interval`, or less when a session reports
//! a failure. After an action it checks again at once, so the snapshot follows a promotion
//! within one round trip; after a promotion of its own (or one adopted from another router)
//! it publishes the new writer already in the same round, as a round whose primary is dead
//! waits `monitor.timeout` on it.
//!
//! Every change is logged once, with what happened and what the router does about it; a
//! condition that persists (a failover that cannot happen) is logged again only when its
//! reason changes.
//!
//! Beside the loop: [`failover`], a promotion as the loop runs it; [`repair`], a fenced node
//! rejoined or rebuilt in a task of its own.

mod failover;
mod repair;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use foobar_service::Context;

use super::access::Access;
use super::actions;
use super::config::{BackendsConfig, MonitorConfig};
use super::decide::{self, Action, Observed, Plan};
use super::metrics::{Metrics, NodeLabels, RoleLabels};
use super::node::{Probe, Record, Status};
use super::report::{NodeReport, Report};
use super::snapshot::{Node, Snapshot};
use super::{Shared, Topology};

/// Rounds run back to back after actions, at most: a state that does not settle is then
/// checked at the normal interval rather than in a busy loop.
const MAX_IMMEDIATE_ROUNDS: u32 = 3;

#[derive(Default)]
struct NodeState {
    server_id: Option<u32>,
    status: Option<Status>,
    last_check: Option<SystemTime>,
    last_error: Option<String>,
    failures: u64,
    /// The transactions it holds that the primary lacks, while it is fenced.
    errant: Option<String>,
    /// Its `gtid_binlog_pos` when a rejoin was refused: not tried again at that position.
    errant_at: Option<String>,
}

/// An automatic rejoin under way.
struct Rejoining {
    index: usize,
    position: String,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

pub struct Monitor {
    topology: Topology,
    access: Access,
    config: MonitorConfig,
    metrics: Metrics,
    probes: Vec<Probe>,
    nodes: Vec<NodeState>,
    known: Option<Record>,
    primary_down_since: Option<Instant>,
    failovers: u64,
    fencings: u64,
    failover_blocked: Option<String>,
    /// A rejoin running beside the loop (it waits for the node to catch up): the node, its
    /// position then, and what it ended with.
    rejoining: Option<Rejoining>,
    /// Conditions logged this round and the round before: one that persists (a failover
    /// that cannot happen, an action that keeps failing) is logged when it starts, not
    /// every round.
    notes: [std::collections::HashSet<String>; 2],
}

impl Monitor {
    pub fn new(
        topology: Topology,
        access: Access,
        config: MonitorConfig,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let probes = access
            .nodes
            .iter()
            .map(|node| access.probe(node))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let nodes = probes.iter().map(|_| NodeState::default()).collect();
        Ok(Self {
            topology,
            access,
            config,
            metrics,
            probes,
            nodes,
            known: None,
            primary_down_since: None,
            failovers: 0,
            fencings: 0,
            failover_blocked: None,
            rejoining: None,
            notes: Default::default(),
        })
    }

    /// The first check of every node, and what follows from it, before the router serves.
    pub async fn first_round(&mut self) {
        for _ in 0..MAX_IMMEDIATE_ROUNDS {
            if !self.round().await {
                break;
            }
        }
        let snapshot = self.topology.snapshot();
        tracing::info!(
            epoch = snapshot.epoch,
            writer = name(snapshot.writer.as_ref()),
            reader = name(snapshot.reader.as_ref()),
            "topology after the first checks"
        );
    }

    /// Checks, decides and acts until the task is dropped.
    pub async fn run(mut self) {
        let mut immediate = 0;
        loop {
            if self.round().await && immediate < MAX_IMMEDIATE_ROUNDS {
                immediate += 1;
                continue;
            }
            immediate = 0;
            tokio::select! {
                () = tokio::time::sleep(self.config.interval) => {}
                () = self.topology.shared.wake.notified() => {}
            }
        }
    }

    /// One round; true when it acted and the next round should come at once.
    async fn round(&mut self) -> bool {
        let [previous, current] = &mut self.notes;
        std::mem::swap(previous, current);
        current.clear();
        self.check_all().await;
        let (mut plan, candidate) = self.plan();

        self.remember(&plan);
        if let Some(problem) = &plan.problem {
            self.note(Level::Error, problem.clone());
        }
        let mut acted = false;
        for action in &plan.actions {
            acted |= self.act(action).await;
        }
        self.rejoin_fenced(&plan);
        self.expire_seal().await;

        let now = Instant::now();
        if plan.primary_down {
            let since = *self.primary_down_since.get_or_insert(now);
            let down_for = now - since;
            if down_for >= self.config.failover_after
                && self.fail_over(&plan, candidate, down_for).await
            {
                acted = true;
                // Decided again on the promoted node as it is now (see `fail_over`), so
                // writes go there at once, not after the next round's checks, which wait
                // `monitor.timeout` on the dead node.
                plan = self.plan().0;
            }
        }
        if !plan.primary_down {
            self.primary_down_since = None;
            self.failover_blocked = None;
        }
        self.publish(&plan);
        acted
    }

    /// The decision on the nodes' last checks, and the failover candidate.
    fn plan(&self) -> (Plan, Result<usize, String>) {
        let observed: Vec<Observed<'_>> = self
            .nodes
            .iter()
            .map(|n| Observed {
                server_id: n.server_id,
                status: n.status.as_ref(),
            })
            .collect();
        let plan = decide::decide(
            &observed,
            self.known.as_ref(),
            self.config.max_replication_lag,
        );
        let candidate = decide::failover_candidate(&observed, &plan);
        (plan, candidate)
    }

    async fn check_all(&mut self) {
        let timeout = self.config.timeout;
        let results =
            futures_util::future::join_all(self.probes.iter_mut().map(|p| p.check(timeout))).await;
        for (index, result) in results.into_iter().enumerate() {
            self.record_check(index, result);
        }
    }

    /// Checks one node again, now.
    async fn check(&mut self, index: usize) {
        let result = self.probes[index].check(self.config.timeout).await;
        self.record_check(index, result);
    }

    fn record_check(&mut self, index: usize, result: anyhow::Result<Status>) {
        let (probe, state) = (&self.probes[index], &mut self.nodes[index]);
        state.last_check = Some(SystemTime::now());
        match result {
            Ok(status) => {
                if state.status.is_none() {
                    tracing::info!(
                        node = %probe.node.name,
                        server_id = status.server_id,
                        read_only = status.read_only,
                        "node is up"
                    );
                }
                state.server_id = Some(status.server_id);
                state.status = Some(status);
                state.last_error = None;
                state.failures = 0;
            }
            Err(e) => {
                let error = format!("{e:#}");
                if state.failures == 0 {
                    tracing::warn!(
                        node = %probe.node.name,
                        "node is down: {error}; it gets no statements until a check succeeds"
                    );
                }
                let labels = NodeLabels {
                    node: probe.node.name.clone(),
                };
                self.metrics.check_failures.get_or_create(&labels).inc();
                state.status = None;
                state.last_error = Some(error);
                state.failures += 1;
            }
        }
    }

    fn remember(&mut self, plan: &Plan) {
        let Some(record) = &plan.record else { return };
        if self.known.as_ref().is_none_or(|k| record.epoch > k.epoch) {
            tracing::info!(
                epoch = record.epoch,
                server_id = record.server_id,
                host = %record.host,
                "primary by record: server {} ({}) since epoch {}",
                record.server_id,
                record.host,
                record.epoch
            );
            self.known = Some(record.clone());
        }
    }

    async fn act(&mut self, action: &Action) -> bool {
        let epoch = self.known.as_ref().map_or(0, |r| r.epoch);
        match *action {
            Action::Fence(index) => {
                let probe = &mut self.probes[index];
                let node = probe.node.name.clone();
                match actions::fence(probe, &self.access.app_user, self.known.as_ref()).await {
                    Ok(killed) => {
                        self.fencings += 1;
                        self.metrics.fencings.inc();
                        tracing::warn!(
                            node,
                            epoch,
                            killed,
                            "fenced a writable node that is not the primary: read_only=ON, \
                             {killed} session(s) of {} killed; it gets no writes (POST /rejoin \
                             makes it a replica of the primary)",
                            self.access.app_user
                        );
                        true
                    }
                    Err(e) => {
                        self.note(
                            Level::Error,
                            format!(
                                "{node} is writable but not the primary (epoch {epoch}); \
                                 fencing it failed: {e:#}; it gets no writes from this router, \
                                 trying again at every check"
                            ),
                        );
                        false
                    }
                }
            }
            Action::CompletePromotion(index) => {
                let probe = &mut self.probes[index];
                let node = probe.node.name.clone();
                match actions::complete_promotion(probe).await {
                    Ok(()) => {
                        tracing::warn!(
                            node,
                            epoch,
                            "the primary by record was read-only (a promotion cut short, or \
                             a restart): replication reset, writable again, it takes writes"
                        );
                        true
                    }
                    Err(e) => {
                        self.note(
                            Level::Error,
                            format!(
                                "{node} is the primary by record (epoch {epoch}) but read-only; \
                                 making it writable failed: {e:#}; writes keep failing, trying \
                                 again at every check"
                            ),
                        );
                        false
                    }
                }
            }
        }
    }

    /// Logs `message` unless the round before logged it too.
    fn note(&mut self, level: Level, message: String) {
        let [previous, current] = &mut self.notes;
        if !previous.contains(&message) {
            match level {
                Level::Warn => tracing::warn!("{message}"),
                Level::Error => tracing::error!("{message}"),
            }
        }
        current.insert(message);
    }

    fn publish(&mut self, plan: &Plan) {
        let node = |index: Option<usize>| index.map(|i| self.access.nodes[i].clone());
        let epoch = plan.record.as_ref().map_or(0, |r| r.epoch);
        let primary_seen = plan
            .writer
            .and_then(|i| self.nodes[i].status.as_ref())
            .map(|s| s.gtid_binlog_pos.as_str());
        let ledger = self.topology.ledger();
        ledger.observe(node(plan.writer), epoch, primary_seen);
        // A router that promised a promoter to acknowledge nothing more routes no writes.
        let sealed = ledger.sealed();
        let snapshot = Snapshot {
            epoch,
            writer: node(plan.writer).filter(|_| sealed.is_none()),
            reader: node(plan.reader),
        };
        let previous = self.topology.snapshot();
        if *previous != snapshot {
            if snapshot.writer.is_none() && snapshot.reader.is_none() {
                tracing::warn!(
                    epoch = snapshot.epoch,
                    "no writer and no reader: every statement fails at once"
                );
            } else if snapshot.writer.is_none() {
                tracing::warn!(
                    epoch = snapshot.epoch,
                    reader = name(snapshot.reader.as_ref()),
                    "no writer: writes fail at once; reads go to the reader"
                );
            } else if snapshot.reader.is_none() {
                tracing::info!(
                    epoch = snapshot.epoch,
                    writer = name(snapshot.writer.as_ref()),
                    "routing changed: no reader (replica down, stopped or lagging), reads go \
                     to the writer"
                );
            } else {
                tracing::info!(
                    epoch = snapshot.epoch,
                    writer = name(snapshot.writer.as_ref()),
                    reader = name(snapshot.reader.as_ref()),
                    "routing changed"
                );
            }
        }
        self.metrics.epoch.set(snapshot.epoch as i64);
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for (index, (state, node)) in self.nodes.iter().zip(&self.access.nodes).enumerate() {
            let role = match &state.status {
                None => "down",
                Some(_) if plan.writer == Some(index) => "writer",
                Some(_) if plan.reader == Some(index) => "reader",
                Some(s) if s.replication.is_some() => "replica",
                Some(s) if s.read_only => "fenced",
                Some(_) => "writable",
            };
            let labels = NodeLabels {
                node: node.name.clone(),
            };
            let status = state.status.as_ref();
            self.metrics
                .up
                .get_or_create(&labels)
                .set(i64::from(status.is_some()));
            self.metrics
                .read_only
                .get_or_create(&labels)
                .set(i64::from(status.is_some_and(|s| s.read_only)));
            let replication = status.and_then(|s| s.replication.as_ref());
            self.metrics
                .replicating
                .get_or_create(&labels)
                .set(i64::from(replication.is_some_and(|r| r.running())));
            self.metrics.lag_seconds.get_or_create(&labels).set(
                replication
                    .and_then(|r| r.lag_seconds)
                    .map_or(-1.0, |lag| lag as f64),
            );
            for known_role in ["writer", "reader"] {
                self.metrics
                    .role
                    .get_or_create(&RoleLabels {
                        node: node.name.clone(),
                        role: known_role,
                    })
                    .set(i64::from(role == known_role));
            }
            nodes.push(NodeReport {
                name: node.name.clone(),
                up: status.is_some(),
                role,
                server_id: state.server_id,
                status: state.status.clone(),
                last_check_unix_ms: state
                    .last_check
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as u64),
                last_error: state.last_error.clone(),
                consecutive_failures: state.failures,
                errant: state.errant.clone().filter(|_| role == "fenced"),
            });
            self.metrics
                .errant
                .get_or_create(&labels)
                .set(i64::from(role == "fenced" && state.errant.is_some()));
        }
        let report = Report {
            epoch: snapshot.epoch,
            writer: snapshot.writer.as_ref().map(|n| n.name.clone()),
            reader: snapshot.reader.as_ref().map(|n| n.name.clone()),
            record: plan.record.clone(),
            primary_down_ms: self
                .primary_down_since
                .map(|since| since.elapsed().as_millis() as u64),
            auto_failover: self.config.auto_failover,
            failovers: self.failovers,
            fencings: self.fencings,
            failover_blocked: self.failover_blocked.clone(),
            sealed_by: sealed.map(|(by, _, _)| by),
            acknowledged: self.topology.ledger().acknowledged(),
            nodes,
        };
        self.metrics
            .failover_blocked
            .set(i64::from(self.failover_blocked.is_some()));
        *self
            .topology
            .shared
            .report
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = report;
        self.topology.publish(snapshot);
    }
}

/// Starts the monitor: checks both nodes once (so the first snapshot is real, not assumed),
/// then keeps checking every `monitor.interval` until shutdown. Registers the metrics.
pub async fn start(
    backends: &BackendsConfig,
    monitor: &MonitorConfig,
    ctx: &Context,
) -> anyhow::Result<Topology> {
    let access = Access::new(backends, monitor)?;
    let shared = Shared {
        access: Some(access.clone()),
        ..Shared::default()
    };
    let topology = Topology::with_shared(backends, shared);
    let metrics = Metrics::register(ctx);
    let mut watcher = Monitor::new(topology.clone(), access, monitor.clone(), metrics)?;
    watcher.first_round().await;
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = watcher.run() => {}
            () = shutdown.cancelled() => tracing::debug!("monitor stopped: shutting down"),
        }
    });
    Ok(topology)
}

enum Level {
    Warn,
    Error,
}

fn name(node: Option<&Node>) -> &str {
    node.map_or("none", |n| n.name.as_str())
}
