//! The demo's verdict per fault (one row per fault and component), from the client's
//! records: failed reads and writes, the write outage, the time back to all-healthy and to
//! full redundancy, acknowledged writes lost, the p99 latency; and the targets each is held to.
//!
//! A row is charged with what happened from its fault until the next row's fault (or the
//! end of the load): the damage of a crash includes the recovery after the restore.
//! A write outage is the longest span from the send of a write that failed, or took longer
//! than the stall threshold, to the answer of the next write that succeeded in time: a write
//! that hangs for ten seconds is an outage to the person waiting, even if it succeeds.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use crate::faults::Fault;
use crate::record::{Kind, Record};

/// What the demo holds every fault to (the targets of docs/demo.md, for this machine).
#[derive(Debug, Clone)]
pub struct Targets {
    /// Failed requests allowed per fault, except for the components below.
    pub max_failed: u64,
    /// Components whose faults may fail reads (none: the replica serves them).
    pub may_fail_reads: Vec<String>,
    /// Components whose faults may fail writes (the primary: its in-flight writes die); the
    /// write outage bounds them.
    pub may_fail_writes: Vec<String>,
    pub max_write_outage: Duration,
    /// From the restore to every service healthy again, and to full redundancy again.
    pub max_to_healthy: Duration,
    /// A write slower than this counts toward the write outage.
    pub stall: Duration,
}

impl Default for Targets {
    fn default() -> Self {
        Self {
            max_failed: 0,
            may_fail_reads: Vec::new(),
            may_fail_writes: vec!["db-primary".into()],
            max_write_outage: Duration::from_secs(5),
            max_to_healthy: Duration::from_secs(30),
            stall: Duration::from_secs(2),
        }
    }
}

/// Whether, and when, the stack had full redundancy again after a restore: a writer and a
/// replicating reader in router-a's topology, every service healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redundancy {
    /// The stack has no database router to ask (the demo's own tests).
    NotChecked,
    Never,
    At(Duration),
}

/// One fault's times, since the start of the run.
#[derive(Debug, Clone)]
pub struct Window {
    pub fault: Fault,
    /// As given (`db-primary` is a role).
    pub component: String,
    /// The service the fault hit.
    pub node: String,
    pub killed: Duration,
    pub restored: Duration,
    /// When every service was healthy again; None if it never was within the wait.
    pub healthy: Option<Duration>,
    pub redundant: Redundancy,
    /// The next fault, or the end of the load.
    pub end: Duration,
}

/// What the visitor saw for one fault.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentResult {
    pub fault: Fault,
    pub component: String,
    /// The service the fault hit (the primary of the moment, for `db-primary`).
    pub node: String,
    pub reads: u64,
    pub writes: u64,
    pub failed_reads: u64,
    pub failed_writes: u64,
    /// Reads and writes attempted more than once (each counts once, as its last attempt
    /// ended): the visitor's retries on another balancer, which a failure never hides.
    pub retried_reads: u64,
    pub retried_writes: u64,
    pub write_outage: Duration,
    /// The outage was still open when the window ended.
    pub outage_open: bool,
    pub max_write_latency: Duration,
    /// The slowest read: with one request at a time per worker, a stall holds few requests
    /// and hides below the p99; the maximum shows it.
    pub max_read_latency: Duration,
    /// 99th percentile of the latency, failures included (what a stall costs).
    pub p99_read: Duration,
    pub p99_write: Duration,
    pub to_healthy: Option<Duration>,
    /// From the restore to full redundancy again.
    pub to_redundant: Redundancy,
    /// Acknowledged writes of this window that are not in the database at the end.
    pub acked_lost: u64,
    /// The database node that answered the acknowledged writes, and from when: a failover
    /// shows as a second entry.
    pub write_nodes: Vec<(Duration, String)>,
    /// Why requests failed: each reason with how many reads and writes it failed, the most
    /// frequent first (at most [`MAX_REASONS`]).
    pub failure_reasons: Vec<FailureReason>,
}

/// Reasons listed per row.
pub const MAX_REASONS: usize = 4;

/// One way requests of a row failed, as the visitor saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureReason {
    pub kind: Kind,
    pub count: u64,
    /// The status and what the answer said, or the client's error.
    pub reason: String,
}

/// PASS or FAIL of each target for one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub failed_reads: bool,
    pub failed_writes: bool,
    pub write_outage: bool,
    pub to_healthy: bool,
    pub redundant: bool,
    pub acked_lost: bool,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.failed_reads
            && self.failed_writes
            && self.write_outage
            && self.to_healthy
            && self.redundant
            && self.acked_lost
    }
}

impl ComponentResult {
    /// `pause lb-1`: the row's name.
    pub fn label(&self) -> String {
        format!("{} {}", self.fault, self.component)
    }

    pub fn verdict(&self, targets: &Targets) -> Verdict {
        let may_fail_reads = targets.may_fail_reads.contains(&self.component);
        let may_fail_writes = targets.may_fail_writes.contains(&self.component);
        Verdict {
            failed_reads: may_fail_reads || self.failed_reads <= targets.max_failed,
            failed_writes: may_fail_writes || self.failed_writes <= targets.max_failed,
            write_outage: !self.outage_open && self.write_outage <= targets.max_write_outage,
            to_healthy: self.to_healthy.is_some_and(|t| t <= targets.max_to_healthy),
            redundant: match self.to_redundant {
                Redundancy::NotChecked => true,
                Redundancy::Never => false,
                Redundancy::At(t) => t <= targets.max_to_healthy,
            },
            acked_lost: self.acked_lost == 0,
        }
    }
}

/// Each window's result; `lost` holds the markers of acknowledged writes not found at the end.
pub fn account(
    records: &[Record],
    windows: &[Window],
    lost: &HashSet<String>,
    targets: &Targets,
) -> Vec<ComponentResult> {
    windows
        .iter()
        .map(|window| {
            let inside: Vec<&Record> = records
                .iter()
                .filter(|r| r.start >= window.killed && r.start < window.end)
                .collect();
            let count = |kind: Kind, failed: bool| {
                inside
                    .iter()
                    .filter(|r| r.kind == kind && (!failed || !r.ok()))
                    .count() as u64
            };
            let writes: Vec<&Record> = inside
                .iter()
                .copied()
                .filter(|r| r.kind == Kind::Write)
                .collect();
            let (write_outage, outage_open) = write_outage(&writes, window.end, targets.stall);
            let retried = |kind: Kind| {
                inside
                    .iter()
                    .filter(|r| r.kind == kind && r.retried)
                    .count() as u64
            };
            let p99 = |kind: Kind| {
                percentile(
                    inside.iter().filter(|r| r.kind == kind).map(|r| r.latency),
                    0.99,
                )
            };
            ComponentResult {
                fault: window.fault,
                component: window.component.clone(),
                node: window.node.clone(),
                reads: count(Kind::Read, false),
                writes: count(Kind::Write, false),
                failed_reads: count(Kind::Read, true),
                failed_writes: count(Kind::Write, true),
                retried_reads: retried(Kind::Read),
                retried_writes: retried(Kind::Write),
                write_outage,
                outage_open,
                max_write_latency: writes.iter().map(|r| r.latency).max().unwrap_or_default(),
                max_read_latency: inside
                    .iter()
                    .filter(|r| r.kind == Kind::Read)
                    .map(|r| r.latency)
                    .max()
                    .unwrap_or_default(),
                p99_read: p99(Kind::Read),
                p99_write: p99(Kind::Write),
                to_healthy: window
                    .healthy
                    .map(|healthy| healthy.saturating_sub(window.restored)),
                to_redundant: match window.redundant {
                    Redundancy::At(at) => Redundancy::At(at.saturating_sub(window.restored)),
                    other => other,
                },
                acked_lost: writes
                    .iter()
                    .filter(|r| r.ok() && r.marker.as_ref().is_some_and(|m| lost.contains(m)))
                    .count() as u64,
                write_nodes: write_nodes(&writes),
                failure_reasons: failure_reasons(&inside),
            }
        })
        .collect()
}

/// The `q` quantile (nearest rank) of `latencies`; zero when there are none.
pub fn percentile(latencies: impl Iterator<Item = Duration>, q: f64) -> Duration {
    let mut sorted: Vec<Duration> = latencies.collect();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted.sort();
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The failed requests among `records`, grouped by kind and reason, the largest groups first.
fn failure_reasons(records: &[&Record]) -> Vec<FailureReason> {
    let mut groups: Vec<FailureReason> = Vec::new();
    for record in records {
        let Some(reason) = record.failure() else {
            continue;
        };
        match groups
            .iter_mut()
            .find(|g| g.kind == record.kind && g.reason == reason)
        {
            Some(group) => group.count += 1,
            None => groups.push(FailureReason {
                kind: record.kind,
                count: 1,
                reason,
            }),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    groups.truncate(MAX_REASONS);
    groups
}

/// Each change of the node that answered acknowledged writes, in the order they ended.
fn write_nodes(writes: &[&Record]) -> Vec<(Duration, String)> {
    let mut acknowledged: Vec<&&Record> = writes.iter().filter(|r| r.ok()).collect();
    acknowledged.sort_by_key(|r| r.end());
    let mut nodes: Vec<(Duration, String)> = Vec::new();
    for write in acknowledged {
        let node = write.database.clone().unwrap_or_else(|| "?".into());
        if nodes.last().is_none_or(|(_, last)| *last != node) {
            nodes.push((write.end(), node));
        }
    }
    nodes
}

/// The longest outage among `writes`, and whether one was still open at `until`.
pub fn write_outage(writes: &[&Record], until: Duration, stall: Duration) -> (Duration, bool) {
    let mut writes = writes.to_vec();
    writes.sort_by_key(|r| r.start);
    let mut longest = Duration::ZERO;
    let mut open: Option<Duration> = None;
    for write in writes {
        let good = write.ok() && write.latency <= stall;
        match (good, open) {
            (false, None) => open = Some(write.start),
            (true, Some(since)) => {
                longest = longest.max(write.end().saturating_sub(since));
                open = None;
            }
            _ => {}
        }
    }
    if let Some(since) = open {
        return (longest.max(until.saturating_sub(since)), true);
    }
    (longest, false)
}

/// The final table: one row per fault and component, each cell with its PASS or FAIL.
pub fn table(results: &[ComponentResult], targets: &Targets) -> String {
    let mut out = String::new();
    let width = results
        .iter()
        .map(|r| r.label().len())
        .max()
        .unwrap_or(0)
        .max("fault".len());
    let _ = writeln!(
        out,
        "{:<width$} {:>13} {:>14} {:>12} {:>14} {:>12} {:>12} {:>11} {:>13} {:>13}",
        "fault",
        "failed reads",
        "failed writes",
        "retried r/w",
        "write outage",
        "to healthy",
        "redundant",
        "acked lost",
        "p99 read/wr",
        "max read/wr"
    );
    let mark = |pass: bool| if pass { "PASS" } else { "FAIL" };
    for result in results {
        let verdict = result.verdict(targets);
        let failed = |n: u64, may_fail: &[String], pass: bool| {
            if may_fail.contains(&result.component) {
                format!("{n} (any)")
            } else {
                format!("{n} {}", mark(pass))
            }
        };
        let outage = format!(
            "{:.1}s{} {}",
            result.write_outage.as_secs_f64(),
            if result.outage_open { "+" } else { "" },
            mark(verdict.write_outage)
        );
        let healthy = match result.to_healthy {
            Some(t) => format!("{:.1}s {}", t.as_secs_f64(), mark(verdict.to_healthy)),
            None => "never FAIL".into(),
        };
        let redundant = match result.to_redundant {
            Redundancy::NotChecked => "-".into(),
            Redundancy::Never => "never FAIL".into(),
            Redundancy::At(t) => format!("{:.1}s {}", t.as_secs_f64(), mark(verdict.redundant)),
        };
        let _ = writeln!(
            out,
            "{:<width$} {:>13} {:>14} {:>12} {:>14} {:>12} {:>12} {:>11} {:>13} {:>13}",
            result.label(),
            failed(
                result.failed_reads,
                &targets.may_fail_reads,
                verdict.failed_reads
            ),
            failed(
                result.failed_writes,
                &targets.may_fail_writes,
                verdict.failed_writes
            ),
            format!("{}/{}", result.retried_reads, result.retried_writes),
            outage,
            healthy,
            redundant,
            format!("{} {}", result.acked_lost, mark(verdict.acked_lost)),
            format!(
                "{:.2}/{:.2}s",
                result.p99_read.as_secs_f64(),
                result.p99_write.as_secs_f64()
            ),
            format!(
                "{:.1}/{:.1}s",
                result.max_read_latency.as_secs_f64(),
                result.max_write_latency.as_secs_f64()
            ),
        );
    }
    for result in results {
        let nodes: Vec<String> = result
            .write_nodes
            .iter()
            .enumerate()
            .map(|(i, (at, node))| {
                if i == 0 {
                    node.clone()
                } else {
                    format!("{node} from {:.1}s", at.as_secs_f64())
                }
            })
            .collect();
        let hit = if result.node == result.component {
            String::new()
        } else {
            format!(" (node {})", result.node)
        };
        let name = format!("{}{hit}", result.label());
        let _ = writeln!(
            out,
            "{name:<width$} reads {} ({} retried), writes {} ({} retried), answered by {}",
            result.reads,
            result.retried_reads,
            result.writes,
            result.retried_writes,
            if nodes.is_empty() {
                "nobody".to_owned()
            } else {
                nodes.join(", then ")
            }
        );
        for reason in &result.failure_reasons {
            let _ = writeln!(
                out,
                "{:<width$}   {} failed {}: {}",
                "",
                reason.count,
                match reason.kind {
                    Kind::Read => "reads",
                    Kind::Write => "writes",
                },
                reason.reason
            );
        }
    }
    let excepted = |list: &[String], what: &str| {
        if list.is_empty() {
            String::new()
        } else {
            format!(", failed {what} allowed for {}", list.join(", "))
        }
    };
    let _ = writeln!(
        out,
        "targets: {} failed requests per fault{}{}, write outage <= {}s (a write slower \
         than {}s counts), healthy and fully redundant <= {}s after the restore, no \
         acknowledged write lost",
        targets.max_failed,
        excepted(&targets.may_fail_reads, "reads"),
        excepted(&targets.may_fail_writes, "writes"),
        targets.max_write_outage.as_secs_f64(),
        targets.stall.as_secs_f64(),
        targets.max_to_healthy.as_secs_f64(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Outcome;

    fn write(start_ms: u64, latency_ms: u64, ok: bool, marker: &str) -> Record {
        Record {
            kind: Kind::Write,
            start: Duration::from_millis(start_ms),
            latency: Duration::from_millis(latency_ms),
            outcome: if ok {
                Outcome::Ok(201)
            } else {
                Outcome::Error("connection died before answering: closed".into())
            },
            web: None,
            database: None,
            post_id: None,
            marker: Some(marker.into()),
            retried: false,
        }
    }

    fn read(start_ms: u64, ok: bool, retried: bool) -> Record {
        Record {
            kind: Kind::Read,
            retried,
            outcome: if ok {
                Outcome::Ok(200)
            } else {
                Outcome::Status(502, "bad gateway".into())
            },
            marker: None,
            ..write(start_ms, 5, true, "")
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn p99_is_the_nearest_rank() {
        let latencies = |n: u64| (1..=n).map(ms);
        assert_eq!(percentile(latencies(100), 0.99), ms(99));
        assert_eq!(percentile(latencies(1000), 0.99), ms(990));
        assert_eq!(percentile(latencies(10), 0.99), ms(10));
        assert_eq!(percentile([ms(7)].into_iter(), 0.99), ms(7));
        assert_eq!(percentile(std::iter::empty(), 0.99), Duration::ZERO);
    }

    #[test]
    fn outage_runs_from_the_first_failed_send_to_the_next_success_answer() {
        let writes = [
            write(0, 10, true, "a"),
            write(1000, 500, false, "b"),
            write(2000, 10, false, "c"),
            write(4000, 20, true, "d"),
            write(5000, 10, true, "e"),
        ];
        let refs: Vec<&Record> = writes.iter().collect();
        assert_eq!(write_outage(&refs, ms(9000), ms(2000)), (ms(3020), false));
    }

    #[test]
    fn a_stalled_write_is_an_outage_and_an_unrecovered_one_stays_open() {
        let stalled = [
            write(0, 10, true, "a"),
            write(1000, 9000, true, "b"),
            write(1500, 7000, true, "c"),
        ];
        let refs: Vec<&Record> = stalled.iter().collect();
        // b stalls (sent at 1 s); c is slow too; nothing answers in time before the end.
        assert_eq!(write_outage(&refs, ms(12000), ms(2000)), (ms(11000), true));
        let recovered = [write(1000, 9000, true, "b"), write(10500, 10, true, "c")];
        let refs: Vec<&Record> = recovered.iter().collect();
        assert_eq!(write_outage(&refs, ms(12000), ms(2000)), (ms(9510), false));
        assert_eq!(write_outage(&[], ms(12000), ms(2000)), (ms(0), false));
    }

    #[test]
    fn each_window_is_charged_with_its_own_failures_and_lost_writes() {
        let records = vec![
            read(500, true, false),   // before the first kill: nobody's
            read(1500, false, false), // lb-1
            read(1600, true, true),   // lb-1, retried once
            write(1700, 10, true, "w1"),
            write(5500, 10, false, "w2"), // db-primary
            write(6000, 10, true, "w3"),
            write(6100, 10, true, "w4"),
        ];
        let windows = [
            Window {
                fault: Fault::Pause,
                component: "lb-1".into(),
                node: "lb-1".into(),
                killed: ms(1000),
                restored: ms(2000),
                healthy: Some(ms(3500)),
                redundant: Redundancy::At(ms(3600)),
                end: ms(5000),
            },
            Window {
                fault: Fault::Kill,
                component: "db-primary".into(),
                node: "db-replica".into(),
                killed: ms(5000),
                restored: ms(6000),
                healthy: None,
                redundant: Redundancy::Never,
                end: ms(8000),
            },
        ];
        // The primary's kill fails over: w4 is answered by the promoted replica.
        let mut records = records;
        records[3].database = Some("db-primary".into());
        records[5].database = Some("db-primary".into());
        records[6].database = Some("db-replica".into());
        let lost: HashSet<String> = ["w3".to_owned(), "w2".to_owned()].into();
        let targets = Targets::default();
        let results = account(&records, &windows, &lost, &targets);
        let lb = &results[0];
        assert_eq!((lb.reads, lb.failed_reads, lb.retried_reads), (2, 1, 1));
        assert_eq!(lb.retried_writes, 0);
        assert_eq!((lb.writes, lb.failed_writes, lb.acked_lost), (1, 0, 0));
        assert_eq!(lb.to_healthy, Some(ms(1500)));
        assert_eq!(lb.to_redundant, Redundancy::At(ms(1600)));
        assert_eq!((lb.p99_read, lb.p99_write), (ms(5), ms(10)));
        let verdict = lb.verdict(&targets);
        assert!(!verdict.failed_reads && verdict.failed_writes && verdict.to_healthy);
        assert!(verdict.redundant && !verdict.passed());

        let primary = &results[1];
        // w2 failed (its outcome is unknown, not lost); w3 was acknowledged and is gone.
        assert_eq!((primary.failed_writes, primary.acked_lost), (1, 1));
        assert_eq!(primary.write_outage, ms(510));
        let verdict = primary.verdict(&targets);
        assert!(verdict.failed_writes && verdict.write_outage);
        assert!(!verdict.to_healthy && !verdict.redundant && !verdict.acked_lost);
        // Reads of the primary's row are held to zero failures: the replica serves them.
        let mut failing_read = primary.clone();
        failing_read.failed_reads = 1;
        assert!(!failing_read.verdict(&targets).failed_reads);

        let nodes = [
            (ms(6010), "db-primary".into()),
            (ms(6110), "db-replica".into()),
        ];
        assert_eq!(primary.write_nodes, nodes);
        assert_eq!(lb.write_nodes, [(ms(1710), "db-primary".to_owned())]);

        let table = table(&results, &targets);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[1].starts_with("pause lb-1 ") && lines[1].contains("1 FAIL"),
            "{table}"
        );
        assert!(
            lines[1].contains("1.5s PASS") && lines[1].contains("1.6s PASS"),
            "{table}"
        );
        assert!(lines[1].contains("0.01/0.01s"), "{table}");
        assert!(lines[1].contains(" 1/0 "), "{table}");
        assert!(lines[1].ends_with(" 0.0/0.0s"), "{table}");
        assert_eq!(lb.max_read_latency, ms(5));
        assert!(
            lines[2].starts_with("kill db-primary ") && lines[2].contains("0 PASS"),
            "{table}"
        );
        assert!(
            lines[2].contains("1 (any)") && lines[2].matches("never FAIL").count() == 2,
            "{table}"
        );
        assert!(
            lines[2].contains("0.5s PASS") && lines[2].contains("1 FAIL"),
            "{table}"
        );
        assert_eq!(
            lines[3],
            "pause lb-1      reads 2 (1 retried), writes 1 (0 retried), answered by db-primary"
        );
        assert_eq!(
            lines[5],
            "kill db-primary (node db-replica) reads 0 (0 retried), writes 3 (0 retried), \
             answered by db-primary, then db-replica from 6.1s"
        );
        // Indented by the width of the longest label ("kill db-primary") and three blanks.
        assert_eq!(
            lines[4],
            format!("{:18}1 failed reads: 502 bad gateway", "")
        );
        assert_eq!(
            lines[6],
            format!(
                "{:18}1 failed writes: connection died before answering: closed",
                ""
            )
        );
        assert!(
            lines[7].starts_with(
                "targets: 0 failed requests per fault, failed writes allowed for db-primary"
            ),
            "{table}"
        );
    }
}
