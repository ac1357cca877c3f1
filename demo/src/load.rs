//! The steady load: readers and writers, each a visitor of its own, at a bounded rate.
//!
//! Readers ask `GET /api/posts?limit=5`, writers `POST /api/posts` with a message unique to
//! the run, the writer and a sequence number, so that every write can be found again, and a
//! fresh `Idempotency-Key` per write. Each
//! worker sends at most its share of the rate and never more than one request at a time, so
//! the load stays bounded when the stack slows down. Records are appended in the order the
//! requests end. However the demo goes, the load ends by itself after `max_duration`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::http1::Request;
use crate::record::{Kind, Outcome, Record};
use crate::visitor::{Visitor, VisitorConfig};

/// How much load, of which kind.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub readers: usize,
    pub writers: usize,
    /// Reads per second, all readers together.
    pub read_rate: f64,
    /// Writes per second, all writers together.
    pub write_rate: f64,
    /// What a reader asks for.
    pub read_path: String,
    /// Written into every message, so this run's posts are told from any other's (empty:
    /// [`crate::Scenario::run`] makes one from the clock).
    pub run_id: String,
    /// The workers stop by themselves this long after the start, stopped or not.
    pub max_duration: Duration,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            readers: 4,
            writers: 2,
            read_rate: 100.0,
            write_rate: 20.0,
            read_path: "/api/posts?limit=5".into(),
            run_id: String::new(),
            max_duration: Duration::from_secs(30 * 60),
        }
    }
}

/// The records of the running load, shared with whoever watches it.
pub type Records = Arc<Mutex<Vec<Record>>>;

/// A running load; [`Load::stop`] ends it and returns every record.
pub struct Load {
    records: Records,
    stop: Arc<AtomicBool>,
    workers: JoinSet<()>,
}

impl Load {
    /// Starts the workers; record times count from `t0`.
    pub fn start(
        visitor: Arc<VisitorConfig>,
        config: &LoadConfig,
        t0: Instant,
    ) -> anyhow::Result<Self> {
        let records: Records = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = JoinSet::new();
        let mut spawn = |kind: Kind, index: usize, count: usize, rate: f64| -> anyhow::Result<()> {
            if count == 0 || rate <= 0.0 {
                return Ok(());
            }
            let worker = Worker {
                kind,
                index,
                visitor: Visitor::new(Arc::clone(&visitor))?,
                period: Duration::from_secs_f64(count as f64 / rate),
                // Spread the workers' first requests over one period.
                offset: Duration::from_secs_f64(index as f64 / rate),
                read_path: config.read_path.clone(),
                run_id: config.run_id.clone(),
                t0,
                deadline: t0 + config.max_duration,
                records: Arc::clone(&records),
                stop: Arc::clone(&stop),
            };
            workers.spawn(worker.run());
            Ok(())
        };
        for index in 0..config.readers {
            spawn(Kind::Read, index, config.readers, config.read_rate)?;
        }
        for index in 0..config.writers {
            spawn(Kind::Write, index, config.writers, config.write_rate)?;
        }
        Ok(Self {
            records,
            stop,
            workers,
        })
    }

    pub fn records(&self) -> Records {
        Arc::clone(&self.records)
    }

    /// Stops sending; requests in flight finish (bounded by the request timeout).
    pub async fn stop(mut self) -> Vec<Record> {
        self.stop.store(true, Ordering::SeqCst);
        while self.workers.join_next().await.is_some() {}
        std::mem::take(&mut *self.records.lock().expect("records lock"))
    }
}

/// What a non-JSON error answer says: an HTML page's title (the balancer's own 503 page),
/// else the start of the body.
fn said_by_page(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(2048)]);
    let title = text
        .split_once("<title>")
        .and_then(|(_, rest)| rest.split_once("</title>"))
        .map(|(title, _)| title.trim());
    match title {
        Some(title) => format!("page: {title}"),
        None => text.chars().take(120).collect(),
    }
}

struct Worker {
    kind: Kind,
    index: usize,
    visitor: Visitor,
    period: Duration,
    offset: Duration,
    read_path: String,
    run_id: String,
    t0: Instant,
    deadline: Instant,
    records: Records,
    stop: Arc<AtomicBool>,
}

impl Worker {
    async fn run(mut self) {
        let first = tokio::time::Instant::now() + self.offset;
        let mut ticks = tokio::time::interval_at(first, self.period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sequence = 0u64;
        let done =
            |worker: &Self| worker.stop.load(Ordering::SeqCst) || Instant::now() >= worker.deadline;
        while !done(&self) {
            ticks.tick().await;
            if done(&self) {
                break;
            }
            sequence += 1;
            let record = self.one(sequence).await;
            self.records.lock().expect("records lock").push(record);
        }
    }

    async fn one(&mut self, sequence: u64) -> Record {
        let (request, marker) = match self.kind {
            Kind::Read => (Request::get(self.read_path.clone()), None),
            Kind::Write => {
                let message = format!(
                    "failover demo {} writer {} #{sequence}",
                    self.run_id, self.index
                );
                let body = json!({ "name": "foobar-demo", "message": message });
                (Request::post_json("/api/posts", &body), Some(message))
            }
        };
        let sent = Instant::now();
        let answer = self.visitor.send(&request).await;
        let latency = sent.elapsed();
        let mut record = Record {
            kind: self.kind,
            start: sent.duration_since(self.t0),
            latency,
            outcome: Outcome::Error(String::new()),
            web: None,
            database: None,
            post_id: None,
            marker,
            retried: answer.retried,
        };
        match answer.result {
            Ok(response) => {
                let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
                let served_by = &body["served_by"];
                record.web = response
                    .header("x-served-by")
                    .map(str::to_owned)
                    .or_else(|| served_by["web"].as_str().map(str::to_owned));
                record.database = served_by["database"]
                    .as_str()
                    .filter(|node| !node.is_empty())
                    .map(str::to_owned);
                record.outcome = if (200..300).contains(&response.status) {
                    Outcome::Ok(response.status)
                } else {
                    let said = body["detail"]
                        .as_str()
                        .or_else(|| body["error"].as_str())
                        .map(str::to_owned)
                        .unwrap_or_else(|| said_by_page(&response.body));
                    Outcome::Status(response.status, said)
                };
                if self.kind == Kind::Write && record.ok() {
                    record.post_id = body["post"]["id"].as_u64();
                }
            }
            Err(error) => record.outcome = Outcome::Error(error),
        }
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_page_is_named_by_its_title() {
        let page = b"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
            <title>503 Service Unavailable</title></head>\n<body><h1>503</h1></body></html>";
        assert_eq!(said_by_page(page), "page: 503 Service Unavailable");
        assert_eq!(said_by_page(b"upstream gone"), "upstream gone");
        assert_eq!(said_by_page(b"<title>never closed"), "<title>never closed");
        assert_eq!(said_by_page(&[b'x'; 5000]).len(), 120);
        assert_eq!(said_by_page(&[0xff, 0xfe]), "\u{fffd}\u{fffd}");
    }
}
