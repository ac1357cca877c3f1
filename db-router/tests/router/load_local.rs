//! LOAD DATA LOCAL INFILE through the router: the file streamed to the primary, the sequence
//! ids both ways, a client that leaves mid-file, the size limit, and a read-only transaction.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use foobar_db_router::wire::cap;
use foobar_stack_tests::{APP_PASSWORD, APP_USER, ReplicatedDatabase};
use sqlx::{Executor, Row};

use super::support::raw::{self, RawClient};
use super::support::{self, PRIMARY_ID, Router, mariadb_rows, mariadb_with};
use super::wait_for_replica;

/// A raw client logged in with CLIENT_LOCAL_FILES: the primary may ask it for a file.
async fn allowing_files(router: &Router) -> anyhow::Result<RawClient> {
    RawClient::connect_with(
        router.mysql,
        support::USER,
        support::PASSWORD,
        raw::CAPS | cap::LOCAL_FILES,
    )
    .await?
    .map_err(|e| anyhow::anyhow!("login: {e}"))
}

/// `rows` lines `id,text` from `first`, every line `width` bytes long, in `path`.
fn write_csv(path: &Path, first: u64, rows: u64, width: usize) -> anyhow::Result<u64> {
    let mut text = String::with_capacity(rows as usize * width);
    for id in first..first + rows {
        let head = format!("{id},");
        let pad = width - head.len() - 1;
        text.push_str(&head);
        text.push_str(&"x".repeat(pad));
        text.push('\n');
    }
    std::fs::write(path, &text)?;
    Ok(text.len() as u64)
}

/// Through the router with the default limit (64 MiB): the `mariadb` client loads a file
/// larger than the router's `max_packet_size` (4 MiB in this file's router: the file is
/// streamed, never one packet), read back through the router, and one over the compressed
/// protocol; inside a transaction it runs on the primary and is rolled back with it; a raw
/// client sees the sequence ids a server gives and a result after the load
/// (multi-statement); a client that does not allow files is never asked for one; a client
/// that leaves mid-file loads nothing.
pub async fn load_data_local_streams_a_file_to_the_primary(
    router: &Router,
    db: &ReplicatedDatabase,
) -> anyhow::Result<()> {
    let direct = db.primary_pool().await?;
    direct
        .execute("CREATE TABLE loaded (id INT PRIMARY KEY, s VARCHAR(64) NOT NULL)")
        .await?;
    wait_for_replica(db).await?;
    let files = tempfile::tempdir()?;
    let big = files.path().join("big.csv");
    let size = write_csv(&big, 1, 100_000, 50)?;
    anyhow::ensure!(size > 4 << 20, "the file must pass max_packet_size");
    let local = ["--local-infile=1".to_owned()];
    let load = |file: &Path| {
        format!(
            "LOAD DATA LOCAL INFILE '{}' INTO TABLE loaded FIELDS TERMINATED BY ','",
            file.display()
        )
    };
    let t = Instant::now();
    let sql = format!("{}; SELECT COUNT(*), SUM(id) FROM loaded", load(&big));
    let rows = mariadb_rows(mariadb_with(router.mysql, &local, &sql).await?)?;
    anyhow::ensure!(
        rows == [["100000", "5000050000"]],
        "read back through the router: {rows:?}"
    );
    println!(
        "  {size} bytes loaded through the router in {:?}",
        t.elapsed()
    );
    let relayed = router
        .metric("foobar_db_router_load_data_local_bytes_total")
        .await?;
    anyhow::ensure!(relayed == size as f64, "bytes relayed: {relayed}");

    // Over the compressed protocol (between the client and the router only).
    let compressed = files.path().join("compressed.csv");
    write_csv(&compressed, 4_000_001, 20_000, 50)?;
    let sql = format!(
        "{}; SELECT COUNT(*) FROM loaded WHERE id > 4000000",
        load(&compressed)
    );
    let options = ["--compress".to_owned(), "--local-infile=1".to_owned()];
    let rows = mariadb_rows(mariadb_with(router.mysql, &options, &sql).await?)?;
    anyhow::ensure!(rows == [["20000"]], "compressed: {rows:?}");
    direct
        .execute("DELETE FROM loaded WHERE id > 4000000")
        .await?;
    wait_for_replica(db).await?;

    // In a transaction: on the primary, and gone with its rollback.
    let small = files.path().join("small.csv");
    write_csv(&small, 1_000_001, 3, 20)?;
    let sql = format!(
        "BEGIN; {}; SELECT COUNT(*), @@server_id FROM loaded; ROLLBACK; \
         SELECT COUNT(*) FROM loaded",
        load(&small)
    );
    let rows = mariadb_rows(mariadb_with(router.mysql, &local, &sql).await?)?;
    anyhow::ensure!(
        rows == [vec!["100003", PRIMARY_ID], vec!["100000"]],
        "in a transaction: {rows:?}"
    );

    // Sequence ids as the server gives them, and a result after the load's OK.
    let mut client = allowing_files(router).await?;
    client.rows("USE foobar").await?;
    client
        .send(
            b"\x03LOAD DATA LOCAL INFILE 'raw.csv' INTO TABLE loaded FIELDS TERMINATED BY ','; \
              SELECT COUNT(*) FROM loaded WHERE id > 2000000",
        )
        .await?;
    let (seq, request) = client.stream.read_packet().await?;
    anyhow::ensure!(
        seq == 1 && request[..] == b"\xFBraw.csv"[..],
        "the server's request: {seq} {request:?}"
    );
    client.stream.queue(2, b"2000001,a\n2000002,b\n");
    client.stream.queue(3, b"2000003,c\n");
    client.stream.send(4, b"").await?;
    let (seq, ok) = client.stream.read_packet().await?;
    anyhow::ensure!(
        seq == 5 && ok.first() == Some(&0),
        "after the file: {seq} {ok:?}"
    );
    let rows = client
        .read_results(false)
        .await?
        .map_err(|e| anyhow::anyhow!("the SELECT after the load: {e}"))?;
    anyhow::ensure!(rows == [[Some("3".to_owned())]], "after the load: {rows:?}");
    anyhow::ensure!(client.rows("SELECT 1").await? == [[Some("1".to_owned())]]);

    // A client that does not allow files: the router never lets the server ask it.
    let mut plain = super::connect_raw(router).await?;
    let refused = plain
        .query("LOAD DATA LOCAL INFILE 'raw.csv' INTO TABLE foobar.loaded")
        .await?;
    anyhow::ensure!(
        matches!(&refused, Err(e) if e.code == 4166),
        "without CLIENT_LOCAL_FILES: {refused:?}"
    );

    // A client that leaves mid-file: what reached the server is never committed. A dirty
    // read shows the server loading the rows first, so the test cannot pass by loading none.
    let mut leaving = allowing_files(router).await?;
    leaving
        .send(b"\x03LOAD DATA LOCAL INFILE 'x' INTO TABLE foobar.loaded FIELDS TERMINATED BY ','")
        .await?;
    let (_, request) = leaving.stream.read_packet().await?;
    anyhow::ensure!(request.first() == Some(&0xFB), "request: {request:?}");
    let part: String = (3_000_001..3_001_001)
        .map(|id| format!("{id},p\n"))
        .collect();
    leaving.stream.send(2, part.as_bytes()).await?;
    let mut dirty = direct.acquire().await?;
    dirty
        .execute("SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM loaded WHERE id > 3000000")
            .fetch_one(&mut *dirty)
            .await?;
        if seen > 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the server loaded {seen} rows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(leaving);
    loop {
        let loading: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'LOAD DATA%'",
        )
        .fetch_one(&mut *dirty)
        .await?;
        if loading == 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the load is still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM loaded WHERE id > 3000000")
        .fetch_one(&mut *dirty)
        .await?;
    anyhow::ensure!(left == 0, "a client that left mid-file loaded {left} rows");
    Ok(())
}

/// A router with `load_data_local_max_bytes = 1048576`, PyMySQL with `local_infile=True`: a
/// file of exactly 1 MiB loads; one 64 bytes longer is refused with the limit named, loads
/// nothing, and the connection goes on; in a transaction the transaction is rolled back too.
pub async fn load_data_local_over_the_limit_loads_nothing(
    db: &ReplicatedDatabase,
    primary: &str,
    replica: &str,
) -> anyhow::Result<()> {
    let router = Router::start(&support::config(
        primary,
        replica,
        "load_data_local_max_bytes = 1048576",
    ))
    .await?;
    let direct = db.primary_pool().await?;
    direct
        .execute("CREATE TABLE limited (id INT PRIMARY KEY, s VARCHAR(64) NOT NULL)")
        .await?;
    wait_for_replica(db).await?;
    let files = tempfile::tempdir()?;
    let (exact, over) = (
        files.path().join("exact.csv"),
        files.path().join("over.csv"),
    );
    anyhow::ensure!(write_csv(&exact, 1, 16_384, 64)? == 1 << 20);
    anyhow::ensure!(write_csv(&over, 100_001, 16_385, 64)? == (1 << 20) + 64);
    let script = format!(
        r#"
import pymysql
conn = pymysql.connect(host="127.0.0.1", port={port}, user="{user}", password="{password}",
                       database="foobar", autocommit=True, local_infile=True)
cur = conn.cursor()
def attempt(sql):
    try:
        cur.execute(sql)
        return "ok"
    except pymysql.err.MySQLError as e:
        return f"error {{e.args[0]}}: {{e.args[1]}}"
def load(path):
    return attempt(f"LOAD DATA LOCAL INFILE '{{path}}' INTO TABLE limited FIELDS TERMINATED BY ','")
def count():
    cur.execute("SELECT COUNT(*) FROM limited")
    return cur.fetchone()[0]
print(load("{exact}"))
print(load("{over}"))
print(count())
conn.begin()
cur.execute("INSERT INTO limited VALUES (0, 'in the transaction')")
print(load("{over}"))
print(count())
"#,
        port = router.mysql.port(),
        user = support::USER,
        password = support::PASSWORD,
        exact = exact.display(),
        over = over.display(),
    );
    let lines = support::python(&script).await?;
    println!("  {}", lines.join("\n  "));
    let limit = "router.load_data_local_max_bytes (1048576 bytes); nothing was loaded";
    anyhow::ensure!(lines.len() == 5, "PyMySQL: {lines:?}");
    anyhow::ensure!(
        lines[0] == "ok",
        "a file of exactly the limit: {}",
        lines[0]
    );
    anyhow::ensure!(
        lines[1].starts_with("error 1226: ") && lines[1].contains(limit),
        "over the limit: {}",
        lines[1]
    );
    anyhow::ensure!(lines[2] == "16384", "after the refusal: {}", lines[2]);
    anyhow::ensure!(
        lines[3].starts_with("error 1927: ")
            && lines[3].contains(limit)
            && lines[3].contains("transaction was rolled back"),
        "over the limit in a transaction: {}",
        lines[3]
    );
    anyhow::ensure!(lines[4] == "16384", "after the rollback: {}", lines[4]);
    let row = sqlx::query("SELECT COUNT(*), MIN(id), MAX(id) FROM limited")
        .fetch_one(&direct)
        .await?;
    let (rows, min, max): (i64, i32, i32) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    anyhow::ensure!(
        (rows, min, max) == (16_384, 1, 16_384),
        "on the primary: {rows} rows, ids {min}..{max}"
    );
    let refused = router
        .metric("foobar_db_router_errors_total{reason=\"load_data_local_too_large\"}")
        .await?;
    anyhow::ensure!(refused == 2.0, "refusals counted: {refused}");
    Ok(())
}

/// Inside `START TRANSACTION READ ONLY`, through the router (the transaction is on the
/// replica) and directly on the primary, the same steps with a client that allows files: the
/// load is refused with the same code, SQLSTATE and message, the client is never asked for
/// the file, nothing is loaded, and the transaction and the connection go on.
pub async fn load_data_local_in_a_read_only_transaction_is_refused_as_directly(
    router: &Router,
    primary: &str,
) -> anyhow::Result<()> {
    let direct = RawClient::connect_with(
        primary.parse()?,
        APP_USER,
        APP_PASSWORD,
        raw::CAPS | cap::LOCAL_FILES,
    )
    .await?
    .map_err(|e| anyhow::anyhow!("login to the primary: {e}"))?;
    let routed = allowing_files(router).await?;
    let mut answers = Vec::new();
    for (name, mut client) in [("direct", direct), ("router", routed)] {
        client.rows("USE foobar").await?;
        let before = client.rows("SELECT COUNT(*) FROM loaded").await?;
        client.rows("START TRANSACTION READ ONLY").await?;
        let refused = client
            .query("LOAD DATA LOCAL INFILE 'ro.csv' INTO TABLE loaded FIELDS TERMINATED BY ','")
            .await
            .with_context(|| format!("{name}: the answer to LOAD DATA LOCAL"))?;
        let Err(error) = refused else {
            anyhow::bail!("{name}: loaded in a read-only transaction");
        };
        let in_transaction = client
            .rows("SELECT COUNT(*), @@in_transaction FROM loaded")
            .await?;
        anyhow::ensure!(
            in_transaction == [[before[0][0].clone(), Some("1".to_owned())]],
            "{name}: after the refusal, in the transaction: {in_transaction:?}"
        );
        client.rows("COMMIT").await?;
        let after = client.rows("SELECT COUNT(*) FROM loaded").await?;
        anyhow::ensure!(after == before, "{name}: {before:?} rows, then {after:?}");
        answers.push((error.code, error.sqlstate, error.message));
    }
    println!("  direct: {:?}", answers[0]);
    anyhow::ensure!(
        answers[0].0 == 1792,
        "the primary's own answer: {:?}",
        answers[0]
    );
    anyhow::ensure!(
        answers[1] == answers[0],
        "through the router {:?}, directly {:?}",
        answers[1],
        answers[0]
    );
    Ok(())
}
