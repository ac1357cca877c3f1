//! Where a session's statements go, and how what they do changes that: a pure struct, no
//! I/O, so every rule is unit-tested here. The session ([`super::Session`]) asks it before
//! each command and tells it what happened after.
//!
//! The rules, in the order [`Routing::choose`] applies them:
//! - pinned to the writer while the writer's status says a transaction is open or
//!   autocommit is off, while temporary tables or table locks exist, or after state the
//!   router cannot replay ([`Effect::PinToWriter`]);
//! - pinned to the reader while a `START TRANSACTION READ ONLY` there is open;
//! - otherwise by the statement's [`Route`]: reads to the reader, `SHOW WARNINGS` and the
//!   like to the connection that ran the previous statement, session statements to the
//!   writer when it is open (else the reader), `START TRANSACTION READ ONLY` to the reader,
//!   everything else to the writer;
//! - a read naming a user variable goes to the writer after a write that may have set one
//!   there ([`Routing::user_variables_on_writer`]).
//!
//! A session statement (`SET`) is recorded as a [`Replay`] by whichever connection ran it
//! first, as text or, prepared with parameters, as the statement and the EXECUTE that bound
//! them; every other connection of the session runs it before its next command.
//!
//! The list of them stays as short as the session's state allows: a `SET` drops the earlier
//! ones whose every variable it, or a later one kept, sets again ([`superseded`]), so a
//! client that sets `@x` a million times has one `SET @x` to replay. Past
//! [`MAX_REPLAYS`] statements or [`MAX_REPLAY_BYTES`] bytes a `SET` is refused before it
//! runs ([`Routing::admits`]).

use std::collections::HashSet;

use crate::classifier::{Assigns, Classification, Effect, Route};
use crate::topology::snapshot::Role;
use crate::wire::status;

/// What the session's open backend connections tell the decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Open {
    /// A writer connection is open.
    pub writer: bool,
    /// The reader connection's status says a transaction is open there.
    pub reader_in_transaction: bool,
}

impl Open {
    /// A statement sent to `role` runs inside a `START TRANSACTION READ ONLY`: the only
    /// transaction that runs on the reader.
    pub fn in_read_only(self, role: Role) -> bool {
        role == Role::Reader && self.reader_in_transaction
    }
}

/// What the connection that ran a statement has of the session state it changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The number of the last session statement recorded: that connection ran it already.
    pub replayed: Option<u64>,
    /// The database a `USE` in it chose.
    pub database: Option<String>,
}

/// A session statement every backend connection of the session must run: recorded after
/// it succeeded on one, run on each other one before its next command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Run as COM_QUERY: a `SET` sent as a query, or prepared without parameters (its text
    /// is the whole statement, values included).
    Text(Vec<u8>),
    /// Prepared, executed with the same parameter packet, closed: a `SET` prepared with
    /// parameters (`SET time_zone = ?`).
    Prepared(Bound),
}

impl Replay {
    /// The bytes it holds.
    fn size(&self) -> usize {
        match self {
            Replay::Text(text) => text.len(),
            Replay::Prepared(bound) => {
                bound.sql.len()
                    + bound.execute.len()
                    + bound.long_data.iter().map(Vec::len).sum::<usize>()
            }
        }
    }
}

/// A session statement recorded for replay, numbered in the order the session ran them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub number: u64,
    pub replay: Replay,
    assigns: Assigns,
}

/// The most session statements a session keeps to replay. Each costs a round trip on every
/// connection the session opens later (a reconnect after a failover replays them all), and
/// a client needs this many only by setting this many distinct variables: a later `SET` of
/// the same ones replaces the earlier.
///
/// Past it (or [`MAX_REPLAY_BYTES`]) the `SET` is refused with a clear error before it runs
/// anywhere, rather than the session pinned to the writer and the statement not recorded:
/// a pinned session would still need the statement on the writer's next connection (a
/// failover, a lost connection), so it would have to be kept anyway or the state silently
/// lost there, and the `SET` may have run on the reader, which the writer never saw. The
/// error keeps every connection's state exact, and only a client that sets a thousand
/// distinct variables in one session meets it.
pub const MAX_REPLAYS: usize = 1000;

/// The most bytes of session statements a session keeps to replay: 16 MiB, MariaDB's
/// default `max_allowed_packet`, so any one `SET` the server takes by default fits.
pub const MAX_REPLAY_BYTES: usize = 16 << 20;

/// Which of `recorded` (oldest first) recording `new` after them makes useless: true for
/// each to drop. One is dropped when all of these hold (anything unknown keeps it):
/// - every variable it sets is set again by `new` or a statement kept after it, so its
///   values are overwritten before anything can see them;
/// - no statement kept after it reads the session's state (`reads`: a `SET sql_mode =
///   CONCAT(@@sql_mode, ...)` needs what came before it), and `new` reads none either;
/// - when it sets the mode or the character set (`context`), no statement after it, up to
///   the ones that set those again, has text whose meaning depends on them (not `plain`:
///   `SET NAMES latin1; SET @a = 'é'; SET NAMES utf8mb4` keeps all three, as `@a` must be
///   read as latin1 again).
pub fn superseded<'a>(
    recorded: impl DoubleEndedIterator<Item = &'a Assigns> + ExactSizeIterator,
    new: &Assigns,
) -> Vec<bool> {
    let mut drop = vec![false; recorded.len()];
    let Some(targets) = new.targets.as_ref().filter(|_| !new.reads) else {
        return drop;
    };
    let mut covered: HashSet<&str> = targets.iter().map(String::as_str).collect();
    // Which of the mode and character set variables, as they are at this point of the
    // list, a statement after it reads its text with: None, none of them; Some(set), all
    // but those in `set` (set again before any such statement).
    let mut exposed: Option<HashSet<&str>> = (!new.plain).then(HashSet::new);
    for (at, old) in recorded.enumerate().rev() {
        let Some(old_targets) = &old.targets else {
            break;
        };
        let overwritten = old_targets.iter().all(|t| covered.contains(t.as_str()));
        let read_as_context = old.context
            && exposed
                .as_ref()
                .is_some_and(|set| !old_targets.iter().all(|t| set.contains(t.as_str())));
        if overwritten && !read_as_context {
            drop[at] = true;
            continue;
        }
        if old.reads {
            break;
        }
        covered.extend(old_targets.iter().map(String::as_str));
        if let Some(set) = &mut exposed {
            set.extend(old_targets.iter().map(String::as_str));
        }
        if !old.plain {
            exposed = Some(HashSet::new());
        }
    }
    drop
}

/// A statement prepared with parameters and what bound them, as the client sent them.
///
/// Replaying it exactly that way (COM_STMT_PREPARE of the same text, COM_STMT_EXECUTE of
/// the same parameter bytes and types, COM_STMT_CLOSE) was chosen over writing the values
/// into the text as literals: the other server converts the very bytes and types the first
/// one did (a double, a datetime with microseconds, a string in the client's character set),
/// with no quoting to get right under any `sql_mode` (`NO_BACKSLASH_ESCAPES`). Refusing it,
/// or pinning the session to the writer, would cost the read scaling of every client that
/// prepares all its statements (Connector/C's `mariadb-test --ps-protocol`, PHP and Perl
/// with server-side prepares). What it costs is two round trips per replay, on a connection
/// the session had not used since, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The statement's text, as the client prepared it.
    pub sql: Vec<u8>,
    /// COM_STMT_SEND_LONG_DATA payloads sent before the EXECUTE, statement id 0.
    pub long_data: Vec<Vec<u8>>,
    /// The COM_STMT_EXECUTE payload, statement id 0, with the parameter types (a statement
    /// prepared afresh needs them) and without a cursor.
    pub execute: Vec<u8>,
}

/// The session state that decides where statements go, and the state every backend
/// connection must have (the database, the session statements to replay).
#[derive(Debug, Clone)]
pub struct Routing {
    /// The writer's status flags after its last response, kept while no writer connection is
    /// open (autocommit=0 survives a reconnect through the replayed SET).
    pub writer_status: u16,
    /// The current database, which every backend connection is brought to.
    pub database: Option<String>,
    /// Session statements (`SET ...`) every backend connection must have run, in order.
    pub replays: Vec<Recorded>,
    replay_count: u64,
    temporary_tables: HashSet<String>,
    tables_locked: bool,
    /// State exists that only the writer connection has (see `Effect::PinToWriter`).
    stays_on_writer: bool,
    last_used: Option<Role>,
    /// The GTID of the session's last write, for read-your-writes.
    pub last_gtid: Option<String>,
    /// A statement that may have set user variables without a replayable `SET` ran on the
    /// writer: `CALL p()` whose procedure sets `@v`, `INSERT ... VALUES (@v := expr)`, a
    /// write calling a stored function that sets one. Reads naming a user variable then go
    /// to the writer, where the value is. The alternative, carrying values over (read them
    /// on the writer and `SET` them on the reader), was not chosen: which variables a
    /// procedure or function set is unknowable from its call, a carried value would need
    /// its exact type, charset and collation rebuilt as a literal, and it costs a round trip
    /// to the writer before such a read anyway; a read that names a user variable after
    /// such a write is rare, and on the writer it is right by construction.
    user_variables_on_writer: bool,
}

impl Routing {
    /// A fresh session in `database`: autocommit on, nothing pinned.
    pub fn new(database: Option<String>) -> Self {
        Self {
            writer_status: status::AUTOCOMMIT,
            database,
            replays: Vec::new(),
            replay_count: 0,
            temporary_tables: HashSet::new(),
            tables_locked: false,
            stays_on_writer: false,
            last_used: None,
            last_gtid: None,
            user_variables_on_writer: false,
        }
    }

    /// The status flags the router reports itself (PING, RESET, COM_SET_OPTION).
    pub fn client_status(&self) -> u16 {
        self.writer_status & (status::IN_TRANS | status::AUTOCOMMIT)
    }

    fn pinned_to_writer(&self) -> bool {
        self.stays_on_writer
            || self.tables_locked
            || !self.temporary_tables.is_empty()
            || self.writer_status & status::IN_TRANS != 0
            || self.writer_status & status::AUTOCOMMIT == 0
    }

    /// Where a statement of this route goes now; `begin_read_only` is what a
    /// `START TRANSACTION` in it asks for.
    pub fn choose(&self, open: Open, route: Route, begin_read_only: Option<bool>) -> Role {
        if self.pinned_to_writer() {
            return Role::Writer;
        }
        if open.reader_in_transaction {
            return Role::Reader;
        }
        match route {
            Route::Read => Role::Reader,
            Route::LastUsed => self.last_used.unwrap_or(Role::Writer),
            Route::Session if open.writer => Role::Writer,
            Route::Session => Role::Reader,
            Route::Write if begin_read_only == Some(true) => Role::Reader,
            Route::Write => Role::Writer,
        }
    }

    /// [`Routing::choose`], and a read naming a user variable to the writer while the
    /// session's variables may live there only.
    pub fn choose_reading(
        &self,
        open: Open,
        route: Route,
        begin_read_only: Option<bool>,
        reads_user_variables: bool,
    ) -> Role {
        match self.choose(open, route, begin_read_only) {
            Role::Reader if reads_user_variables && self.user_variables_on_writer => Role::Writer,
            role => role,
        }
    }

    /// Where a COM_QUERY goes.
    pub fn query(&self, open: Open, class: &Classification) -> Role {
        self.choose_reading(open, class.route, class.begin(), class.reads_user_variables)
    }

    /// Where an EXECUTE of a statement prepared as `class` goes (a prepared `START
    /// TRANSACTION READ ONLY` is not followed to the reader).
    pub fn execute(&self, open: Open, class: &Classification) -> Role {
        self.choose_reading(open, class.route, None, class.reads_user_variables)
    }

    /// Whether a statement of `route` that lost the `role` connection before any of its
    /// answer reached the client runs again on the writer: a read on the reader changed
    /// nothing; anything else may have run.
    pub fn retry_on_writer(role: Role, route: Route) -> bool {
        role == Role::Reader && route == Route::Read
    }

    /// A response was relayed from `role`: it is the connection `SHOW WARNINGS` asks next,
    /// the writer's `status` is what pins the session, and a write's GTID is the session's
    /// last.
    pub fn answered(&mut self, role: Role, status: u16, gtid: Option<&str>) {
        self.last_used = Some(role);
        if role == Role::Writer {
            self.writer_status = status;
            if let Some(gtid) = gtid {
                self.last_gtid = Some(gtid.to_owned());
            }
        }
    }

    /// A statement of `route` ran on `role` (successful or not: a failed CALL may have set
    /// variables before its error).
    pub fn ran(&mut self, role: Role, route: Route) {
        if role == Role::Writer && route == Route::Write {
            self.user_variables_on_writer = true;
        }
    }

    /// The session effects of a query that succeeded on one connection; what that
    /// connection has now (see [`Applied`]).
    pub fn apply(&mut self, class: &Classification, sql: &[u8]) -> Applied {
        self.apply_with(class, |start, end| Replay::Text(sql[start..end].to_vec()))
    }

    /// The session effects of an EXECUTE that succeeded on one connection, the statement
    /// prepared from `sql` as `class`; `bound` is what bound its parameters, `None` when it
    /// has none (then its text is replayed, as a query's is). The same effects as the same
    /// text sent as a query: a prepared `SET` is replayed, a prepared `CREATE TEMPORARY
    /// TABLE` pins the session to the writer.
    pub fn apply_executed(
        &mut self,
        class: &Classification,
        sql: &[u8],
        bound: Option<Bound>,
    ) -> Applied {
        match bound {
            None => self.apply(class, sql),
            Some(bound) => self.apply_with(class, |_, _| Replay::Prepared(bound.clone())),
        }
    }

    /// Whether the session statements of `class` may be recorded: the list stays within
    /// [`MAX_REPLAYS`] and [`MAX_REPLAY_BYTES`] once they are (and the ones they make useless
    /// dropped). `prepared`: the bytes of the replay when it is a statement prepared with
    /// parameters (see [`Bound`]); else each is its text. Err: the message of the refusal.
    pub fn admits(&self, class: &Classification, prepared: Option<usize>) -> Result<(), String> {
        if !class.replays() {
            return Ok(());
        }
        let new: Vec<(Assigns, usize)> = class
            .effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Replay {
                    start,
                    end,
                    assigns,
                } => Some(match prepared {
                    Some(size) => (recorded_prepared(assigns), size),
                    None => (assigns.clone(), end - start),
                }),
                _ => None,
            })
            .collect();
        let mut list: Vec<(&Assigns, usize)> = self
            .replays
            .iter()
            .map(|r| (&r.assigns, r.replay.size()))
            .collect();
        for (assigns, size) in &new {
            let dropped = superseded(list.iter().map(|(a, _)| *a), assigns);
            let mut dropped = dropped.into_iter();
            list.retain(|_| !dropped.next().unwrap_or(false));
            list.push((assigns, *size));
        }
        let bytes: usize = list.iter().map(|(_, size)| size).sum();
        if list.len() <= MAX_REPLAYS && bytes <= MAX_REPLAY_BYTES {
            return Ok(());
        }
        Err(format!(
            "foobar-db-router: the session would have {} SET statements ({bytes} bytes) to \
             replay on each database connection it opens, more than the router keeps \
             ({MAX_REPLAYS} statements, {MAX_REPLAY_BYTES} bytes); the statement was not run. \
             A SET of the same variables replaces an earlier one; a reset of the connection \
             forgets them all",
            list.len()
        ))
    }

    /// The effects of `class`, each recorded statement (a byte range of its text) made into a
    /// replay by `replay`, after the ones it makes useless are dropped ([`superseded`]).
    fn apply_with(
        &mut self,
        class: &Classification,
        replay: impl Fn(usize, usize) -> Replay,
    ) -> Applied {
        let mut applied = Applied::default();
        for effect in &class.effects {
            match effect {
                Effect::Replay {
                    start,
                    end,
                    assigns,
                } => {
                    let replay = replay(*start, *end);
                    let assigns = match replay {
                        Replay::Text(_) => assigns.clone(),
                        Replay::Prepared(_) => recorded_prepared(assigns),
                    };
                    let dropped = superseded(self.replays.iter().map(|r| &r.assigns), &assigns);
                    let mut dropped = dropped.into_iter();
                    self.replays.retain(|_| !dropped.next().unwrap_or(false));
                    self.replay_count += 1;
                    self.replays.push(Recorded {
                        number: self.replay_count,
                        replay,
                        assigns,
                    });
                    applied.replayed = Some(self.replay_count);
                }
                Effect::UseDatabase(db) => {
                    self.database = Some(db.clone());
                    applied.database = Some(db.clone());
                }
                Effect::Begin { .. } => {}
                Effect::CreateTemporary(name) => {
                    self.temporary_tables.insert(name.clone());
                }
                Effect::DropTables(names) => {
                    for name in names {
                        self.temporary_tables.remove(name);
                    }
                }
                Effect::LockTables => self.tables_locked = true,
                Effect::UnlockTables => self.tables_locked = false,
                Effect::PinToWriter => self.stays_on_writer = true,
            }
        }
        applied
    }

    /// The `role` connection broke: what the writer's connection held (its transaction,
    /// its table locks, its temporary tables) is gone with it.
    pub fn lost(&mut self, role: Role) {
        if role == Role::Writer {
            self.writer_status &= !status::IN_TRANS;
            self.tables_locked = false;
            self.temporary_tables.clear();
        }
    }

    /// The writer connection is replaced by one to another node. True when a transaction
    /// was open on the old one: it is lost (the server rolls it back), and the statement
    /// that needs the new writer must fail.
    pub fn writer_replaced(&mut self) -> bool {
        let in_transaction = self.writer_status & status::IN_TRANS != 0;
        self.writer_status &= !status::IN_TRANS;
        in_transaction
    }

    /// COM_RESET_CONNECTION or COM_CHANGE_USER: every piece of session state forgotten but
    /// the database (a change of user sets its own) and the last write's GTID. Numbering
    /// of session statements goes on.
    pub fn reset(&mut self) {
        self.writer_status = status::AUTOCOMMIT;
        self.replays.clear();
        self.temporary_tables.clear();
        self.tables_locked = false;
        self.stays_on_writer = false;
        self.user_variables_on_writer = false;
        self.last_used = None;
    }
}

/// What a `SET` prepared with parameters assigns: its bound values' bytes are read in the
/// client's character set, so its meaning is never taken as independent of it.
fn recorded_prepared(assigns: &Assigns) -> Assigns {
    Assigns {
        plain: false,
        ..assigns.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifier::classify;

    const NONE_OPEN: Open = Open {
        writer: false,
        reader_in_transaction: false,
    };
    const WRITER_OPEN: Open = Open {
        writer: true,
        reader_in_transaction: false,
    };

    #[test]
    fn only_the_reader_with_a_transaction_open_is_in_a_read_only_transaction() {
        let reader_in_transaction = Open {
            writer: true,
            reader_in_transaction: true,
        };
        assert!(reader_in_transaction.in_read_only(Role::Reader));
        assert!(!reader_in_transaction.in_read_only(Role::Writer));
        assert!(!WRITER_OPEN.in_read_only(Role::Reader));
    }

    /// Where `sql` goes now.
    fn route(routing: &Routing, sql: &str) -> Role {
        routing.query(WRITER_OPEN, &classify(sql.as_bytes()))
    }

    /// `sql` ran on `role` and succeeded, its answer leaving the writer with `status`.
    fn run(routing: &mut Routing, role: Role, sql: &str, status: u16) {
        let class = classify(sql.as_bytes());
        routing.answered(role, status, None);
        routing.ran(role, class.route);
        routing.apply(&class, sql.as_bytes());
    }

    #[test]
    fn reads_go_to_the_reader_and_writes_to_the_writer() {
        let routing = Routing::new(None);
        assert_eq!(route(&routing, "SELECT * FROM posts"), Role::Reader);
        assert_eq!(
            route(&routing, "INSERT INTO posts VALUES (1)"),
            Role::Writer
        );
        assert_eq!(
            route(&routing, "SELECT * FROM posts FOR UPDATE"),
            Role::Writer
        );
        assert_eq!(route(&routing, "FLUSH TABLES"), Role::Writer);
    }

    #[test]
    fn an_open_transaction_pins_reads_to_the_writer_until_it_ends() {
        let mut routing = Routing::new(None);
        assert_eq!(route(&routing, "BEGIN"), Role::Writer);
        run(
            &mut routing,
            Role::Writer,
            "BEGIN",
            status::AUTOCOMMIT | status::IN_TRANS,
        );
        assert_eq!(route(&routing, "SELECT 1"), Role::Writer);
        assert_eq!(routing.client_status() & status::IN_TRANS, status::IN_TRANS);
        run(&mut routing, Role::Writer, "COMMIT", status::AUTOCOMMIT);
        assert_eq!(route(&routing, "SELECT 1"), Role::Reader);
    }

    #[test]
    fn load_data_local_goes_to_the_writer_in_and_out_of_transactions() {
        let load = "LOAD DATA LOCAL INFILE 'a.csv' INTO TABLE t FIELDS TERMINATED BY ','";
        let mut routing = Routing::new(None);
        assert_eq!(route(&routing, load), Role::Writer);
        assert_eq!(
            routing.query(NONE_OPEN, &classify(load.as_bytes())),
            Role::Writer
        );
        run(
            &mut routing,
            Role::Writer,
            "BEGIN",
            status::AUTOCOMMIT | status::IN_TRANS,
        );
        assert_eq!(route(&routing, load), Role::Writer);
        // A file over the limit closes the writer connection: its transaction is gone.
        routing.lost(Role::Writer);
        assert_eq!(routing.client_status() & status::IN_TRANS, 0);
        assert_eq!(route(&routing, "SELECT 1"), Role::Reader);
    }

    #[test]
    fn autocommit_off_pins_reads_to_the_writer() {
        let mut routing = Routing::new(None);
        run(&mut routing, Role::Writer, "SET autocommit=0", 0);
        assert_eq!(route(&routing, "SELECT 1"), Role::Writer);
        run(
            &mut routing,
            Role::Writer,
            "SET autocommit=1",
            status::AUTOCOMMIT,
        );
        assert_eq!(route(&routing, "SELECT 1"), Role::Reader);
    }

    #[test]
    fn a_temporary_table_pins_reads_to_the_writer_until_it_is_dropped() {
        let mut routing = Routing::new(None);
        let created = "CREATE TEMPORARY TABLE t (id INT)";
        run(&mut routing, Role::Writer, created, status::AUTOCOMMIT);
        assert_eq!(route(&routing, "SELECT * FROM posts"), Role::Writer);
        run(
            &mut routing,
            Role::Writer,
            "DROP TABLE other",
            status::AUTOCOMMIT,
        );
        assert_eq!(route(&routing, "SELECT * FROM posts"), Role::Writer);
        run(
            &mut routing,
            Role::Writer,
            "DROP TEMPORARY TABLE t",
            status::AUTOCOMMIT,
        );
        assert_eq!(route(&routing, "SELECT * FROM posts"), Role::Reader);
    }

    #[test]
    fn table_locks_pin_reads_to_the_writer_until_unlocked() {
        let mut routing = Routing::new(None);
        run(
            &mut routing,
            Role::Writer,
            "LOCK TABLES posts READ",
            status::AUTOCOMMIT,
        );
        assert_eq!(route(&routing, "SELECT * FROM posts"), Role::Writer);
        run(
            &mut routing,
            Role::Writer,
            "UNLOCK TABLES",
            status::AUTOCOMMIT,
        );
        assert_eq!(route(&routing, "SELECT * FROM posts"), Role::Reader);
    }

    #[test]
    fn state_the_router_cannot_replay_pins_the_session_to_the_writer_until_reset() {
        let mut routing = Routing::new(None);
        let xa = "XA START 'x'";
        assert_eq!(classify(xa.as_bytes()).effects, [Effect::PinToWriter]);
        run(&mut routing, Role::Writer, xa, status::AUTOCOMMIT);
        assert_eq!(route(&routing, "SELECT 1"), Role::Writer);
        routing.reset();
        assert_eq!(route(&routing, "SELECT 1"), Role::Reader);
    }

    #[test]
    fn a_read_only_transaction_goes_to_the_reader_and_keeps_the_session_there() {
        let routing = Routing::new(None);
        assert_eq!(route(&routing, "START TRANSACTION READ ONLY"), Role::Reader);
        assert_eq!(
            route(&routing, "START TRANSACTION READ WRITE"),
            Role::Writer
        );
        let reader_in_transaction = Open {
            writer: true,
            reader_in_transaction: true,
        };
        for sql in ["SELECT 1", "INSERT INTO posts VALUES (1)", "SHOW WARNINGS"] {
            let class = classify(sql.as_bytes());
            assert_eq!(
                routing.query(reader_in_transaction, &class),
                Role::Reader,
                "{sql}"
            );
        }
    }

    #[test]
    fn the_writer_pin_wins_over_a_transaction_on_the_reader() {
        let mut routing = Routing::new(None);
        run(
            &mut routing,
            Role::Writer,
            "LOCK TABLES posts WRITE",
            status::AUTOCOMMIT,
        );
        let open = Open {
            writer: true,
            reader_in_transaction: true,
        };
        assert_eq!(routing.query(open, &classify(b"SELECT 1")), Role::Writer);
    }

    #[test]
    fn show_warnings_goes_to_the_connection_that_ran_the_previous_statement() {
        let mut routing = Routing::new(None);
        assert_eq!(route(&routing, "SHOW WARNINGS"), Role::Writer);
        run(&mut routing, Role::Reader, "SELECT 1", status::AUTOCOMMIT);
        assert_eq!(route(&routing, "SHOW WARNINGS"), Role::Reader);
        assert_eq!(route(&routing, "SELECT FOUND_ROWS()"), Role::Reader);
        run(
            &mut routing,
            Role::Writer,
            "INSERT INTO posts VALUES (1)",
            status::AUTOCOMMIT,
        );
        assert_eq!(route(&routing, "SHOW WARNINGS"), Role::Writer);
    }

    #[test]
    fn a_session_statement_goes_to_the_writer_only_when_it_is_open() {
        let routing = Routing::new(None);
        let set = classify(b"SET NAMES utf8mb4");
        assert_eq!(set.route, Route::Session);
        assert_eq!(routing.query(WRITER_OPEN, &set), Role::Writer);
        assert_eq!(routing.query(NONE_OPEN, &set), Role::Reader);
    }

    #[test]
    fn after_a_write_a_read_naming_a_user_variable_goes_to_the_writer() {
        let mut routing = Routing::new(None);
        assert_eq!(route(&routing, "SELECT @total"), Role::Reader);
        run(
            &mut routing,
            Role::Reader,
            "SELECT @total",
            status::AUTOCOMMIT,
        );
        assert_eq!(route(&routing, "SELECT @total"), Role::Reader);
        // A failed CALL counts too: `ran` is told whatever the outcome.
        routing.ran(Role::Writer, Route::Write);
        assert_eq!(route(&routing, "SELECT @total"), Role::Writer);
        assert_eq!(route(&routing, "SELECT * FROM posts"), Role::Reader);
        let prepared = classify(b"SELECT @total + ?");
        assert_eq!(routing.execute(WRITER_OPEN, &prepared), Role::Writer);
        routing.reset();
        assert_eq!(route(&routing, "SELECT @total"), Role::Reader);
    }

    #[test]
    fn a_session_statement_on_the_writer_does_not_send_user_variable_reads_there() {
        let mut routing = Routing::new(None);
        run(
            &mut routing,
            Role::Writer,
            "SET @total = 5",
            status::AUTOCOMMIT,
        );
        assert_eq!(route(&routing, "SELECT @total"), Role::Reader);
    }

    #[test]
    fn an_execute_does_not_follow_a_prepared_read_only_transaction_to_the_reader() {
        let routing = Routing::new(None);
        let begin = classify(b"START TRANSACTION READ ONLY");
        assert_eq!(routing.query(WRITER_OPEN, &begin), Role::Reader);
        assert_eq!(routing.execute(WRITER_OPEN, &begin), Role::Writer);
        let read = classify(b"SELECT * FROM posts WHERE id = ?");
        assert_eq!(routing.execute(WRITER_OPEN, &read), Role::Reader);
    }

    #[test]
    fn session_statements_are_recorded_once_each_numbered_for_replay() {
        let mut routing = Routing::new(None);
        let mut apply = |sql: &str| routing.apply(&classify(sql.as_bytes()), sql.as_bytes());
        let set = "SET sql_mode='ANSI'";
        assert_eq!(apply(set).replayed, Some(1));
        let names = "SET NAMES utf8mb4";
        assert_eq!(apply(names).replayed, Some(2));
        assert_eq!(apply(set).replayed, Some(3));
        assert_eq!(apply("SELECT 1"), Applied::default());
        let text = |sql: &str| Replay::Text(sql.as_bytes().to_vec());
        assert_eq!(numbered(&routing), [(2, text(names)), (3, text(set))]);
        routing.reset();
        assert!(routing.replays.is_empty());
        let mut apply = |sql: &str| routing.apply(&classify(sql.as_bytes()), sql.as_bytes());
        assert_eq!(apply(names).replayed, Some(4));
    }

    /// The session statements to replay, numbered.
    fn numbered(routing: &Routing) -> Vec<(u64, Replay)> {
        routing
            .replays
            .iter()
            .map(|r| (r.number, r.replay.clone()))
            .collect()
    }

    /// The texts of the session statements to replay, after each of `sqls` was applied.
    fn replayed_after(sqls: &[&str]) -> Vec<String> {
        let mut routing = Routing::new(None);
        for sql in sqls {
            routing.apply(&classify(sql.as_bytes()), sql.as_bytes());
        }
        texts(&routing)
    }

    fn texts(routing: &Routing) -> Vec<String> {
        routing
            .replays
            .iter()
            .map(|r| match &r.replay {
                Replay::Text(text) => String::from_utf8_lossy(text).into_owned(),
                Replay::Prepared(bound) => String::from_utf8_lossy(&bound.sql).into_owned(),
            })
            .collect()
    }

    #[test]
    fn a_later_set_of_the_same_variables_replaces_the_earlier() {
        let mut routing = Routing::new(None);
        for i in 0..10_000 {
            let sql = format!("SET @x = {i}");
            routing.apply(&classify(sql.as_bytes()), sql.as_bytes());
        }
        assert_eq!(texts(&routing), ["SET @x = 9999"]);
        assert_eq!(routing.replays[0].number, 10_000);
        // Two variables in one: kept until both are set again.
        assert_eq!(
            replayed_after(&["SET @a = 1, @b = 2", "SET @A = 3"]),
            ["SET @a = 1, @b = 2", "SET @A = 3"]
        );
        assert_eq!(
            replayed_after(&["SET @a = 1, @b = 2", "SET @a = 3", "SET @`b` := 4"]),
            ["SET @a = 3", "SET @`b` := 4"]
        );
        // Each way of naming a session variable, and autocommit.
        assert_eq!(
            replayed_after(&[
                "SET sql_mode = 'ANSI'",
                "SET autocommit = 0",
                "SET @@session.sql_mode = ''",
                "SET SESSION time_zone = '+01:00'",
                "SET @@autocommit = 1",
                "SET LOCAL sql_mode = 'TRADITIONAL'",
                "SET @@local.time_zone = SYSTEM",
            ]),
            [
                "SET @@autocommit = 1",
                "SET LOCAL sql_mode = 'TRADITIONAL'",
                "SET @@local.time_zone = SYSTEM"
            ]
        );
        // SET NAMES sets four variables: one of them set again keeps it.
        assert_eq!(
            replayed_after(&[
                "SET character_set_client = latin1",
                "SET NAMES utf8mb4",
                "SET character_set_results = NULL",
                "SET NAMES latin1 COLLATE latin1_bin",
            ]),
            ["SET NAMES latin1 COLLATE latin1_bin"]
        );
        assert_eq!(
            replayed_after(&["SET NAMES utf8mb4", "SET character_set_results = NULL"]),
            ["SET NAMES utf8mb4", "SET character_set_results = NULL"]
        );
        // Not the same variable: a user variable and a system variable of one name.
        assert_eq!(
            replayed_after(&["SET @time_zone = 'x'", "SET time_zone = 'x'"]).len(),
            2
        );
    }

    #[test]
    fn a_kept_set_that_reads_the_session_keeps_what_came_before_it() {
        // The CONCAT reads the ANSI before it, and is kept, so that one is too.
        let kept = [
            "SET sql_mode = 'ANSI'",
            "SET sql_mode = CONCAT(@@sql_mode, ',NO_ZERO_DATE'), time_zone = '+00:00'",
            "SET @a = 1",
        ];
        assert_eq!(replayed_after(&kept), kept);
        let mut with_a_later_one = kept.to_vec();
        with_a_later_one.push("SET @a = 2");
        assert_eq!(
            replayed_after(&with_a_later_one),
            [kept[0], kept[1], "SET @a = 2"]
        );
        // Once what read it is set again too, neither is needed.
        assert_eq!(
            replayed_after(&[kept[0], kept[1], "SET sql_mode = '', time_zone = SYSTEM"]),
            ["SET sql_mode = '', time_zone = SYSTEM"]
        );
        // A statement that reads the session removes nothing before it.
        assert_eq!(
            replayed_after(&[
                "SET sql_mode = 'ANSI'",
                "SET sql_mode = CONCAT(@@sql_mode, ',X')"
            ])
            .len(),
            2
        );
        // Repeated, it is repeated (each one reads what the one before did).
        let concat = "SET sql_mode = CONCAT(@@sql_mode, ',X')";
        assert_eq!(replayed_after(&[concat, concat]).len(), 2);
    }

    #[test]
    fn a_mode_or_character_set_stays_while_later_text_depends_on_it() {
        // `'é'` was read as latin1: replayed after utf8mb4 alone it would be another value.
        let kept = ["SET NAMES latin1", "SET @a = 'é'", "SET NAMES utf8mb4"];
        assert_eq!(replayed_after(&kept), kept);
        let mode = [
            "SET sql_mode = 'NO_BACKSLASH_ESCAPES'",
            r"SET @path = 'C:\dir'",
            "SET sql_mode = ''",
        ];
        assert_eq!(replayed_after(&mode), mode);
        // Text that reads the same under either is no reason to keep it.
        assert_eq!(
            replayed_after(&["SET NAMES latin1", "SET @b = 'x'", "SET NAMES utf8mb4"]),
            ["SET @b = 'x'", "SET NAMES utf8mb4"]
        );
        // Nor is text read after the character set was set again.
        assert_eq!(
            replayed_after(&[kept[0], kept[1], kept[2], "SET @a = 'x'"]),
            ["SET NAMES utf8mb4", "SET @a = 'x'"]
        );
        // A client that alternates the two stays at a few statements.
        let mut routing = Routing::new(None);
        for _ in 0..1000 {
            for sql in ["SET NAMES utf8mb4", "SET @a = 'é'"] {
                routing.apply(&classify(sql.as_bytes()), sql.as_bytes());
            }
        }
        assert!(routing.replays.len() <= 3, "{:?}", texts(&routing));
    }

    #[test]
    fn a_set_not_taken_apart_is_kept_with_everything_before_it() {
        let kept = ["SET @x = 1", "SET @'a''b' = 2", "SET @x = 3"];
        assert_eq!(replayed_after(&kept), kept);
        let kept = ["SET @x = 1", "SET CHARACTER SET utf8mb4", "SET @x = 3"];
        assert_eq!(replayed_after(&kept), kept);
    }

    #[test]
    fn a_set_past_the_limits_is_refused_before_it_runs() {
        let mut routing = Routing::new(None);
        for i in 0..MAX_REPLAYS {
            let sql = format!("SET @v{i} = 1");
            let class = classify(sql.as_bytes());
            assert_eq!(routing.admits(&class, None), Ok(()), "{sql}");
            routing.apply(&class, sql.as_bytes());
        }
        let refused = routing.admits(&classify(b"SET @one_more = 1"), None);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("1001 SET statements") && e.contains("(1000 statements")),
            "{refused:?}"
        );
        // One that replaces an earlier one adds nothing: still admitted.
        assert_eq!(routing.admits(&classify(b"SET @v7 = 2"), None), Ok(()));
        assert_eq!(routing.admits(&classify(b"SELECT @v7"), None), Ok(()));
        // Prepared with parameters, what it would hold counts.
        let mut routing = Routing::new(None);
        let prepared = classify(b"SET @doc = ?");
        assert_eq!(routing.admits(&prepared, Some(MAX_REPLAY_BYTES)), Ok(()));
        assert!(
            routing
                .admits(&prepared, Some(MAX_REPLAY_BYTES + 1))
                .is_err()
        );
        let big = format!("SET @doc = '{}'", "x".repeat(MAX_REPLAY_BYTES));
        assert!(routing.admits(&classify(big.as_bytes()), None).is_err());
        routing.apply(&classify(b"SET @a = 1"), b"SET @a = 1");
        routing.reset();
        assert!(routing.replays.is_empty());
    }

    /// What an EXECUTE of `SET time_zone = ?` binding `zone` leaves to replay.
    fn time_zone(zone: &str) -> Bound {
        let mut execute = vec![0x17, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 253, 0];
        execute.push(u8::try_from(zone.len()).unwrap());
        execute.extend_from_slice(zone.as_bytes());
        Bound {
            sql: b"SET time_zone = ?".to_vec(),
            long_data: Vec::new(),
            execute,
        }
    }

    #[test]
    fn a_prepared_set_is_replayed_with_the_values_it_was_executed_with() {
        let mut routing = Routing::new(None);
        let class = classify(b"SET time_zone = ?");
        let sql = b"SET time_zone = ?";
        let first = routing.apply_executed(&class, sql, Some(time_zone("+05:00")));
        assert_eq!(first.replayed, Some(1));
        routing.apply_executed(&class, sql, Some(time_zone("+01:00")));
        // Each EXECUTE sets time_zone again: the last one is all there is to replay.
        let again = routing.apply_executed(&class, sql, Some(time_zone("+05:00")));
        assert_eq!(again.replayed, Some(3));
        assert_eq!(
            numbered(&routing),
            [(3, Replay::Prepared(time_zone("+05:00")))]
        );
        // Prepared without parameters, its text says it all: replayed as a query.
        let sql = b"SET sql_mode = 'ANSI'";
        routing.apply_executed(&classify(sql), sql, None);
        assert_eq!(numbered(&routing)[1], (4, Replay::Text(sql.to_vec())));
        routing.reset();
        assert!(routing.replays.is_empty());
    }

    #[test]
    fn a_prepared_statement_changes_the_session_as_its_text_would() {
        let mut routing = Routing::new(None);
        let create = b"CREATE TEMPORARY TABLE t (id INT)";
        let applied = routing.apply_executed(&classify(create), create, None);
        assert_eq!(applied, Applied::default());
        assert_eq!(route(&routing, "SELECT * FROM posts"), Role::Writer);
        let drop = b"DROP TEMPORARY TABLE t";
        routing.apply_executed(&classify(drop), drop, None);
        assert_eq!(route(&routing, "SELECT * FROM posts"), Role::Reader);
        // A prepared `SET @v = ?` is replayed, so it does not send `@v`'s reads to the writer.
        let set = b"SET @v = ?";
        let class = classify(set);
        assert_eq!(routing.execute(NONE_OPEN, &class), Role::Reader);
        routing.answered(Role::Reader, status::AUTOCOMMIT, None);
        routing.ran(Role::Reader, class.route);
        routing.apply_executed(&class, set, Some(time_zone("+05:00")));
        assert_eq!(route(&routing, "SELECT @v"), Role::Reader);
    }

    #[test]
    fn use_changes_the_database_and_a_reset_keeps_it() {
        let mut routing = Routing::new(Some("first".into()));
        let used = routing.apply(&classify(b"USE second"), b"USE second");
        assert_eq!(used.database.as_deref(), Some("second"));
        assert_eq!(routing.database.as_deref(), Some("second"));
        run(&mut routing, Role::Writer, "SET autocommit=0", 0);
        routing.reset();
        assert_eq!(routing.database.as_deref(), Some("second"));
        assert_eq!(routing.writer_status, status::AUTOCOMMIT);
        assert!(routing.replays.is_empty());
    }

    #[test]
    fn losing_the_writer_forgets_its_transaction_locks_and_temporary_tables() {
        let mut routing = Routing::new(None);
        run(
            &mut routing,
            Role::Writer,
            "CREATE TEMPORARY TABLE t (id INT)",
            status::AUTOCOMMIT,
        );
        run(
            &mut routing,
            Role::Writer,
            "LOCK TABLES posts READ",
            status::AUTOCOMMIT,
        );
        run(
            &mut routing,
            Role::Writer,
            "BEGIN",
            status::AUTOCOMMIT | status::IN_TRANS,
        );
        routing.lost(Role::Reader);
        assert_eq!(route(&routing, "SELECT 1"), Role::Writer);
        routing.lost(Role::Writer);
        assert_eq!(route(&routing, "SELECT 1"), Role::Reader);
        assert_eq!(routing.client_status(), status::AUTOCOMMIT);
    }

    #[test]
    fn losing_the_writer_keeps_autocommit_off() {
        let mut routing = Routing::new(None);
        run(&mut routing, Role::Writer, "SET autocommit=0", 0);
        routing.lost(Role::Writer);
        assert_eq!(route(&routing, "SELECT 1"), Role::Writer);
    }

    #[test]
    fn replacing_the_writer_loses_an_open_transaction_once() {
        let mut routing = Routing::new(None);
        assert!(!routing.writer_replaced());
        run(
            &mut routing,
            Role::Writer,
            "BEGIN",
            status::AUTOCOMMIT | status::IN_TRANS,
        );
        assert!(routing.writer_replaced());
        assert!(!routing.writer_replaced());
        assert_eq!(route(&routing, "SELECT 1"), Role::Reader);
    }

    #[test]
    fn only_a_read_that_lost_the_reader_is_retried_on_the_writer() {
        assert!(Routing::retry_on_writer(Role::Reader, Route::Read));
        assert!(!Routing::retry_on_writer(Role::Writer, Route::Read));
        assert!(!Routing::retry_on_writer(Role::Reader, Route::Session));
        assert!(!Routing::retry_on_writer(Role::Reader, Route::Write));
        assert!(!Routing::retry_on_writer(Role::Reader, Route::LastUsed));
    }

    #[test]
    fn the_session_gtid_is_the_last_write_acknowledged_by_the_writer() {
        let mut routing = Routing::new(None);
        routing.answered(Role::Reader, status::AUTOCOMMIT, Some("0-1-5"));
        assert_eq!(routing.last_gtid, None);
        routing.answered(Role::Writer, status::AUTOCOMMIT, Some("0-1-7"));
        routing.answered(Role::Writer, status::AUTOCOMMIT, None);
        assert_eq!(routing.last_gtid.as_deref(), Some("0-1-7"));
    }

    #[test]
    fn a_reader_answer_does_not_change_the_writer_status() {
        let mut routing = Routing::new(None);
        routing.answered(Role::Writer, status::AUTOCOMMIT | status::IN_TRANS, None);
        routing.answered(Role::Reader, status::AUTOCOMMIT, None);
        assert_eq!(routing.writer_status, status::AUTOCOMMIT | status::IN_TRANS);
    }
}
