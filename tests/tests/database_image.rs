//! The project's MariaDB image, as compose runs it: a primary and a replica that follows it.

use std::time::{Duration, Instant};

use foobar_stack_tests::ReplicatedDatabase;

#[tokio::test]
async fn replica_follows_the_primary_and_refuses_writes() -> anyhow::Result<()> {
    let db = ReplicatedDatabase::start().await?;
    let primary = db.primary_pool().await?;
    let replica = db.replica_pool().await?;

    let ids: (u32, u32) = (
        sqlx::query_scalar("SELECT @@server_id")
            .fetch_one(&primary)
            .await?,
        sqlx::query_scalar("SELECT @@server_id")
            .fetch_one(&replica)
            .await?,
    );
    assert_eq!(ids, (1, 2), "two distinct nodes");
    let read_only: (i64, i64) = (
        sqlx::query_scalar("SELECT @@read_only")
            .fetch_one(&primary)
            .await?,
        sqlx::query_scalar("SELECT @@read_only")
            .fetch_one(&replica)
            .await?,
    );
    assert_eq!(read_only, (0, 1));

    // Transactional tables only: a table of another engine is refused, not made InnoDB.
    for engine in ["MyISAM", "MEMORY", "Aria"] {
        let refused = sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE loose (id INT PRIMARY KEY) ENGINE={engine}"
        )))
        .execute(&primary)
        .await
        .expect_err("a non-transactional table was created");
        println!("ENGINE={engine}: {refused}");
    }
    let engine: String = sqlx::query_scalar("SELECT @@enforce_storage_engine")
        .fetch_one(&primary)
        .await?;
    assert_eq!(engine, "InnoDB");
    sqlx::query("CREATE TABLE greeting (id INT PRIMARY KEY, text VARCHAR(40) NOT NULL)")
        .execute(&primary)
        .await?;
    sqlx::query("INSERT INTO greeting VALUES (1, 'hello from the primary')")
        .execute(&primary)
        .await?;
    let written = Instant::now();

    let seen = loop {
        let row: Option<String> = sqlx::query_scalar("SELECT text FROM greeting WHERE id = 1")
            .fetch_optional(&replica)
            .await
            .unwrap_or(None);
        if let Some(text) = row {
            break text;
        }
        assert!(
            written.elapsed() < Duration::from_secs(5),
            "row not on the replica within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(seen, "hello from the primary");
    println!("replicated in {:?}", written.elapsed());

    let refused = sqlx::query("INSERT INTO greeting VALUES (2, 'written on the replica')")
        .execute(&replica)
        .await
        .expect_err("the replica must refuse writes");
    let code = refused
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    // ER_OPTION_PREVENTS_STATEMENT (1290, SQLSTATE HY000): "running with --read-only".
    assert!(
        refused.to_string().contains("read-only"),
        "unexpected error: {refused}"
    );
    assert_eq!(code.as_deref(), Some("HY000"), "{refused}");
    Ok(())
}
