//! What the monitor does to nodes: promote a replica, finish a promotion, fence a node, and
//! rejoin a fenced node as a replica of the primary.
//!
//! Promotion is idempotent and serialised on the node being promoted: `GET_LOCK` there (two
//! routers may decide at the same moment), then the promotion record is read again, and a
//! record at the same or a higher epoch is adopted instead of promoting a second time. The
//! steps are ordered so that a router dying half-way leaves a state the next check resumes:
//!
//! 1. `STOP SLAVE IO_THREAD`: nothing more arrives from the old primary. It returns once the
//!    IO thread has stopped, which it does between reconnect attempts: an attempt in progress
//!    (a name lookup of the dead primary, a connect) is waited for, so the database image
//!    bounds its lookups to 1 s (`RES_OPTIONS` in its entrypoint);
//! 2. `MASTER_GTID_WAIT(Gtid_IO_Pos)`: the SQL thread has applied everything received. With
//!    lossless semi-sync every write a client saw acknowledged is in that relay log. Not
//!    within `monitor.catch_up_timeout` (or the SQL thread failed): the IO thread is started
//!    again and the promotion given up until the next check;
//! 3. `STOP SLAVE`, then the record `(epoch, server_id, host, promoted_by)` is inserted with
//!    the binary log on (a later replica inherits it). Until here the node is still a
//!    (stopped) replica, so a retry starts over;
//! 4. `RESET SLAVE ALL; SET GLOBAL read_only=OFF`. A crash before this leaves the record
//!    naming a read-only node, which the next check finishes ([`complete_promotion`]).

use std::time::Duration;

use anyhow::{anyhow, bail};
use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Executor, Row};

use super::gtid::GtidSet;
use super::node::{self, Probe, Record, SqlContext, Status, exec, read_record, text};

/// The longest one step of an action may take (`STOP SLAVE` waits for the event group the
/// SQL thread is applying; `SET GLOBAL read_only` for running statements).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);
const PROMOTION_LOCK: &str = "SELECT GET_LOCK('foobar_router.promote', 5)";
const PROMOTION_UNLOCK: &str = "DO RELEASE_LOCK('foobar_router.promote')";
/// How long a rejoined node may take to catch up before the rejoin is called failed.
const REJOIN_CATCH_UP: Duration = Duration::from_secs(20);

/// What a promotion attempt ended with.
#[derive(Debug)]
pub enum Promotion {
    /// This router promoted the node.
    Promoted(Record),
    /// Another router already had: its record is adopted.
    Adopted(Record),
    /// Not promoted, and replication resumed: it lacks writes some router acknowledged or
    /// saw on the primary, or not every router answered. The reason, for the operator.
    Refused(String),
}

/// Promotes the node behind `probe` to primary at `epoch` (see the module's steps).
/// `required`, awaited under the promotion lock, is every write the node must hold (what
/// the routers acknowledged and saw on the primary), or why it cannot be known.
pub async fn promote(
    probe: &mut Probe,
    epoch: u64,
    promoted_by: &str,
    catch_up: Duration,
    required: impl Future<Output = Result<GtidSet, String>>,
) -> anyhow::Result<Promotion> {
    under_promotion_lock(probe, async move |conn| {
        promote_locked(conn, epoch, promoted_by, catch_up, required).await
    })
    .await
}

/// The node is the primary by record but read-only (a promotion cut short, or a promoted
/// node that restarted): reset its replication and make it writable.
pub async fn complete_promotion(probe: &mut Probe) -> anyhow::Result<()> {
    under_promotion_lock(probe, async |conn| finish(conn).await).await
}

/// Runs `act` on the node behind `probe` holding its promotion lock (see the module's doc),
/// and releases the lock whatever `act` returned.
async fn under_promotion_lock<T>(
    probe: &mut Probe,
    act: impl AsyncFnOnce(&mut MySqlConnection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    on_node(probe, async |conn| {
        lock(conn).await?;
        let outcome = act(conn).await;
        exec(conn, PROMOTION_UNLOCK, STEP_TIMEOUT).await?;
        outcome
    })
    .await
}

/// Makes a node that must not take writes read-only, and ends the sessions of `app_user`
/// there before and after, so none keeps writing through an open connection or blocks
/// `SET GLOBAL read_only` with an open transaction. Returns how many were killed.
///
/// First it leaves `superseded_by` (the record of the primary that replaced it) on the node
/// as a fence mark, outside the binary log (a replicated row would be a transaction the
/// primary lacks, and block the node's rejoin): a router that starts later and sees only
/// this node reads the mark and knows it is not the primary, even after a restart made it
/// writable again. A node whose data predates the mark's table is fenced without it.
pub async fn fence(
    probe: &mut Probe,
    app_user: &str,
    superseded_by: Option<&Record>,
) -> anyhow::Result<usize> {
    on_node(probe, async |conn| {
        let mut killed = kill_sessions(conn, app_user).await?;
        if let Some(record) = superseded_by
            && let Err(e) = mark_fenced(conn, record).await
        {
            tracing::warn!(
                "fencing without a mark ({e:#}): a router started while the primary is down \
                 may not know this node was replaced (a data volume made before the mark; \
                 recreate it)"
            );
        }
        exec(conn, "SET GLOBAL read_only = ON", STEP_TIMEOUT).await?;
        killed += kill_sessions(conn, app_user).await?;
        if let Some(record) = superseded_by
            && let Err(e) = mark_position(conn, record).await
        {
            tracing::warn!(
                "fence mark without a position ({e:#}): it will not be rebuilt by itself"
            );
        }
        Ok(killed)
    })
    .await
}

async fn mark_fenced(conn: &mut MySqlConnection, record: &Record) -> anyhow::Result<()> {
    let insert = sqlx::query(
        "INSERT IGNORE INTO foobar_router.fence (epoch, server_id, host) VALUES (?, ?, ?)",
    )
    .bind(record.epoch)
    .bind(record.server_id)
    .bind(&record.host);
    unlogged(conn, insert, "write the fence mark in foobar_router.fence").await
}

/// Runs `query` with the binary log off for this session: a row only this node holds, which
/// must never replicate (it would be a transaction the primary lacks).
async fn unlogged(
    conn: &mut MySqlConnection,
    query: sqlx::query::Query<'_, sqlx::MySql, sqlx::mysql::MySqlArguments>,
    what: &str,
) -> anyhow::Result<()> {
    exec(conn, "SET SESSION sql_log_bin = 0", STEP_TIMEOUT).await?;
    let done = tokio::time::timeout(STEP_TIMEOUT, query.execute(&mut *conn))
        .await
        .map_err(|_| anyhow!("{what}: no answer within {STEP_TIMEOUT:?}"))
        .and_then(|r| r.sql_context(what));
    exec(conn, "SET SESSION sql_log_bin = 1", STEP_TIMEOUT).await?;
    done.map(|_| ())
}

/// Records in the fence mark where the node's binary log stood once it was read-only (the
/// first time only): every transaction past it was written after the fence, by hand, and
/// keeps the node from being rebuilt by itself (`rebuild`). `SET GLOBAL read_only` waits
/// for commits under way, so the app's last transactions there are before it.
async fn mark_position(conn: &mut MySqlConnection, record: &Record) -> anyhow::Result<()> {
    let update = sqlx::query(
        "UPDATE foobar_router.fence SET fenced_pos = @@gtid_binlog_pos \
         WHERE epoch = ? AND fenced_pos IS NULL",
    )
    .bind(record.epoch);
    unlogged(conn, update, "record the position in foobar_router.fence").await
}

/// Takes the node's rejoin lock on the probe's connection, without waiting: false when
/// another router holds it (it is rejoining the node). Held until the connection closes.
pub async fn rejoin_lock(probe: &mut Probe) -> anyhow::Result<bool> {
    let conn = connect(probe).await?;
    get_lock(conn, "SELECT GET_LOCK('foobar_router.rejoin', 0)").await
}

/// Whether no promotion can be under way on the node: its promotion lock is free (taken and
/// released at once). A promoter holds it from before it asks the routers until it is done.
pub async fn promotion_idle(probe: &mut Probe) -> anyhow::Result<bool> {
    on_node(probe, async |conn| {
        let free = get_lock(conn, "SELECT GET_LOCK('foobar_router.promote', 0)").await?;
        if free {
            exec(conn, PROMOTION_UNLOCK, STEP_TIMEOUT).await?;
        }
        Ok(free)
    })
    .await
}

/// Makes the fenced node behind `probe` (`node`, as last checked) a replica of `primary`,
/// refusing when it holds transactions the primary lacks (errant GTIDs: written on the old
/// primary but never received by the new one). Returns what was done, for the operator.
pub async fn rejoin(
    probe: &mut Probe,
    node: &Status,
    primary: &Status,
    replication_user: &str,
    replication_password: &str,
) -> anyhow::Result<String> {
    if !node.read_only || node.replication.is_some() {
        bail!(
            "server {} is not a fenced node (read_only={}, replication {}): nothing to rejoin",
            node.server_id,
            node.read_only,
            if node.replication.is_some() {
                "configured"
            } else {
                "none"
            }
        );
    }
    let errant = node::errant_gtids(
        &node.gtid_binlog_pos,
        &primary.gtid_binlog_pos,
        &primary.gtid_slave_pos,
    );
    if !errant.is_empty() {
        bail!(errant_message(node, primary, &errant.join(",")));
    }
    on_node(probe, async |conn| {
        // Its own writes are where replication resumes: slave_pos, as the image's replicas.
        exec(
            conn,
            AssertSqlSafe(format!(
                "SET GLOBAL gtid_slave_pos = {}",
                quote(&node.gtid_binlog_pos)
            )),
            STEP_TIMEOUT,
        )
        .await?;
        exec(
            conn,
            AssertSqlSafe(format!(
                "CHANGE MASTER TO MASTER_HOST = {}, MASTER_PORT = {}, MASTER_USER = {}, \
                 MASTER_PASSWORD = {}, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1, \
                 MASTER_HEARTBEAT_PERIOD = 0.25",
                quote(&primary.host),
                primary.port,
                quote(replication_user),
                quote(replication_password)
            )),
            STEP_TIMEOUT,
        )
        .await?;
        exec(conn, "START SLAVE", STEP_TIMEOUT).await?;
        let errors = match follow(conn, &primary.gtid_binlog_pos).await? {
            Ok(()) => {
                return Ok(format!(
                    "server {} replicates from {}:{} (server {}) and has caught up to {}",
                    node.server_id,
                    primary.host,
                    primary.port,
                    primary.server_id,
                    primary.gtid_binlog_pos
                ));
            }
            Err(errors) => errors,
        };
        // Leave it as it was (fenced, not replicating) rather than half-joined.
        exec(conn, "STOP SLAVE", STEP_TIMEOUT).await?;
        exec(conn, "RESET SLAVE ALL", STEP_TIMEOUT).await?;
        if errors.contains("1236") || errors.contains("GTID") {
            bail!(errant_message(node, primary, &errors));
        }
        bail!(
            "server {} could not follow {}:{} ({errors}); \
             replication stopped and reset, the node stays fenced",
            node.server_id,
            primary.host,
            primary.port
        )
    })
    .await
}

fn errant_message(node: &Status, primary: &Status, detail: &str) -> String {
    format!(
        "server {} holds transactions the primary (server {}) never received: {detail}. They \
         were committed on the old primary after the new one stopped receiving (never \
         acknowledged to a client while semi-sync waited; acknowledged only if semi-sync had \
         fallen back to asynchronous). gtid_strict_mode refuses to replicate past them. Not \
         rejoined: the node stays fenced. Rebuild it from the primary (mariadb-backup, or an \
         empty data volume), or remove those transactions by hand and rejoin again. \
         (old primary at {}, primary at {})",
        node.server_id, primary.server_id, node.gtid_binlog_pos, primary.gtid_binlog_pos
    )
}

/// Runs `act` on the probe's connection to its node. On an error the connection is dropped,
/// whatever state an action cut short left its session in: the next use opens a new one.
async fn on_node<T>(
    probe: &mut Probe,
    act: impl AsyncFnOnce(&mut MySqlConnection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let result = match connect(probe).await {
        Ok(conn) => act(conn).await,
        Err(e) => Err(e),
    };
    if result.is_err() {
        probe.reset();
    }
    result
}

/// Takes the promotion lock on the node (released by [`PROMOTION_UNLOCK`], or when the
/// connection drops).
async fn lock(conn: &mut MySqlConnection) -> anyhow::Result<()> {
    if !get_lock(conn, PROMOTION_LOCK).await? {
        bail!("another router holds the promotion lock on this node; its record decides");
    }
    Ok(())
}

/// Runs `get_lock`, a `SELECT GET_LOCK(...)`, within [`STEP_TIMEOUT`]: whether the lock is
/// now held by this connection (false: another holds it, and the wait ran out).
async fn get_lock(conn: &mut MySqlConnection, get_lock: &'static str) -> anyhow::Result<bool> {
    let row = tokio::time::timeout(STEP_TIMEOUT, conn.fetch_one(get_lock))
        .await
        .map_err(|_| anyhow!("GET_LOCK: no answer within {STEP_TIMEOUT:?}"))?
        .sql_context("GET_LOCK")?;
    Ok(text(&row, 0) == "1")
}

async fn promote_locked(
    conn: &mut MySqlConnection,
    epoch: u64,
    promoted_by: &str,
    catch_up: Duration,
    required: impl Future<Output = Result<GtidSet, String>>,
) -> anyhow::Result<Promotion> {
    if let Some(record) = read_record(conn).await?
        && record.epoch >= epoch
    {
        return Ok(Promotion::Adopted(record));
    }
    let required = match required.await {
        Ok(required) => required,
        Err(why) => return Ok(Promotion::Refused(why)),
    };
    let row = conn
        .fetch_one("SELECT @@server_id, @@report_host, @@hostname, @@port")
        .await
        .sql_context("read server variables")?;
    let server_id: u32 = text(&row, 0)
        .parse()
        .map_err(|_| anyhow!("bad @@server_id"))?;
    let host = match text(&row, 1) {
        report_host if !report_host.is_empty() => report_host,
        _ => text(&row, 2),
    };
    let host = format!("{host}:{}", text(&row, 3));

    if conn
        .fetch_optional("SHOW REPLICA STATUS")
        .await
        .sql_context("SHOW REPLICA STATUS")?
        .is_some()
    {
        exec(conn, "STOP SLAVE IO_THREAD", STEP_TIMEOUT).await?;
        if let Err(e) = apply_relay_log(conn, catch_up).await {
            // Not promoted after all: let it follow its primary again (it may come back);
            // the next attempt stops the IO thread again.
            if let Err(restart) = exec(conn, "START SLAVE IO_THREAD", STEP_TIMEOUT).await {
                tracing::warn!("after a failed promotion, restarting replication: {restart:#}");
            }
            return Err(e);
        }
        let missing = required.missing_from(&held_gtids(conn).await?);
        if !missing.is_empty() {
            exec(conn, "START SLAVE IO_THREAD", STEP_TIMEOUT).await?;
            return Ok(Promotion::Refused(format!(
                "it lacks {} that a router acknowledged to a client or saw on the primary \
                 (the primary had fallen back to asynchronous replication): promoting it would \
                 lose them. Writes fail until the old primary returns or this replica \
                 receives them",
                missing.join(",")
            )));
        }
        exec(conn, "STOP SLAVE", STEP_TIMEOUT).await?;
    } else {
        let missing = required.missing_from(&held_gtids(conn).await?);
        if !missing.is_empty() {
            return Ok(Promotion::Refused(format!(
                "it lacks {} that a router acknowledged or saw on the primary",
                missing.join(",")
            )));
        }
    }
    let record = Record {
        epoch,
        server_id,
        host,
    };
    tokio::time::timeout(
        STEP_TIMEOUT,
        sqlx::query(
            "INSERT INTO foobar_router.promotion (epoch, server_id, host, promoted_by) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(record.epoch)
        .bind(record.server_id)
        .bind(&record.host)
        .bind(promoted_by)
        .execute(&mut *conn),
    )
    .await
    .map_err(|_| anyhow!("record the epoch: no answer within {STEP_TIMEOUT:?}"))?
    .sql_context("record the epoch in foobar_router.promotion")?;
    finish(conn).await?;
    Ok(Promotion::Promoted(record))
}

/// Waits until the SQL thread has applied everything the IO thread received (it is started
/// if it was stopped without an error), within `catch_up`.
async fn apply_relay_log(conn: &mut MySqlConnection, catch_up: Duration) -> anyhow::Result<()> {
    let status = conn
        .fetch_one("SHOW REPLICA STATUS")
        .await
        .sql_context("SHOW REPLICA STATUS")?;
    let received = text(&status, "Gtid_IO_Pos");
    if text(&status, "Slave_SQL_Running") != "Yes" {
        let error = text(&status, "Last_SQL_Error");
        if !error.is_empty() {
            bail!(
                "its SQL thread stopped on an error ({error}): it cannot apply what it \
                 received, and promoting it would lose those writes; fix replication first"
            );
        }
        exec(conn, "START SLAVE SQL_THREAD", STEP_TIMEOUT).await?;
    }
    if !gtid_wait(conn, &received, catch_up).await? {
        bail!(
            "it has not applied its relay log (up to {received}) within {catch_up:?}; \
             promotion postponed to the next check, no write is given up"
        );
    }
    Ok(())
}

/// Every transaction the node holds: applied (`gtid_slave_pos`) or its own
/// (`gtid_binlog_pos`).
async fn held_gtids(conn: &mut MySqlConnection) -> anyhow::Result<GtidSet> {
    let row = conn
        .fetch_one("SELECT @@gtid_slave_pos, @@gtid_binlog_pos")
        .await
        .sql_context("read GTID positions")?;
    let mut held = GtidSet::parse(&text(&row, 0));
    held.insert_pos(&text(&row, 1));
    Ok(held)
}

/// The last step of a promotion: no replication left, writable.
async fn finish(conn: &mut MySqlConnection) -> anyhow::Result<()> {
    if conn
        .fetch_optional("SHOW REPLICA STATUS")
        .await
        .sql_context("SHOW REPLICA STATUS")?
        .is_some()
    {
        exec(conn, "STOP SLAVE", STEP_TIMEOUT).await?;
        exec(conn, "RESET SLAVE ALL", STEP_TIMEOUT).await?;
    }
    exec(conn, "SET GLOBAL read_only = OFF", STEP_TIMEOUT).await
}

/// Waits until a node that just started replicating runs both threads and has applied
/// `position`: `Ok(Ok(()))`; or `Ok(Err(what the threads say))` as soon as one stopped on
/// an error (an errant transaction stops the IO thread at once), or after
/// [`REJOIN_CATCH_UP`].
async fn follow(conn: &mut MySqlConnection, position: &str) -> anyhow::Result<Result<(), String>> {
    let deadline = tokio::time::Instant::now() + REJOIN_CATCH_UP;
    loop {
        let status = conn
            .fetch_optional("SHOW REPLICA STATUS")
            .await
            .sql_context("SHOW REPLICA STATUS")?;
        let field = |name: &str| {
            status
                .as_ref()
                .map(|row| text(row, name))
                .unwrap_or_default()
        };
        let (io, sql) = (field("Slave_IO_Running"), field("Slave_SQL_Running"));
        let thread = |name: &str, running: &str, error: String| match error.is_empty() {
            true => format!("{name} thread {running}"),
            false => format!("{name} thread {running}: {error}"),
        };
        let errors = format!(
            "{}; {}",
            thread("IO", &io, field("Last_IO_Error")),
            thread("SQL", &sql, field("Last_SQL_Error"))
        );
        let stopped_on_error =
            |running: &str, errno: String| running == "No" && !errno.is_empty() && errno != "0";
        if stopped_on_error(&io, field("Last_IO_Errno"))
            || stopped_on_error(&sql, field("Last_SQL_Errno"))
        {
            return Ok(Err(errors));
        }
        if io == "Yes"
            && sql == "Yes"
            && gtid_wait(conn, position, Duration::from_millis(200)).await?
        {
            return Ok(Ok(()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Err(format!(
                "not caught up within {REJOIN_CATCH_UP:?}: {errors}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the node has applied `position`; false on timeout.
async fn gtid_wait(
    conn: &mut MySqlConnection,
    position: &str,
    timeout: Duration,
) -> anyhow::Result<bool> {
    if position.is_empty() {
        return Ok(true);
    }
    let sql = format!(
        "SELECT MASTER_GTID_WAIT({}, {})",
        quote(position),
        timeout.as_secs_f64()
    );
    let started = std::time::Instant::now();
    let row = tokio::time::timeout(timeout + STEP_TIMEOUT, conn.fetch_one(AssertSqlSafe(sql)))
        .await
        .map_err(|_| anyhow!("MASTER_GTID_WAIT: no answer within {timeout:?}"))?
        .sql_context("MASTER_GTID_WAIT")?;
    tracing::debug!(
        "MASTER_GTID_WAIT({position}) took {:.1?}",
        started.elapsed()
    );
    Ok(text(&row, 0) == "0")
}

async fn kill_sessions(conn: &mut MySqlConnection, user: &str) -> anyhow::Result<usize> {
    let rows = tokio::time::timeout(
        STEP_TIMEOUT,
        sqlx::query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?")
            .bind(user)
            .fetch_all(&mut *conn),
    )
    .await
    .map_err(|_| anyhow!("list sessions: no answer within {STEP_TIMEOUT:?}"))?
    .sql_context("list the app account's sessions")?;
    let mut killed = 0;
    for row in rows {
        let id: i64 = row.try_get_unchecked(0).sql_context("session id")?;
        let kill = AssertSqlSafe(format!("KILL CONNECTION {id}"));
        match tokio::time::timeout(STEP_TIMEOUT, conn.execute(kill)).await {
            Ok(Ok(_)) => killed += 1,
            // ER_NO_SUCH_THREAD: it ended by itself meanwhile.
            Ok(Err(e)) if node::error_code(&e) == Some(1094) => {}
            Ok(Err(e)) => bail!("KILL CONNECTION {id}: {e}"),
            Err(_) => bail!("KILL CONNECTION {id}: no answer within {STEP_TIMEOUT:?}"),
        }
    }
    Ok(killed)
}

pub(super) async fn connect(probe: &mut Probe) -> anyhow::Result<&mut MySqlConnection> {
    tokio::time::timeout(STEP_TIMEOUT, probe.connection())
        .await
        .map_err(|_| anyhow!("connect: no answer within {STEP_TIMEOUT:?}"))?
}

/// A SQL string literal (default sql_mode: backslash escapes).
pub(super) fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quote("db-1"), "'db-1'");
        assert_eq!(quote(r"a'b\c"), r"'a\'b\\c'");
    }
}
