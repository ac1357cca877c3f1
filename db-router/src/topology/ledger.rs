//! What this router acknowledged: the highest GTID per replication domain of every write
//! whose OK it passed to a client, and whether it may acknowledge more.
//!
//! A failover must never give up a write a client saw acknowledged. Lossless semi-sync
//! guarantees that only while the replica is connected: once the primary has fallen back to
//! asynchronous replication (the replica away for `rpl_semi_sync_master_timeout`), it
//! acknowledges commits the replica never receives. So before a router promotes, it asks
//! every router (itself included) what it acknowledged and which binary-log position it last
//! saw on the primary, and promotes only a candidate that holds all of it
//! ([`super::gtid::GtidSet::missing_from`]).
//!
//! Asking is also a promise, as a Paxos prepare is: a router that answered a promoter
//! [`Ledger::seal`]s itself, and acknowledges nothing more from the writer it had, so no
//! acknowledgement slips in between the answer and the promotion. The seal ends when the
//! router sees a newer epoch (the promotion happened), when the promoter releases it (the
//! candidate lacked writes: no promotion), or when the monitor finds the promotion can no
//! longer be under way ([`Ledger::expire_seal`]).
//!
//! The check and the update are one step under one lock, taken before the OK reaches the
//! client: a write acknowledged is in the ledger before anyone can read the ledger without it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::gtid::GtidSet;
use super::snapshot::Node;

/// The acknowledgements of one router and the writer it acknowledges for.
#[derive(Default)]
pub struct Ledger {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    acknowledged: GtidSet,
    /// The writer whose commits may be acknowledged: the last one seen at `epoch`. A writer
    /// that is merely unreachable stays (its commits are semi-synchronous, and replacing it
    /// needs this router's answer to the promoter first); a newer epoch replaces it, and a
    /// late OK from the old one is withheld.
    writer: Option<Node>,
    epoch: u64,
    /// The primary's `gtid_binlog_pos` at the monitor's last check of it.
    primary_seen: GtidSet,
    seal: Option<Seal>,
}

/// A promise to a promoter: nothing acknowledged from the writer of `epoch` any more.
#[derive(Debug, Clone)]
struct Seal {
    epoch: u64,
    by: String,
    since: Instant,
}

/// What a router tells a promoter (`POST /seal` on its admin listener, or its own ledger).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holdings {
    /// Who answered.
    pub router: String,
    /// The highest GTID per domain it acknowledged to a client.
    pub acknowledged: String,
    /// The primary's binary-log position at its last check.
    pub primary_seen: String,
}

impl Ledger {
    /// Records `gtid`, committed on `node`, before its OK goes to the client. False: the OK
    /// must be withheld (the node is no longer the writer, or a promotion is being prepared).
    pub fn acknowledge(&self, node: &Node, gtid: &str) -> bool {
        let mut state = self.lock();
        let allowed = state.seal.is_none() && state.writer.as_ref() == Some(node);
        if allowed {
            state.acknowledged.insert_pos(gtid);
        }
        allowed
    }

    /// The monitor's view after a round: the writer (`None`: unreachable, or not known) at
    /// the highest epoch seen, and what the primary's binary log held when last checked. A
    /// seal ends once an epoch past it is seen.
    pub fn observe(&self, writer: Option<Node>, epoch: u64, primary_seen: Option<&str>) {
        let mut state = self.lock();
        if let Some(seal) = &state.seal
            && epoch > seal.epoch
        {
            tracing::info!(
                epoch,
                "the promotion {} prepared is done (epoch {epoch}): acknowledging writes again",
                seal.by
            );
            state.seal = None;
        }
        if epoch > state.epoch {
            state.epoch = epoch;
            state.writer = writer;
        } else if writer.is_some() {
            state.writer = writer;
        }
        if let Some(pos) = primary_seen {
            state.primary_seen.insert_pos(pos);
        }
    }

    /// Promises `by`, who is about to promote past `epoch`, to acknowledge nothing more from
    /// the current writer; returns what this router holds.
    pub fn seal(&self, epoch: u64, by: &str, router: &str) -> Holdings {
        let mut state = self.lock();
        if state.seal.is_none() {
            tracing::warn!(
                epoch,
                "{by} prepares a promotion past epoch {epoch}: this router acknowledges no \
                 more writes until it sees the new primary or the promotion is called off"
            );
        }
        state.seal = Some(Seal {
            epoch,
            by: by.to_owned(),
            since: Instant::now(),
        });
        Holdings {
            router: router.to_owned(),
            acknowledged: state.acknowledged.to_string(),
            primary_seen: state.primary_seen.to_string(),
        }
    }

    /// The promotion `by` prepared was called off.
    pub fn release(&self, by: &str) {
        let mut state = self.lock();
        if state.seal.as_ref().is_some_and(|s| s.by == by) {
            tracing::info!("{by} called its promotion off: acknowledging writes again");
            state.seal = None;
        }
    }

    /// A seal older than `after`, whose promotion the caller found cannot be under way, ends.
    pub fn expire_seal(&self, after: Duration) -> Option<String> {
        let mut state = self.lock();
        let seal = state.seal.as_ref()?;
        if seal.since.elapsed() < after {
            return None;
        }
        let by = seal.by.clone();
        state.seal = None;
        Some(by)
    }

    /// Who holds a seal on this router, for how long.
    pub fn sealed(&self) -> Option<(String, u64, Duration)> {
        let state = self.lock();
        state
            .seal
            .as_ref()
            .map(|s| (s.by.clone(), s.epoch, s.since.elapsed()))
    }

    /// The highest GTID per domain this router acknowledged (the report).
    pub fn acknowledged(&self) -> String {
        self.lock().acknowledged.to_string()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        Node { name: name.into() }
    }

    #[test]
    fn only_the_writers_commits_are_acknowledged_and_remembered() {
        let ledger = Ledger::default();
        assert!(
            !ledger.acknowledge(&node("db-1:3306"), "0-1-5"),
            "no writer yet"
        );
        ledger.observe(Some(node("db-1:3306")), 0, Some("0-1-4"));
        assert!(ledger.acknowledge(&node("db-1:3306"), "0-1-5"));
        assert!(ledger.acknowledge(&node("db-1:3306"), "0-1-6"));
        assert!(
            !ledger.acknowledge(&node("db-2:3306"), "0-2-7"),
            "a node that is not the writer"
        );
        assert_eq!(ledger.acknowledged(), "0-1-6");
        // Unreachable for this router: its semi-synchronous commits still count.
        ledger.observe(None, 0, None);
        assert!(ledger.acknowledge(&node("db-1:3306"), "0-1-7"));
        // Replaced (a newer epoch, its writer not reachable yet): a late OK is withheld.
        ledger.observe(None, 1, None);
        assert!(!ledger.acknowledge(&node("db-1:3306"), "0-1-8"));
        // What a promoter is told: the acknowledged writes and the primary's last position.
        let held = ledger.seal(1, "router-b", "router-a");
        assert_eq!(
            (held.acknowledged.as_str(), held.primary_seen.as_str()),
            ("0-1-7", "0-1-4")
        );
    }

    #[test]
    fn a_seal_withholds_until_a_newer_epoch_or_release() {
        let ledger = Ledger::default();
        ledger.observe(Some(node("db-1:3306")), 3, Some("0-1-9"));
        assert!(ledger.acknowledge(&node("db-1:3306"), "0-1-10"));
        let held = ledger.seal(3, "router-b", "router-a");
        assert_eq!(held.acknowledged, "0-1-10");
        assert!(!ledger.acknowledge(&node("db-1:3306"), "0-1-11"));
        // Same epoch seen again: still sealed.
        ledger.observe(Some(node("db-1:3306")), 3, None);
        assert!(!ledger.acknowledge(&node("db-1:3306"), "0-1-11"));
        // Someone else's release does not count.
        ledger.release("router-c");
        assert!(ledger.sealed().is_some());
        ledger.release("router-b");
        assert!(ledger.acknowledge(&node("db-1:3306"), "0-1-11"));
        // Sealed again, then the promotion is seen: open for the new writer only.
        ledger.seal(3, "router-b", "router-a");
        ledger.observe(Some(node("db-2:3306")), 4, None);
        assert!(ledger.sealed().is_none());
        assert!(!ledger.acknowledge(&node("db-1:3306"), "0-1-12"));
        assert!(ledger.acknowledge(&node("db-2:3306"), "0-2-12"));
    }

    #[test]
    fn a_seal_expires_only_when_old_enough() {
        let ledger = Ledger::default();
        ledger.seal(0, "router-b", "router-a");
        assert_eq!(ledger.expire_seal(Duration::from_secs(60)), None);
        assert_eq!(
            ledger.expire_seal(Duration::ZERO).as_deref(),
            Some("router-b")
        );
        assert!(ledger.sealed().is_none());
    }
}
