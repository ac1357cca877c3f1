//! The run second by second: requests that ended in each second, failures, and which web
//! server and database node answered; and the phases (kill, restore, healthy) around them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::faults::Fault;
use crate::record::Record;

/// What ended within one second of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Second {
    /// Seconds since the start of the run (this bucket covers `[at, at + 1)`).
    pub at: u64,
    pub requests: u64,
    pub failed: u64,
    /// Answers by `X-Served-By` (`?` when absent).
    pub web: BTreeMap<String, u64>,
    /// Answers by database node (`?` when absent).
    pub database: BTreeMap<String, u64>,
}

impl Second {
    pub fn add(&mut self, record: &Record) {
        self.requests += 1;
        if !record.ok() {
            self.failed += 1;
            return;
        }
        let name = |value: &Option<String>| value.clone().unwrap_or_else(|| "?".into());
        *self.web.entry(name(&record.web)).or_default() += 1;
        *self.database.entry(name(&record.database)).or_default() += 1;
    }

    /// `[ 37s] killed lb-1  rps 212  fail 0  web-a 104 web-b 108  db-replica 180 db-primary 32`
    pub fn line(&self, phase: &str) -> String {
        let counts = |map: &BTreeMap<String, u64>| {
            map.iter()
                .map(|(name, n)| format!("{name} {n}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "[{:>3}s] {phase:<18} rps {:>4}  fail {:>3}  {}  {}",
            self.at,
            self.requests,
            self.failed,
            counts(&self.web),
            counts(&self.database)
        )
    }
}

/// A moment the picture and the table mark: a fault, its restore, all healthy again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: Duration,
    pub kind: EventKind,
    /// The fault of the row this event belongs to.
    pub fault: Fault,
    pub component: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The fault was applied.
    Fault,
    Restored,
    Healthy,
}

impl Event {
    /// `pause lb-1`, `restore lb-1`, `healthy lb-1`.
    pub fn label(&self) -> String {
        let verb = match self.kind {
            EventKind::Fault => self.fault.name(),
            EventKind::Restored => "restore",
            EventKind::Healthy => "healthy",
        };
        format!("{verb} {}", self.component)
    }
}

/// Every second from 0 to the last record's end, each record counted in the second it ended.
pub fn seconds(records: &[Record]) -> Vec<Second> {
    let last = records.iter().map(|r| r.end().as_secs()).max();
    let Some(last) = last else {
        return Vec::new();
    };
    let mut seconds: Vec<Second> = (0..=last)
        .map(|at| Second {
            at,
            ..Second::default()
        })
        .collect();
    for record in records {
        seconds[record.end().as_secs() as usize].add(record);
    }
    seconds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Kind, Outcome};

    fn record(end_ms: u64, ok: bool, web: Option<&str>, database: Option<&str>) -> Record {
        Record {
            kind: Kind::Read,
            start: Duration::from_millis(end_ms - 10),
            latency: Duration::from_millis(10),
            outcome: if ok {
                Outcome::Ok(200)
            } else {
                Outcome::Status(503, String::new())
            },
            web: web.map(Into::into),
            database: database.map(Into::into),
            post_id: None,
            marker: None,
            retried: false,
        }
    }

    #[test]
    fn buckets_by_the_second_a_request_ended_and_names_who_answered() {
        let records = [
            record(100, true, Some("web-a"), Some("db-replica")),
            record(900, true, Some("web-b"), None),
            record(1500, false, None, None),
            record(3100, true, Some("web-a"), Some("db-primary")),
        ];
        let seconds = seconds(&records);
        assert_eq!(seconds.len(), 4);
        assert_eq!((seconds[0].requests, seconds[0].failed), (2, 0));
        assert_eq!(seconds[0].database.get("?"), Some(&1));
        assert_eq!((seconds[1].requests, seconds[1].failed), (1, 1));
        assert_eq!(seconds[2].requests, 0);
        assert_eq!(
            seconds[0].line("killed lb-1"),
            "[  0s] killed lb-1        rps    2  fail   0  web-a 1 web-b 1  ? 1 db-replica 1"
        );
    }
}
