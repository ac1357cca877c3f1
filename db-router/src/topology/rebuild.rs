//! Rebuilding a fenced old primary whose only errant transactions are ones no client was
//! ever told had committed: the node's data is set aside (kept on its volume) and it is made
//! again as a replica of the primary, from the primary's binary log.
//!
//! Why this is safe, and when it is not done:
//! - A promotion that went through the gate (`actions::promote`) put every transaction any
//!   router acknowledged on the new primary. A transaction only the old primary holds was
//!   therefore never acknowledged through a router: it is one a client saw fail or time out
//!   ("may or may not have run"). MariaDB itself drops such transactions when a crashed
//!   semi-sync primary restarts as a replica (`init_rpl_role=SLAVE`, MDEV-21117); a paused
//!   one instead commits them when it thaws, so they are errant here.
//! - Not when a promotion since the node's own epoch was forced by an operator (its
//!   `promoted_by` says "forced"): the transactions given up then may have been
//!   acknowledged.
//! - Not when the node took any write after it was fenced (its `gtid_binlog_pos` differs
//!   from the one its fence mark recorded): an operator's write by hand, say. Those stay for
//!   an operator to look at (`NodeNeedsRebuild`).
//! - Not when the primary's binary log no longer starts at the beginning of the history
//!   (purged): a replica made from empty could not replay it. Rebuild from a backup then.
//!
//! How: the router writes a request file into the node's `secure_file_priv` directory
//! (`SELECT ... INTO OUTFILE`: the server writes it, so the router needs no access to the
//! node's disk) and shuts the node down (`SHUTDOWN`). The container's restart policy starts
//! it again, and the image's entrypoint, finding the request, moves the data directory aside
//! (`.foobar/set-aside-<time>` on the same volume: nothing is deleted) and makes the node a
//! replica of the named primary, as on a first start. The node's fence mark goes with the
//! old data; the new data holds the promotion records by replication, so every router sees
//! a replica.

use anyhow::{anyhow, bail};
use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Executor};

use super::actions::{STEP_TIMEOUT, connect, quote};
use super::node::{Probe, SqlContext, Status, error_code, exec, text};

/// The directory the image's entrypoint reads requests from; the node's `secure_file_priv`
/// must be this directory, which tells the router the image takes them.
const REQUESTS_DIR: &str = "/.foobar/requests/";
/// Marks a promotion an operator forced (`promoted_by`), giving transactions up.
pub const FORCED: &str = "forced, gave up";

/// Why the node behind `probe` may not be rebuilt by itself, or `Ok(())` once the request is
/// written and the node shut down. `node` was read under the rejoin lock; `primary` is the
/// writer (its probe `writer`), and `errant` what the node holds that it lacks.
pub async fn request(
    probe: &mut Probe,
    node: &Status,
    writer: &mut Probe,
    primary: &Status,
    errant: &str,
) -> anyhow::Result<String> {
    let result = async {
        let conn = connect(probe).await?;
        let fenced_at = fence_position(conn).await?;
        match fenced_at {
            None => bail!(
                "its fence mark records no position (a data volume made before the mark \
                 held one), so writes made after the fence cannot be told apart"
            ),
            Some(at) if at != node.gtid_binlog_pos => bail!(
                "it took writes after it was fenced (at {at}, now {}): an operator's, to be \
                 looked at before anything is thrown away",
                node.gtid_binlog_pos
            ),
            Some(_) => {}
        }
        let own_epoch = node_epoch(conn).await?;
        let dir = text(
            &conn
                .fetch_one("SELECT @@secure_file_priv")
                .await
                .sql_context("read secure_file_priv")?,
            0,
        );
        if !dir.ends_with(REQUESTS_DIR) {
            bail!(
                "its image takes no rebuild requests (secure_file_priv is `{dir}`, not a \
                 directory named {REQUESTS_DIR})"
            );
        }

        let wconn = connect(writer).await?;
        let forced = wconn
            .fetch_optional(
                sqlx::query("SELECT promoted_by FROM foobar_router.promotion WHERE epoch > ? AND promoted_by LIKE ? LIMIT 1")
                    .bind(own_epoch)
                    .bind(format!("%{FORCED}%")),
            )
            .await
            .sql_context("read the promotion records")?;
        if let Some(row) = forced {
            bail!(
                "a promotion since its epoch {own_epoch} was forced ({}): transactions were \
                 given up that a client may have seen acknowledged",
                text(&row, 0)
            );
        }
        let first = wconn
            .fetch_optional("SHOW BINARY LOGS")
            .await
            .sql_context("SHOW BINARY LOGS on the primary")?
            .map(|row| text(&row, 0))
            .ok_or_else(|| anyhow!("the primary has no binary log"))?;
        let start = text(
            &wconn
                .fetch_one(sqlx::query("SELECT BINLOG_GTID_POS(?, 4)").bind(&first))
                .await
                .sql_context("BINLOG_GTID_POS on the primary")?,
            0,
        );
        if !start.is_empty() {
            bail!(
                "the primary's binary log starts at {start} ({first}), not at the beginning: \
                 a replica made from empty cannot replay it; restore a mariadb-backup instead"
            );
        }

        // One line, "host port", which the entrypoint checks before it uses it.
        let sql = format!(
            "SELECT {} INTO OUTFILE {}",
            quote(&format!("{} {}", primary.host, primary.port)),
            quote(&format!("{dir}rebuild"))
        );
        match conn.execute(AssertSqlSafe(sql)).await {
            Ok(_) => {}
            // ER_FILE_EXISTS_ERROR: asked before, and the node not restarted since.
            Err(e) if error_code(&e) == Some(1086) => {}
            Err(e) => return Err(e).sql_context("write the rebuild request"),
        }
        // The server closes the connection as it goes down: that is the success here.
        if let Err(e) = exec(conn, "SHUTDOWN", STEP_TIMEOUT).await
            && format!("{e:#}").contains("1227")
        {
            bail!("SHUTDOWN refused: {e:#}");
        }
        Ok(format!(
            "server {} shut down to be rebuilt as a replica of {}:{} (server {}); it held \
             {errant}, which no router acknowledged (the promotion was checked against every \
             router's acknowledged writes): its data is set aside on its volume, not deleted",
            node.server_id, primary.host, primary.port, primary.server_id
        ))
    }
    .await;
    probe.reset();
    writer.reset();
    result
}

/// The position the node's newest fence mark recorded, if the mark has one.
async fn fence_position(conn: &mut MySqlConnection) -> anyhow::Result<Option<String>> {
    match conn
        .fetch_optional("SELECT fenced_pos FROM foobar_router.fence ORDER BY epoch DESC LIMIT 1")
        .await
    {
        Ok(row) => Ok(row.map(|r| text(&r, 0)).filter(|p| !p.is_empty())),
        // ER_BAD_FIELD_ERROR, ER_NO_SUCH_TABLE: a data volume older than the position.
        Err(e) if matches!(error_code(&e), Some(1054 | 1146)) => Ok(None),
        Err(e) => Err(e).sql_context("read the fence mark"),
    }
}

/// The newest epoch of the node's own promotion records (not its fence mark).
async fn node_epoch(conn: &mut MySqlConnection) -> anyhow::Result<u64> {
    let row = conn
        .fetch_one("SELECT COALESCE(MAX(epoch), 0) FROM foobar_router.promotion")
        .await
        .sql_context("read the node's promotion records")?;
    text(&row, 0)
        .parse()
        .map_err(|_| anyhow!("bad epoch in foobar_router.promotion"))
}
