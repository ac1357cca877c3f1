//! A fenced node repaired beside the loop: rejoined as a replica of the writer when its
//! history is a prefix of the writer's, else rebuilt when no router ever acknowledged its
//! errant transactions ([`rebuild`]), else left fenced with why. One repair at a time, in a
//! task that wakes the loop when done.

use futures_util::FutureExt;

use super::{Level, Monitor, Rejoining};
use crate::topology::access::Access;
use crate::topology::decide::Plan;
use crate::topology::node::{self, Status};
use crate::topology::snapshot::Node;
use crate::topology::{actions, rebuild};

impl Monitor {
    /// Makes a fenced node a replica of the writer, beside the loop (it waits for the node
    /// to catch up), when its history is a prefix of the writer's. One router does it: the
    /// rejoin takes a lock on the node, and the other router, finding it taken, leaves it.
    /// A node with errant transactions stays fenced; why is in the report and a metric.
    pub(super) fn rejoin_fenced(&mut self, plan: &Plan) {
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
        let errant = node::errant_gtids(
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
    /// acknowledged (see [`rebuild`], which checks that under the node's rejoin lock):
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
    let still = node::errant_gtids(
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
