//! The guestbook's data: what a valid post is, and the SQL that reads and writes posts.
//!
//! Validation lives here, once, so the HTML form and the JSON API refuse the same things
//! with the same words; so does [`create`], which stores a post once per idempotency key. Every read also returns `@@hostname` of the node that executed it,
//! taken from the same statement (not a second query, which a router could send elsewhere),
//! so a page can say truthfully which database node served it.

use serde::{Deserialize, Serialize};
use sqlx::{MySqlConnection, Row};

use crate::config::GuestbookConfig;
use crate::db::{Database, DbError};
use crate::idempotency::IdempotencyKey;

/// A stored post, as pages and the API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Post {
    pub id: u64,
    pub name: String,
    pub message: String,
    /// UTC, ISO 8601 (`2026-11-23T09:00:00Z`).
    pub created_at: String,
}

/// What a visitor sent, before validation. Missing fields are `None`, so that "name is
/// required" comes from [`validate`] rather than from a deserializer's message.
#[derive(Debug, Default, Deserialize)]
pub struct Submission {
    pub name: Option<String>,
    pub message: Option<String>,
}

/// A post that passed [`validate`]: trimmed, within the limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPost {
    pub name: String,
    pub message: String,
}

/// One reason a submission was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

/// Checks a submission against the limits; all problems at once, in field order.
pub fn validate(
    submission: &Submission,
    limits: &GuestbookConfig,
) -> Result<NewPost, Vec<FieldError>> {
    let mut errors = Vec::new();
    let name = check_field(
        "name",
        submission.name.as_deref(),
        limits.max_name_chars,
        false,
        &mut errors,
    );
    let message = check_field(
        "message",
        submission.message.as_deref(),
        limits.max_message_chars,
        true,
        &mut errors,
    );
    if errors.is_empty() {
        Ok(NewPost { name, message })
    } else {
        Err(errors)
    }
}

fn check_field(
    field: &'static str,
    value: Option<&str>,
    max_chars: usize,
    multiline: bool,
    errors: &mut Vec<FieldError>,
) -> String {
    let value = value.unwrap_or("").trim();
    let chars = value.chars().count();
    let problem = if chars == 0 {
        Some(format!("{field} is required"))
    } else if chars > max_chars {
        Some(format!(
            "{field} is too long: {chars} characters, at most {max_chars}"
        ))
    } else if value
        .chars()
        .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t')))
    {
        Some(if multiline {
            format!("{field} contains control characters")
        } else {
            format!("{field} must be one line, without control characters")
        })
    } else {
        None
    };
    if let Some(message) = problem {
        errors.push(FieldError { field, message });
    }
    value.to_owned()
}

/// A post's `created_at` column as the queries give it.
macro_rules! created_at {
    () => {
        "CAST(DATE_FORMAT(created_at, '%Y-%m-%dT%H:%i:%sZ') AS CHAR) AS created_at"
    };
}

/// The row that comes back even when no post does: the node's name and no post. Its id is
/// typed: a bare NULL would make the union's id column DECIMAL, which is not a u64.
macro_rules! anchor {
    () => {
        "UNION ALL (SELECT CAST(@@hostname AS CHAR), CAST(NULL AS UNSIGNED), NULL, NULL, NULL)"
    };
}

/// Posts, and the database node that read them.
#[derive(Debug)]
pub struct Page {
    /// Newest first.
    pub posts: Vec<Post>,
    /// Whether posts older than the last one exist.
    pub has_older: bool,
    /// `@@hostname` of the node that answered the read.
    pub node: String,
}

impl Page {
    /// The `before` cursor of the next (older) page, if there is one.
    pub fn older_cursor(&self) -> Option<u64> {
        self.has_older
            .then(|| self.posts.last().map(|post| post.id))
            .flatten()
    }
}

/// The newest `limit` posts with an id below `before` (all when `None`).
///
/// The anchor row (the `UNION ALL`'s second part, no post in it) makes the statement return
/// a row even when there are no posts, so the node's name always comes back with the read
/// that it served. A union with no outer ORDER BY needs no temporary table; the join this
/// replaced (`(SELECT 1) LEFT JOIN (posts subquery) ... ORDER BY`) made MariaDB 10.11 build
/// three per page view: 1.5 to 2.5 ms of the replica's time against 0.05 to 0.07 ms now, by
/// 3000 runs of each through the `mariadb` client in the replica's container (2026-12-06).
/// The rows are put in order here, not by the server (an outer ORDER BY brings the
/// temporary table back).
pub async fn latest(
    conn: &mut MySqlConnection,
    before: Option<u64>,
    limit: u32,
) -> Result<Page, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "(SELECT CAST(@@hostname AS CHAR) AS node, id, name, message, ",
        created_at!(),
        " FROM posts WHERE id < ? ORDER BY id DESC LIMIT ?) ",
        anchor!()
    ))
    .bind(before.unwrap_or(u64::MAX))
    .bind(limit + 1)
    .fetch_all(conn)
    .await?;
    let node = match rows.first() {
        Some(row) => row.try_get("node")?,
        None => String::new(),
    };
    let mut posts = rows
        .iter()
        .map(post_from_row)
        .filter_map(Result::transpose)
        .collect::<Result<Vec<_>, _>>()?;
    posts.sort_unstable_by_key(|post| std::cmp::Reverse(post.id));
    let has_older = posts.len() > limit as usize;
    posts.truncate(limit as usize);
    Ok(Page {
        posts,
        has_older,
        node,
    })
}

/// One post by id (None when there is no such post), and the node that read it.
pub async fn find(
    conn: &mut MySqlConnection,
    id: u64,
) -> Result<(Option<Post>, String), sqlx::Error> {
    let rows = sqlx::query(concat!(
        "(SELECT CAST(@@hostname AS CHAR) AS node, id, name, message, ",
        created_at!(),
        " FROM posts WHERE id = ?) ",
        anchor!()
    ))
    .bind(id)
    .fetch_all(conn)
    .await?;
    let node = match rows.first() {
        Some(row) => row.try_get("node")?,
        None => String::new(),
    };
    let post = rows.iter().map(post_from_row).find_map(Result::transpose);
    Ok((post.transpose()?, node))
}

/// What [`create`] did.
#[derive(Debug)]
pub enum Created {
    /// The post is stored now.
    New { post: Post, node: String },
    /// The key's post was stored by an earlier request (a repeat, retry or double submit):
    /// nothing new is stored, and this is that post.
    Repeated { post: Post, node: String },
    /// The key already belongs to post `id`, whose name or message differ: the key was reused
    /// for another post, which is not stored.
    KeyReused { id: u64 },
}

/// [`create`] through `db`: sent again through the next database URL only with an idempotency
/// key (without one, a retry could store the post twice).
pub async fn save(
    db: &Database,
    post: &NewPost,
    key: Option<&IdempotencyKey>,
) -> Result<Created, DbError> {
    db.write(key.is_some(), |mut conn| async move {
        create(&mut conn, post, key).await
    })
    .await
}

/// Stores a post (once per idempotency key) and reads it back, with the node that did.
///
/// The insert claims the key: `idempotency_key` is a unique column, so a concurrent insert of
/// the same key waits for the first to commit and then fails with a duplicate key (1062). The
/// insert is a statement of its own (autocommit, no open transaction): once sent, it commits
/// or fails on the server by itself, so a web server that stalls or dies mid-request leaves
/// no lock behind for the retried request to wait on.
///
/// On a duplicate key, the earlier post is read with `LOCK IN SHARE MODE`: a locking read sees
/// the newest committed row, and db-router's classifier sends it to the primary
/// (db-router/src/classifier.rs: a locking clause makes a SELECT a write), never to a replica
/// that may not have the row yet, which is where a plain read would go (the failed insert
/// gave the session no write to wait for). A new post is read back the same way.
pub async fn create(
    conn: &mut MySqlConnection,
    post: &NewPost,
    key: Option<&IdempotencyKey>,
) -> Result<Created, sqlx::Error> {
    let inserted =
        sqlx::query("INSERT INTO posts (name, message, idempotency_key) VALUES (?, ?, ?)")
            .bind(&post.name)
            .bind(&post.message)
            .bind(key.map(IdempotencyKey::as_str))
            .execute(&mut *conn)
            .await;
    let key = match (inserted, key) {
        (Ok(done), _) => {
            let (post, node) =
                read_back(conn, READ_BACK_BY_ID, done.last_insert_id().to_string()).await?;
            return Ok(Created::New { post, node });
        }
        (Err(sqlx::Error::Database(e)), Some(key))
            if e.kind() == sqlx::error::ErrorKind::UniqueViolation =>
        {
            key
        }
        (Err(e), _) => return Err(e),
    };
    let (stored, node) = read_back(conn, READ_BACK_BY_KEY, key.as_str().to_owned()).await?;
    Ok(
        if stored.name == post.name && stored.message == post.message {
            Created::Repeated { post: stored, node }
        } else {
            Created::KeyReused { id: stored.id }
        },
    )
}

/// A stored post read back by id or by idempotency key, with `LOCK IN SHARE MODE`: db-router
/// sends a locking read to the primary, which ran the write, so the row is there whatever the
/// replica's lag, and `node` names the node that took the write (the demo's timeline shows a
/// failover by it).
macro_rules! read_back_by {
    ($column:literal) => {
        concat!(
            "SELECT CAST(@@hostname AS CHAR) AS node, id, name, message, ",
            created_at!(),
            " FROM posts WHERE ",
            $column,
            " = ? LOCK IN SHARE MODE"
        )
    };
}
const READ_BACK_BY_ID: &str = read_back_by!("id");
const READ_BACK_BY_KEY: &str = read_back_by!("idempotency_key");

/// Runs one of the `READ_BACK_BY_*` statements for `value`.
async fn read_back(
    conn: &mut MySqlConnection,
    statement: &'static str,
    value: String,
) -> Result<(Post, String), sqlx::Error> {
    let row = sqlx::query(statement)
        .bind(value)
        .fetch_one(&mut *conn)
        .await?;
    let post = post_from_row(&row)?.ok_or(sqlx::Error::RowNotFound)?;
    Ok((post, row.try_get("node")?))
}

/// The post in a row of the queries above; None for the anchored queries' empty row.
fn post_from_row(row: &sqlx::mysql::MySqlRow) -> Result<Option<Post>, sqlx::Error> {
    let Some(id) = row.try_get::<Option<u64>, _>("id")? else {
        return Ok(None);
    };
    Ok(Some(Post {
        id,
        name: row.try_get("name")?,
        message: row.try_get("message")?,
        created_at: row.try_get("created_at")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(name: Option<&str>, message: Option<&str>) -> Result<NewPost, Vec<FieldError>> {
        let submission = Submission {
            name: name.map(str::to_owned),
            message: message.map(str::to_owned),
        };
        validate(&submission, &GuestbookConfig::default())
    }

    fn fields(errors: &[FieldError]) -> Vec<(&str, &str)> {
        errors
            .iter()
            .map(|e| (e.field, e.message.as_str()))
            .collect()
    }

    #[test]
    fn a_good_post_is_trimmed() {
        let post = submit(Some("  Ada "), Some(" Hello,\nworld \n")).unwrap();
        assert_eq!(post.name, "Ada");
        assert_eq!(post.message, "Hello,\nworld");
    }

    #[test]
    fn missing_and_blank_fields_are_required() {
        let errors = submit(None, Some("   ")).unwrap_err();
        assert_eq!(
            fields(&errors),
            [
                ("name", "name is required"),
                ("message", "message is required")
            ]
        );
    }

    #[test]
    fn lengths_are_counted_in_characters() {
        let limits = GuestbookConfig::default();
        // 40 two-byte characters fit; 41 do not.
        assert!(submit(Some(&"é".repeat(limits.max_name_chars)), Some("x")).is_ok());
        let errors = submit(Some(&"é".repeat(limits.max_name_chars + 1)), Some("x")).unwrap_err();
        assert_eq!(
            fields(&errors),
            [("name", "name is too long: 41 characters, at most 40")]
        );
        let errors = submit(Some("Ada"), Some(&"x".repeat(501))).unwrap_err();
        assert_eq!(
            fields(&errors),
            [(
                "message",
                "message is too long: 501 characters, at most 500"
            )]
        );
    }

    #[test]
    fn control_characters_are_refused() {
        let errors = submit(Some("Ada\nLovelace"), Some("bell\u{7}")).unwrap_err();
        assert_eq!(
            fields(&errors),
            [
                ("name", "name must be one line, without control characters"),
                ("message", "message contains control characters"),
            ]
        );
    }
}
