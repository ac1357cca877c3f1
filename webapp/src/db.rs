//! The database: a connection pool per database URL, the schema, and whether the webapp is
//! ready.
//!
//! The pools are created without connecting, so the web server starts (and serves static
//! files) even when the database is down. [`Database::maintain`] then runs in the background:
//! it applies the migrations as soon as the database answers, retrying every
//! `database.retry_interval` with a log line saying why, and afterwards checks every URL at the
//! same interval. `/readyz` is 200 only while the schema is applied and the last check got an
//! answer through at least one URL, so a balancer stops sending traffic to a web server that
//! cannot reach its data.
//!
//! **Fallback.** `database.url` (in the stack: the db-router beside this web server) comes
//! first, then `database.fallback_urls` (the other router). A request takes a connection
//! through the first URL in use; when connecting through it fails (refused, unreachable, no
//! connection within `acquire_timeout`: nothing of the request was sent yet), the URL is
//! marked unreachable and the request goes on to the next. Requests skip a marked URL; the
//! background check keeps trying it every `retry_interval` and puts it back in use as soon as
//! it answers, so a dead router costs the requests in flight when it died one
//! `acquire_timeout` each, not every request. Should every URL be marked, a request tries them
//! all anyway. A failure after the connection was obtained (an SQL error, a query timeout) is
//! never retried elsewhere: the statement may have run.
//!
//! Migrations are embedded in the binary (`webapp/migrations`) and applied under a named lock
//! (`GET_LOCK` with a real timeout, see [`MIGRATION_LOCK`]), so when web-a and web-b start at
//! the same moment one applies them and the other waits, then finds nothing left to do.
//!
//! Every request's database work goes through [`Database::bounded`]: one pooled connection for
//! the whole request (so the db-router can keep a user's reads with their writes), bounded by
//! `acquire_timeout` per URL tried plus `query_timeout`, and any failure becomes a [`DbError`]
//! that handlers turn into a 503.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use foobar_service::Context;
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::pool::PoolConnection;

use crate::config::DatabaseConfig;
use crate::metrics::{Metrics, UrlMetrics};

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
    #[error("no answer from the database within {0:?}")]
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

/// One database URL: its pool, and whether requests skip it.
struct Target {
    /// `host:port`, for logs and metrics (never the password).
    name: String,
    pool: MySqlPool,
    /// Connecting through it failed, and the background check has not got an answer since.
    unreachable: AtomicBool,
    metrics: UrlMetrics,
}

impl Target {
    fn is_unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// Counts a failed connect; the first one since the URL was in use is logged.
    fn mark_unreachable(&self, e: &sqlx::Error, next: Option<&Target>) {
        self.metrics.connect_failures.inc();
        if !self.unreachable.swap(true, Ordering::Relaxed) {
            self.metrics.in_use.set(0);
            match next {
                Some(next) => tracing::warn!(
                    "cannot connect through database URL {} ({e}); using {} until it answers again",
                    self.name,
                    next.name
                ),
                None => tracing::warn!("cannot connect through database URL {} ({e})", self.name),
            }
        }
    }

    fn mark_reachable(&self) {
        if self.unreachable.swap(false, Ordering::Relaxed) {
            self.metrics.in_use.set(1);
            tracing::info!("database URL {} answers again; back in use", self.name);
        }
    }

    /// The background check of this URL: connect (within the pool's `acquire_timeout`, which
    /// alone decides whether the URL is reachable) and `SELECT 1` (within `limit`).
    async fn check(&self, limit: Duration) -> Result<(), String> {
        let mut conn = match self.pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                self.mark_unreachable(&e, None);
                return Err(format!("{}: {e}", self.name));
            }
        };
        self.mark_reachable();
        match tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(&mut *conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{}: {e}", self.name)),
            Err(_) => Err(format!("{}: no answer within {limit:?}", self.name)),
        }
    }
}

/// The pools and what the rest of the webapp needs to know about the database. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    /// `database.url`, then `database.fallback_urls`: never empty.
    targets: Arc<[Target]>,
    schema_applied: Arc<AtomicBool>,
    query_timeout: Duration,
    retry_interval: Duration,
    metrics: Metrics,
}

impl Database {
    /// A pool per URL (`options`, in order; at least one) that connects on first use: creating
    /// it never fails because the database is down.
    pub fn new(
        config: &DatabaseConfig,
        options: Vec<MySqlConnectOptions>,
        metrics: Metrics,
    ) -> Self {
        assert!(!options.is_empty(), "at least one database URL");
        let targets = options
            .into_iter()
            .map(|options| {
                let name = format!("{}:{}", options.get_host(), options.get_port());
                let pool = MySqlPoolOptions::new()
                    .max_connections(config.max_connections)
                    .min_connections(0)
                    .acquire_timeout(config.acquire_timeout)
                    // A connection the database dropped (restart, failover) is found out by a
                    // ping before a request gets it, not by the request's query; a ping that
                    // hangs (the router's address vanished) counts against acquire_timeout.
                    .test_before_acquire(true)
                    .idle_timeout(Duration::from_secs(60))
                    .connect_lazy_with(options);
                Target {
                    metrics: metrics.database_url(&name),
                    name,
                    pool,
                    unreachable: AtomicBool::new(false),
                }
            })
            .collect();
        Self {
            targets,
            schema_applied: Arc::default(),
            query_timeout: config.query_timeout,
            retry_interval: config.retry_interval,
            metrics,
        }
    }

    /// Runs one request's database work on one pooled connection, through the first URL that
    /// gives one, within the time limits.
    pub async fn bounded<T, F, Fut>(&self, work: F) -> Result<T, DbError>
    where
        F: FnOnce(PoolConnection<sqlx::MySql>) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let result = if self.schema_applied.load(Ordering::Relaxed) {
            match self.connect().await {
                Ok((target, conn)) => {
                    match tokio::time::timeout(self.query_timeout, work(conn)).await {
                        Ok(Ok(value)) => Ok(value),
                        Ok(Err(e)) => {
                            let e = DbError::from(e);
                            // The connection died under the statement (the router went away):
                            // later requests go through the next URL until this one answers
                            // the background check again.
                            if let DbError::Unavailable(cause) = &e {
                                target.mark_unreachable(cause, None);
                            }
                            Err(e)
                        }
                        Err(_) => Err(DbError::Timeout(self.query_timeout)),
                    }
                }
                Err(e) => Err(DbError::from(e)),
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

    /// [`Self::bounded`] for work that only reads: when the connection dies under it, it runs
    /// once more through the next URL (the failed one is marked unreachable by then). A read
    /// changes nothing, so running it twice is safe; a write is never repeated this way.
    pub async fn read<T, F, Fut>(&self, work: F) -> Result<T, DbError>
    where
        F: Fn(PoolConnection<sqlx::MySql>) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        match self.bounded(&work).await {
            Err(DbError::Unavailable(_)) if self.targets.len() > 1 => self.bounded(&work).await,
            done => done,
        }
    }

    /// A connection through the first URL in use that gives one (every URL, in order, when all
    /// are marked unreachable), and that URL; else the last URL's error.
    async fn connect(&self) -> Result<(&Target, PoolConnection<sqlx::MySql>), sqlx::Error> {
        let all_unreachable = self.targets.iter().all(Target::is_unreachable);
        let candidates: Vec<&Target> = self
            .targets
            .iter()
            .filter(|target| all_unreachable || !target.is_unreachable())
            .collect();
        let mut last_error = None;
        for (i, target) in candidates.iter().enumerate() {
            match target.pool.acquire().await {
                Ok(conn) => {
                    target.metrics.served.inc();
                    return Ok((target, conn));
                }
                Err(e) => {
                    target.mark_unreachable(&e, candidates.get(i + 1).copied());
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or(sqlx::Error::PoolTimedOut))
    }

    /// Applies the migrations, then keeps `ctx.readiness` equal to "the database answers
    /// through at least one URL", and each URL in use or skipped, until shutdown.
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
            let checks = futures_util::future::join_all(
                self.targets
                    .iter()
                    .map(|target| target.check(self.query_timeout)),
            )
            .await;
            let up = checks.iter().any(Result::is_ok);
            match (up, was_up) {
                (false, true) => {
                    self.metrics.db_error("unavailable");
                    let errors: Vec<String> = checks.into_iter().filter_map(Result::err).collect();
                    tracing::warn!(
                        "not ready: the database does not answer ({})",
                        errors.join("; ")
                    );
                }
                (true, false) => tracing::info!("the database answers again; ready"),
                _ => {}
            }
            was_up = up;
            set_ready(&ctx, was_up);
        }
    }

    /// Applies the pending migrations while one connection holds [`MIGRATION_LOCK`], so that of
    /// two web servers starting together one migrates and the other then finds nothing to do.
    /// (The migrator works on a second connection of the same URL's pool: the lock is the
    /// database server's, whichever session of ours holds it.)
    async fn migrate(&self) -> anyhow::Result<()> {
        let (target, mut lock) = self.connect().await?;
        let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
            .bind(MIGRATION_LOCK)
            .bind(MIGRATION_LOCK_WAIT.as_secs())
            .fetch_one(&mut *lock)
            .await?;
        anyhow::ensure!(
            locked == Some(1),
            "another web server has held the migration lock for {MIGRATION_LOCK_WAIT:?}"
        );
        let result = MIGRATOR.run(&target.pool).await;
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
