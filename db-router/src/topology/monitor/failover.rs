//! A failover, from the loop's side: the candidate promoted (the other routers sealed
//! first, their acknowledged writes required of it), another router's promotion adopted,
//! and a promise to a promoter that went quiet ended ([`Monitor::expire_seal`]).

use std::time::{Duration, Instant};

use super::{Level, Monitor};
use crate::topology::actions::{self, Promotion};
use crate::topology::decide::Plan;
use crate::topology::{peers, rebuild};

impl Monitor {
    /// Promotes the candidate. True when a node is the new primary, promoted here or by
    /// another router, and its entry in `nodes` says what it is now: written from this
    /// router's own steps, or checked again after adopting another router's promotion.
    pub(super) async fn fail_over(
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
        let forced = self
            .topology
            .shared
            .forced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // A forced promotion says so in its record: the old primary's errant transactions
        // may then include acknowledged ones, and it is not rebuilt by itself.
        let mut promoted_by = self.access.router.clone();
        if !forced.is_empty() {
            promoted_by = format!("{promoted_by}; {} {forced}", rebuild::FORCED);
            // The column holds 255 characters; GTIDs and router names are ASCII.
            let mut end = promoted_by.len().min(255);
            while !promoted_by.is_char_boundary(end) {
                end -= 1;
            }
            promoted_by.truncate(end);
        }
        let required = async move {
            let own = ledger.ledger().seal(epoch - 1, &router, &router);
            let mut held = peers.seal(epoch - 1, &router, &forced.without).await?;
            held.push(own);
            Ok(peers::required(&held).without(&forced.give_up))
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
                let forced = std::mem::take(
                    &mut *self
                        .topology
                        .shared
                        .forced
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()),
                );
                if !forced.is_empty() {
                    tracing::error!(
                        node = %probe.node.name,
                        "promoted as an operator forced it: {forced} that it lacked is given \
                         up (it stays on the old primary, which will not rejoin: rebuild it)"
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

    /// Ends this router's promise to a promoter that has gone quiet: past
    /// `monitor.seal_timeout`, when no node that is up holds a newer record and every one's
    /// promotion lock is free (no promotion can be under way).
    pub(super) async fn expire_seal(&mut self) {
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
}
