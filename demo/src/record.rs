//! What one request saw, kept for every request of the run: the accounting, the timeline and
//! the verification all read these records and nothing else, so the numbers are the client's.

use std::time::Duration;

/// The longest failure reason kept for the table.
const FAILURE_CHARS: usize = 160;

/// A read (`GET /api/posts`) or a write (`POST /api/posts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Ok(u16),
    /// Any other HTTP status (502, 503 ...), with what the answer said: its JSON `detail` or
    /// `error`, an HTML page's title, else the start of its body.
    Status(u16, String),
    /// No answer: refused everywhere, connection died, timeout, TLS or DNS failure.
    Error(String),
}

/// One request, from the client's side.
#[derive(Debug, Clone)]
pub struct Record {
    pub kind: Kind,
    /// When it was sent, since the start of the run.
    pub start: Duration,
    pub latency: Duration,
    pub outcome: Outcome,
    /// `X-Served-By`, or the answer's `served_by.web`.
    pub web: Option<String>,
    /// The answer's `served_by.database`: the node that ran the statement.
    pub database: Option<String>,
    /// A write's created post id, when it was acknowledged.
    pub post_id: Option<u64>,
    /// A write's unique message, to find it again whatever its outcome.
    pub marker: Option<String>,
    /// The request went a second time, on a new connection (a GET whose connection died).
    pub retried: bool,
}

impl Record {
    pub fn ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    /// Why it failed, in one short line; `None` when it did not.
    pub fn failure(&self) -> Option<String> {
        let text = match &self.outcome {
            Outcome::Ok(_) => return None,
            Outcome::Status(status, said) => format!("{status} {said}"),
            Outcome::Error(error) => error.clone(),
        };
        // One line: an error page's line breaks would break the table.
        let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        Some(line.chars().take(FAILURE_CHARS).collect())
    }

    /// When the answer (or the failure) came, since the start of the run.
    pub fn end(&self) -> Duration {
        self.start + self.latency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_one_bounded_line() {
        let mut record = Record {
            kind: Kind::Read,
            start: Duration::ZERO,
            latency: Duration::ZERO,
            outcome: Outcome::Ok(200),
            web: None,
            database: None,
            post_id: None,
            marker: None,
            retried: false,
        };
        assert_eq!(record.failure(), None);
        record.outcome = Outcome::Status(503, "page: 503 Service\r\n  Unavailable\n".into());
        assert_eq!(
            record.failure().as_deref(),
            Some("503 page: 503 Service Unavailable")
        );
        record.outcome = Outcome::Error("x\n".repeat(500));
        let failure = record.failure().unwrap();
        assert_eq!(failure.chars().count(), FAILURE_CHARS);
        assert!(!failure.contains('\n'));
    }
}
