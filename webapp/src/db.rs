//! The database: one connection pool, the schema, and whether the webapp is ready.
//!
//! The pool is created without connecting, so the web server starts (and serves static files)
//! even when the database is down. [`Database::maintain`] then runs in the background: it
//! applies the migrations as soon as the database answers, retrying every
//! `database.retry_interval` with a log line saying why, and afterwards checks the database at
//! the same interval. `/readyz` is 200 only while the schema is applied and the last check
//! succeeded, so a balancer stops sending traffic to a web server that cannot reach its data.
//!
//! Migrations are embedded in the binary (`webapp/migrations`) and applied under a named lock
//! (`GET_LOCK` with a real timeout, see [`MIGRATION_LOCK`]), so when web-a and web-b start at
//! the same moment one applies them and the other waits, then finds nothing left to do.
//!
//! Every request's database work goes through [`Database::bounded`]: one pooled connection for
//! the whole request (so the db-router can keep a user's reads with their writes), bounded by
//! `acquire_timeout` plus `query_timeout`, and any failure becomes a [`DbError`] that handlers
//! turn into a 503.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use foobar_service::Context;
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::pool::PoolConnection;

use crate::config::DatabaseConfig;
use crate::metrics::Metrics;

static MIGRATOR: Migrator = sqlx::migrate!();

/// The named lock (`GET_LOCK`) held while migrating. sqlx's migrator takes one too, but with
/// a timeout of -1, which MariaDB refuses (it returns NULL and takes no lock, MDEV-4017), and
/// sqlx does not look at the answer: two web servers starting together both migrated, and
/// the second failed on a duplicate key (`tests/guestbook.rs` caught it).
const MIGRATION_LOCK: &str = "foobar_webapp_migrations";
/// How long a web server waits for another one's migrations before it retries.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(30);

/// Why a request could not use the database. Every kind means "try again later" to a visitor.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the database schema is not applied yet")]
    NotReady,
    #[error("no database connection within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the database: {0}")]
    Unavailable(sqlx::Error),
    #[error("database query failed: {0}")]
    Query(sqlx::Error),
}

impl DbError {
    fn kind(&self) -> &'static str {
        match self {
            Self::NotReady => "schema",
            Self::Timeout(_) => "timeout",
            Self::Unavailable(_) => "unavailable",
            Self::Query(_) => "query",
        }
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => Self::Unavailable(e),
            other => Self::Query(other),
        }
    }
}

/// The pool and what the rest of the webapp needs to know about the database. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    pool: MySqlPool,
    schema_applied: Arc<AtomicBool>,
    limit: Duration,
    retry_interval: Duration,
    metrics: Metrics,
}

impl Database {
    /// A pool that connects on first use: creating it never fails because the database is down.
    pub fn new(config: &DatabaseConfig, options: MySqlConnectOptions, metrics: Metrics) -> Self {
        let pool = MySqlPoolOptions::new()
            .max_connections(config.max_connections)
            .min_connections(0)
            .acquire_timeout(config.acquire_timeout)
            // A connection the database dropped (restart, failover) is found out by a ping
            // before a request gets it, not by the request's query.
            .test_before_acquire(true)
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(options);
        Self {
            pool,
            schema_applied: Arc::default(),
            limit: config.acquire_timeout + config.query_timeout,
            retry_interval: config.retry_interval,
            metrics,
        }
    }

    /// Runs one request's database work on one pooled connection, within the time limit.
    pub async fn bounded<T, F, Fut>(&self, work: F) -> Result<T, DbError>
    where
        F: FnOnce(PoolConnection<sqlx::MySql>) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let result = if self.schema_applied.load(Ordering::Relaxed) {
            match tokio::time::timeout(self.limit, async {
                let conn = self.pool.acquire().await?;
                work(conn).await
            })
            .await
            {
                Ok(result) => result.map_err(DbError::from),
                Err(_) => Err(DbError::Timeout(self.limit)),
            }
        } else {
            Err(DbError::NotReady)
        };
        if let Err(e) = &result {
            self.metrics.db_error(e.kind());
            tracing::warn!("{e}");
        }
        result
    }

    /// Applies the migrations, then keeps `ctx.readiness` equal to "the database answers",
    /// until shutdown.
    pub async fn maintain(self, ctx: Context) {
        let mut failures = 0u64;
        loop {
            // Bounded, so a database that hangs mid-migration is retried, not waited on forever.
            let attempt = tokio::time::timeout(2 * MIGRATION_LOCK_WAIT, self.migrate())
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "no progress within {:?}",
                        2 * MIGRATION_LOCK_WAIT
                    ))
                });
            match attempt {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    self.metrics.db_error("schema");
                    tracing::warn!(
                        attempt = failures,
                        "not ready: cannot apply the database schema ({e}); retrying in {:?}",
                        self.retry_interval
                    );
                }
            }
            if !self.pause(&ctx).await {
                return;
            }
        }
        self.schema_applied.store(true, Ordering::Relaxed);
        tracing::info!(
            migrations = MIGRATOR.iter().count(),
            "database schema is up to date; ready"
        );
        set_ready(&ctx, true);

        let mut was_up = true;
        while self.pause(&ctx).await {
            let check =
                tokio::time::timeout(self.limit, sqlx::query("SELECT 1").execute(&self.pool))
                    .await
                    .map_err(|_| format!("no answer within {:?}", self.limit))
                    .and_then(|result| result.map(drop).map_err(|e| e.to_string()));
            match (&check, was_up) {
                (Err(e), true) => {
                    self.metrics.db_error("unavailable");
                    tracing::warn!("not ready: the database does not answer ({e})");
                }
                (Ok(()), false) => tracing::info!("the database answers again; ready"),
                _ => {}
            }
            was_up = check.is_ok();
            set_ready(&ctx, was_up);
        }
    }

    /// Applies the pending migrations while one connection holds [`MIGRATION_LOCK`], so that of
    /// two web servers starting together one migrates and the other then finds nothing to do.
    /// (The migrator works on a second pooled connection: the lock is the database server's,
    /// whichever session of ours holds it.)
    async fn migrate(&self) -> anyhow::Result<()> {
        let mut lock = self.pool.acquire().await?;
        let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
            .bind(MIGRATION_LOCK)
            .bind(MIGRATION_LOCK_WAIT.as_secs())
            .fetch_one(&mut *lock)
            .await?;
        anyhow::ensure!(
            locked == Some(1),
            "another web server has held the migration lock for {MIGRATION_LOCK_WAIT:?}"
        );
        let result = MIGRATOR.run(&self.pool).await;
        // Should this fail, the lock still ends with the session.
        sqlx::query("SELECT RELEASE_LOCK(?)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *lock)
            .await?;
        Ok(result?)
    }

    /// Waits one retry interval; false when shutdown came first.
    async fn pause(&self, ctx: &Context) -> bool {
        tokio::select! {
            () = tokio::time::sleep(self.retry_interval) => true,
            () = ctx.shutdown.cancelled() => false,
        }
    }
}

/// Sets readiness, but not back to true once shutdown has begun (the shared signal handler
/// clears it, and this task must not undo that).
fn set_ready(ctx: &Context, ready: bool) {
    ctx.readiness.set(ready);
    if ctx.shutdown.is_cancelled() {
        ctx.readiness.set(false);
    }
}
