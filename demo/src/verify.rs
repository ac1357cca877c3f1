//! After the run: is every acknowledged write still there, and where did the writes whose
//! outcome the visitor never learnt (failed POSTs) end up?
//!
//! Asked through the stack, as a visitor would: the run's posts are listed page by page
//! (`GET /api/posts?limit=100`, then each page's `older` link) back to the newest post that
//! existed before the run, and matched by their unique message. An acknowledged write missing
//! from the list is asked for by id, retrying a 404 for a while, because a read may go to a
//! replica that is still catching up. A message stored twice is a write applied twice.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::http1::Request;
use crate::record::Record;
use crate::visitor::Visitor;

/// How long an acknowledged write missing from the list is asked for by id.
const LAG_ALLOWANCE: Duration = Duration::from_secs(10);
/// Most pages listed: bounds the check whatever else writes to the guestbook.
const MAX_PAGES: usize = 2000;

/// What the end-of-run check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    pub acknowledged: usize,
    /// Messages of acknowledged writes that are not stored (or not as sent).
    pub lost: Vec<String>,
    /// Failed POSTs: the client cannot know whether they were stored.
    pub unknown: usize,
    /// ... of which were stored after all.
    pub unknown_stored: usize,
    /// Messages stored more than once.
    pub duplicated: Vec<String>,
}

impl Verification {
    pub fn passed(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty()
    }

    pub fn summary(&self) -> String {
        format!(
            "acknowledged writes {}: lost {} {}; failed writes (unknown outcome) {}: stored \
             anyway {}, not stored {}; stored twice {} {}",
            self.acknowledged,
            self.lost.len(),
            if self.lost.is_empty() { "PASS" } else { "FAIL" },
            self.unknown,
            self.unknown_stored,
            self.unknown - self.unknown_stored,
            self.duplicated.len(),
            if self.duplicated.is_empty() {
                "PASS"
            } else {
                "FAIL"
            },
        )
    }
}

/// The id of the newest post, 0 when there is none: the run's posts are above it.
pub async fn newest_post_id(visitor: &mut Visitor) -> anyhow::Result<u64> {
    let page = get_json(visitor, "/api/posts?limit=1").await?;
    Ok(page["posts"][0]["id"].as_u64().unwrap_or(0))
}

/// Checks the writes among `records`, whose posts all have ids above `before_run`.
pub async fn verify(
    visitor: &mut Visitor,
    records: &[Record],
    before_run: u64,
) -> anyhow::Result<Verification> {
    let writes: Vec<&Record> = records.iter().filter(|r| r.marker.is_some()).collect();
    let markers: HashSet<&str> = writes.iter().filter_map(|r| r.marker.as_deref()).collect();

    // Every post of the run, by message.
    let mut stored: HashMap<String, Vec<u64>> = HashMap::new();
    let mut path = "/api/posts?limit=100".to_owned();
    for _ in 0..MAX_PAGES {
        let page = get_json(visitor, &path).await?;
        let posts = page["posts"].as_array().cloned().unwrap_or_default();
        let mut reached_start = posts.is_empty();
        for post in &posts {
            let id = post["id"].as_u64().unwrap_or(0);
            if id <= before_run {
                reached_start = true;
                continue;
            }
            if let Some(message) = post["message"].as_str().filter(|m| markers.contains(m)) {
                stored.entry(message.to_owned()).or_default().push(id);
            }
        }
        match page["older"].as_str() {
            Some(older) if !reached_start => path = older.to_owned(),
            _ => break,
        }
    }

    let mut result = Verification::default();
    for write in &writes {
        let marker = write.marker.as_deref().unwrap_or_default();
        let found = stored.contains_key(marker);
        if write.ok() {
            result.acknowledged += 1;
            if !found && !stored_by_id(visitor, write.post_id, marker).await? {
                result.lost.push(marker.to_owned());
            }
        } else {
            result.unknown += 1;
            if found {
                result.unknown_stored += 1;
            }
        }
    }
    result.duplicated = stored
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(message, _)| message)
        .collect();
    result.duplicated.sort();
    Ok(result)
}

/// Whether post `id` is stored with `message`, allowing a lagging replica some time.
async fn stored_by_id(
    visitor: &mut Visitor,
    id: Option<u64>,
    message: &str,
) -> anyhow::Result<bool> {
    let Some(id) = id else {
        return Ok(false);
    };
    let deadline = Instant::now() + LAG_ALLOWANCE;
    loop {
        let answer = visitor
            .send(&Request::get(format!("/api/posts/{id}")))
            .await;
        if let Ok(response) = &answer.result {
            if response.status == 200 {
                let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
                return Ok(body["post"]["message"].as_str() == Some(message));
            }
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A GET that must answer 200 with JSON; a few tries, as the stack may still be settling.
async fn get_json(visitor: &mut Visitor, path: &str) -> anyhow::Result<Value> {
    let mut last = String::new();
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        match visitor.send(&Request::get(path)).await.result {
            Ok(response) if response.status == 200 => {
                return serde_json::from_slice(&response.body)
                    .with_context(|| format!("GET {path}: not JSON"));
            }
            Ok(response) => last = format!("status {}", response.status),
            Err(error) => last = error,
        }
    }
    bail!("GET {path}: {last}")
}
