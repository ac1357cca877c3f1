//! One database node as the monitor sees it: a connection of the monitor's own, and what a
//! check reads through it (server id, `read_only`, replication, GTID positions, the
//! promotion record).
//!
//! Everything is read with plain text-protocol queries, as ProxySQL's monitor does with
//! libmysqlclient: no part of the router's own protocol code is involved. A check has one
//! deadline, connecting included; any failure drops the connection, so the next check starts
//! from a fresh one and a half-dead connection is never trusted.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::anyhow;
use serde::Serialize;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlRow, MySqlSslMode};
use sqlx::{ConnectOptions, Executor, Row};

use super::snapshot::Node;

/// What one successful check saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub server_id: u32,
    pub read_only: bool,
    /// The name other nodes reach this one by (`report_host`, else `hostname`), and its port:
    /// where a rejoined node's replication points when this node is the primary.
    pub host: String,
    pub port: u16,
    pub gtid_binlog_pos: String,
    pub gtid_slave_pos: String,
    /// `None` when no replication is configured (a primary, or a node whose replication was
    /// reset by a promotion).
    pub replication: Option<Replication>,
    /// The highest promotion record this node holds (`foobar_router.promotion`).
    pub record: Option<Record>,
}

/// The useful part of `SHOW REPLICA STATUS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replication {
    /// `Yes`, `Connecting` (primary unreachable) or `No`.
    pub io_running: String,
    pub sql_running: bool,
    /// `Seconds_Behind_Master`; unknown (`None`) while a thread is stopped.
    pub lag_seconds: Option<u64>,
    pub master_host: String,
    /// The last GTID received into the relay log.
    pub gtid_io_pos: String,
    pub last_io_error: String,
    pub last_sql_error: String,
}

impl Replication {
    /// Both threads run: the node follows its primary.
    pub fn running(&self) -> bool {
        self.io_running == "Yes" && self.sql_running
    }
}

/// One row of `foobar_router.promotion`: who is primary from which epoch on. The node is
/// named by server id, which every router sees the same, whatever address it uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub epoch: u64,
    pub server_id: u32,
    pub host: String,
}

/// The monitor's connection to one node.
pub struct Probe {
    pub node: Node,
    options: MySqlConnectOptions,
    conn: Option<MySqlConnection>,
}

impl Probe {
    pub fn new(node: Node, user: &str, password: &str) -> anyhow::Result<Self> {
        let options = connect_options(&node, user, password)?;
        Ok(Self {
            node,
            options,
            conn: None,
        })
    }

    /// One check, within `timeout`. On failure the connection is dropped.
    pub async fn check(&mut self, timeout: Duration) -> anyhow::Result<Status> {
        let result = match tokio::time::timeout(timeout, self.read_status()).await {
            Ok(result) => result,
            Err(_) => Err(anyhow!("no answer within {timeout:?}")),
        };
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// The open connection, or a new one (the caller bounds the time).
    pub async fn connection(&mut self) -> anyhow::Result<&mut MySqlConnection> {
        if self.conn.is_none() {
            let conn = match self.options.connect().await {
                Ok(conn) => conn,
                // ER_ACCESS_DENIED_ERROR: reachable, but the monitor cannot see anything.
                Err(e) if error_code(&e) == Some(1045) => {
                    return Err(anyhow!(
                        "connect: {e} (check monitor.user and its password; a data volume \
                         made before the image had DB_MONITOR_PASSWORD has no monitor \
                         account: recreate it, `make clean`)"
                    ));
                }
                Err(e) => return Err(anyhow!("connect: {e}")),
            };
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or_else(|| anyhow!("no connection"))
    }

    /// Drops the connection, after an action failed half-way.
    pub fn reset(&mut self) {
        self.conn = None;
    }

    async fn read_status(&mut self) -> anyhow::Result<Status> {
        let conn = self.connection().await?;
        let row = conn
            .fetch_one(
                "SELECT @@server_id, @@read_only, @@report_host, @@hostname, @@port, \
                 @@gtid_binlog_pos, @@gtid_slave_pos",
            )
            .await
            .sql_context("read server variables")?;
        let report_host = text(&row, 2);
        let hostname = text(&row, 3);
        let host = if report_host.is_empty() {
            hostname
        } else {
            report_host
        };
        let replication = conn
            .fetch_optional("SHOW REPLICA STATUS")
            .await
            .sql_context("SHOW REPLICA STATUS")?
            .map(|row| Replication {
                io_running: text(&row, "Slave_IO_Running"),
                sql_running: text(&row, "Slave_SQL_Running") == "Yes",
                lag_seconds: text(&row, "Seconds_Behind_Master").parse().ok(),
                master_host: text(&row, "Master_Host"),
                gtid_io_pos: text(&row, "Gtid_IO_Pos"),
                last_io_error: text(&row, "Last_IO_Error"),
                last_sql_error: text(&row, "Last_SQL_Error"),
            });
        let record = read_record(conn).await?;
        Ok(Status {
            server_id: number(&row, 0)?,
            read_only: text(&row, 1) == "1",
            host,
            port: number(&row, 4)?,
            gtid_binlog_pos: text(&row, 5),
            gtid_slave_pos: text(&row, 6),
            replication,
            record,
        })
    }
}

/// The highest record on the node: a promotion record (`foobar_router.promotion`, written
/// by the promoter and replicated), or a fence mark (`foobar_router.fence`, the record that
/// superseded this node, written here by the router that fenced it and never replicated).
/// The mark is how a router that starts later, seeing only this node, still knows a newer
/// primary exists. `None` on a node made before the tables existed.
pub async fn read_record(conn: &mut MySqlConnection) -> anyhow::Result<Option<Record>> {
    let with_fence = conn
        .fetch_optional(
            "SELECT epoch, server_id, host FROM foobar_router.promotion \
             UNION ALL SELECT epoch, server_id, host FROM foobar_router.fence \
             ORDER BY epoch DESC LIMIT 1",
        )
        .await;
    let row = match with_fence {
        // ER_NO_SUCH_TABLE: a data directory made before the fence table.
        Err(e) if error_code(&e) == Some(1146) => {
            conn.fetch_optional(
                "SELECT epoch, server_id, host FROM foobar_router.promotion \
                 ORDER BY epoch DESC LIMIT 1",
            )
            .await
        }
        other => other,
    };
    match row {
        Ok(Some(row)) => Ok(Some(Record {
            epoch: number(&row, 0)?,
            server_id: number(&row, 1)?,
            host: text(&row, 2),
        })),
        Ok(None) => Ok(None),
        // ER_NO_SUCH_TABLE, ER_BAD_DB_ERROR: a data directory older than the record.
        Err(e) if matches!(error_code(&e), Some(1146 | 1049)) => Ok(None),
        Err(e) => Err(e).sql_context("read foobar_router.promotion"),
    }
}

/// `.context()` for the driver's errors, without repeating them: a sqlx error's source is
/// the error itself, which `{:#}` would print twice.
pub trait SqlContext<T> {
    fn sql_context(self, what: &str) -> anyhow::Result<T>;
}

impl<T> SqlContext<T> for Result<T, sqlx::Error> {
    fn sql_context(self, what: &str) -> anyhow::Result<T> {
        self.map_err(|e| anyhow!("{what}: {e}"))
    }
}

/// The server's error number, when the error came from the server.
pub fn error_code(error: &sqlx::Error) -> Option<u16> {
    error
        .as_database_error()?
        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .map(|e| e.number())
}

fn connect_options(node: &Node, user: &str, password: &str) -> anyhow::Result<MySqlConnectOptions> {
    let (host, port) = node
        .name
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("backend `{}`: expected host:port", node.name))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("backend `{}`: bad port", node.name))?;
    Ok(MySqlConnectOptions::new()
        .host(host)
        .port(port)
        .username(user)
        .password(password)
        // The data network is internal and the image serves no TLS: a round trip saved.
        .ssl_mode(MySqlSslMode::Disabled)
        .disable_statement_logging())
}

/// A column of a text-protocol row as text ("" for NULL): every value arrives as text
/// there, whatever its SQL type, so one accessor reads them all.
pub fn text<I: sqlx::ColumnIndex<MySqlRow>>(row: &MySqlRow, index: I) -> String {
    row.try_get_unchecked::<Option<String>, _>(index)
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn number<T: std::str::FromStr, I: sqlx::ColumnIndex<MySqlRow> + std::fmt::Debug + Copy>(
    row: &MySqlRow,
    index: I,
) -> anyhow::Result<T> {
    let value = text(row, index);
    value
        .parse()
        .map_err(|_| anyhow!("column {index:?}: `{value}` is not a number"))
}

/// A GTID position (`0-1-42,1-2-7`) as domain -> (server id, sequence number).
pub fn parse_gtid_pos(pos: &str) -> BTreeMap<u32, (u32, u64)> {
    pos.split(',')
        .filter_map(|gtid| {
            let mut parts = gtid.trim().splitn(3, '-');
            let domain = parts.next()?.parse().ok()?;
            let server = parts.next()?.parse().ok()?;
            let seq = parts.next()?.parse().ok()?;
            Some((domain, (server, seq)))
        })
        .collect()
}

/// The transactions of `node_pos` the primary at `primary_pos` cannot have: per domain, a
/// later sequence number, or the same one from another server; or, when the primary last
/// applied this domain from the node's server up to `primary_slave_pos` and has written its
/// own since, a later one from that server (written on the old primary after the new one
/// stopped receiving from it: the new primary's own numbers have passed it, so comparing
/// sequence numbers alone would miss it).
pub fn errant_gtids(node_pos: &str, primary_pos: &str, primary_slave_pos: &str) -> Vec<String> {
    let primary = parse_gtid_pos(primary_pos);
    let applied = parse_gtid_pos(primary_slave_pos);
    parse_gtid_pos(node_pos)
        .into_iter()
        .filter(|(domain, (server, seq))| match primary.get(domain) {
            None => true,
            Some((p_server, p_seq)) if seq > p_seq || (seq == p_seq && server != p_server) => true,
            Some((p_server, _)) => {
                p_server != server
                    && applied
                        .get(domain)
                        .is_some_and(|(a_server, a_seq)| a_server == server && seq > a_seq)
            }
        })
        .map(|(domain, (server, seq))| format!("{domain}-{server}-{seq}"))
        .collect()
}

/// An action's statement that takes this long or more is logged with its time.
const SLOW_STEP: Duration = Duration::from_millis(200);

/// Runs `sql` (text protocol) with a deadline.
pub async fn exec(
    conn: &mut MySqlConnection,
    sql: impl sqlx::SqlSafeStr + Send,
    timeout: Duration,
) -> anyhow::Result<()> {
    let sql = sql.into_sql_str();
    let what = sql
        .as_str()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let started = std::time::Instant::now();
    let done = tokio::time::timeout(timeout, conn.execute(sql)).await;
    // A failover's steps are where its time goes: a slow one is worth a line.
    let took = started.elapsed();
    if took >= SLOW_STEP {
        tracing::info!("{what} took {took:.1?}");
    }
    match done {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(anyhow!("{what}: {e}")),
        Err(_) => Err(anyhow!("{what}: no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_positions_parse_per_domain() {
        let pos = parse_gtid_pos("0-1-42, 1-2-7");
        assert_eq!(pos.get(&0), Some(&(1, 42)));
        assert_eq!(pos.get(&1), Some(&(2, 7)));
        assert!(parse_gtid_pos("").is_empty());
    }

    #[test]
    fn errant_transactions_are_the_ones_the_primary_lacks() {
        // Caught up, or behind: nothing errant.
        assert!(errant_gtids("0-1-100", "0-1-100", "").is_empty());
        assert!(errant_gtids("0-1-90", "0-2-101", "0-1-90").is_empty());
        // Written on the old primary after the new one stopped receiving.
        assert_eq!(errant_gtids("0-1-101", "0-2-101", "0-1-100"), ["0-1-101"]);
        assert_eq!(errant_gtids("0-1-105", "0-2-101", "0-1-100"), ["0-1-105"]);
        // The new primary has written past it since: its last from server 1 tells.
        assert_eq!(errant_gtids("0-1-58", "0-2-80", "0-1-57"), ["0-1-58"]);
        assert!(errant_gtids("0-1-57", "0-2-80", "0-1-57").is_empty());
        // A domain the primary never saw.
        assert_eq!(errant_gtids("0-1-5,3-1-1", "0-1-5", ""), ["3-1-1"]);
    }
}
