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

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use foobar_service::Context;
use futures_util::FutureExt;

use super::access::Access;
use super::actions::{self, Promotion};
use super::config::{BackendsConfig, MonitorConfig};
use super::decide::{self, Action, Observed, Plan};
use super::metrics::{Metrics, NodeLabels, RoleLabels};
use super::node::{Probe, Record, Status};
use super::peers;
use super::rebuild;
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

    /// Promotes the candidate. True when a node is the new primary, promoted here or by
    /// another router, and its entry in `nodes` says what it is now: written from this
    /// router's own steps, or checked again after adopting another router's promotion.
    async fn fail_over(
        &mut self,
        plan: &Plan,
        candidate: Result<usize, String>,
        down_for: Duration,
    ) -> bool {
        if !self.config.auto_failover {
            self.note(
                Level::Warn,
                "the primary is down past failover_after; auto_failover is off: writes fail \
                 until it returns"
                    .into(),
            );
            return false;
        }
        let index = match candidate {
            Ok(index) => index,
            Err(why) => {
                self.note(
                    Level::Warn,
                    format!(
                        "the primary is down past failover_after, cannot fail over: {why}; \
                         writes fail until it returns"
                    ),
                );
                return false;
            }
        };
        let epoch = plan.record.as_ref().map_or(0, |r| r.epoch) + 1;
        let probe = &mut self.probes[index];
        tracing::info!(
            node = %probe.node.name,
            epoch,
            "primary down for {down_for:.1?}: promoting this replica (stop replication once \
             its relay log is applied, read_only=OFF, record epoch {epoch})"
        );
        let started = Instant::now();
        let router = self.access.router.clone();
        let ledger = self.topology.clone();
        let peers = self.access.peers.clone();
        // Asked under the promotion lock: every router's acknowledged writes and the
        // primary's last position it saw, each router promising to acknowledge no more.
        let given_up = self
            .topology
            .shared
            .give_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // A forced promotion says so in its record: the old primary's errant transactions
        // may then include acknowledged ones, and it is not rebuilt by itself.
        let mut promoted_by = self.access.router.clone();
        if !given_up.is_empty() {
            promoted_by = format!("{promoted_by}; {} {given_up}", rebuild::FORCED);
            // The column holds 255 characters; GTIDs and router names are ASCII.
            let mut end = promoted_by.len().min(255);
            while !promoted_by.is_char_boundary(end) {
                end -= 1;
            }
            promoted_by.truncate(end);
        }
        let required = async move {
            let own = ledger.ledger().seal(epoch - 1, &router, &router);
            let mut held = peers.seal(epoch - 1, &router).await?;
            held.push(own);
            Ok(peers::required(&held).without(&given_up))
        };
        let outcome = actions::promote(
            probe,
            epoch,
            &promoted_by,
            self.config.catch_up_timeout,
            required,
        )
        .await;
        if !matches!(outcome, Ok(Promotion::Promoted(_) | Promotion::Adopted(_))) {
            self.topology.ledger().release(&self.access.router);
            self.access.peers.release(&self.access.router).await;
        }
        if let Ok(Promotion::Refused(why)) = &outcome {
            self.metrics.failovers_refused.inc();
            self.failover_blocked = Some(why.clone());
            let message = format!("not promoting {}: {why}", self.probes[index].node.name);
            self.note(Level::Error, message);
            return false;
        }
        let probe = &mut self.probes[index];
        match outcome {
            Ok(Promotion::Refused(_)) => false,
            Ok(Promotion::Promoted(record)) => {
                let given_up = std::mem::take(
                    &mut *self
                        .topology
                        .shared
                        .give_up
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()),
                );
                if !given_up.is_empty() {
                    tracing::error!(
                        node = %probe.node.name,
                        "promoted as an operator forced it: the transactions up to {given_up} \
                         that it lacked are given up (they stay on the old primary, which \
                         will not rejoin: rebuild it)"
                    );
                }
                self.failovers += 1;
                self.metrics.failovers.inc();
                // Each step of the promotion succeeded on the node: it replicates no more,
                // is writable and holds the record. That is what its next check reads, so
                // the decision may use it now (a node that dies right after is found by
                // the sessions' failures and the next check, as any writer is).
                if let Some(status) = &mut self.nodes[index].status {
                    status.read_only = false;
                    status.replication = None;
                    status.record = Some(record.clone());
                }
                tracing::warn!(
                    node = %probe.node.name,
                    epoch = record.epoch,
                    "promoted in {:.0?}: server {} is the primary; writes go there",
                    started.elapsed(),
                    record.server_id
                );
                self.known = Some(record);
                true
            }
            Ok(Promotion::Adopted(record)) => {
                tracing::info!(
                    node = %probe.node.name,
                    epoch = record.epoch,
                    "another router already promoted server {} at epoch {}: adopting it",
                    record.server_id,
                    record.epoch
                );
                self.known = Some(record);
                // Read afresh rather than assumed: the other router may not have finished.
                self.check(index).await;
                true
            }
            Err(e) => {
                let message = format!(
                    "promoting {} failed: {e:#}; writes keep failing, trying again at every \
                     check",
                    probe.node.name
                );
                self.note(Level::Error, message);
                false
            }
        }
    }

    /// Makes a fenced node a replica of the writer, beside the loop (it waits for the node
    /// to catch up), when its history is a prefix of the writer's. One router does it: the
    /// rejoin takes a lock on the node, and the other router, finding it taken, leaves it.
    /// A node with errant transactions stays fenced; why is in the report and a metric.
    fn rejoin_fenced(&mut self, plan: &Plan) {
        if !self.config.auto_rejoin {
            return;
        }
        if let Some(rejoining) = self.rejoining.take_if(|r| r.task.is_finished()) {
            // Refused by the server (gtid_strict_mode found what the positions hid): not
            // tried again while the node's position stays the same.
            if let Some(Ok(Err(why))) = rejoining.task.now_or_never() {
                self.nodes[rejoining.index].errant = Some(why);
                self.nodes[rejoining.index].errant_at = Some(rejoining.position);
            }
        }
        if self.rejoining.is_some() {
            return;
        }
        let Some(writer) = plan.writer.and_then(|i| self.nodes[i].status.clone()) else {
            return;
        };
        let fenced = self.nodes.iter().position(|n| {
            n.status
                .as_ref()
                .is_some_and(|s| s.read_only && s.replication.is_none())
                && n.server_id != plan.primary_server
        });
        let Some(index) = fenced else { return };
        let Some(status) = self.nodes[index].status.clone() else {
            return;
        };
        if self.nodes[index].errant_at.as_deref() == Some(status.gtid_binlog_pos.as_str()) {
            return;
        }
        let errant = super::node::errant_gtids(
            &status.gtid_binlog_pos,
            &writer.gtid_binlog_pos,
            &writer.gtid_slave_pos,
        );
        let node = self.access.nodes[index].clone();
        if !errant.is_empty() && self.config.auto_rebuild {
            let writer_node = plan.writer.map(|i| self.access.nodes[i].clone());
            let target = (node, writer_node, writer);
            self.rebuild_errant(index, target, status.gtid_binlog_pos, errant.join(","));
            return;
        }
        if !errant.is_empty() {
            let errant = errant.join(",");
            self.note(
                Level::Error,
                format!(
                    "{} stays fenced: it holds transactions the primary (server {}) lacks \
                     ({errant}), written after the failover began and never acknowledged \
                     through a router; rejoining it would replicate past them. Rebuild it \
                     from the primary (docs/failover.md, \"Rebuilding a node\")",
                    node.name, writer.server_id
                ),
            );
            self.nodes[index].errant = Some(errant);
            return;
        }
        self.nodes[index].errant = None;
        self.nodes[index].errant_at = None;
        let access = self.access.clone();
        self.beside(index, status.gtid_binlog_pos, async move {
            match rejoin_once(&access, &node, &writer).await {
                Ok(Some(done)) => {
                    tracing::warn!(node = %node.name, "rejoined by itself: {done}");
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => {
                    tracing::error!(node = %node.name, "rejoin refused: {e:#}; it stays fenced");
                    Err(format!("{e:#}"))
                }
            }
        });
    }

    /// Runs `work` on the node at `index` (at `position`) beside the loop, which it wakes
    /// when done; its `Err` is why the node stays fenced (see [`Self::rejoin_fenced`]).
    fn beside(
        &mut self,
        index: usize,
        position: String,
        work: impl Future<Output = Result<(), String>> + Send + 'static,
    ) {
        let wake = self.topology.clone();
        let task = tokio::spawn(async move {
            let outcome = work.await;
            wake.shared.wake.notify_one();
            outcome
        });
        self.rejoining = Some(Rejoining {
            index,
            position,
            task,
        });
    }

    /// Rebuilds, beside the loop, a fenced node whose errant transactions no router ever
    /// acknowledged (see [`super::rebuild`], which checks that under the node's rejoin lock):
    /// the node goes down and comes back a replica. Refused, it stays fenced, with why.
    fn rebuild_errant(
        &mut self,
        index: usize,
        (node, writer_node, writer): (Node, Option<Node>, Status),
        position: String,
        errant: String,
    ) {
        // Reported errant only if refused (below): a node being rebuilt needs no operator.
        let access = self.access.clone();
        self.beside(index, position, async move {
            match rebuild_once(&access, &node, writer_node.as_ref(), &errant).await {
                Ok(Some(done)) => {
                    tracing::warn!(node = %node.name, "rebuilding: {done}");
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => {
                    let why = format!(
                        "it holds transactions the primary (server {}) lacks ({errant}) and is \
                         not rebuilt by itself: {e:#}. It stays fenced; rebuild it by hand \
                         (docs/failover.md, \"Rebuilding a node\")",
                        writer.server_id
                    );
                    tracing::error!(node = %node.name, "{why}");
                    Err(why)
                }
            }
        });
    }

    /// Ends this router's promise to a promoter that has gone quiet: past
    /// `monitor.seal_timeout`, when no node that is up holds a newer record and every one's
    /// promotion lock is free (no promotion can be under way).
    async fn expire_seal(&mut self) {
        let Some((by, epoch, age)) = self.topology.ledger().sealed() else {
            return;
        };
        if age < self.config.seal_timeout {
            return;
        }
        for (index, state) in self.nodes.iter().enumerate() {
            let Some(status) = &state.status else {
                continue;
            };
            if status.record.as_ref().is_some_and(|r| r.epoch > epoch) {
                return;
            }
            match actions::promotion_idle(&mut self.probes[index]).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
        }
        if self
            .topology
            .ledger()
            .expire_seal(self.config.seal_timeout)
            .is_some()
        {
            tracing::warn!(
                "{by} prepared a promotion past epoch {epoch} {age:.0?} ago and neither \
                 finished nor called it off, and none is under way: acknowledging writes \
                 again"
            );
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

/// One automatic rejoin: the node's rejoin lock, both nodes read afresh, then
/// [`actions::rejoin`]. `Ok(None)`: another router is rejoining it.
async fn rejoin_once(
    access: &Access,
    node: &Node,
    writer: &Status,
) -> anyhow::Result<Option<String>> {
    let mut probe = access.probe(node)?;
    if !actions::rejoin_lock(&mut probe).await? {
        return Ok(None);
    }
    let status = probe.check(actions::STEP_TIMEOUT).await?;
    let primary = Node {
        name: format!("{}:{}", writer.host, writer.port),
    };
    let primary = match access.nodes.iter().find(|n| n.name == primary.name) {
        Some(configured) => {
            access
                .probe(configured)?
                .check(actions::STEP_TIMEOUT)
                .await?
        }
        None => writer.clone(),
    };
    let done = actions::rejoin(
        &mut probe,
        &status,
        &primary,
        &access.replication_user,
        &access.replication_password,
    )
    .await?;
    Ok(Some(done))
}

/// One automatic rebuild: the node's rejoin lock, both nodes read afresh, then
/// [`rebuild::request`]. `Ok(None)`: another router has the node, or it no longer needs it.
async fn rebuild_once(
    access: &Access,
    node: &Node,
    writer: Option<&Node>,
    errant: &str,
) -> anyhow::Result<Option<String>> {
    let Some(writer) = writer else {
        return Ok(None);
    };
    // Neither node reachable now (another router's rebuild just shut the node down, say):
    // nothing to report; the next round looks again.
    let mut probe = access.probe(node)?;
    let Ok(true) = actions::rejoin_lock(&mut probe).await else {
        return Ok(None);
    };
    let Ok(status) = probe.check(actions::STEP_TIMEOUT).await else {
        return Ok(None);
    };
    let mut writer_probe = access.probe(writer)?;
    let Ok(primary) = writer_probe.check(actions::STEP_TIMEOUT).await else {
        return Ok(None);
    };
    let still = super::node::errant_gtids(
        &status.gtid_binlog_pos,
        &primary.gtid_binlog_pos,
        &primary.gtid_slave_pos,
    );
    if still.is_empty() || !status.read_only || status.replication.is_some() {
        return Ok(None);
    }
    rebuild::request(&mut probe, &status, &mut writer_probe, &primary, errant)
        .await
        .map(Some)
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
    let metrics = Metrics::default();
    metrics.register(ctx);
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
