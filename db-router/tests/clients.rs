//! The real-client matrix (issue 17): MySQL clients nobody here wrote, each run once straight
//! to the primary and once through the router, the same steps, the results compared. The
//! clients: PyMySQL, mysql-connector-python (pure and its C extension, server-side prepares),
//! PHP mysqli and PDO over mysqlnd (server-side prepares), Perl DBD::MariaDB (server-side
//! prepares, Connector/C underneath), the `mariadb` command line, and sysbench's
//! `oltp_read_write` and `oltp_write_only` with prepared statements, and MariaDB's own test
//! files run by `mariadb-test` over the text protocol, prepared statements and cursors
//! (COM_STMT_FETCH). COM_STMT_SEND_LONG_DATA comes from PHP mysqli's and
//! mysql-connector-python's (pure) blob, COM_STMT_RESET from mysqli's (discarding long data)
//! and mysql-connector-python's, before each EXECUTE. Each language's steps are one script in
//! `tests/clients/` printing `step<TAB>result[<TAB>detail]`; the `mariadb` client's are below.
//! The matrix (client x step: pass, n/a, gap, fail) is printed; the test fails on any
//! `fail`, naming the client, the step and both outputs.
//! Needs what `scripts/install-tools.sh` installs (php-cli, php-mysql, libdbd-mariadb-perl,
//! python3-pymysql, sysbench, mysql-connector-python in `CONNECTOR_PYTHON_DIR`).

#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use foobar_stack_tests::{APP_DATABASE, APP_PASSWORD, APP_USER, ReplicatedDatabase};
use sqlx::{Executor, MySqlPool};
use support::Router;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Where `scripts/install-tools.sh` puts mysql-connector-python (PyPI's wheel, pinned).
const CONNECTOR_PYTHON_DIR: &str = "/usr/local/lib/foobar-test-clients/python";
const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");

/// Every client's steps, in the order the scripts run them.
const STEPS: [&str; 12] = [
    "setup",
    "params",
    "blob",
    "datetime",
    "json",
    "transaction",
    "batch",
    "unbuffered",
    "duplicate_key",
    "compression",
    "load_local",
    "killed",
];

/// The codes of the router's table (docs/configuration.md) a session whose backend
/// connection was killed may get: 1927 when the broken connection is found mid-statement,
/// 1429 / 1290 if the writer cannot be reached again. Never 2027 (Connector/C's "malformed
/// packet" for a client-range code) nor a hang.
const KILLED_CODES: [&str; 3] = ["1927", "1429", "1290"];

/// MariaDB's own test files (Debian's mariadb-test package, `main` suite) that pass straight
/// to the image's primary as the application's account, over each protocol (a file that
/// fails directly is a `FAIL`, not a pass both ways): prepared statements, types,
/// functions, stored procedures, window functions. Not win_ntile: a query of it crashes the
/// image's mariadbd 10.11.18 (SIGFPE in NTILE), which 10.11.19 fixed.
const MARIADB_TESTS: [&str; 19] = [
    "ps_10nestset",
    "ps_innodb",
    "ps_max_subselect-5113",
    "type_char",
    "type_num_innodb",
    "type_varbinary",
    "func_concat",
    "func_equal",
    "func_int",
    "func_op",
    "func_timestamp",
    "sp-fib",
    "sp-condition-handler",
    "insert_returning_datatypes",
    "win_rank",
    "win_lead_lag",
    "win_sum",
    "win_nth_value",
    "win_percent_cume",
];
const MARIADB_TEST_DIR: &str = "/usr/share/mysql/mysql-test";

/// What the matrix found that the router gets wrong today (issue 17 asks for each to work):
/// (client, step or `*` for every step, the result through the router). Asserted as they
/// are, so the matrix shows them as `gap` and fails once one changes: then move it to `pass`.
/// None today: the last ones, `SET time_zone` and `SET optimizer_switch` sent as prepared
/// statements by `mariadb-test --ps-protocol` (func_op, func_timestamp), are replayed on the
/// replica since prepared `SET`s are.
const KNOWN_GAPS: [(&str, &str, &str); 0] = [];

/// Where a client connects, and as whom.
struct Target {
    addr: SocketAddr,
    user: &'static str,
    password: &'static str,
}

/// One step's output: its result (compared) and detail (an error's message, shown only).
#[derive(Clone, Debug, Default)]
struct Outcome {
    result: String,
    detail: String,
}

type Run = BTreeMap<String, Outcome>;

/// The primary and a router in front of the pair, the primary's pool (it kills a session's
/// connection for the `killed` step) and the file LOAD DATA LOCAL reads.
struct Bench {
    direct: Target,
    routed: Target,
    primary: MySqlPool,
    csv: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_get_the_same_results_through_the_router_as_directly() -> anyhow::Result<()> {
    let db = ReplicatedDatabase::start().await?;
    let primary = format!("127.0.0.1:{}", db.primary.get_host_port_ipv4(3306).await?);
    let replica = format!("127.0.0.1:{}", db.replica.get_host_port_ipv4(3306).await?);
    let router = Router::start(&support::config(&primary, &replica, "")).await?;
    let files = tempfile::tempdir()?;
    let csv = files.path().join("load.csv");
    let rows: String = (1..=100).map(|i| format!("{i},{}\n", i * 2)).collect();
    std::fs::write(&csv, rows)?;
    let bench = Bench {
        direct: Target {
            addr: primary.parse()?,
            user: APP_USER,
            password: APP_PASSWORD,
        },
        routed: Target {
            addr: router.mysql,
            user: support::USER,
            password: support::PASSWORD,
        },
        primary: db.primary_pool().await?,
        csv: csv.to_str().context("temp path")?.to_owned(),
    };

    let started = Instant::now();
    let python = |driver: &str| {
        vec![
            "/usr/bin/python3".to_owned(),
            format!("{SCRIPTS}/clients.py"),
            driver.to_owned(),
        ]
    };
    let php = |driver: &str| {
        vec![
            "php".to_owned(),
            format!("{SCRIPTS}/clients.php"),
            driver.to_owned(),
        ]
    };
    let scripted: [(&str, &str, Vec<String>); 6] = [
        ("PyMySQL", "m_pymysql", python("pymysql")),
        ("connector-python pure", "m_cpure", python("connector-pure")),
        ("connector-python C ext", "m_cext", python("connector-c")),
        ("PHP mysqli", "m_mysqli", php("mysqli")),
        ("PHP PDO", "m_pdo", php("pdo")),
        (
            "Perl DBD::MariaDB",
            "m_perl",
            vec!["perl".to_owned(), format!("{SCRIPTS}/clients.pl")],
        ),
    ];
    let mut matrix = Vec::new();
    let mut mariadb_tests = Vec::new();
    for (client, prefix, command) in &scripted {
        let t = Instant::now();
        let direct = run_script(&bench, &bench.direct, command, prefix).await?;
        let before = router.metric(COMPRESSED_LOGINS).await?;
        let routed = run_script(&bench, &bench.routed, command, prefix).await?;
        let compressed = router.metric(COMPRESSED_LOGINS).await? - before;
        println!("ran {client} ({:?})", t.elapsed());
        let cells = compare(client, &direct, &routed);
        matrix.push((client.to_string(), compressed_for_real(cells, compressed)));
    }
    let t = Instant::now();
    let direct = mariadb_steps(&bench, &bench.direct, "m_cli").await?;
    let before = router.metric(COMPRESSED_LOGINS).await?;
    let routed = mariadb_steps(&bench, &bench.routed, "m_cli").await?;
    let compressed = router.metric(COMPRESSED_LOGINS).await? - before;
    println!("ran the mariadb client ({:?})", t.elapsed());
    let cells = compare("mariadb (CLI)", &direct, &routed);
    matrix.push((
        "mariadb (CLI)".to_owned(),
        compressed_for_real(cells, compressed),
    ));
    for test in ["oltp_read_write", "oltp_write_only"] {
        let t = Instant::now();
        let direct = sysbench(&bench.direct, test).await?;
        let routed = sysbench(&bench.routed, test).await?;
        println!("ran sysbench {test} ({:?})", t.elapsed());
        let client = format!("sysbench {test}");
        matrix.push((client.clone(), compare(&client, &direct, &routed)));
    }
    // MariaDB's own test files, each over the text protocol, over prepared statements
    // (`--ps-protocol`) and over cursors (`--cursor-protocol`: every statement prepared and
    // executed with CURSOR_TYPE_READ_ONLY, so one with rows opens a cursor on the server and
    // Connector/C reads them with COM_STMT_FETCH), in a database emptied first (the tests
    // expect no other table).
    bench
        .primary
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {APP_DATABASE}; CREATE DATABASE {APP_DATABASE}"
        )))
        .await?;
    // The router's sessions log in to the replica too: it must have the database again.
    let gtid: String = sqlx::query_scalar("SELECT @@gtid_binlog_pos")
        .fetch_one(&bench.primary)
        .await?;
    let reached: i64 = sqlx::query_scalar("SELECT MASTER_GTID_WAIT(?, 30)")
        .bind(&gtid)
        .fetch_one(&db.replica_pool().await?)
        .await?;
    anyhow::ensure!(reached == 0, "the replica did not reach {gtid} within 30 s");
    let t = Instant::now();
    let fetch = "foobar_db_router_queries_total{route=\"reader\",kind=\"fetch\"}";
    let fetched_before = router.metric(fetch).await?;
    for (label, protocol) in [
        ("mariadb-test", None),
        ("mariadb-test --ps-protocol", Some("--ps-protocol")),
        ("mariadb-test --cursor-protocol", Some("--cursor-protocol")),
    ] {
        let mut direct = Run::new();
        let mut routed = Run::new();
        for test in MARIADB_TESTS {
            direct.insert(
                test.to_owned(),
                mariadb_test(&bench.direct, test, protocol, files.path()).await?,
            );
            routed.insert(
                test.to_owned(),
                mariadb_test(&bench.routed, test, protocol, files.path()).await?,
            );
        }
        let mut cells = compare(label, &direct, &routed);
        // A file is in the matrix because it passes directly: failing both ways is no pass.
        for (test, outcome) in &direct {
            if outcome.result != "pass" {
                let why = format!("fails directly: {}", show(outcome));
                cells.insert(test.clone(), Cell::Fail(why));
            }
        }
        mariadb_tests.push((label.to_owned(), cells));
    }
    // The cursors were the router's, their rows read from the replica with COM_STMT_FETCH.
    let fetched = router.metric(fetch).await? - fetched_before;
    anyhow::ensure!(fetched > 0.0, "--cursor-protocol sent no COM_STMT_FETCH");
    println!("COM_STMT_FETCH through the router to the replica: {fetched}");
    println!("ran mariadb-test ({:?})", t.elapsed());
    println!("matrix in {:?}", started.elapsed());

    let (table, mut failures) = render(&matrix, &STEPS);
    println!("{table}");
    let (table, more) = render(&mariadb_tests, &MARIADB_TESTS);
    println!("{table}");
    failures.extend(more);
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Runs a client's script against `target` and collects its lines; at `kill-ready<TAB>ID`
/// it kills connection ID on the primary (the router's backend connection, through the
/// router) and tells the script to go on.
async fn run_script(
    bench: &Bench,
    target: &Target,
    command: &[String],
    prefix: &str,
) -> anyhow::Result<Run> {
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .arg(target.addr.ip().to_string())
        .arg(target.addr.port().to_string())
        .args([
            target.user,
            target.password,
            APP_DATABASE,
            prefix,
            &bench.csv,
        ])
        .env("PYTHONPATH", CONNECTOR_PYTHON_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("{command:?} (scripts/install-tools.sh installs it)"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut stderr = child.stderr.take().context("stderr")?;
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut run = Run::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), stdout.next_line())
            .await
            .with_context(|| format!("{command:?}: no line within 60 s after {run:?}"))??;
        let Some(line) = line else { break };
        let mut fields = line.splitn(3, '\t');
        let step = fields.next().unwrap_or_default().to_owned();
        let result = fields.next().unwrap_or_default().to_owned();
        if step == "kill-ready" {
            kill(&bench.primary, &result).await?;
            stdin.write_all(b"\n").await?;
            stdin.flush().await?;
            continue;
        }
        let detail = fields.next().unwrap_or_default().to_owned();
        run.insert(step, Outcome { result, detail });
    }
    let status = child.wait().await?;
    let stderr = stderr.await?;
    anyhow::ensure!(
        status.success() && STEPS.iter().all(|step| run.contains_key(*step)),
        "{command:?} against {}: {status}, steps {run:?}, stderr: {stderr}",
        target.addr
    );
    Ok(run)
}

/// Kills connection `id` on the primary: the client's own directly, the router's backend
/// connection of the session through it.
async fn kill(primary: &MySqlPool, id: &str) -> anyhow::Result<()> {
    let id: u64 = id
        .trim()
        .parse()
        .with_context(|| format!("connection id {id:?}"))?;
    // `id` is a number: parsed above.
    sqlx::query(sqlx::AssertSqlSafe(format!("KILL CONNECTION {id}")))
        .execute(primary)
        .await?;
    Ok(())
}

/// How one step came out.
#[derive(Debug, PartialEq)]
enum Cell {
    /// The same result both ways (for `killed`: an error both ways, and through the router a
    /// code of its table).
    Pass,
    /// The client cannot do this step (it says why), both ways.
    NotApplicable,
    /// One of [`KNOWN_GAPS`], as it is today.
    Gap(String),
    Fail(String),
}

fn error_code(outcome: &Outcome) -> Option<&str> {
    outcome.result.strip_prefix("error ")
}

fn show(outcome: &Outcome) -> String {
    if outcome.detail.is_empty() {
        format!("{:?}", outcome.result)
    } else {
        format!("{:?} ({})", outcome.result, outcome.detail)
    }
}

/// Each step of the two runs judged.
/// The router's count of logins that switched to the compressed protocol.
const COMPRESSED_LOGINS: &str = "foobar_db_router_logins_total{transport=\"plain+zlib\"}";

/// A passed `compression` step counts only if the client's session through the router was
/// compressed (`compressed` logins counted during its run): a driver that quietly fell back
/// to plain packets would give the same results.
fn compressed_for_real(
    mut cells: BTreeMap<String, Cell>,
    compressed: f64,
) -> BTreeMap<String, Cell> {
    if matches!(cells.get("compression"), Some(Cell::Pass)) && compressed < 1.0 {
        let why = "the same result, but the router counted no compressed login".to_owned();
        cells.insert("compression".to_owned(), Cell::Fail(why));
    }
    cells
}

fn compare(client: &str, direct: &Run, routed: &Run) -> BTreeMap<String, Cell> {
    let mut cells = BTreeMap::new();
    for (step, direct) in direct {
        let routed = routed.get(step).cloned().unwrap_or_default();
        let both = format!(
            "direct {}, through the router {}",
            show(direct),
            show(&routed)
        );
        let cell = match step.as_str() {
            _ if direct.result.starts_with("n/a") && routed.result == direct.result => {
                Cell::NotApplicable
            }
            "killed" => match (error_code(direct), error_code(&routed)) {
                (Some(_), Some(code)) if KILLED_CODES.contains(&code) => Cell::Pass,
                _ => Cell::Fail(both),
            },
            _ if error_code(direct).is_none() && routed.result == direct.result => Cell::Pass,
            // The expected error (its code is the result), then `SELECT 1` on the same
            // connection: the same both ways.
            "duplicate_key"
                if direct.result.ends_with(" then 1") && routed.result == direct.result =>
            {
                Cell::Pass
            }
            _ => Cell::Fail(both),
        };
        let known = KNOWN_GAPS.iter().any(|(gap_client, gap_step, result)| {
            *gap_client == client
                && (*gap_step == "*" || gap_step == step)
                && routed.result == *result
        });
        let cell = match cell {
            Cell::Fail(_) if known => Cell::Gap(routed.result.clone()),
            cell => cell,
        };
        cells.insert(step.clone(), cell);
    }
    cells
}

/// The matrix as a table, and one line per failed step.
fn render(matrix: &[(String, BTreeMap<String, Cell>)], columns: &[&str]) -> (String, Vec<String>) {
    let steps: Vec<&str> = columns
        .iter()
        .copied()
        .chain(["run"])
        .filter(|step| matrix.iter().any(|(_, cells)| cells.contains_key(*step)))
        .collect();
    let mut table = format!("| client | {} |\n|---|", steps.join(" | "));
    table.push_str(&"---|".repeat(steps.len()));
    let mut failures = Vec::new();
    for (client, cells) in matrix {
        let _ = write!(table, "\n| {client} |");
        for step in &steps {
            let text = match cells.get(*step) {
                None => String::new(),
                Some(Cell::Pass) => "pass".to_owned(),
                Some(Cell::NotApplicable) => "n/a".to_owned(),
                Some(Cell::Gap(how)) => format!("gap ({how})"),
                Some(Cell::Fail(both)) => {
                    failures.push(format!("{client}, step {step}: {both}"));
                    "FAIL".to_owned()
                }
            };
            let _ = write!(table, " {text} |");
        }
    }
    (table, failures)
}

/// The `mariadb` client started with `options` against `target`, its stdio piped.
fn spawn_mariadb(target: &Target, options: &[&str]) -> anyhow::Result<tokio::process::Child> {
    Ok(tokio::process::Command::new("mariadb")
        .args(["--protocol=TCP", "-N", "-B"])
        .arg(format!("-h{}", target.addr.ip()))
        .arg(format!("-P{}", target.addr.port()))
        .arg(format!("-u{}", target.user))
        .arg(format!("-p{}", target.password))
        .args(options)
        .arg(APP_DATABASE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

/// Runs the `mariadb` client with `options`, `sql` on its stdin, against `target`.
async fn cli(target: &Target, options: &[&str], sql: &str) -> anyhow::Result<std::process::Output> {
    let options = [&["--default-character-set=utf8mb4"], options].concat();
    let mut child = spawn_mariadb(target, &options)?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(sql.as_bytes()).await?;
    drop(stdin);
    Ok(
        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .context("the mariadb client did not end within 60 s")??,
    )
}

/// A `mariadb` run's outcome: its stdout (rows joined by spaces), or `error CODE` from its
/// stderr's `ERROR CODE (STATE)`.
fn cli_outcome(out: &std::process::Output) -> Outcome {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr
        .split_whitespace()
        .skip_while(|word| *word != "ERROR")
        .nth(1)
        .map(str::to_owned);
    match error {
        Some(code) if !out.status.success() || stdout.is_empty() => Outcome {
            result: format!("error {code}"),
            detail: stderr.split_whitespace().collect::<Vec<_>>().join(" "),
        },
        _ => Outcome {
            result: stdout.split_whitespace().collect::<Vec<_>>().join(" "),
            detail: String::new(),
        },
    }
}

/// The scripts' steps done with the `mariadb` client (values as SQL literals: it has no
/// parameters), one client run per step, so each one's error is its own.
async fn mariadb_steps(bench: &Bench, target: &Target, prefix: &str) -> anyhow::Result<Run> {
    let blob: String = (0..100 * 1024u32)
        .map(|i| format!("{:02x}", (i * 31 + 7) % 256))
        .collect();
    let batch: Vec<String> = (1..=1000).map(|i| format!("({i}, {})", i * 3)).collect();
    let csv = &bench.csv;
    let steps: [(&str, &[&str], String); 11] = [
        ("setup", &[], format!(
            "DROP TABLE IF EXISTS {prefix}_rows, {prefix}_tx, {prefix}_batch, {prefix}_load;
             CREATE TABLE {prefix}_rows (id INT PRIMARY KEY, s VARCHAR(100), n INT, b LONGBLOB,
               d DATETIME(6), j JSON) CHARSET utf8mb4;
             CREATE TABLE {prefix}_tx (id INT PRIMARY KEY, n INT);
             CREATE TABLE {prefix}_batch (id INT PRIMARY KEY, n INT);
             CREATE TABLE {prefix}_load (id INT PRIMARY KEY, n INT);
             SELECT 'ok';")),
        ("params", &[], format!(
            "INSERT INTO {prefix}_rows (id, s, n) VALUES (1, 'h\u{e9}llo w\u{f6}rld \u{2713} \u{65e5}\u{672c} \u{1f42c}', NULL);
             SELECT LOWER(HEX(s)), IFNULL(n, 'NULL') FROM {prefix}_rows WHERE id = 1;")),
        ("blob", &[], format!(
            "INSERT INTO {prefix}_rows (id, b) VALUES (2, X'{blob}');
             SELECT LENGTH(b), SHA2(b, 256) FROM {prefix}_rows WHERE id = 2;")),
        ("datetime", &[], format!(
            "INSERT INTO {prefix}_rows (id, d) VALUES (3, '2026-12-06 01:02:03.456789');
             SELECT d FROM {prefix}_rows WHERE id = 3;")),
        ("json", &[], format!(
            "INSERT INTO {prefix}_rows (id, j) VALUES (4, '{{\"a\": [1, 2, {{\"b\": \"\u{fc}\"}}], \"n\": null}}');
             SELECT JSON_COMPACT(j), LOWER(HEX(JSON_VALUE(j, '$.a[2].b'))) FROM {prefix}_rows WHERE id = 4;")),
        ("transaction", &[], format!(
            "BEGIN; INSERT INTO {prefix}_tx VALUES (1, 1); ROLLBACK;
             BEGIN; INSERT INTO {prefix}_tx VALUES (2, 2); COMMIT;
             SELECT GROUP_CONCAT(id ORDER BY id) FROM {prefix}_tx;")),
        ("batch", &[], format!(
            "INSERT INTO {prefix}_batch (id, n) VALUES {};
             SELECT COUNT(*), SUM(n) FROM {prefix}_batch;", batch.join(", "))),
        // --quick: each row printed as it arrives (mysql_use_result), counted here.
        ("unbuffered", &["--quick"], format!("SELECT id, n FROM {prefix}_batch ORDER BY id;")),
        ("duplicate_key", &["--force"], format!(
            "INSERT INTO {prefix}_batch (id, n) VALUES (1, 0); SELECT 1;")),
        // 110 KB up and 140 KB back: frames both ways, deflated and split.
        ("compression", &["--compress"], format!(
            "SELECT LENGTH(big), MD5(big), REPEAT('foobar ', 20000) FROM (SELECT '{}' AS big) AS t;",
            "compressed ".repeat(10000))),
        ("load_local", &["--local-infile=1"], format!(
            "LOAD DATA LOCAL INFILE '{csv}' INTO TABLE {prefix}_load FIELDS TERMINATED BY ',';
             SELECT COUNT(*), SUM(n) FROM {prefix}_load;")),
    ];
    let mut run = Run::new();
    for (step, options, sql) in steps {
        let out = cli(target, options, &sql).await?;
        let mut outcome = cli_outcome(&out);
        match step {
            "unbuffered" if error_code(&outcome).is_none() => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let sum: u64 = stdout
                    .lines()
                    .filter_map(|line| line.split('\t').nth(1)?.parse::<u64>().ok())
                    .sum();
                outcome.result = format!("{} {sum}", stdout.lines().count());
            }
            // The long value back, as its length (as the scripts give it).
            "compression" if error_code(&outcome).is_none() => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let fields: Vec<&str> = stdout.trim_end_matches('\n').split('\t').collect();
                if let [length, digest, back] = fields[..] {
                    outcome.result = format!("{length} {digest} {}", back.len());
                }
            }
            "duplicate_key" => {
                let code = String::from_utf8_lossy(&out.stderr)
                    .split_whitespace()
                    .skip_while(|word| *word != "ERROR")
                    .nth(1)
                    .unwrap_or("none")
                    .to_owned();
                let after = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                outcome = Outcome {
                    result: format!("error {code} then {after}"),
                    detail: String::new(),
                };
            }
            _ => {}
        }
        run.insert(step.to_owned(), outcome);
    }
    run.insert(
        "killed".to_owned(),
        mariadb_killed(bench, target, prefix).await?,
    );
    Ok(run)
}

/// The `killed` step with the `mariadb` client: a transaction open, its connection on the
/// primary killed, the next statement's error as Connector/C reports it.
async fn mariadb_killed(bench: &Bench, target: &Target, prefix: &str) -> anyhow::Result<Outcome> {
    // --unbuffered: the connection id is written at once, not when the client exits.
    let mut child = spawn_mariadb(target, &["--force", "--unbuffered"])?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
    stdin.write_all(b"BEGIN; SELECT CONNECTION_ID();\n").await?;
    let id = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
        .await
        .context("the mariadb client printed no connection id within 30 s")??
        .unwrap_or_default();
    kill(&bench.primary, &id).await?;
    stdin
        .write_all(format!("SELECT COUNT(*) FROM {prefix}_batch;\n").as_bytes())
        .await?;
    drop(stdin);
    let mut rest = String::new();
    while let Some(line) = stdout.next_line().await? {
        rest.push_str(&line);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("the mariadb client did not end within 30 s of the kill")??;
    Ok(cli_outcome(&std::process::Output {
        stdout: rest.into_bytes(),
        ..out
    }))
}

/// sysbench `test` with prepared statements (`--db-ps-mode=auto`) against `target`, its
/// table prepared and cleaned up around it: `run` is `ok` when it completed without a fatal
/// error (it ignores only deadlocks and lock waits, which two threads meet directly too).
async fn sysbench(target: &Target, test: &str) -> anyhow::Result<Run> {
    let common = [
        "--db-driver=mysql".to_owned(),
        format!("--mysql-host={}", target.addr.ip()),
        format!("--mysql-port={}", target.addr.port()),
        format!("--mysql-user={}", target.user),
        format!("--mysql-password={}", target.password),
        format!("--mysql-db={APP_DATABASE}"),
        "--tables=1".to_owned(),
        "--table-size=1000".to_owned(),
        "--db-ps-mode=auto".to_owned(),
    ];
    let sysbench = |args: &[&str]| {
        let mut command = tokio::process::Command::new("sysbench");
        command
            .arg(test)
            .args(&common)
            .args(args)
            .kill_on_drop(true);
        command
    };
    let mut run = Run::new();
    let mut committed = 0u64;
    for phase in [
        &["prepare"][..],
        &["--threads=2", "--time=3", "run"],
        &["cleanup"],
    ] {
        let out = tokio::time::timeout(Duration::from_secs(60), sysbench(phase).output())
            .await
            .with_context(|| format!("sysbench {test} {phase:?} hung"))??;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || stdout.contains("FATAL") {
            let error = stdout
                .lines()
                .find(|line| line.contains("FATAL"))
                .and_then(|line| line.split("error ").nth(1))
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .unwrap_or("?");
            run.insert(
                "run".to_owned(),
                Outcome {
                    result: format!("error {error}"),
                    detail: format!(
                        "{phase:?}: {stdout}{}",
                        String::from_utf8_lossy(&out.stderr)
                    ),
                },
            );
            return Ok(run);
        }
        if phase.contains(&"run") {
            let transactions = stdout
                .lines()
                .find(|line| line.trim_start().starts_with("transactions:"))
                .unwrap_or_default();
            println!(
                "  sysbench {test} on {}: {}",
                target.addr,
                transactions.trim()
            );
            // `transactions:   561  (186.87 per sec.)`: a run that committed none did not work.
            committed = transactions
                .split_whitespace()
                .nth(1)
                .and_then(|count| count.parse().ok())
                .unwrap_or(0);
        }
    }
    let result = if committed > 0 {
        "ok"
    } else {
        "no transaction committed"
    };
    run.insert(
        "run".to_owned(),
        Outcome {
            result: result.to_owned(),
            detail: String::new(),
        },
    );
    Ok(run)
}

/// Runs MariaDB's test file `test` with `mariadb-test` against `target`: `pass` when its output
/// matches the file's recorded result (copied to `scratch`, where a mismatch leaves its
/// `.reject`), else the runner's error or the first lines of the difference.
async fn mariadb_test(
    target: &Target,
    test: &str,
    protocol: Option<&str>,
    scratch: &Path,
) -> anyhow::Result<Outcome> {
    let result = scratch.join(format!("{test}.result"));
    std::fs::copy(format!("{MARIADB_TEST_DIR}/main/{test}.result"), &result).with_context(
        || format!("{test}.result (scripts/install-tools.sh installs mariadb-test)"),
    )?;
    let run = tokio::process::Command::new("mariadb-test")
        .arg(format!("--host={}", target.addr.ip()))
        .arg(format!("--port={}", target.addr.port()))
        .arg(format!("--user={}", target.user))
        .arg(format!("--password={}", target.password))
        .arg(format!("--database={APP_DATABASE}"))
        .arg(format!("--basedir={MARIADB_TEST_DIR}/"))
        .arg(format!("--test-file=main/{test}.test"))
        .arg(format!("--result-file={}", result.display()))
        .arg("--silent")
        // One try: its default retries a refused connection for about a minute.
        .arg("--max-connect-retries=1")
        .args(protocol)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .with_context(|| format!("mariadb-test {test} hung"))??;
    if out.status.success() {
        return Ok(Outcome {
            result: "pass".to_owned(),
            detail: String::new(),
        });
    }
    let reject = std::fs::read_to_string(result.with_extension("reject")).unwrap_or_default();
    let expected = std::fs::read_to_string(&result)?;
    let difference = expected
        .lines()
        .zip(reject.lines())
        .find(|(want, got)| want != got)
        .map(|(want, got)| format!("expected {want:?}, got {got:?}"))
        .unwrap_or_default();
    Ok(Outcome {
        result: "fail".to_owned(),
        detail: format!(
            "{} {difference}",
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                + &String::from_utf8_lossy(&out.stderr)
        ),
    })
}
