//! The routing decision, as a pure function of what the last checks saw: which node writes,
//! which reads, which must be fenced or finished promoting, and whether a failover is due.
//! No I/O here, so every rule is unit-tested below.
//!
//! The rules (ARCHITECTURE.md repeats them as invariants):
//! - The primary is the node named by the highest epoch in any promotion record the router
//!   has ever seen (on any node, or remembered from an earlier check). Records name nodes by
//!   server id. Without any record (a data directory older than the table), the configured
//!   primary.
//! - It is the writer while it is up and writable. Up but read-only and not following
//!   anyone, it is a promotion left half-done (or a promoted node restarted read-only): it is
//!   made writable ([`Action::CompletePromotion`]) before it gets writes.
//! - Any other node that is writable is fenced ([`Action::Fence`]): two writable nodes never
//!   both get writes, and the lower epoch loses.
//! - The reader is a read-only node that replicates (both threads running) with a lag of at
//!   most `max_replication_lag`. While the writer is down, a read-only replica serves reads
//!   whatever its IO thread says (it cannot reach the dead primary): reads stay up while
//!   writes fail. A fenced old primary (read-only, not replicating) never reads.
//! - Failover candidates: a read-only node with replication configured whose IO thread has
//!   lost the primary too (not `Yes`): if the replica still streams from the primary, the
//!   router's own link is what failed, and promoting would make two primaries.

use std::time::Duration;

use super::node::{Record, Status};

/// One configured node as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// Its server id, from the last check that succeeded (even if it is down now).
    pub server_id: Option<u32>,
    /// What this round's check saw; `None`: down.
    pub status: Option<&'a Status>,
}

/// Something the monitor must do to a node (index into the configured nodes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Writable but not the primary: `read_only=ON`, and its app connections killed.
    Fence(usize),
    /// The primary by record, but read-only: reset its replication, make it writable.
    CompletePromotion(usize),
}

/// The outcome of one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The highest record seen, this round or before.
    pub record: Option<Record>,
    /// The primary's server id (by record, else the configured primary's).
    pub primary_server: Option<u32>,
    pub writer: Option<usize>,
    pub reader: Option<usize>,
    /// The primary cannot be reached (down, or never seen): the failover clock runs.
    pub primary_down: bool,
    pub actions: Vec<Action>,
    /// Why the writer is not usable although its node is up, for the log.
    pub problem: Option<String>,
}

/// Decides one round. `known` is the highest record the router has seen before; node 0 is
/// the configured primary.
pub fn decide(nodes: &[Observed<'_>], known: Option<&Record>, max_lag: Duration) -> Plan {
    let record = nodes
        .iter()
        .filter_map(|n| n.status.and_then(|s| s.record.as_ref()))
        .chain(known)
        .max_by_key(|r| r.epoch)
        .cloned();
    let primary_server = match &record {
        Some(r) => Some(r.server_id),
        None => nodes.first().and_then(|n| n.server_id),
    };
    let primary = nodes.iter().position(|n| {
        primary_server.is_some() && n.server_id == primary_server && n.status.is_some()
    });
    let primary = match (primary, record.is_none()) {
        (None, true) if nodes.first().is_some_and(|n| n.status.is_some()) => Some(0),
        (found, _) => found,
    };

    let mut actions = Vec::new();
    let mut problem = None;
    let mut writer = None;
    if let Some((index, status)) =
        primary.and_then(|index| Some((index, nodes.get(index)?.status?)))
    {
        let streaming = status
            .replication
            .as_ref()
            .is_some_and(|r| r.io_running == "Yes");
        if !status.read_only {
            writer = Some(index);
        } else if !streaming {
            actions.push(Action::CompletePromotion(index));
        } else {
            problem = Some(format!(
                "server {} is the primary by record but replicates from {}: not sending it \
                 writes; an operator must decide (reset its replication, or promote again)",
                status.server_id,
                status
                    .replication
                    .as_ref()
                    .map_or("?", |r| r.master_host.as_str())
            ));
        }
    }

    for (index, node) in nodes.iter().enumerate() {
        if Some(index) != primary && node.status.is_some_and(|s| !s.read_only) {
            actions.push(Action::Fence(index));
        }
    }

    let reader = nodes.iter().enumerate().position(|(index, node)| {
        let Some(status) = node.status else {
            return false;
        };
        let Some(replication) = &status.replication else {
            return false;
        };
        if Some(index) == primary || !status.read_only {
            return false;
        }
        if writer.is_some() {
            replication.running()
                && replication
                    .lag_seconds
                    .is_some_and(|lag| Duration::from_secs(lag) <= max_lag)
        } else {
            replication.sql_running
        }
    });

    Plan {
        record,
        primary_server,
        writer,
        reader,
        primary_down: primary.is_none(),
        actions,
        problem,
    }
}

/// The node to promote once the primary has been down long enough, or why there is none.
pub fn failover_candidate(nodes: &[Observed<'_>], plan: &Plan) -> Result<usize, String> {
    let mut why_not = String::from("no other node is up");
    for (index, node) in nodes.iter().enumerate() {
        let Some(status) = node.status else { continue };
        if Some(status.server_id) == plan.primary_server {
            continue;
        }
        match &status.replication {
            None => {
                why_not = format!(
                    "server {} is not a replica (a fenced old primary is never promoted: it \
                     lacks the newer writes)",
                    status.server_id
                );
            }
            Some(r) if r.io_running == "Yes" => {
                why_not = format!(
                    "server {} still replicates from the primary ({}): only this router's \
                     link to it is down, so promoting would make two primaries",
                    status.server_id, r.master_host
                );
            }
            Some(_) => return Ok(index),
        }
    }
    Err(why_not)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::node::Replication;

    fn record(epoch: u64, server_id: u32) -> Record {
        Record {
            epoch,
            server_id,
            host: format!("db-{server_id}:3306"),
        }
    }

    fn primary(server_id: u32, rec: Option<Record>) -> Status {
        Status {
            server_id,
            read_only: false,
            host: format!("db-{server_id}"),
            port: 3306,
            gtid_binlog_pos: String::new(),
            gtid_slave_pos: String::new(),
            replication: None,
            record: rec,
        }
    }

    fn replica(server_id: u32, io: &str, lag: Option<u64>, rec: Option<Record>) -> Status {
        Status {
            read_only: true,
            replication: Some(Replication {
                io_running: io.into(),
                sql_running: true,
                lag_seconds: lag,
                master_host: "db-1".into(),
                gtid_io_pos: String::new(),
                last_io_error: String::new(),
                last_sql_error: String::new(),
            }),
            ..primary(server_id, rec)
        }
    }

    fn up(status: &Status) -> Observed<'_> {
        Observed {
            server_id: Some(status.server_id),
            status: Some(status),
        }
    }

    fn down(server_id: u32) -> Observed<'static> {
        Observed {
            server_id: Some(server_id),
            status: None,
        }
    }

    const LAG: Duration = Duration::from_secs(5);

    #[test]
    fn healthy_pair_writes_to_the_primary_and_reads_from_the_replica() {
        let p = primary(1, Some(record(0, 1)));
        let r = replica(2, "Yes", Some(0), Some(record(0, 1)));
        let plan = decide(&[up(&p), up(&r)], None, LAG);
        assert_eq!((plan.writer, plan.reader), (Some(0), Some(1)));
        assert!(plan.actions.is_empty());
        assert!(!plan.primary_down);
    }

    #[test]
    fn a_lagging_or_stopped_replica_gets_no_reads() {
        let p = primary(1, Some(record(0, 1)));
        for r in [
            replica(2, "Yes", Some(6), None),
            replica(2, "No", None, None),
            replica(2, "Yes", None, None),
        ] {
            let plan = decide(&[up(&p), up(&r)], None, LAG);
            assert_eq!((plan.writer, plan.reader), (Some(0), None), "{r:?}");
        }
        let plan = decide(&[up(&p), down(2)], None, LAG);
        assert_eq!((plan.writer, plan.reader), (Some(0), None));
    }

    #[test]
    fn primary_down_no_writer_but_the_replica_still_reads() {
        let r = replica(2, "Connecting", None, Some(record(0, 1)));
        let plan = decide(&[down(1), up(&r)], None, LAG);
        assert_eq!((plan.writer, plan.reader), (None, Some(1)));
        assert!(plan.primary_down);
        assert_eq!(failover_candidate(&[down(1), up(&r)], &plan), Ok(1));
    }

    #[test]
    fn no_failover_while_the_replica_still_streams_from_the_primary() {
        let r = replica(2, "Yes", Some(0), Some(record(0, 1)));
        let nodes = [down(1), up(&r)];
        let plan = decide(&nodes, None, LAG);
        assert!(failover_candidate(&nodes, &plan).is_err());
    }

    #[test]
    fn after_promotion_the_higher_epoch_wins_and_the_old_primary_is_fenced() {
        // The old primary restarted writable with its own (older) record.
        let old = primary(1, Some(record(0, 1)));
        let new = primary(2, Some(record(1, 2)));
        let plan = decide(&[up(&old), up(&new)], None, LAG);
        assert_eq!(plan.writer, Some(1));
        assert_eq!(plan.reader, None, "no replica left: reads go to the writer");
        assert_eq!(plan.actions, [Action::Fence(0)]);
        assert_eq!(plan.record, Some(record(1, 2)));
        // Remembered: with only the old primary reachable, it is still not the writer.
        let plan = decide(&[up(&old), down(2)], Some(&record(1, 2)), LAG);
        assert_eq!(plan.writer, None);
        assert_eq!(plan.actions, [Action::Fence(0)]);
        assert!(plan.primary_down);
        assert!(failover_candidate(&[up(&old), down(2)], &plan).is_err());
    }

    #[test]
    fn fenced_old_primary_reads_again_once_rejoined() {
        let mut old = primary(1, Some(record(1, 2)));
        old.read_only = true;
        let new = primary(2, Some(record(1, 2)));
        let plan = decide(&[up(&old), up(&new)], None, LAG);
        assert_eq!((plan.writer, plan.reader), (Some(1), None));
        let rejoined = replica(1, "Yes", Some(0), Some(record(1, 2)));
        let plan = decide(&[up(&rejoined), up(&new)], None, LAG);
        assert_eq!((plan.writer, plan.reader), (Some(1), Some(0)));
    }

    #[test]
    fn a_read_only_primary_by_record_is_finished_not_written_to() {
        let mut promoted = replica(2, "No", None, Some(record(1, 2)));
        promoted.replication = None;
        let plan = decide(&[down(1), up(&promoted)], None, LAG);
        assert_eq!(plan.writer, None);
        assert_eq!(plan.actions, [Action::CompletePromotion(1)]);
        assert!(!plan.primary_down);
    }

    #[test]
    fn without_any_record_the_configured_primary_writes() {
        let p = primary(1, None);
        let r = replica(2, "Yes", Some(0), None);
        let plan = decide(&[up(&p), up(&r)], None, LAG);
        assert_eq!((plan.writer, plan.reader), (Some(0), Some(1)));
    }
}
