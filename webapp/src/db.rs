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
//! first, then `database.fallback_urls` (the other router). A request tries the URLs in use in
//! order. Each try through one URL ends one of these ways ([`Attempt`], counted in
//! `foobar_webapp_db_attempts_total{url, outcome}`):
//!
//! - *busy*: all `max_connections` of the URL's pool stayed in use for `acquire_timeout`. The
//!   pool is busy, not the router dead: the URL stays in use and the request tries the next.
//!   A semaphore in front of sqlx's pool tells the two apart: a request first waits for a
//!   place there (busy), then, holding one, the pool has an idle connection or room for a new
//!   one, so a failure of sqlx's acquire is the router's (sqlx says `PoolTimedOut` for both).
//! - *unreachable*: no connection opened, or an idle one failed its ping, within
//!   `connect_timeout` (refused, an address gone, a frozen router whose kernel accepts TCP but
//!   which never greets). Nothing of the request was sent: it tries the next URL.
//! - *timeout* or *broken*: the work got no answer within `read_timeout` (a read) or
//!   `query_timeout` (a write), or its connection died. The statement may have run, so only a
//!   read, or a write that carries an idempotency key (stored once whatever runs twice,
//!   [`crate::posts::create`]), runs again through the next URL; any other write gets 503.
//!   A connection given up on is closed, never returned to the pool (sqlx would ping it
//!   first, which on a frozen router waits until it resumes, holding the pool's place).
//!
//! An unreachable, timed-out or broken URL is marked, and requests skip it; the background
//! check, on a connection of its own, tries it every `retry_interval` and puts it back in use
//! as soon as it answers, so a frozen router costs the requests in flight one timeout each,
//! not every request. Should every URL be marked, a request tries them all anyway.
//!
//! Migrations are embedded in the binary (`webapp/migrations`) and applied under a named lock
//! (`GET_LOCK` with a real timeout, see [`MIGRATION_LOCK`]), so when web-a and web-b start at
//! the same moment one applies them and the other waits, then finds nothing left to do.
//!
//! Every request's database work goes through [`Database::read`] or [`Database::write`]: one
//! pooled connection for the whole request (so the db-router can keep a user's reads with
//! their writes), every wait bounded, and any failure a [`DbError`] that handlers turn into a
//! 503.

use std::fmt::Display;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use foobar_service::Context;
use sqlx::ConnectOptions;
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::pool::PoolConnection;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use crate::config::DatabaseConfig;
use crate::metrics::{Attempt, Metrics, UrlMetrics};

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
    #[error("every database connection stayed in use for {0:?}")]
    Busy(Duration),
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
            Self::Busy(_) => "busy",
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

/// A pooled connection lent to one request's work (it derefs to the connection). Returned to
/// the pool when the work is done; closed instead when the work was given up mid-statement.
pub struct Lease {
    conn: Option<PoolConnection<sqlx::MySql>>,
    /// Set before the work's future is dropped unfinished (its time ran out).
    abandoned: Arc<AtomicBool>,
    /// The place in the URL's pool; given back after the connection.
    _place: OwnedSemaphorePermit,
}

impl Deref for Lease {
    type Target = MySqlConnection;

    fn deref(&self) -> &MySqlConnection {
        self.conn.as_ref().expect("held until drop")
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut MySqlConnection {
        self.conn.as_mut().expect("held until drop")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.abandoned.load(Ordering::Relaxed) {
            // Detached and dropped: the socket is closed at once and the pool may open a
            // replacement; nothing waits on a router that does not answer.
            if let Some(conn) = self.conn.take() {
                drop(conn.detach());
            }
        }
    }
}

/// One database URL: its pool, and whether requests skip it.
struct Target {
    /// `host:port`, for logs and metrics (never the password).
    name: String,
    options: MySqlConnectOptions,
    pool: MySqlPool,
    /// One permit per pooled connection: waiting here is a busy pool, not a failed router.
    places: Arc<Semaphore>,
    /// The background check's own connection, outside the pool (a busy pool does not delay
    /// the check, and the check's verdict is the router's alone).
    probe: Mutex<Option<MySqlConnection>>,
    /// The URL failed a request, and the background check has not got an answer since.
    unreachable: AtomicBool,
    metrics: UrlMetrics,
}

impl Target {
    fn is_unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// Counts a failure of the router behind this URL; the first one since the URL was in use
    /// is logged.
    fn mark_unreachable(&self, why: impl Display, next: Option<&Target>) {
        self.metrics.connect_failures.inc();
        if !self.unreachable.swap(true, Ordering::Relaxed) {
            self.metrics.in_use.set(0);
            match next {
                Some(next) => tracing::warn!(
                    "database URL {} failed ({why}); using {} until it answers again",
                    self.name,
                    next.name
                ),
                None => tracing::warn!("database URL {} failed ({why})", self.name),
            }
        }
    }

    fn mark_reachable(&self) {
        if self.unreachable.swap(false, Ordering::Relaxed) {
            self.metrics.in_use.set(1);
            tracing::info!("database URL {} answers again; back in use", self.name);
        }
    }

    /// The background check of this URL: `SELECT 1` on the check's own connection (opened
    /// within `connect_timeout` when there is none), answered within `limit`. An answer, even
    /// an SQL error, puts the URL back in use; no answer marks it.
    async fn check(&self, connect_timeout: Duration, limit: Duration) -> Result<(), String> {
        let mut probe = self.probe.lock().await;
        if probe.is_none() {
            match tokio::time::timeout(connect_timeout, self.options.connect()).await {
                Ok(Ok(conn)) => *probe = Some(conn),
                Ok(Err(e)) => {
                    self.mark_unreachable(&e, None);
                    return Err(format!("{}: {e}", self.name));
                }
                Err(_) => {
                    let why = format!("no connection within {connect_timeout:?}");
                    self.mark_unreachable(&why, None);
                    return Err(format!("{}: {why}", self.name));
                }
            }
        }
        let conn = probe.as_mut().expect("opened above");
        let answer = tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(conn)).await;
        let failure = match answer {
            Ok(Ok(_)) => {
                self.mark_reachable();
                return Ok(());
            }
            Ok(Err(e)) => match DbError::from(e) {
                DbError::Unavailable(e) => e.to_string(),
                other => {
                    self.mark_reachable();
                    return Err(format!("{}: {other}", self.name));
                }
            },
            Err(_) => format!("no answer within {limit:?}"),
        };
        *probe = None;
        self.mark_unreachable(&failure, None);
        Err(format!("{}: {failure}", self.name))
    }
}

/// The pools and what the rest of the webapp needs to know about the database. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    /// `database.url`, then `database.fallback_urls`: never empty.
    targets: Arc<[Target]>,
    schema_applied: Arc<AtomicBool>,
    acquire_timeout: Duration,
    connect_timeout: Duration,
    read_timeout: Duration,
    query_timeout: Duration,
    retry_interval: Duration,
    metrics: Metrics,
}

/// Whether a request's work may run a second time, through the next URL, once it may have run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// A read, or a write with an idempotency key: running it twice stores nothing twice.
    Safe,
    /// A write without a key: sent once at most.
    Never,
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
                    // A request holding a place waits here only for connecting, or for the
                    // ping of an idle connection: the router's part.
                    .acquire_timeout(config.connect_timeout)
                    // A connection the database dropped (restart, failover) is found out by a
                    // ping before a request gets it, not by the request's query.
                    .test_before_acquire(true)
                    .idle_timeout(Duration::from_secs(60))
                    .connect_lazy_with(options.clone());
                Target {
                    metrics: metrics.database_url(&name),
                    name,
                    options,
                    pool,
                    places: Arc::new(Semaphore::new(config.max_connections as usize)),
                    probe: Mutex::new(None),
                    unreachable: AtomicBool::new(false),
                }
            })
            .collect();
        Self {
            targets,
            schema_applied: Arc::default(),
            acquire_timeout: config.acquire_timeout,
            connect_timeout: config.connect_timeout,
            read_timeout: config.read_timeout,
            query_timeout: config.query_timeout,
            retry_interval: config.retry_interval,
            metrics,
        }
    }

    /// Runs work that only reads, within `read_timeout` per URL tried. When it gets no answer
    /// or its connection dies, it runs again through the next URL: a read changes nothing.
    pub async fn read<T, F, Fut>(&self, work: F) -> Result<T, DbError>
    where
        F: Fn(Lease) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        self.run(Repeat::Safe, self.read_timeout, work).await
    }

    /// Runs work that writes, within `query_timeout`. With an idempotency key (`idempotent`)
    /// it runs again through the next URL as a read does; without one it is never sent twice.
    pub async fn write<T, F, Fut>(&self, idempotent: bool, work: F) -> Result<T, DbError>
    where
        F: Fn(Lease) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let repeat = if idempotent {
            Repeat::Safe
        } else {
            Repeat::Never
        };
        self.run(repeat, self.query_timeout, work).await
    }

    /// One request's database work on one pooled connection, through the first URL in use
    /// that answers it, each step within its time limit (see the module's documentation).
    async fn run<T, F, Fut>(&self, repeat: Repeat, limit: Duration, work: F) -> Result<T, DbError>
    where
        F: Fn(Lease) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let result = if self.schema_applied.load(Ordering::Relaxed) {
            self.try_each(repeat, limit, work).await
        } else {
            Err(DbError::NotReady)
        };
        if let Err(e) = &result {
            self.metrics.db_error(e.kind());
            tracing::warn!("{e}");
        }
        result
    }

    async fn try_each<T, F, Fut>(
        &self,
        repeat: Repeat,
        limit: Duration,
        work: F,
    ) -> Result<T, DbError>
    where
        F: Fn(Lease) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let candidates = self.candidates();
        let mut last_error = DbError::Busy(self.acquire_timeout);
        for (i, target) in candidates.iter().enumerate() {
            let next = candidates.get(i + 1).copied();
            let lease = match self.lease(target, next).await {
                Ok(lease) => lease,
                Err(e) => {
                    last_error = e;
                    continue;
                }
            };
            let abandoned = Arc::clone(&lease.abandoned);
            let running = std::pin::pin!(work(lease));
            let failure = match tokio::time::timeout(limit, running).await {
                Ok(Ok(value)) => {
                    target.metrics.attempt(Attempt::Answered);
                    return Ok(value);
                }
                Ok(Err(e)) => match DbError::from(e) {
                    DbError::Unavailable(cause) => {
                        target.metrics.attempt(Attempt::Broken);
                        target.mark_unreachable(&cause, next);
                        DbError::Unavailable(cause)
                    }
                    answered => {
                        target.metrics.attempt(Attempt::Answered);
                        return Err(answered);
                    }
                },
                Err(_) => {
                    // Set before `running` is dropped (at the end of this iteration): the
                    // lease inside closes its connection instead of returning it.
                    abandoned.store(true, Ordering::Relaxed);
                    target.metrics.attempt(Attempt::Timeout);
                    target.mark_unreachable(format!("no answer within {limit:?}"), next);
                    DbError::Timeout(limit)
                }
            };
            if repeat == Repeat::Never {
                return Err(failure);
            }
            last_error = failure;
        }
        Err(last_error)
    }

    /// The URLs a request tries, in order: those in use, or every one when none is.
    fn candidates(&self) -> Vec<&Target> {
        let all_unreachable = self.targets.iter().all(Target::is_unreachable);
        self.targets
            .iter()
            .filter(|target| all_unreachable || !target.is_unreachable())
            .collect()
    }

    /// A connection through `target`: a place in its pool within `acquire_timeout` (else
    /// busy, and the URL stays in use), then a connection within `connect_timeout` (else the
    /// URL is marked, `next` named in the log).
    async fn lease(&self, target: &Target, next: Option<&Target>) -> Result<Lease, DbError> {
        let place = tokio::time::timeout(
            self.acquire_timeout,
            Arc::clone(&target.places).acquire_owned(),
        )
        .await;
        let Ok(Ok(place)) = place else {
            target.metrics.attempt(Attempt::Busy);
            return Err(DbError::Busy(self.acquire_timeout));
        };
        match target.pool.acquire().await {
            Ok(conn) => {
                target.metrics.served.inc();
                Ok(Lease {
                    conn: Some(conn),
                    abandoned: Arc::default(),
                    _place: place,
                })
            }
            Err(e) => {
                target.metrics.attempt(Attempt::Unreachable);
                let why = match &e {
                    sqlx::Error::PoolTimedOut => {
                        format!("no connection within {:?}", self.connect_timeout)
                    }
                    other => other.to_string(),
                };
                target.mark_unreachable(format!("cannot connect: {why}"), next);
                Err(DbError::Unavailable(e))
            }
        }
    }

    /// A connection through the first URL that gives one, and that URL (for the migrator).
    async fn first_lease(&self) -> Result<(&Target, Lease), DbError> {
        let candidates = self.candidates();
        let mut last_error = DbError::Busy(self.acquire_timeout);
        for (i, target) in candidates.iter().enumerate() {
            match self.lease(target, candidates.get(i + 1).copied()).await {
                Ok(lease) => return Ok((target, lease)),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
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
                    .map(|target| target.check(self.connect_timeout, self.read_timeout)),
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
        let (target, mut lock) = self.first_lease().await?;
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
