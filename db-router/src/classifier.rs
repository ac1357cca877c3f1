//! Where a statement may go, and what it changes in the session, from its tokens.
//!
//! The rule is conservative: only what is certainly a read without side effects is a
//! [`Route::Read`]; anything not understood is a [`Route::Write`]. A read is a `SELECT` (or
//! `WITH ... SELECT`, `SHOW`, `DESCRIBE`, `EXPLAIN SELECT`) with no locking clause
//! (`FOR UPDATE`, `LOCK IN SHARE MODE`), no `INTO`, no variable assignment and no function
//! whose answer depends on the connection or changes state (`GET_LOCK`, `LAST_INSERT_ID()`,
//! sequences ...).
//!
//! Session state the router must keep consistent across the backend connections a session
//! uses is reported as [`Effect`]s: `SET` and `USE` are recorded and replayed, transactions
//! and temporary tables and table locks pin the session to the writer. `SET` is parsed
//! assignment by assignment, so a complex one (sqlx's `SET sql_mode=(SELECT ...), ...`) is
//! replayed, not treated as unknown.

use crate::tokenizer::{Token, Tokenizer};

/// Where a statement (or a multi-statement query) should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    /// A plain read: the reader, unless the session is pinned.
    Read,
    /// Asks about the previous statement (`SHOW WARNINGS`, `FOUND_ROWS()`): the backend
    /// that ran it.
    LastUsed,
    /// Changes only session state (`SET`, `USE`): any backend, then replayed on the others.
    Session,
    /// The writer.
    Write,
}

/// What a statement does to the session, beyond its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Record this statement (a byte range of the query) and replay it on every backend
    /// connection of the session; `assigns` tells which earlier ones it makes useless.
    Replay {
        start: usize,
        end: usize,
        assigns: Assigns,
    },
    /// `USE db`.
    UseDatabase(String),
    /// `BEGIN` / `START TRANSACTION`; `read_only` for `START TRANSACTION READ ONLY`.
    Begin {
        read_only: bool,
    },
    /// `CREATE TEMPORARY TABLE name`.
    CreateTemporary(String),
    /// `DROP [TEMPORARY] TABLE names`: they are gone (if they were temporary).
    DropTables(Vec<String>),
    LockTables,
    UnlockTables,
    /// State the router cannot replay (a user variable set from an expression, SQL-level
    /// PREPARE, XA): the session stays on the writer from now on.
    PinToWriter,
}

/// What a replayed `SET` assigns, for deciding which of the session's earlier ones a later
/// one makes useless (`session::routing::Routing` keeps the list of them bounded with it).
/// Everything the router cannot tell for sure is on the side of keeping: an unknown form or
/// name, a value that is more than a literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigns {
    /// The session variables it sets: `@name` (lower case) for a user variable, a system
    /// variable's name (lower case) otherwise; `SET NAMES` sets the connection's four
    /// character set variables. None: a form or a name the router does not take apart (a
    /// quoted name with quotes or escapes in it, `GLOBAL` inside a list, `DEFAULT ROLE` ...).
    pub targets: Option<Vec<String>>,
    /// A value depends on the session's state (another variable, a subquery, a function,
    /// the database's character set for `SET CHARACTER SET`): it must run after what it read.
    pub reads: bool,
    /// It sets what decides how later statements' text is read: `sql_mode`, `old_mode`, the
    /// connection's character set or collation.
    pub context: bool,
    /// Its text means the same under any `sql_mode` and client character set: ASCII, with no
    /// backslash and no double quote.
    pub plain: bool,
}

impl Assigns {
    /// A statement the router does not take apart: never dropped, and nothing before it is.
    fn unknown() -> Self {
        Self {
            targets: None,
            reads: true,
            context: true,
            plain: false,
        }
    }
}

/// The classification of one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub route: Route,
    pub effects: Vec<Effect>,
    /// More than one statement.
    pub multi: bool,
    /// Names a user variable (`@v`): its value may live on the writer only (see
    /// `session::routing::Routing`).
    pub reads_user_variables: bool,
    /// A `LOAD DATA LOCAL INFILE` (or `LOAD XML LOCAL INFILE`): the server asks the client
    /// for a file, which only the writer's connection lets it do.
    pub loads_local_file: bool,
}

impl Classification {
    pub fn is_read(&self) -> bool {
        self.route == Route::Read
    }

    /// Records a statement to replay on the session's other connections (a `SET`).
    pub fn replays(&self) -> bool {
        self.effects
            .iter()
            .any(|e| matches!(e, Effect::Replay { .. }))
    }

    /// Makes a temporary table (which pins the session to the writer).
    pub fn creates_temporary(&self) -> bool {
        self.effects
            .iter()
            .any(|e| matches!(e, Effect::CreateTemporary(_)))
    }

    pub fn begin(&self) -> Option<bool> {
        self.effects.iter().find_map(|e| match e {
            Effect::Begin { read_only } => Some(*read_only),
            _ => None,
        })
    }
}

/// Functions whose result depends on, or changes, the connection they run on.
const WRITER_FUNCTIONS: &[&str] = &[
    "GET_LOCK",
    "RELEASE_LOCK",
    "RELEASE_ALL_LOCKS",
    "IS_USED_LOCK",
    "IS_FREE_LOCK",
    "LAST_INSERT_ID",
    "NEXTVAL",
    "LASTVAL",
    "SETVAL",
    "MASTER_POS_WAIT",
];

/// Functions about the previous statement on the same connection.
const LAST_USED_FUNCTIONS: &[&str] = &["FOUND_ROWS", "ROW_COUNT"];

/// Classifies a whole COM_QUERY text (one or more statements).
pub fn classify(sql: &[u8]) -> Classification {
    let tokens: Vec<(Token<'_>, usize)> = Tokenizer::new(sql).collect();
    let mut route = None::<Route>;
    let mut effects = Vec::new();
    let mut statements = 0;
    for (range, statement) in split_statements(&tokens, sql.len()) {
        if statement.is_empty() {
            continue;
        }
        statements += 1;
        let r = classify_statement(statement, range, &mut effects);
        route = Some(route.map_or(r, |route| route.max(r)));
    }
    for effect in &mut effects {
        if let Effect::Replay {
            start,
            end,
            assigns,
        } = effect
        {
            assigns.plain = sql[*start..*end]
                .iter()
                .all(|&b| b.is_ascii() && b != b'\\' && b != b'"');
        }
    }
    Classification {
        route: route.unwrap_or(Route::Write),
        effects,
        multi: statements > 1,
        reads_user_variables: tokens.iter().any(|(t, _)| matches!(t, Token::UserVar(_))),
        loads_local_file: tokens
            .windows(2)
            .any(|w| w[0].0.is("LOCAL") && w[1].0.is("INFILE")),
    }
}

/// Splits the tokens at top-level `;`, with each statement's byte range.
fn split_statements<'t, 'a>(
    tokens: &'t [(Token<'a>, usize)],
    len: usize,
) -> impl Iterator<Item = ((usize, usize), &'t [(Token<'a>, usize)])> {
    let mut rest = tokens;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .iter()
            .position(|(t, _)| *t == Token::Punct(b';'))
            .unwrap_or(rest.len());
        let statement = &rest[..end];
        let start_byte = statement.first().map_or(0, |(_, at)| *at);
        let end_byte = rest.get(end).map_or(len, |(_, at)| *at);
        rest = rest.get(end + 1..).unwrap_or(&[]);
        Some(((start_byte, end_byte), statement))
    })
}

fn classify_statement(
    tokens: &[(Token<'_>, usize)],
    range: (usize, usize),
    effects: &mut Vec<Effect>,
) -> Route {
    let words: Vec<Token<'_>> = tokens.iter().map(|(t, _)| *t).collect();
    let t = &words[..];
    let first = t.iter().position(|t| *t != Token::Punct(b'(')).unwrap_or(0);
    let head = &t[first..];
    let Some(keyword) = head.first() else {
        return Route::Write;
    };
    let next_is = |i: usize, kw: &str| head.get(i).is_some_and(|t| t.is(kw));
    if keyword.is("SELECT") || keyword.is("WITH") {
        return select_route(t, effects);
    }
    if keyword.is("SHOW") {
        let last_used = next_is(1, "WARNINGS")
            || next_is(1, "ERRORS")
            || (next_is(1, "COUNT") && t.iter().any(|t| t.is("WARNINGS") || t.is("ERRORS")));
        return if last_used {
            Route::LastUsed
        } else {
            Route::Read
        };
    }
    if keyword.is("DESC") || keyword.is("DESCRIBE") || keyword.is("HELP") {
        return Route::Read;
    }
    if keyword.is("EXPLAIN") && next_is(1, "SELECT") {
        return select_route(&t[1..], effects);
    }
    if keyword.is("SET") {
        return set_route(tokens, range, effects);
    }
    if keyword.is("USE") {
        if let Some(db) = head.get(1).and_then(Token::ident) {
            effects.push(Effect::UseDatabase(
                String::from_utf8_lossy(db).into_owned(),
            ));
            return Route::Session;
        }
        return Route::Write;
    }
    if (keyword.is("BEGIN") && !next_is(1, "NOT"))
        || (keyword.is("START") && next_is(1, "TRANSACTION"))
    {
        let read_only = head.windows(2).any(|w| w[0].is("READ") && w[1].is("ONLY"));
        effects.push(Effect::Begin { read_only });
        return Route::Write;
    }
    if keyword.is("LOCK") && (next_is(1, "TABLES") || next_is(1, "TABLE")) {
        effects.push(Effect::LockTables);
    } else if keyword.is("UNLOCK") && next_is(1, "TABLES") {
        effects.push(Effect::UnlockTables);
    } else if keyword.is("CREATE") {
        let temporary = head.iter().position(|t| t.is("TEMPORARY"));
        if let Some(at) = temporary.filter(|at| next_is(at + 1, "TABLE")) {
            let mut i = at + 2;
            if next_is(i, "IF") {
                i += 3;
            }
            if let Some(name) = table_name(&head[i.min(head.len())..]) {
                effects.push(Effect::CreateTemporary(name));
            }
        }
    } else if keyword.is("DROP") {
        let mut i = 1;
        if next_is(i, "TEMPORARY") {
            i += 1;
        }
        if next_is(i, "TABLE") || next_is(i, "TABLES") {
            i += 1;
            if next_is(i, "IF") {
                i += 2;
            }
            let names = head[i.min(head.len())..]
                .split(|t| *t == Token::Punct(b','))
                .filter_map(table_name)
                .collect();
            effects.push(Effect::DropTables(names));
        }
    } else if ["PREPARE", "EXECUTE", "DEALLOCATE", "XA", "HANDLER"]
        .iter()
        .any(|kw| keyword.is(kw))
    {
        effects.push(Effect::PinToWriter);
    }
    Route::Write
}

/// `db.name` or `name` at the start of `tokens`, lower-cased.
fn table_name(tokens: &[Token<'_>]) -> Option<String> {
    let mut name = tokens.first()?.ident()?;
    if tokens.get(1) == Some(&Token::Punct(b'.')) {
        name = tokens.get(2)?.ident()?;
    }
    Some(String::from_utf8_lossy(name).to_ascii_lowercase())
}

fn select_route(t: &[Token<'_>], effects: &mut Vec<Effect>) -> Route {
    let mut route = Route::Read;
    for (i, token) in t.iter().enumerate() {
        let next = t.get(i + 1);
        let next_is = |kw: &str| next.is_some_and(|n| n.is(kw));
        match token {
            Token::Assign => {
                effects.push(Effect::PinToWriter);
                return Route::Write;
            }
            Token::Word(_) if token.is("INTO") => {
                if matches!(next, Some(Token::UserVar(_))) {
                    effects.push(Effect::PinToWriter);
                }
                return Route::Write;
            }
            Token::Word(_) if token.is("FOR") && (next_is("UPDATE") || next_is("SHARE")) => {
                return Route::Write;
            }
            Token::Word(_) if token.is("LOCK") && next_is("IN") => return Route::Write,
            Token::Word(_) if (token.is("NEXT") || token.is("PREVIOUS")) && next_is("VALUE") => {
                return Route::Write;
            }
            Token::Word(w) if next == Some(&Token::Punct(b'(')) => {
                if WRITER_FUNCTIONS
                    .iter()
                    .any(|f| w.eq_ignore_ascii_case(f.as_bytes()))
                {
                    return Route::Write;
                }
                if LAST_USED_FUNCTIONS
                    .iter()
                    .any(|f| w.eq_ignore_ascii_case(f.as_bytes()))
                {
                    route = Route::LastUsed;
                }
            }
            Token::SysVar(v)
                if v.eq_ignore_ascii_case(b"warning_count")
                    || v.eq_ignore_ascii_case(b"error_count") =>
            {
                route = Route::LastUsed;
            }
            _ => {}
        }
    }
    route
}

/// `SET ...`: assignment by assignment.
fn set_route(
    tokens: &[(Token<'_>, usize)],
    range: (usize, usize),
    effects: &mut Vec<Effect>,
) -> Route {
    let t: Vec<Token<'_>> = tokens.iter().map(|(t, _)| *t).collect();
    let second = t.get(1);
    let is = |i: usize, kw: &str| t.get(i).is_some_and(|t| t.is(kw));
    // SET STATEMENT var=value [, ...] FOR statement: the statement decides.
    if is(1, "STATEMENT") {
        let mut depth = 0i32;
        for (i, (token, _)) in tokens.iter().enumerate() {
            match token {
                Token::Punct(b'(') => depth += 1,
                Token::Punct(b')') => depth -= 1,
                _ if depth == 0 && token.is("FOR") => {
                    let inner = &tokens[i + 1..];
                    let end = range.1;
                    let start = inner.first().map_or(end, |(_, at)| *at);
                    let mut ignored = Vec::new();
                    return match classify_statement(inner, (start, end), &mut ignored) {
                        Route::Read => Route::Read,
                        _ => Route::Write,
                    };
                }
                _ => {}
            }
        }
        return Route::Write;
    }
    if is(1, "PASSWORD")
        || is(1, "GLOBAL")
        || matches!(second, Some(Token::SysVar(v)) if starts_with_ci(v, b"global."))
    {
        return Route::Write;
    }
    // SET TRANSACTION (no scope) applies to the next transaction only: the writer's.
    if is(1, "TRANSACTION") {
        return Route::Write;
    }
    let mut route = Route::Session;
    for assignment in split_top_level(&t[1..]) {
        let (target, value) = match assignment {
            [scope, name, rest @ ..] if scope.is("SESSION") || scope.is("LOCAL") => {
                (Some(*name), rest)
            }
            [Token::SysVar(v), rest @ ..] => (Some(Token::SysVar(v)), rest),
            [name, rest @ ..] => (Some(*name), rest),
            [] => (None, &[][..]),
        };
        let Some(target) = target else { continue };
        let var_name: &[u8] = match target {
            Token::Word(w) => w,
            Token::SysVar(v) => v
                .strip_prefix(b"session.")
                .or_else(|| v.strip_prefix(b"SESSION."))
                .or_else(|| v.strip_prefix(b"local."))
                .unwrap_or(v),
            _ => b"",
        };
        if var_name.eq_ignore_ascii_case(b"autocommit") {
            // The writer's status flags tell afterwards whether autocommit is off.
            route = Route::Write;
        }
        let value = match value.first() {
            Some(Token::Punct(b'=') | Token::Assign) => &value[1..],
            _ => value,
        };
        if value.iter().any(|t| matches!(t, Token::Word(w) if WRITER_FUNCTIONS.iter().any(|f| w.eq_ignore_ascii_case(f.as_bytes())))) {
            route = Route::Write;
        }
        if matches!(target, Token::UserVar(_)) && !is_literal(value) {
            effects.push(Effect::PinToWriter);
            route = Route::Write;
        }
    }
    effects.push(Effect::Replay {
        start: range.0,
        end: range.1,
        assigns: assigns(&t),
    });
    route
}

/// The character set variables `SET NAMES` and `SET CHARACTER SET` set.
const CONNECTION_CHARSET: [&str; 4] = [
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
];

/// What the `SET` of tokens `t` assigns (see [`Assigns`]); `plain` is judged from its text
/// by [`classify`].
fn assigns(t: &[Token<'_>]) -> Assigns {
    let is = |i: usize, kw: &str| t.get(i).is_some_and(|t| t.is(kw));
    // SET SESSION TRANSACTION ISOLATION LEVEL ..., READ ONLY: one statement, commas and all.
    if (is(1, "SESSION") || is(1, "LOCAL")) && is(2, "TRANSACTION") {
        let mut targets = Vec::new();
        if t.iter().any(|t| t.is("ISOLATION")) {
            targets.push("tx_isolation".to_owned());
        }
        if t.windows(2)
            .any(|w| w[0].is("READ") && (w[1].is("ONLY") || w[1].is("WRITE")))
        {
            targets.push("tx_read_only".to_owned());
        }
        if targets.is_empty() {
            return Assigns::unknown();
        }
        return Assigns {
            targets: Some(targets),
            reads: false,
            context: false,
            plain: false,
        };
    }
    let mut targets = Vec::new();
    let (mut reads, mut context) = (false, false);
    for assignment in split_top_level(&t[1..]) {
        match assignment {
            [names, value @ ..] if names.is("NAMES") => {
                // NAMES charset [COLLATE collation], NAMES DEFAULT: names, never expressions.
                if value.is_empty()
                    || !value
                        .iter()
                        .all(|t| matches!(t, Token::Word(_) | Token::Quoted(_) | Token::Str))
                {
                    return Assigns::unknown();
                }
                targets.extend(CONNECTION_CHARSET.map(str::to_owned));
                context = true;
            }
            [first, ..] if first.is("CHARACTER") || first.is("CHARSET") => {
                // The connection's character set becomes the database's: read from the session.
                targets.extend(CONNECTION_CHARSET.map(str::to_owned));
                context = true;
                reads = true;
            }
            [role, name] if role.is("ROLE") && name.ident().is_some() => {
                targets.push("role".to_owned());
            }
            _ => {
                let (name, value) = match assignment {
                    [scope, name, rest @ ..] if scope.is("SESSION") || scope.is("LOCAL") => {
                        (system_variable(name.ident()), rest)
                    }
                    [Token::SysVar(v), rest @ ..] => (system_variable(session_scoped(v)), rest),
                    [Token::UserVar(v), rest @ ..] => (user_variable(v), rest),
                    [name, rest @ ..] => (system_variable(name.ident()), rest),
                    [] => (None, &[][..]),
                };
                let (Some(name), [Token::Punct(b'=') | Token::Assign, value @ ..]) = (name, value)
                else {
                    return Assigns::unknown();
                };
                let user = name.starts_with('@');
                if !(is_literal(value) || !user && is_name(value)) {
                    reads = true;
                }
                context |= ["sql_mode", "old_mode"].contains(&name.as_str())
                    || name.starts_with("character_set_")
                    || name.starts_with("collation_");
                targets.push(name);
            }
        }
    }
    if targets.is_empty() {
        return Assigns::unknown();
    }
    Assigns {
        targets: Some(targets),
        reads,
        context,
        plain: false,
    }
}

/// The name of `@@v` when it is the session's (`@@x`, `@@session.x`, `@@local.x`); None for
/// `@@global.x`.
fn session_scoped(v: &[u8]) -> Option<&[u8]> {
    let dot = v.iter().position(|&b| b == b'.');
    match dot {
        None => Some(v),
        Some(at) => {
            let scope = &v[..at];
            (scope.eq_ignore_ascii_case(b"session") || scope.eq_ignore_ascii_case(b"local"))
                .then(|| &v[at + 1..])
        }
    }
}

/// A system variable's name, lower case, with MariaDB's two aliases made one; None unless it
/// is a plain ASCII name.
fn system_variable(name: Option<&[u8]>) -> Option<String> {
    let name = name
        .filter(|n| !n.is_empty() && n.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_'))?;
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    Some(match name.as_str() {
        "transaction_isolation" => "tx_isolation".to_owned(),
        "transaction_read_only" => "tx_read_only".to_owned(),
        _ => name,
    })
}

/// `@name`, lower case (MariaDB's user variable names ignore case), from the text after `@`
/// with its quotes; None for a name with anything but ASCII letters, digits, `_`, `$` and `.`
/// (quoted names with quotes or escapes inside, names whose bytes depend on the character set).
fn user_variable(text: &[u8]) -> Option<String> {
    let name = match text {
        [q @ (b'\'' | b'"' | b'`'), inner @ .., last] if last == q => inner,
        _ => text,
    };
    let simple = !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"_$.".contains(&b));
    simple.then(|| format!("@{}", String::from_utf8_lossy(name).to_ascii_lowercase()))
}

/// A bare name as a system variable's value (`sql_mode = ANSI`, `time_zone = SYSTEM`): the
/// server takes it as a string. Not the functions that need no parentheses.
fn is_name(value: &[Token<'_>]) -> bool {
    match value {
        [Token::Quoted(_)] => true,
        [Token::Word(w)] => !["CURRENT_", "LOCALTIME", "UTC_"]
            .iter()
            .any(|f| starts_with_ci(w, f.as_bytes())),
        _ => false,
    }
}

fn starts_with_ci(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// A value the same on every backend: a number, string, NULL, TRUE, FALSE, ON, OFF, DEFAULT,
/// or a prepared statement's parameter `?` (its bound value is replayed with it).
fn is_literal(value: &[Token<'_>]) -> bool {
    let value = match value {
        [Token::Punct(b'-' | b'+'), rest @ ..] => rest,
        _ => value,
    };
    match value {
        [Token::Number | Token::Str | Token::Punct(b'?')] => true,
        [w] => ["NULL", "TRUE", "FALSE", "ON", "OFF", "DEFAULT"]
            .iter()
            .any(|kw| w.is(kw)),
        _ => false,
    }
}

/// Splits at commas outside parentheses.
fn split_top_level<'t, 'a>(tokens: &'t [Token<'a>]) -> Vec<&'t [Token<'a>]> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Punct(b'(') => depth += 1,
            Token::Punct(b')') => depth -= 1,
            Token::Punct(b',') if depth == 0 => {
                parts.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&tokens[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(sql: &str) -> Route {
        classify(sql.as_bytes()).route
    }

    #[test]
    fn plain_selects_and_shows_are_reads() {
        for sql in [
            "SELECT 1",
            "select c from sbtest1 where id = ?",
            "  (SELECT a FROM t) UNION (SELECT b FROM u)",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "SHOW TABLES",
            "DESCRIBE t",
            "EXPLAIN SELECT * FROM t",
            "/* hello */ SELECT 'FOR UPDATE', `into` FROM t -- FOR UPDATE",
            "SELECT @@server_id, @@hostname",
            "SELECT @x",
            "SELECT 1; SELECT 2",
        ] {
            assert_eq!(route(sql), Route::Read, "{sql}");
        }
    }

    #[test]
    fn reads_with_side_effects_go_to_the_writer() {
        for sql in [
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t WHERE id = 1 LOCK IN SHARE MODE",
            "SELECT GET_LOCK('x', 1)",
            "select release_lock('x')",
            "SELECT LAST_INSERT_ID()",
            "SELECT @a := 1",
            "SELECT a INTO @x FROM t",
            "SELECT * INTO OUTFILE '/tmp/x' FROM t",
            "SELECT NEXT VALUE FOR s",
            "SELECT NEXTVAL(s)",
            "SELECT 1; DELETE FROM t",
            "/*!40101 SELECT 1 FOR UPDATE */",
        ] {
            assert_eq!(route(sql), Route::Write, "{sql}");
        }
    }

    #[test]
    fn everything_unknown_is_a_write() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1",
            "CALL p()",
            "DO 1",
            "EXPLAIN UPDATE t SET a = 1",
            "LOAD DATA LOCAL INFILE '/tmp/a.csv' INTO TABLE t FIELDS TERMINATED BY ','",
            "LOAD DATA LOCAL INFILE 'a.csv' INTO TABLE t (a, @b) SET c = @b",
            "SET STATEMENT max_statement_time = 10 FOR LOAD DATA LOCAL INFILE 'a' INTO TABLE t",
            "",
            "-- only a comment",
            "garbage ;;; '",
        ] {
            assert_eq!(route(sql), Route::Write, "{sql:?}");
        }
    }

    #[test]
    fn load_data_local_is_noticed() {
        for sql in [
            "LOAD DATA LOCAL INFILE '/tmp/a.csv' INTO TABLE t",
            "load data low_priority local infile 'a' replace into table t",
            "LOAD XML LOCAL INFILE 'a.xml' INTO TABLE t",
            "SET STATEMENT max_statement_time = 10 FOR LOAD DATA LOCAL INFILE 'a' INTO TABLE t",
            "SELECT 1; LOAD DATA LOCAL INFILE 'a' INTO TABLE t",
        ] {
            assert!(classify(sql.as_bytes()).loads_local_file, "{sql}");
        }
        for sql in [
            "LOAD DATA INFILE '/tmp/a.csv' INTO TABLE t",
            "SELECT 'LOCAL INFILE'",
            "SELECT 1 -- LOAD DATA LOCAL INFILE 'a'",
        ] {
            assert!(!classify(sql.as_bytes()).loads_local_file, "{sql}");
        }
    }

    #[test]
    fn questions_about_the_last_statement_follow_it() {
        for sql in [
            "SHOW WARNINGS",
            "SHOW COUNT(*) ERRORS",
            "SELECT FOUND_ROWS()",
            "SELECT @@warning_count",
        ] {
            assert_eq!(route(sql), Route::LastUsed, "{sql}");
        }
    }

    #[test]
    fn sqlx_connect_set_is_replayed_session_state() {
        let sql = "SET sql_mode=(SELECT CONCAT(@@sql_mode, ',PIPES_AS_CONCAT,NO_ENGINE_SUBSTITUTION')),time_zone='+00:00',NAMES utf8mb4 COLLATE utf8mb4_unicode_ci";
        let c = classify(sql.as_bytes());
        assert_eq!(c.route, Route::Session);
        assert!(
            matches!(&c.effects[..], [Effect::Replay { start: 0, end, assigns }]
                if *end == sql.len() && assigns.reads && assigns.context)
        );
    }

    #[test]
    fn set_statements() {
        assert_eq!(route("SET NAMES utf8mb4"), Route::Session);
        assert_eq!(route("SET @a = 1, @b = 'x'"), Route::Session);
        assert_eq!(route("SET SESSION sql_mode = ''"), Route::Session);
        assert_eq!(route("SET autocommit = 0"), Route::Write);
        assert_eq!(route("SET @@autocommit := 1"), Route::Write);
        assert_eq!(route("SET GLOBAL max_connections = 10"), Route::Write);
        assert_eq!(
            route("SET TRANSACTION ISOLATION LEVEL READ COMMITTED"),
            Route::Write
        );
        assert_eq!(
            route("SET STATEMENT max_statement_time=1 FOR SELECT 1"),
            Route::Read
        );
        assert_eq!(
            route("SET STATEMENT max_statement_time=1 FOR DELETE FROM t"),
            Route::Write
        );
        let c = classify(b"SET @n = (SELECT COUNT(*) FROM t)");
        assert_eq!(c.route, Route::Write);
        assert!(c.effects.contains(&Effect::PinToWriter));
        assert_eq!(route("SET @id = LAST_INSERT_ID()"), Route::Write);
        // Prepared: a parameter is a value like a literal, replayed with the statement.
        let c = classify(b"SET @a = ?, time_zone = ?");
        assert_eq!(c.route, Route::Session);
        assert!(c.replays());
        assert!(!classify(b"SELECT ?").replays());
        assert_eq!(route("SET @a = ? + 1"), Route::Write);
    }

    fn assigns(sql: &str) -> Assigns {
        classify(sql.as_bytes())
            .effects
            .into_iter()
            .find_map(|e| match e {
                Effect::Replay { assigns, .. } => Some(assigns),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{sql} is not replayed"))
    }

    fn names(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn a_set_names_the_variables_it_assigns() {
        let targets = |sql: &str| assigns(sql).targets;
        assert_eq!(targets("SET @a = 1, @B := 'x'"), names(&["@a", "@b"]));
        assert_eq!(
            targets("SET @`a` = 1, @'b' = 2, @\"c.d\" = 3"),
            names(&["@a", "@b", "@c.d"])
        );
        assert_eq!(
            targets(
                "SET sql_mode = 'ANSI', SESSION time_zone = '+00:00', @@session.Autocommit = 0, \
                 @@LOCAL.wait_timeout = 5, LOCAL x = ON, `y` = 1"
            ),
            names(&[
                "sql_mode",
                "time_zone",
                "autocommit",
                "wait_timeout",
                "x",
                "y"
            ])
        );
        assert_eq!(
            targets("SET NAMES utf8mb4 COLLATE utf8mb4_bin"),
            names(&CONNECTION_CHARSET)
        );
        assert_eq!(
            targets("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED, READ ONLY"),
            names(&["tx_isolation", "tx_read_only"])
        );
        assert_eq!(
            targets("SET SESSION TRANSACTION READ WRITE"),
            names(&["tx_read_only"])
        );
        assert_eq!(
            targets("SET @@transaction_isolation = 'SERIALIZABLE'"),
            names(&["tx_isolation"])
        );
        assert_eq!(targets("SET ROLE admin"), names(&["role"]));
        // Not taken apart: kept, and so is everything before them.
        for sql in [
            "SET @'a''b' = 1",
            "SET @`é` = 1",
            "SET @'a\\'b' = 1",
            "SET a = 1, GLOBAL b = 2",
            "SET a = 1, @@global.b = 2",
            "SET DEFAULT ROLE r FOR u",
            "SET NAMES",
        ] {
            let assigns = assigns(sql);
            assert!(
                assigns.targets.is_none() && assigns.reads && assigns.context,
                "{sql}: {assigns:?}"
            );
        }
    }

    #[test]
    fn a_set_reads_the_session_unless_its_values_are_literals() {
        for sql in [
            "SET @a = -1.5",
            "SET @a = NULL, @b = TRUE",
            "SET @a = ?",
            "SET @a = x'00'",
            "SET sql_mode = ANSI",
            "SET time_zone = DEFAULT",
            "SET NAMES 'utf8mb4'",
        ] {
            assert!(!assigns(sql).reads, "{sql}");
        }
        for sql in [
            "SET @a = @b",
            "SET @a = 1 + 1",
            "SET sql_mode = CONCAT(@@sql_mode, ',ANSI')",
            "SET max_join_size = @@max_join_size",
            "SET timestamp = CURRENT_TIMESTAMP",
            "SET CHARACTER SET utf8",
        ] {
            assert!(assigns(sql).reads, "{sql}");
        }
    }

    #[test]
    fn a_set_of_the_mode_or_character_set_changes_how_later_text_is_read() {
        for sql in [
            "SET NAMES latin1",
            "SET sql_mode = ''",
            "SET @@collation_connection = 'utf8mb4_bin'",
            "SET SESSION character_set_client = latin1",
            "SET @a = 1, old_mode = ''",
        ] {
            assert!(assigns(sql).context, "{sql}");
        }
        for sql in [
            "SET @a = 'x'",
            "SET time_zone = '+00:00'",
            "SET autocommit = 1",
        ] {
            assert!(!assigns(sql).context, "{sql}");
        }
        assert!(assigns("SET @a = 'x', sql_mode = 'ANSI'").plain);
        for sql in ["SET @a = 'é'", r"SET @a = 'a\\b'", "SET @a = \"x\""] {
            assert!(!assigns(sql).plain, "{sql}");
        }
    }

    #[test]
    fn transactions_tables_and_databases() {
        assert_eq!(classify(b"BEGIN").begin(), Some(false));
        assert_eq!(classify(b"START TRANSACTION READ ONLY").begin(), Some(true));
        assert_eq!(
            classify(b"start transaction read write").begin(),
            Some(false)
        );
        assert_eq!(classify(b"BEGIN NOT ATOMIC SELECT 1; END").begin(), None);
        assert_eq!(
            classify(b"CREATE TEMPORARY TABLE IF NOT EXISTS db.Tmp (a INT)").effects,
            vec![Effect::CreateTemporary("tmp".into())]
        );
        assert_eq!(
            classify(b"DROP TEMPORARY TABLE IF EXISTS tmp, `other`").effects,
            vec![Effect::DropTables(vec!["tmp".into(), "other".into()])]
        );
        assert_eq!(
            classify(b"USE `foobar`").effects,
            vec![Effect::UseDatabase("foobar".into())]
        );
        assert_eq!(
            classify(b"LOCK TABLES t READ").effects,
            vec![Effect::LockTables]
        );
    }

    #[test]
    fn user_variables_are_noticed() {
        assert!(classify(b"SELECT @v").reads_user_variables);
        assert!(classify(b"select a from t where b = @`x y`").reads_user_variables);
        assert!(!classify(b"SELECT @@server_id, '@v'").reads_user_variables);
    }

    #[test]
    fn multi_statements_take_the_strictest_route() {
        let c = classify(b"SET NAMES utf8; SELECT 1");
        assert!(c.multi);
        assert_eq!(c.route, Route::Session);
        assert!(matches!(
            &c.effects[..],
            [Effect::Replay {
                start: 0,
                end: 14,
                ..
            }]
        ));
        assert_eq!(route("SELECT 1; BEGIN"), Route::Write);
    }
}
