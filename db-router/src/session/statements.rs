//! The prepared-statement commands (COM_STMT_PREPARE, EXECUTE, SEND_LONG_DATA, CLOSE,
//! RESET, FETCH): one client statement id over the statements prepared on each backend
//! connection ([`crate::prepared`] keeps the books), each EXECUTE routed as
//! [`super::routing::Routing::execute`] says.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use super::routing::{Bound, Routing};
use super::{Flow, Refusal, Session};
use crate::backend::{BackendError, PreparedOn};
use crate::classifier::{self, Route};
use crate::prepared::{self, Statement};
use crate::relay::{self, RelayError, Shape};
use crate::topology::snapshot::Role;
use crate::wire::{self, code};

/// How one try of a command on a backend ended.
enum Attempt {
    /// Answered (or refused by the router itself); the session goes on as the flow says.
    Done(Flow),
    /// The backend connection broke before any of the answer reached the client.
    Lost(BackendError),
}

impl<C: AsyncRead + AsyncWrite + Unpin> Session<C> {
    pub(super) async fn prepare(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let sql = &payload[1..];
        let class = classifier::classify(sql);
        let want = self.routing.choose(self.open(), class.route, None);
        let role = match self.acquire(want).await {
            Ok(role) => role,
            Err(refusal) => return self.refuse(refusal).await,
        };
        self.shared.metrics.query(role.label(), "prepare");
        let id = self.statements.next_id();
        let (slot, client) = self.slot_and_client(role);
        let Some(backend) = slot.as_mut() else {
            return Ok(());
        };
        let sent = backend.send_command(payload).await;
        let result = match sent {
            Ok(()) => relay::relay_prepare(backend, client, id).await,
            Err(error) => Err(RelayError::Backend {
                error,
                forwarded: false,
            }),
        };
        match result {
            Ok(Ok(ok)) => {
                backend.statements.insert(
                    id,
                    PreparedOn {
                        id: ok.id,
                        types_sent: false,
                    },
                );
                self.statements.insert(
                    id,
                    Statement {
                        sql: sql.to_vec(),
                        class,
                        params: ok.params,
                        types: None,
                        long_data: Vec::new(),
                        last_role: None,
                    },
                );
                Ok(())
            }
            Ok(Err(_)) => Ok(()),
            Err(RelayError::Client(e)) => Err(e),
            Err(RelayError::Backend { error, forwarded }) => {
                self.lose(role, &error);
                if forwarded {
                    return Err(std::io::Error::other(error.to_string()));
                }
                self.refuse(Refusal::new(
                    code::BACKEND_LOST,
                    format!("foobar-db-router: {error}; the statement was not prepared"),
                    "backend_lost",
                ))
                .await
            }
        }
    }

    async fn unknown_statement(&mut self, what: &str) -> std::io::Result<Flow> {
        let message = format!("Unknown prepared statement handler given to {what}");
        self.refuse(Refusal::new(
            code::UNKNOWN_STMT,
            message,
            "unknown_statement",
        ))
        .await?;
        Ok(Flow::Continue)
    }

    pub(super) async fn execute(&mut self, payload: &[u8]) -> std::io::Result<Flow> {
        let open = self.open();
        let Some(id) = wire::statement_id(payload).and_then(|id| self.statements.resolve(id))
        else {
            return self.unknown_statement("mysqld_stmt_execute").await;
        };
        let Some(statement) = self.statements.get_mut(id) else {
            return self.unknown_statement("mysqld_stmt_execute").await;
        };
        let params = statement.params;
        match prepared::sent_types(payload, params) {
            Ok(Some(types)) if statement.types.as_deref() != Some(types) => {
                statement.types = Some(types.to_vec());
                // The copies prepared on backends were given other types.
                for backend in [&mut self.writer, &mut self.reader].into_iter().flatten() {
                    if let Some(on) = backend.statements.get_mut(&id) {
                        on.types_sent = false;
                    }
                }
            }
            Ok(_) => {}
            Err(why) => return self.malformed(why).await,
        }
        // A prepared `SET` is replayed (see `routing::Bound`): refused before it runs past
        // what a session keeps.
        let prepared = (params > 0).then(|| {
            statement.sql.len()
                + payload.len()
                + statement.long_data.iter().map(|c| c.len()).sum::<usize>()
        });
        if let Err(message) = self.routing.admits(&statement.class, prepared) {
            self.refuse(Refusal::new(
                code::SESSION_STATEMENTS,
                message,
                "session_statements",
            ))
            .await?;
            return Ok(Flow::Continue);
        }
        let route = statement.class.route;
        let mut want = self.routing.execute(open, &statement.class);
        if open.in_read_only(want) && statement.class.creates_temporary() {
            self.refuse(Refusal::temporary_in_read_only()).await?;
            return Ok(Flow::Continue);
        }
        // Long data goes with the first attempt only; an EXECUTE that had some is not retried.
        let mut long_data = Some(std::mem::take(&mut statement.long_data));
        loop {
            let role = match self.acquire(want).await {
                Ok(role) => role,
                Err(refusal) => {
                    self.refuse(refusal).await?;
                    return Ok(Flow::Continue);
                }
            };
            let long_data = long_data.take().unwrap_or_default();
            // A read that lost the reader before any of its answer reached the client goes to
            // the writer, as a COM_QUERY read does: it changed nothing, so it can run again.
            let retry_on_writer = Routing::retry_on_writer(role, route) && long_data.is_empty();
            match self
                .execute_on(id, role, route, &long_data, payload, params)
                .await?
            {
                Attempt::Done(flow) => return Ok(flow),
                Attempt::Lost(error) if retry_on_writer => {
                    tracing::debug!(peer = self.peer, "read retried on the writer: {error}");
                    self.shared.metrics.fallback("reader_lost");
                    want = Role::Writer;
                }
                Attempt::Lost(error) => {
                    self.refuse(Refusal::lost_mid_statement(&error)).await?;
                    return Ok(Flow::Continue);
                }
            }
        }
    }

    /// One try of an EXECUTE on the `role` connection: prepared there first if it is not yet,
    /// then its long data, then the EXECUTE, its answer relayed. `Lost` means the backend
    /// connection broke before any of the answer reached the client (it is dropped and
    /// reported); past that point a broken backend ends the client's connection too.
    async fn execute_on(
        &mut self,
        id: u32,
        role: Role,
        route: Route,
        long_data: &[BytesMut],
        payload: &[u8],
        params: u16,
    ) -> std::io::Result<Attempt> {
        let Some(statement) = self.statements.get_mut(id) else {
            return Ok(Attempt::Done(
                self.unknown_statement("mysqld_stmt_execute").await?,
            ));
        };
        statement.last_role = Some(role);
        let statement = &*statement;
        let Some(backend) = (match role {
            Role::Writer => self.writer.as_mut(),
            Role::Reader => self.reader.as_mut(),
        }) else {
            return Ok(Attempt::Done(Flow::Continue));
        };
        let on = match backend.statements.get(&id).copied() {
            Some(on) => on,
            None => match relay::prepare_silently(backend, &statement.sql).await {
                Ok(Ok(ok)) => {
                    let on = PreparedOn {
                        id: ok.id,
                        types_sent: false,
                    };
                    backend.statements.insert(id, on);
                    on
                }
                Ok(Err(error)) => {
                    self.client.send(1, &error.packet()).await?;
                    return Ok(Attempt::Done(Flow::Continue));
                }
                Err(error) => {
                    self.lose(role, &error);
                    return Ok(Attempt::Lost(error));
                }
            },
        };
        let execute = match prepared::execute_for_backend(
            payload,
            on.id,
            params,
            statement.types.as_deref(),
            on.types_sent,
        ) {
            Ok(execute) => execute,
            Err(why) => return Ok(Attempt::Done(self.malformed(why).await?)),
        };
        // A prepared `SET` is replayed on the session's other connections once it succeeds;
        // one with parameters as this statement and this EXECUTE (see `routing::Bound`),
        // checked here, before it runs.
        let bound = if params > 0 && statement.class.replays() {
            match prepared::replayable_execute(payload, params, statement.types.as_deref()) {
                Ok(execute) => Some(Bound {
                    sql: statement.sql.clone(),
                    long_data: long_data
                        .iter()
                        .map(|chunk| wire::with_id(chunk, 0).to_vec())
                        .collect(),
                    execute,
                }),
                Err(why) => return Ok(Attempt::Done(self.malformed(why).await?)),
            }
        } else {
            None
        };
        if params > 0 {
            if let Some(on) = backend.statements.get_mut(&id) {
                on.types_sent = true;
            }
        }
        for chunk in long_data {
            let chunk = wire::with_id(chunk, on.id);
            if let Err(error) = backend.send_command(&chunk).await {
                self.lose(role, &error);
                return Ok(Attempt::Lost(error));
            }
        }
        let kind = match route {
            Route::Read => "read",
            _ => "write",
        };
        let Some(result) = self
            .send_and_relay(role, kind, &execute, Shape::Results)
            .await
        else {
            return Ok(Attempt::Done(Flow::Continue));
        };
        match result {
            Ok(outcome) => {
                self.after(role, &outcome);
                self.routing.ran(role, route);
                if outcome.error.is_none()
                    && let Some(statement) = self.statements.get(id)
                    && !statement.class.effects.is_empty()
                {
                    let applied =
                        self.routing
                            .apply_executed(&statement.class, &statement.sql, bound);
                    self.applied(role, applied);
                }
                Ok(Attempt::Done(Flow::Continue))
            }
            Err(RelayError::Client(e)) => Err(e),
            Err(RelayError::Backend { error, forwarded }) => {
                self.lose(role, &error);
                if forwarded {
                    return Err(std::io::Error::other(error.to_string()));
                }
                Ok(Attempt::Lost(error))
            }
        }
    }

    /// COM_STMT_SEND_LONG_DATA has no response; the data waits for the EXECUTE.
    pub(super) async fn long_data(&mut self, payload: BytesMut) -> std::io::Result<Flow> {
        if payload.len() < 7 {
            return self.malformed("COM_STMT_SEND_LONG_DATA too short").await;
        }
        let id = wire::statement_id(&payload).and_then(|id| self.statements.resolve(id));
        if let Some(statement) = id.and_then(|id| self.statements.get_mut(id)) {
            statement.long_data.push(payload);
        }
        Ok(Flow::Continue)
    }

    /// COM_STMT_CLOSE has no response: close it on every backend that prepared it.
    pub(super) async fn close_statement(&mut self, payload: &[u8]) {
        let Some(id) = wire::statement_id(payload).and_then(|id| self.statements.resolve(id))
        else {
            return;
        };
        self.statements.remove(id);
        for role in [Role::Writer, Role::Reader] {
            let Some(backend) = self.slot(role).as_mut() else {
                continue;
            };
            if let Some(on) = backend.statements.remove(&id) {
                let close = wire::with_id(payload, on.id);
                if let Err(error) = backend.send_command(&close).await {
                    self.lose(role, &error);
                }
            }
        }
    }

    pub(super) async fn reset_statement(&mut self, payload: &[u8]) -> std::io::Result<Flow> {
        let Some(id) = wire::statement_id(payload).and_then(|id| self.statements.resolve(id))
        else {
            return self.unknown_statement("mysqld_stmt_reset").await;
        };
        if let Some(statement) = self.statements.get_mut(id) {
            statement.long_data.clear();
        }
        let mut failure = None;
        for role in [Role::Writer, Role::Reader] {
            let Some(backend) = self.slot(role).as_mut() else {
                continue;
            };
            let Some(on) = backend.statements.get(&id).copied() else {
                continue;
            };
            let reset = wire::with_id(payload, on.id);
            let answer = match backend.send_command(&reset).await {
                Ok(()) => backend.collect().await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(collected) => failure = failure.or(collected.error),
                Err(error) => self.lose(role, &error),
            }
        }
        match failure {
            Some(error) => {
                self.client.send(1, &error.packet()).await?;
            }
            None => {
                let ok = wire::ok_packet(self.routing.client_status(), self.login.caps);
                self.client.send(1, &ok).await?;
            }
        }
        Ok(Flow::Continue)
    }

    pub(super) async fn fetch(&mut self, payload: &[u8]) -> std::io::Result<Flow> {
        let Some(id) = wire::statement_id(payload).and_then(|id| self.statements.resolve(id))
        else {
            return self.unknown_statement("mysqld_stmt_fetch").await;
        };
        let role = self.statements.get(id).and_then(|s| s.last_role);
        let caps = self.login.caps;
        let target = role.and_then(|role| {
            let backend = match role {
                Role::Writer => self.writer.as_mut(),
                Role::Reader => self.reader.as_mut(),
            }?;
            let on = backend.statements.get(&id).copied()?;
            Some((role, backend, on))
        });
        let Some((role, backend, on)) = target else {
            return self.unknown_statement("mysqld_stmt_fetch").await;
        };
        self.shared.metrics.query(role.label(), "fetch");
        let fetch = wire::with_id(payload, on.id);
        let result = match backend.send_command(&fetch).await {
            Ok(()) => {
                let ledger = (role == Role::Writer).then(|| self.shared.topology.ledger());
                relay::relay(backend, &mut self.client, ledger, caps, Shape::Rows).await
            }
            Err(error) => Err(RelayError::Backend {
                error,
                forwarded: false,
            }),
        };
        match result {
            Ok(_) => Ok(Flow::Continue),
            Err(RelayError::Client(e)) => Err(e),
            Err(RelayError::Backend { error, .. }) => {
                self.lose(role, &error);
                Err(std::io::Error::other(error.to_string()))
            }
        }
    }
}
