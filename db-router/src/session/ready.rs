//! A backend connection made ready for the next command: the node the snapshot names for
//! the role, connected if needed (the reader skipped while it recently failed), the
//! session's database and statements replayed on it, and, with `consistency = "session"`,
//! the session's last write waited for on the reader.

use tokio::io::{AsyncRead, AsyncWrite};

use super::routing::{Bound, Recorded, Replay};
use super::{Refusal, Session};
use crate::backend::{Backend, BackendError, Collected};
use crate::config::Consistency;
use crate::relay;
use crate::topology::snapshot::{Node, Role};
use crate::wire::{self, ServerError, cap, code, com};

/// Why a backend connection could not be made ready.
enum NotReady {
    Backend(BackendError),
    /// Replaying the session's state there failed.
    Replay(ServerError),
    /// The writer changed while a transaction was open on the old one.
    TransactionLost,
}

impl<C: AsyncRead + AsyncWrite + Unpin> Session<C> {
    /// A backend of `role` ready for the next statement; `want == Reader` may end up on the
    /// writer (no reader, reader unreachable, or it lacks the session's last write).
    pub(super) async fn acquire(&mut self, want: Role) -> Result<Role, Refusal> {
        let snapshot = self.shared.topology.snapshot();
        if want == Role::Reader {
            match &snapshot.reader {
                None => self.shared.metrics.fallback("no_reader"),
                Some(node)
                    if self.reader.as_ref().is_none_or(|r| r.node != *node)
                        && self.shared.connector.recently_failed(node) =>
                {
                    self.shared.metrics.fallback("reader_down");
                }
                Some(node) => match self.ready(Role::Reader, node).await {
                    Ok(()) => {
                        if self.reader_has_last_write().await {
                            return Ok(Role::Reader);
                        }
                        self.shared.metrics.fallback("gtid_wait");
                    }
                    Err(e) => {
                        self.note_not_ready(node, &e);
                        self.shared.metrics.fallback("reader_unreachable");
                    }
                },
            }
        }
        let Some(node) = &snapshot.writer else {
            return Err(Refusal::new(
                code::READ_ONLY,
                "foobar-db-router: no database node takes writes right now \
                 (the primary is down and no replica has been promoted yet)",
                "no_writer",
            ));
        };
        match self.ready(Role::Writer, node).await {
            Ok(()) => Ok(Role::Writer),
            Err(e) => {
                self.note_not_ready(node, &e);
                Err(match e {
                    NotReady::Backend(e) => Refusal::new(
                        code::BACKEND_UNREACHABLE,
                        format!("foobar-db-router: the writer is unavailable: {e}"),
                        "writer_unreachable",
                    ),
                    NotReady::Replay(e) => Refusal::new(
                        (e.code, &e.sqlstate),
                        format!(
                            "foobar-db-router: restoring the session on the writer failed: {}",
                            e.message
                        ),
                        "replay",
                    ),
                    NotReady::TransactionLost => Refusal::new(
                        code::BACKEND_LOST,
                        "foobar-db-router: the writer changed during the transaction; \
                         it was rolled back",
                        "transaction_lost",
                    ),
                })
            }
        }
    }

    fn note_not_ready(&self, node: &Node, e: &NotReady) {
        if let NotReady::Backend(e) = e {
            tracing::warn!(peer = self.peer, "{e}");
            self.shared.topology.report_failure(node, &e.to_string());
        }
    }

    /// Opens (or keeps) the `role` connection to `node` and brings it up to date with the
    /// session: current database, then every session statement it has not run yet.
    async fn ready(&mut self, role: Role, node: &Node) -> Result<(), NotReady> {
        if let Some(old) = self.slot(role).take_if(|b| b.node != *node) {
            old.quit().await;
            if role == Role::Writer && self.routing.writer_replaced() {
                return Err(NotReady::TransactionLost);
            }
        }
        if self.slot(role).is_none() {
            // LOAD DATA LOCAL is a write: only the writer lets the server ask for files.
            let caps = match role {
                Role::Writer => self.login.caps,
                Role::Reader => self.login.caps & !cap::LOCAL_FILES,
            };
            let backend = self
                .shared
                .connector
                .connect(
                    node,
                    caps,
                    self.login.collation,
                    self.routing.database.as_deref(),
                )
                .await
                .map_err(NotReady::Backend)?;
            self.shared.metrics.backend_connections.inc();
            *self.slot(role) = Some(backend);
        }
        let multi_statements = self.login.caps & cap::MULTI_STATEMENTS != 0;
        let Session {
            writer,
            reader,
            routing,
            ..
        } = self;
        let backend = match role {
            Role::Writer => writer,
            Role::Reader => reader,
        };
        let Some(conn) = backend.as_mut() else {
            return Ok(());
        };
        let result = sync(
            conn,
            routing.database.as_deref(),
            &routing.replays,
            multi_statements,
        )
        .await;
        if result.is_err() {
            *backend = None;
        }
        result
    }

    /// With `consistency = "session"`: whether the reader has applied the session's last
    /// write, waiting up to `gtid_wait_timeout` for it.
    async fn reader_has_last_write(&mut self) -> bool {
        if self.shared.config.consistency == Consistency::Eventual {
            return true;
        }
        let Some(gtid) = self.routing.last_gtid.clone() else {
            return true;
        };
        let timeout = self.shared.config.gtid_wait_timeout.as_secs_f64();
        let Some(reader) = self.reader.as_mut() else {
            return false;
        };
        if reader.confirmed_gtid.as_deref() == Some(gtid.as_str()) {
            return true;
        }
        if !gtid
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b',')
        {
            return false;
        }
        let sql = format!("SELECT MASTER_GTID_WAIT('{gtid}', {timeout:.3})");
        match reader.query(sql.as_bytes()).await {
            Ok(answer) if answer.first_value == Some(Some("0".into())) => {
                reader.confirmed_gtid = Some(gtid);
                self.shared.metrics.gtid_wait("reached");
                true
            }
            Ok(_) => {
                self.shared.metrics.gtid_wait("timeout");
                false
            }
            Err(e) => {
                self.shared.metrics.gtid_wait("failed");
                let node = reader.node.clone();
                self.reader = None;
                self.shared.topology.report_failure(&node, &e.to_string());
                false
            }
        }
    }
}

/// Brings one backend connection up to date with the session.
async fn sync(
    backend: &mut Backend,
    database: Option<&str>,
    replays: &[Recorded],
    multi_statements: bool,
) -> Result<(), NotReady> {
    if (backend.caps & cap::MULTI_STATEMENTS != 0) != multi_statements {
        let refused = backend
            .set_multi_statements(multi_statements)
            .await
            .map_err(NotReady::Backend)?;
        if let Some(error) = refused {
            return Err(NotReady::Replay(error));
        }
    }
    if let Some(db) = database
        && backend.database.as_deref() != Some(db)
    {
        let answer = backend.init_db(db).await.map_err(NotReady::Backend)?;
        if let Some(error) = answer.error {
            return Err(NotReady::Replay(error));
        }
    }
    for Recorded { number, replay, .. } in replays {
        if *number <= backend.replayed {
            continue;
        }
        let answer = match replay {
            Replay::Text(text) => backend.query(text).await,
            Replay::Prepared(bound) => replay_prepared(backend, bound).await,
        }
        .map_err(NotReady::Backend)?;
        if let Some(error) = answer.error {
            return Err(NotReady::Replay(error));
        }
        backend.replayed = *number;
    }
    Ok(())
}

/// Runs a statement prepared with parameters on `backend` as the client ran it elsewhere:
/// prepared, its long data and EXECUTE sent with the same bytes, then closed (the client
/// never sees this statement).
async fn replay_prepared(backend: &mut Backend, bound: &Bound) -> Result<Collected, BackendError> {
    let id = match relay::prepare_silently(backend, &bound.sql).await? {
        Ok(ok) => ok.id,
        Err(error) => {
            return Ok(Collected {
                error: Some(error),
                ..Collected::default()
            });
        }
    };
    for chunk in &bound.long_data {
        backend.send_command(&wire::with_id(chunk, id)).await?;
    }
    backend
        .send_command(&wire::with_id(&bound.execute, id))
        .await?;
    let answer = backend.collect().await?;
    let mut close = [com::STMT_CLOSE, 0, 0, 0, 0];
    close[1..].copy_from_slice(&id.to_le_bytes());
    backend.send_command(&close).await?;
    Ok(answer)
}
