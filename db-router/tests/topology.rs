//! The topology half of the router against a real MariaDB primary and replica from the
//! project's image (testcontainers), with real replication and containers killed for real
//! (`docker kill --signal SIGKILL`, as the demo kills them: no clean shutdown). The nodes sit
//! on an internal network, as compose's `data` network is, and the routers reach them at
//! their addresses there (`ADDRESS:3306`; a restarted container gets its address back);
//! replication between the nodes uses their container names (`report_host`). That matters:
//! a killed node's name then hangs in Docker's resolver instead of failing, which published
//! ports and an ordinary network would hide.
//!
//! The tests run one at a time (a lock): each starts its own pair, and a second pair
//! starting on the same two cores would slow the first one's checks past their timeout.

#[allow(dead_code)]
mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foobar_db_router::topology::{self, BackendsConfig, MonitorConfig, Node, Snapshot, Topology};
use foobar_service::Context;
use foobar_stack_tests::{
    APP_DATABASE, APP_PASSWORD, APP_USER, MONITOR_PASSWORD, MONITOR_USER, REPLICATION_PASSWORD,
    ROOT_PASSWORD, ReplicatedDatabase, docker,
};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPoolOptions};
use sqlx::{Connection, Executor};
use testcontainers::{ContainerAsync, GenericImage};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The stack's failover target is 5 s after the primary dies; tests allow 10.
const FAILOVER_LIMIT: Duration = Duration::from_secs(10);
/// The longest a client writing through the router may see no write acknowledged when the
/// primary is killed: the target is 5 s; 8 s leaves room for a loaded machine.
const WRITE_OUTAGE_LIMIT: Duration = Duration::from_secs(8);
/// A killed MariaDB container restarting (crash recovery) and answering again.
const RESTART_LIMIT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn replica_outage_moves_reads_then_two_routers_fail_over_together_and_rejoin()
-> anyhow::Result<()> {
    let (_one, db, primary, replica) = start_pair().await?;
    let (a, admin_a) = router(&db).await?;
    let (b, admin_b) = router(&db).await?;
    for t in [&a, &b] {
        wait_healthy_pair(t, &db).await?;
    }

    // The replica dies under a read (a prepared statement, as sqlx sends one, still running
    // there): that read is answered by the primary, no error reaches the client. Then reads
    // go to the primary (reader None), writes are untouched.
    let proxy = support::Router::start(&support::config(&primary.name, &replica.name, "")).await?;
    let mut reader = MySqlConnection::connect_with(&proxy.options()).await?;
    let (on, _) = sqlx::query_as::<_, (u32, i64)>("SELECT @@server_id, SLEEP(?)")
        .bind(0)
        .fetch_one(&mut reader)
        .await?;
    assert_eq!(on, 2, "reads go to the replica while it is up");
    let slow_read = tokio::spawn(async move {
        sqlx::query_as::<_, (u32, i64)>("SELECT @@server_id, SLEEP(?)")
            .bind(2)
            .fetch_one(&mut reader)
            .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    kill(&db.replica).await?;
    let (server_id, _) = slow_read.await??;
    assert_eq!(
        server_id, 1,
        "the read cut off on the replica is answered by the primary"
    );
    // Only the two topology halves below take part in the failover.
    drop(proxy);
    wait(
        &a,
        "reader none after the replica's kill",
        FAILOVER_LIMIT,
        roles(Some(&primary), None),
    )
    .await?;
    let mut on_primary = app_conn(db.primary_addr).await?;
    on_primary
        .execute("CREATE TABLE note (id INT PRIMARY KEY, text VARCHAR(40) NOT NULL)")
        .await?;
    on_primary
        .execute("INSERT INTO note VALUES (1, 'written while the replica was down')")
        .await?;

    // It returns, catches up, and gets reads again.
    restart(&db, &db.replica).await?;
    wait(
        &a,
        "reader back after the replica's restart",
        RESTART_LIMIT,
        reads_on(Some(&replica)),
    )
    .await?;

    // Its SQL thread stopped (replication broken, container up): no reads there either.
    let mut admin_on_replica = monitor_conn(db.replica_addr).await?;
    admin_on_replica.execute("STOP SLAVE SQL_THREAD").await?;
    wait(
        &a,
        "reader none while replication is stopped",
        FAILOVER_LIMIT,
        roles(Some(&primary), None),
    )
    .await?;
    admin_on_replica.execute("START SLAVE SQL_THREAD").await?;
    wait(
        &a,
        "reader back once replication runs",
        FAILOVER_LIMIT,
        reads_on(Some(&replica)),
    )
    .await?;
    drop(admin_on_replica);

    // The primary dies, idle (its last write acknowledged by the replica, semi-sync).
    on_primary
        .execute("INSERT INTO note VALUES (2, 'acknowledged before the failover')")
        .await?;
    drop(on_primary);
    let killed = Instant::now();
    kill(&db.primary).await?;
    let no_writer = wait(
        &a,
        "no writer, reads on the replica",
        FAILOVER_LIMIT,
        roles(None, Some(&replica)),
    )
    .await;
    // Router b may promote first; then a never shows the gap. Either way both converge.
    for t in [&a, &b] {
        wait(
            t,
            "the replica promoted at epoch 1",
            FAILOVER_LIMIT,
            writer_at(&replica, 1),
        )
        .await?;
    }
    println!(
        "primary killed: router a had no writer after {:?}; both routers on the replica, \
         epoch 1, {:?} after the kill",
        no_writer.ok(),
        killed.elapsed()
    );
    assert_eq!(*a.snapshot(), *b.snapshot(), "the two routers disagree");
    assert_eq!(
        a.report().failovers + b.report().failovers,
        1,
        "exactly one router promotes; the other adopts its record"
    );
    let mut on_replica = app_conn(db.replica_addr).await?;
    let ids: Vec<i32> = sqlx::query_scalar("SELECT id FROM note ORDER BY id")
        .fetch_all(&mut on_replica)
        .await?;
    assert_eq!(
        ids,
        [1, 2],
        "every acknowledged write is on the new primary"
    );
    on_replica
        .execute("INSERT INTO note VALUES (3, 'written on the new primary')")
        .await?;

    // The old primary comes back writable (its DB_ROLE says primary): it is fenced, marked,
    // and, its history being a prefix of the new primary's, rejoined by itself as the
    // replica: full redundancy again with no command.
    restart(&db, &db.primary).await?;
    wait(
        &a,
        "the old primary rejoined by itself",
        RESTART_LIMIT,
        roles(Some(&replica), Some(&primary)),
    )
    .await?;
    assert_eq!(b.snapshot().writer.as_ref(), Some(&replica));
    assert!(
        a.report().fencings + b.report().fencings >= 1,
        "it came back writable: one router fenced it first"
    );
    let mut on_old = app_conn(db.primary_addr).await?;
    let refused = on_old
        .execute("INSERT INTO note VALUES (4, 'written on the old primary')")
        .await
        .expect_err("the old primary must refuse the app's writes");
    assert!(refused.to_string().contains("read-only"), "{refused}");
    // The fence mark the router left there, outside the binary log: the record of the
    // primary that replaced it.
    let mut monitor_on_old = monitor_conn(db.primary_addr).await?;
    let mark: (u64, u32) =
        sqlx::query_as("SELECT epoch, server_id FROM foobar_router.fence ORDER BY epoch DESC")
            .fetch_one(&mut monitor_on_old)
            .await?;
    assert_eq!(mark, (1, 2), "the fence mark names epoch 1, server 2");
    // Nothing of it reached the new primary's binary log (it would be an errant transaction).
    let mut monitor_on_new = monitor_conn(db.replica_addr).await?;
    let marks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM foobar_router.fence")
        .fetch_one(&mut monitor_on_new)
        .await?;
    assert_eq!(marks, 0, "the fence mark replicated");

    // What an operator sees on the admin listener: GET /topology and /metrics.
    let (status, body) = admin_get(&admin_a, "/topology").await?;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(json["epoch"], 1, "{body}");
    assert_eq!(json["writer"], replica.name.as_str(), "{body}");
    assert_eq!(json["reader"], primary.name.as_str(), "{body}");
    let mut failovers = 0.0;
    for admin in [&admin_a, &admin_b] {
        let (status, metrics) = admin_get(admin, "/metrics").await?;
        assert_eq!(status, 200);
        assert_eq!(
            metric(&metrics, "foobar_db_router_epoch"),
            Some(1.0),
            "{metrics}"
        );
        let up = format!("foobar_db_router_backend_up{{node=\"{}\"}}", primary.name);
        assert_eq!(metric(&metrics, &up), Some(1.0), "{metrics}");
        failovers += metric(&metrics, "foobar_db_router_failovers_total").unwrap_or(-1.0);
    }
    assert_eq!(failovers, 1.0, "failovers_total of the two routers");

    // The image's healthcheck calls the promoted replica (DB_ROLE=replica) healthy.
    let health = docker(&["exec", db.replica.id(), "foobar-db-healthcheck"]).await?;
    assert!(health.contains("promoted"), "{health}");

    // The rejoined old primary crashes and restarts: DB_ROLE says primary, but replication
    // is configured, so it comes back a read-only replica by itself (no fencing needed).
    let fencings = (a.report().fencings, b.report().fencings);
    kill(&db.primary).await?;
    wait(
        &a,
        "reader none while the rejoined node is down",
        FAILOVER_LIMIT,
        reads_on(None),
    )
    .await?;
    restart(&db, &db.primary).await?;
    wait(
        &a,
        "the rejoined node reads again after its restart",
        RESTART_LIMIT,
        roles(Some(&replica), Some(&primary)),
    )
    .await?;
    assert_eq!((a.report().fencings, b.report().fencings), fencings);
    let mut on_old = app_conn(db.primary_addr).await?;
    on_replica
        .execute("INSERT INTO note VALUES (5, 'replicated to the rejoined node')")
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids: Vec<i32> = sqlx::query_scalar("SELECT id FROM note ORDER BY id")
            .fetch_all(&mut on_old)
            .await?;
        if ids == [1, 2, 3, 5] {
            break;
        }
        assert!(Instant::now() < deadline, "rejoined node has {ids:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test]
async fn primary_killed_under_writes_through_the_router_fails_over_within_the_limit_and_keeps_every_acknowledged_write()
-> anyhow::Result<()> {
    let (_one, db, primary, replica) = start_pair().await?;
    // Two routers, as in the stack: the binary, which the client writes through, and this
    // process's topology half, watched here.
    // The old primary's rejoin is left to the operator here (auto_rejoin off), so the
    // operator's command and its refusal are what is tested.
    let (router, admin) = router_with(&db, |m| m.auto_rejoin = false).await?;
    let proxy = support::Router::start(&support::config(&primary.name, &replica.name, "")).await?;
    wait_healthy_pair(&router, &db).await?;
    create_counter(&db).await?;

    // A client writes through the router every 50 ms, as the web servers do (their pool).
    let client = WriteClient::start(proxy.options());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = Instant::now();
    kill(&db.primary).await?;
    let no_writer = wait(&router, "no writer after the kill", FAILOVER_LIMIT, |s| {
        s.writer.is_none()
    })
    .await;
    wait(
        &router,
        "the replica promoted",
        FAILOVER_LIMIT,
        writer_at(&replica, 1),
    )
    .await?;
    let promoted = killed.elapsed();
    // Until the client's writes are acknowledged again (through the router binary, which
    // may take longer than this one), then a second more of them.
    let (now, deadline) = (Instant::now(), killed + FAILOVER_LIMIT);
    while client.first_ack_after(now).is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes = client.stop().await;
    let acknowledged: Vec<i32> = writes.acknowledged.iter().map(|(id, _)| *id).collect();
    assert!(
        writes.before(killed) > 10,
        "only {} writes acknowledged before the kill",
        writes.before(killed)
    );
    let outage = writes.outage(killed);

    let mut on_new = app_conn(db.replica_addr).await?;
    let present: BTreeSet<i32> = sqlx::query_scalar("SELECT id FROM counter")
        .fetch_all(&mut on_new)
        .await?
        .into_iter()
        .collect();
    let lost: Vec<i32> = acknowledged
        .iter()
        .filter(|id| !present.contains(id))
        .copied()
        .collect();
    println!(
        "primary SIGKILLed under writes through the router: no writer {:?} after the kill, \
         the replica promoted and the writer {promoted:?} after it; write outage seen by the \
         client {:?}, ending {:?} after the kill (limit {WRITE_OUTAGE_LIMIT:?}): {} writes \
         acknowledged, {} failed \
         ({}), {} rows on the new primary, {} acknowledged writes lost",
        no_writer.ok(),
        outage.map(|(gap, _)| gap),
        outage.map(|(_, ended)| ended),
        acknowledged.len(),
        writes.failed,
        writes.errors.join("; "),
        present.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged writes missing on the new primary: {lost:?}"
    );
    let (outage, _) = outage.ok_or_else(|| {
        anyhow::anyhow!("no write acknowledged within {FAILOVER_LIMIT:?} of the kill")
    })?;
    assert!(
        outage <= WRITE_OUTAGE_LIMIT,
        "writes failed for {outage:?} (limit {WRITE_OUTAGE_LIMIT:?})"
    );
    drop(proxy);
    on_new.execute("INSERT INTO counter VALUES (-1)").await?;

    // The old primary returns fenced: read-only for the app, not the writer.
    restart(&db, &db.primary).await?;
    wait_report(
        &router,
        "the old primary fenced",
        RESTART_LIMIT,
        fenced(&primary),
    )
    .await?;
    assert_eq!(router.snapshot().writer.as_ref(), Some(&replica));
    let mut on_old = app_conn(db.primary_addr).await?;
    let read_only: i64 = sqlx::query_scalar("SELECT @@read_only")
        .fetch_one(&mut on_old)
        .await?;
    assert_eq!(read_only, 1);
    assert!(
        on_old
            .execute("INSERT INTO counter VALUES (-2)")
            .await
            .is_err()
    );

    // An errant transaction: written on the fenced old primary by an account read_only
    // does not stop (root), so the new primary never had it. Rejoining must refuse and say
    // why, and leave the node fenced. (The kill itself may have left one too: a commit the
    // old primary wrote but never acknowledged.)
    let mut root_on_old = MySqlConnection::connect_with(
        &MySqlConnectOptions::new()
            .host(&db.primary_addr.ip().to_string())
            .port(db.primary_addr.port())
            .username("root")
            .password(ROOT_PASSWORD),
    )
    .await?;
    root_on_old
        .execute("INSERT INTO foobar.counter VALUES (-3)")
        .await?;
    // Through the operator's command, against the admin listener served over TCP.
    let (rejoined, said) = operator_command(&admin, &["rejoin"]).await?;
    println!("`foobar-db-router rejoin` with an errant transaction: {said}");
    assert!(!rejoined, "{said}");
    assert!(
        said.contains("409") && said.contains("never received"),
        "{said}"
    );
    let replication = root_on_old.fetch_optional("SHOW REPLICA STATUS").await?;
    assert!(replication.is_none(), "refused, but left replicating");
    let read_only: i64 = sqlx::query_scalar("SELECT @@read_only")
        .fetch_one(&mut root_on_old)
        .await?;
    assert_eq!(read_only, 1, "refused, but no longer fenced");
    assert_eq!(router.snapshot().writer.as_ref(), Some(&replica));

    // A router with auto_rejoin on leaves it fenced too, and says why: in its topology JSON
    // and a metric (which the stack's alert rule reads).
    let (auto, auto_admin) = router_with(&db, |_| {}).await?;
    wait_report(&auto, "the errant node reported", FAILOVER_LIMIT, |r| {
        r.nodes
            .iter()
            .any(|n| n.name == primary.name && n.role == "fenced" && n.errant.is_some())
    })
    .await?;
    let (_, metrics) = admin_get(&auto_admin, "/metrics").await?;
    let errant = format!(
        "foobar_db_router_backend_errant{{node=\"{}\"}}",
        primary.name
    );
    assert_eq!(metric(&metrics, &errant), Some(1.0), "{metrics}");
    assert!(
        root_on_old
            .fetch_optional("SHOW REPLICA STATUS")
            .await?
            .is_none()
    );
    drop((auto, auto_admin));

    // The new primary dies, and the old one restarts (writable again: its DB_ROLE says
    // primary). A router started now never saw the failover, but the fence mark on the old
    // primary names the newer epoch: it fences the node again and gives writes nowhere.
    drop(router);
    drop(admin);
    drop(root_on_old);
    kill(&db.replica).await?;
    docker(&["restart", "--time", "0", db.primary.id()]).await?;
    let now = db.address(&db.primary).await?;
    anyhow::ensure!(now == db.primary_addr, "restarted at {now}");
    let (fresh, _fresh_admin) = router_with(&db, |_| {}).await?;
    wait_report(
        &fresh,
        "the old primary fenced again",
        RESTART_LIMIT,
        fenced(&primary),
    )
    .await?;
    assert_eq!(
        fresh.snapshot().writer,
        None,
        "a fresh router wrote to a fenced node"
    );
    assert_eq!(fresh.report().epoch, 1, "the mark's epoch was not learned");
    let mut on_old = app_conn(db.primary_addr).await?;
    assert!(
        on_old
            .execute("INSERT INTO counter VALUES (-4)")
            .await
            .is_err(),
        "the fenced node took a write"
    );
    Ok(())
}

#[tokio::test]
async fn frozen_primary_is_replaced_once_the_replica_lost_it_then_fenced_and_rejoined_stray_writable_node_is_fenced_lagging_replica_gets_no_reads()
-> anyhow::Result<()> {
    let (_one, db, primary, replica) = start_pair().await?;
    let (router, _ctx) = router(&db).await?;
    wait_healthy_pair(&router, &db).await?;

    // Frozen, not dead: connections open but nothing answers, as behind a dropped link.
    // The monitor's check times out (500 ms) and writes stop going there at once.
    docker(&["pause", db.primary.id()]).await?;
    wait(
        &router,
        "no writer while the primary hangs",
        Duration::from_secs(3),
        roles(None, Some(&replica)),
    )
    .await?;
    // The replica notices the silence within slave_net_timeout (3 s, heartbeats every
    // second): only then is it promoted, never while it still streams from the primary.
    wait(
        &router,
        "the replica promoted while the primary is frozen",
        FAILOVER_LIMIT,
        writer_at(&replica, 1),
    )
    .await?;

    // It thaws writable, finds itself fenced (the higher epoch), and is rejoined by itself.
    docker(&["unpause", db.primary.id()]).await?;
    wait(
        &router,
        "the thawed primary fenced and rejoined",
        RESTART_LIMIT,
        roles(Some(&replica), Some(&primary)),
    )
    .await?;
    assert_eq!(
        router.report().fencings,
        1,
        "the thawed primary was not fenced"
    );
    // From here on the roles are swapped.
    let (primary, replica) = (replica, primary);
    let (primary_addr, replica_addr) = (db.replica_addr, db.primary_addr);

    // Someone makes the replica writable by hand while the app has a session open there:
    // the router fences it again and ends that session, so it cannot write through it.
    let mut app_on_replica = app_conn(replica_addr).await?;
    app_on_replica.execute("SELECT 1").await?;
    monitor_conn(replica_addr)
        .await?
        .execute("SET GLOBAL read_only = OFF")
        .await?;
    wait_report(
        &router,
        "the stray writable replica fenced",
        Duration::from_secs(5),
        |r| {
            r.fencings == 2
                && r.nodes.iter().any(|n| {
                    n.name == replica.name && n.status.as_ref().is_some_and(|s| s.read_only)
                })
                && r.writer.as_deref() == Some(primary.name.as_str())
        },
    )
    .await?;
    assert!(
        app_on_replica.execute("SELECT 1").await.is_err(),
        "the app's session on the fenced node must have been killed"
    );

    // The replica falls behind (delayed replication: it applies each event 8 s late), past
    // max_replication_lag (5 s): no reads there until it has caught up.
    let mut admin_on_replica = monitor_conn(replica_addr).await?;
    admin_on_replica.execute("STOP SLAVE").await?;
    admin_on_replica
        .execute("CHANGE MASTER TO MASTER_DELAY = 8")
        .await?;
    admin_on_replica.execute("START SLAVE").await?;
    wait(
        &router,
        "reader back with delayed replication",
        Duration::from_secs(10),
        reads_on(Some(&replica)),
    )
    .await?;
    app_conn(primary_addr)
        .await?
        .execute("CREATE TABLE lag_probe (id INT PRIMARY KEY)")
        .await?;
    let written = Instant::now();
    wait(
        &router,
        "reader none while the replica lags",
        Duration::from_secs(10),
        roles(Some(&primary), None),
    )
    .await?;
    let lagging_after = written.elapsed();
    wait(
        &router,
        "reader back once the replica caught up",
        Duration::from_secs(15),
        reads_on(Some(&replica)),
    )
    .await?;
    println!(
        "replica delayed 8 s: reads off it {lagging_after:?} after a write, back {:?} after it",
        written.elapsed()
    );
    // Not before the lag passed the limit. Seconds_Behind_Master counts from the event's
    // timestamp, which has whole seconds: the write may count up to 1 s older than it is.
    assert!(
        lagging_after + Duration::from_secs(1) >= MonitorConfig::default().max_replication_lag,
        "{lagging_after:?}"
    );
    Ok(())
}

/// A client that starts one write every 50 ms through a pool as the web servers configure
/// theirs (10 connections, 2 s to acquire one, 5 s per statement), without waiting for the
/// one before: a write that hangs does not hold the next ones back.
struct WriteClient {
    writes: Arc<Mutex<Writes>>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default, Clone)]
struct Writes {
    /// Each acknowledged id, and when its acknowledgement arrived.
    acknowledged: Vec<(i32, Instant)>,
    failed: usize,
    /// The distinct errors, in order.
    errors: Vec<String>,
}

impl Writes {
    fn before(&self, at: Instant) -> usize {
        self.acknowledged.iter().filter(|(_, t)| *t < at).count()
    }

    /// The longest time without an acknowledgement from the last one before `at` on (writes
    /// in flight at `at` may still be acknowledged just after it), and when it ended,
    /// counted from `at`; `None` while nothing was acknowledged after `at`.
    fn outage(&self, at: Instant) -> Option<(Duration, Duration)> {
        let mut times: Vec<Instant> = self.acknowledged.iter().map(|(_, t)| *t).collect();
        times.sort();
        let last_before = times.iter().rposition(|t| *t < at)?;
        times[last_before..]
            .windows(2)
            .map(|pair| (pair[1] - pair[0], pair[1] - at))
            .max()
    }
}

impl WriteClient {
    fn start(options: MySqlConnectOptions) -> Self {
        let pool = MySqlPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with(options);
        let writes = Arc::new(Mutex::new(Writes::default()));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn({
            let (writes, stop) = (Arc::clone(&writes), stop.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                let mut in_flight = tokio::task::JoinSet::new();
                for id in 1.. {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = stop.cancelled() => break,
                    }
                    let (pool, writes) = (pool.clone(), Arc::clone(&writes));
                    in_flight.spawn(async move {
                        let insert = sqlx::query("INSERT INTO counter VALUES (?)")
                            .bind(id)
                            .execute(&pool);
                        let result = tokio::time::timeout(Duration::from_secs(5), insert).await;
                        let mut writes = writes.lock().unwrap_or_else(|e| e.into_inner());
                        let error = match result {
                            Ok(Ok(_)) => return writes.acknowledged.push((id, Instant::now())),
                            Ok(Err(e)) => e.to_string(),
                            Err(_) => "no answer within 5 s".to_owned(),
                        };
                        writes.failed += 1;
                        if !writes.errors.contains(&error) {
                            writes.errors.push(error);
                        }
                    });
                }
                while in_flight.join_next().await.is_some() {}
            }
        });
        Self { writes, stop, task }
    }

    fn first_ack_after(&self, at: Instant) -> Option<Instant> {
        let writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        writes
            .acknowledged
            .iter()
            .map(|(_, t)| *t)
            .filter(|t| *t >= at)
            .min()
    }

    /// Stops starting writes, waits for those in flight; all of them.
    async fn stop(self) -> Writes {
        self.stop.cancel();
        let _ = self.task.await;
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The double fault that lost acknowledged writes: the replica cut off (semi-sync falls back
/// to asynchronous replication after its timeout), writes acknowledged through a router,
/// the primary killed, the replica back. Neither router may promote the replica (it lacks
/// the writes one of them acknowledged); writes fail fast, reads go on; when the primary
/// returns, it is the writer again with every acknowledged write, and the replica catches up.
#[tokio::test]
async fn double_fault_replica_cut_off_then_primary_killed_promotes_nothing_and_loses_nothing()
-> anyhow::Result<()> {
    let (_one, db, primary, replica) = start_pair().await?;
    let (a, a_guard, b, _secrets) = peer_routers(&db).await?;
    wait_healthy_pair(&a, &db).await?;
    create_counter(&db).await?;
    let mut through_b = MySqlConnection::connect_with(&b.options()).await?;
    wait_rows(db.replica_addr, 0).await?;

    // The replica cut off from the primary (both ways; the routers still reach both, a
    // partial partition): the primary waits for it once (the semi-sync timeout), then
    // acknowledges every write without it.
    let primary_ip = db.primary_addr.ip().to_string();
    partition(&db.replica, &primary_ip, true).await?;
    insert_counter(&mut through_b, 1..=40).await?;
    println!("40 writes acknowledged through router b while the replica was cut off");
    kill(&db.primary).await?;
    partition(&db.replica, &primary_ip, false).await?;

    // Both routers see the replica again, the primary down past failover_after: no
    // promotion, the reason said, writes fail at once, reads answered by the replica.
    // (The replica notices it lost the primary within slave_net_timeout.)
    wait_report(&a, "router a refuses the promotion", RESTART_LIMIT, |r| {
        r.failover_blocked
            .as_deref()
            .is_some_and(|why| why.contains("lacks"))
    })
    .await?;
    let blocked = b.metric("foobar_db_router_failover_blocked").await?.max(
        metric(
            &admin_get(&a_guard, "/metrics").await?.1,
            "foobar_db_router_failover_blocked",
        )
        .unwrap_or(0.0),
    );
    assert_eq!(blocked, 1.0, "failover_blocked is 1 on a router");
    println!(
        "refused: {}",
        a.report().failover_blocked.unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.snapshot().epoch, 0, "a router promoted the stale replica");
    assert_eq!(a.snapshot().writer, None);
    let mut monitor_on_replica = monitor_conn(db.replica_addr).await?;
    let epoch: u64 = sqlx::query_scalar("SELECT MAX(epoch) FROM foobar_router.promotion")
        .fetch_one(&mut monitor_on_replica)
        .await?;
    assert_eq!(epoch, 0, "the replica was promoted");
    let mut client = MySqlConnection::connect_with(&b.options()).await?;
    let started = Instant::now();
    let refused = sqlx::query("INSERT INTO counter VALUES (41)")
        .execute(&mut client)
        .await
        .expect_err("a write was taken with no primary");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the write waited {:?} instead of failing at once: {refused}",
        started.elapsed()
    );
    let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM counter")
        .fetch_one(&mut client)
        .await?;
    println!("write refused at once ({refused}); a read answered ({seen} rows on the replica)");

    // The primary returns: the writer again at epoch 0, every acknowledged write there, and
    // the replica catches up from it.
    restart(&db, &db.primary).await?;
    wait(
        &a,
        "the old primary writes again",
        RESTART_LIMIT,
        writer_at(&primary, 0),
    )
    .await?;
    let mut on_primary = app_conn(db.primary_addr).await?;
    let present: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM counter WHERE id BETWEEN 1 AND 40")
        .fetch_one(&mut on_primary)
        .await?;
    assert_eq!(present, 40, "acknowledged writes lost");
    wait_rows(db.replica_addr, 40).await?;
    write_until_accepted(&b, 42, "after the primary's return").await?;
    println!("primary back: 40 of 40 acknowledged writes on it, the replica caught up");

    // The same again, and this time an operator forces the promotion. Naming less than the
    // missing writes forces nothing; naming them gives exactly those up.
    partition(&db.replica, &primary_ip, true).await?;
    let mut through_b = MySqlConnection::connect_with(&b.options()).await?;
    insert_counter(&mut through_b, 101..=105).await?;
    kill(&db.primary).await?;
    partition(&db.replica, &primary_ip, false).await?;
    let blocked = |r: &topology::Report| r.failover_blocked.clone().unwrap_or_default();
    wait_report(
        &a,
        "router a refuses the promotion again",
        RESTART_LIMIT,
        |r| blocked(r).contains("lacks"),
    )
    .await?;
    let missing = blocked(&a.report())
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_owned();
    let (status, said) = operator_command(&a_guard, &["promote", "--give-up", "0-1-1"]).await?;
    assert!(status, "{said}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.snapshot().epoch, 0, "promoted past writes nobody gave up");
    let (status, said) = operator_command(&a_guard, &["promote", "--give-up", &missing]).await?;
    assert!(status, "{said}");
    wait(
        &a,
        "the replica promoted by force",
        FAILOVER_LIMIT,
        writer_at(&replica, 1),
    )
    .await?;
    let mut on_new = app_conn(db.replica_addr).await?;
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM counter WHERE id BETWEEN 1 AND 42")
        .fetch_one(&mut on_new)
        .await?;
    assert_eq!(
        kept, 41,
        "1 to 40 and 42 (41 was refused) are not all there"
    );
    println!("forced past {missing}: promoted, the writes before the second fault all kept");
    Ok(())
}

#[tokio::test]
async fn frozen_peer_router_blocks_the_promotion_until_an_operator_forces_it_without_that_peer()
-> anyhow::Result<()> {
    let (_one, db, _, replica) = start_pair().await?;
    let (a, a_guard, b, _secrets) = peer_routers(&db).await?;
    let b_admin = b.admin.to_string();
    wait_healthy_pair(&a, &db).await?;
    create_counter(&db).await?;
    let mut through_b = MySqlConnection::connect_with(&b.options()).await?;
    insert_counter(&mut through_b, 1..=10).await?;
    wait_rows(db.replica_addr, 10).await?;
    drop(through_b);

    // Router b frozen (SIGSTOP: its sockets open, nothing answers), then the primary killed:
    // router a cannot learn what b acknowledged, so it does not promote.
    b.service.signal("STOP").await?;
    kill(&db.primary).await?;
    let blocked = |r: &topology::Report| r.failover_blocked.clone().unwrap_or_default();
    wait_report(&a, "router a refuses the promotion", RESTART_LIMIT, |r| {
        blocked(r).contains("did not answer")
    })
    .await?;
    println!("refused: {}", blocked(&a.report()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        a.snapshot().epoch,
        0,
        "promoted without asking the frozen peer"
    );

    // Naming a router that is not a peer forces nothing; naming b forces the promotion.
    let (status, said) =
        operator_command(&a_guard, &["promote", "--without", "10.0.0.1:1"]).await?;
    assert!(!status, "an unknown peer was accepted: {said}");
    assert!(said.contains("not one of this router's peers"), "{said}");
    let (status, said) = operator_command(&a_guard, &["promote", "--without", &b_admin]).await?;
    assert!(status, "{said}");
    wait(
        &a,
        "the replica promoted without b",
        FAILOVER_LIMIT,
        writer_at(&replica, 1),
    )
    .await?;
    let mut on_new = monitor_conn(db.replica_addr).await?;
    let promoted_by: String =
        sqlx::query_scalar("SELECT promoted_by FROM foobar_router.promotion WHERE epoch = 1")
            .fetch_one(&mut on_new)
            .await?;
    assert!(
        promoted_by.contains("forced") && promoted_by.contains(&b_admin),
        "the record does not say the promotion was forced without b: {promoted_by:?}"
    );
    println!("forced without {b_admin}: {promoted_by}");

    // Router b thaws: it finds the new primary and writes there, nothing lost.
    b.service.signal("CONT").await?;
    write_until_accepted(&b, 11, "after its thaw").await?;
    let mut on_new = app_conn(db.replica_addr).await?;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM counter")
        .fetch_one(&mut on_new)
        .await?;
    assert_eq!(
        rows, 11,
        "the 10 writes before the fault and b's write after its thaw"
    );
    Ok(())
}

#[tokio::test]
async fn cut_off_primary_with_a_commit_no_router_saw_is_replaced_then_rebuilt_by_itself_its_data_set_aside()
-> anyhow::Result<()> {
    let (_one, db, primary, replica) = start_pair().await?;
    let (router, _ctx) = router(&db).await?;
    wait_healthy_pair(&router, &db).await?;
    let mut on_primary = app_conn(db.primary_addr).await?;
    on_primary
        .execute("CREATE TABLE counter (id INT PRIMARY KEY)")
        .await?;
    on_primary
        .execute("INSERT INTO counter VALUES (1), (2), (3)")
        .await?;
    wait_rows(db.replica_addr, 3).await?;
    drop(on_primary);

    // The primary cut off from the replica and from this process (the router), as a frozen
    // one is: then a commit on it that no router saw, as one under way when it froze (here
    // through its socket, which the partition leaves alone). Its client is never told it
    // committed by a router: the routers promise not to acknowledge, once the promotion
    // starts, and this one never saw it.
    let gateway = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}",
        db.primary.id(),
    ])
    .await?;
    let gateway = gateway.trim().to_owned();
    let replica_ip = db.replica_addr.ip().to_string();
    partition(&db.primary, &replica_ip, true).await?;
    partition(&db.primary, &gateway, true).await?;
    let unseen = docker(&[
        "exec",
        db.primary.id(),
        "mariadb",
        "--protocol=SOCKET",
        "--user=mysql",
        "-e",
        "INSERT INTO foobar.counter VALUES (999)",
    ])
    .await;
    unseen?;
    wait(
        &router,
        "the replica promoted while the primary is cut off",
        FAILOVER_LIMIT,
        writer_at(&replica, 1),
    )
    .await?;

    // Back on the network, writable and with a commit the new primary lacks: fenced, then
    // shut down to be rebuilt. Started again (as the stack's restart policy does), it comes
    // back a replica of the new primary, without the commit, its old data set aside.
    partition(&db.primary, &replica_ip, false).await?;
    partition(&db.primary, &gateway, false).await?;
    let deadline = Instant::now() + RESTART_LIMIT;
    loop {
        let running = docker(&["inspect", "-f", "{{.State.Running}}", db.primary.id()]).await?;
        if running.trim() == "false" {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the errant old primary was not shut down for its rebuild; report {}",
            serde_json::to_string_pretty(&router.report())?
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    restart(&db, &db.primary).await?;
    wait(
        &router,
        "the rebuilt node back as the reader",
        RESTART_LIMIT,
        roles(Some(&replica), Some(&primary)),
    )
    .await?;
    let mut on_new = app_conn(db.replica_addr).await?;
    on_new.execute("INSERT INTO counter VALUES (4)").await?;
    wait_rows(db.primary_addr, 4).await?;
    let mut on_rebuilt = app_conn(db.primary_addr).await?;
    let ids: Vec<i32> = sqlx::query_scalar("SELECT id FROM counter ORDER BY id")
        .fetch_all(&mut on_rebuilt)
        .await?;
    assert_eq!(ids, [1, 2, 3, 4], "the rebuilt node's rows");
    let aside = docker(&["exec", db.primary.id(), "ls", "/var/lib/mysql/.foobar"]).await?;
    assert!(
        aside.lines().any(|l| l.starts_with("set-aside-")),
        "the old data was not kept: {aside}"
    );
    let report = router.report();
    assert!(
        report.nodes.iter().all(|n| n.errant.is_none()),
        "{report:?}"
    );
    Ok(())
}

/// Drops (`cut`) or lets through again every packet between `node` and `peer_ip`, with
/// iptables in the node's network namespace: a partition of that one link.
async fn partition(
    node: &ContainerAsync<GenericImage>,
    peer_ip: &str,
    cut: bool,
) -> anyhow::Result<()> {
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", node.id()]).await?;
    let pid = pid.trim();
    let op = if cut { "-A" } else { "-D" };
    for rule in [["INPUT", "-s"], ["OUTPUT", "-d"]] {
        let out = tokio::process::Command::new("nsenter")
            .args([
                "-t", pid, "-n", "iptables", op, rule[0], rule[1], peer_ip, "-j", "DROP",
            ])
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "iptables {op} {}: {}",
            rule[0],
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Waits until the `counter` table on the node at `addr` holds at least `rows` rows.
async fn wait_rows(addr: SocketAddr, rows: i64) -> anyhow::Result<()> {
    let deadline = Instant::now() + RESTART_LIMIT;
    loop {
        let count = match app_conn(addr).await {
            Ok(mut conn) => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM counter")
                .fetch_one(&mut conn)
                .await
                .ok(),
            Err(_) => None,
        };
        if count.is_some_and(|c| c >= rows) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{addr} has {count:?} rows of counter, not {rows}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Serves a router's whole admin listener on `listener` until the router's shutdown.
fn serve_admin(router: &Guard, listener: tokio::net::TcpListener) {
    let app = foobar_service::admin::router(&router.0);
    let shutdown = router.0.shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    });
}

/// Waits until `topology` writes to the pair's primary and reads from its replica.
async fn wait_healthy_pair(topology: &Topology, db: &ReplicatedDatabase) -> anyhow::Result<()> {
    let (primary, replica) = nodes(db);
    wait(
        topology,
        "writer primary, reader replica",
        Duration::from_secs(10),
        roles(Some(&primary), Some(&replica)),
    )
    .await
    .map(drop)
}

/// The nodes as the routers in these tests name them.
fn nodes(db: &ReplicatedDatabase) -> (Node, Node) {
    (
        Node {
            name: db.primary_addr.to_string(),
        },
        Node {
            name: db.replica_addr.to_string(),
        },
    )
}

/// Two routers that know each other, as router-a and router-b in the stack: this process's
/// topology half (a, its admin routes served), and the binary (b), which clients write
/// through. Each takes state-changing admin requests only with the admin token, which both
/// send to each other, as the stack's routers do; the folder holding it is returned, to be
/// kept until the end of the test.
async fn peer_routers(
    db: &ReplicatedDatabase,
) -> anyhow::Result<(Topology, Guard, support::Router, tempfile::TempDir)> {
    let (primary, replica) = nodes(db);
    let secrets = tempfile::tempdir()?;
    let token = secrets.path().join("admin_token");
    std::fs::write(&token, "peer-routers-test-token\n")?;
    let a_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let a_admin = a_listener.local_addr()?;
    let config = support::config(&primary.name, &replica.name, "")
        + &format!(
            "peers = [\"{a_admin}\"]\npeer_token_file = \"{}\"\n",
            token.display()
        );
    let config = config.replacen(
        "[service]\n",
        &format!("[service]\nadmin_token_file = \"{}\"\n", token.display()),
        1,
    );
    let b = support::Router::start(&config).await?;
    let b_admin = b.admin.to_string();
    let (a, a_guard) = router_with(db, |m| {
        m.peers = vec![b_admin];
        m.peer_token_file = token.clone();
    })
    .await?;
    serve_admin(&a_guard, a_listener);
    Ok((a, a_guard, b, secrets))
}

/// A router's topology half with the stack's default monitor settings. Keep the Context:
/// dropping it does not stop the monitor, but cancelling it does.
async fn router(db: &ReplicatedDatabase) -> anyhow::Result<(Topology, Guard)> {
    router_with(db, |_| {}).await
}

/// [`router`] with its `[monitor]` settings changed by `tweak`.
async fn router_with(
    db: &ReplicatedDatabase,
    tweak: impl FnOnce(&mut MonitorConfig),
) -> anyhow::Result<(Topology, Guard)> {
    let (primary, replica) = nodes(db);
    let backends = BackendsConfig {
        primary: primary.name,
        replica: replica.name,
        user: APP_USER.into(),
        password: APP_PASSWORD.into(),
        ..BackendsConfig::default()
    };
    let mut monitor = MonitorConfig {
        password: MONITOR_PASSWORD.into(),
        replication_password: REPLICATION_PASSWORD.into(),
        ..MonitorConfig::default()
    };
    tweak(&mut monitor);
    // The monitor's log, to read beside a failure (`cargo test -- --nocapture`).
    let _ = tracing_subscriber::fmt()
        .with_env_filter("foobar_db_router=info")
        .with_test_writer()
        .try_init();
    let ctx = Context::new("foobar_db_router");
    let topology = topology::start(&backends, &monitor, &ctx).await?;
    ctx.add_admin_routes(topology::admin_routes(&topology));
    Ok((topology, Guard(ctx)))
}

/// Stops a router's monitor at the end of a test; its admin listener's routes.
struct Guard(Context);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.shutdown.cancel();
    }
}

/// Writes go to `writer` and reads to `reader` (`None`: nowhere).
fn roles<'a>(
    writer: Option<&'a Node>,
    reader: Option<&'a Node>,
) -> impl Fn(&Snapshot) -> bool + 'a {
    move |s| s.writer.as_ref() == writer && s.reader.as_ref() == reader
}

/// Reads go to `reader` (`None`: nowhere), whoever writes.
fn reads_on(reader: Option<&Node>) -> impl Fn(&Snapshot) -> bool + '_ {
    move |s| s.reader.as_ref() == reader
}

/// `node` is the writer, at `epoch`.
fn writer_at(node: &Node, epoch: u64) -> impl Fn(&Snapshot) -> bool + '_ {
    move |s| s.writer.as_ref() == Some(node) && s.epoch == epoch
}

/// The monitor reports `node` fenced.
fn fenced(node: &Node) -> impl Fn(&topology::Report) -> bool + '_ {
    move |r| {
        r.nodes
            .iter()
            .any(|n| n.name == node.name && n.role == "fenced")
    }
}

/// Locks out the other tests (one at a time) and starts a replicated pair: the lock, the
/// pair, and its primary and replica as the routers name them.
async fn start_pair() -> anyhow::Result<(
    tokio::sync::MutexGuard<'static, ()>,
    ReplicatedDatabase,
    Node,
    Node,
)> {
    let one = ONE_AT_A_TIME.lock().await;
    let db = ReplicatedDatabase::start_internal().await?;
    let (primary, replica) = nodes(&db);
    Ok((one, db, primary, replica))
}

/// The table the write tests count their rows in, made on the pair's primary.
async fn create_counter(db: &ReplicatedDatabase) -> anyhow::Result<()> {
    app_conn(db.primary_addr)
        .await?
        .execute("CREATE TABLE counter (id INT PRIMARY KEY)")
        .await?;
    Ok(())
}

/// Inserts each of `ids` into `counter`, one statement each, as a client writes.
async fn insert_counter(
    conn: &mut MySqlConnection,
    ids: std::ops::RangeInclusive<i32>,
) -> anyhow::Result<()> {
    for id in ids {
        sqlx::query("INSERT INTO counter VALUES (?)")
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Writes `id` into `counter` through router `b` on a new connection, again every 200 ms
/// until it is taken (each refusal printed, `when` saying why one is expected), for
/// [`FAILOVER_LIMIT`].
async fn write_until_accepted(b: &support::Router, id: i32, when: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + FAILOVER_LIMIT;
    loop {
        let attempt = async {
            let mut client = MySqlConnection::connect_with(&b.options()).await?;
            sqlx::query("INSERT INTO counter VALUES (?)")
                .bind(id)
                .execute(&mut client)
                .await
        };
        match attempt.await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                println!("write through b {when}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until the snapshot satisfies `ok`; how long it took (printed after `what`).
async fn wait(
    topology: &Topology,
    what: &str,
    limit: Duration,
    ok: impl Fn(&Snapshot) -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut changes = topology.changes();
    loop {
        if ok(&changes.borrow_and_update()) {
            println!("{what}: after {:?}", started.elapsed());
            return Ok(started.elapsed());
        }
        let left = limit.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, changes.changed()).await.is_err() {
            anyhow::bail!(
                "{what}: not within {limit:?}; snapshot {:?}; report {}",
                topology.snapshot(),
                serde_json::to_string_pretty(&topology.report())?
            );
        }
    }
}

/// Waits until the monitor's report satisfies `ok` (polled: the report has no channel); how
/// long it took (printed after `what`).
async fn wait_report(
    topology: &Topology,
    what: &str,
    limit: Duration,
    ok: impl Fn(&topology::Report) -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if ok(&topology.report()) {
            println!("{what}: after {:?}", started.elapsed());
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            anyhow::bail!(
                "{what}: not within {limit:?}; report {}",
                serde_json::to_string_pretty(&topology.report())?
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGKILL, as a crash: no clean shutdown, no goodbye to the replica.
async fn kill(node: &ContainerAsync<GenericImage>) -> anyhow::Result<()> {
    docker(&["kill", "--signal", "SIGKILL", node.id()])
        .await
        .map(drop)
}

/// Starts a killed node of `db` again. The routers here name it by its address on the
/// network, which it must get back (Docker gives the lowest free one: the same).
async fn restart(
    db: &ReplicatedDatabase,
    node: &ContainerAsync<GenericImage>,
) -> anyhow::Result<()> {
    let addr = if node.id() == db.primary.id() {
        db.primary_addr
    } else {
        db.replica_addr
    };
    node.start().await?;
    let now = db.address(node).await?;
    anyhow::ensure!(now == addr, "restarted at {now}, not at {addr}");
    Ok(())
}

/// The monitor's account, as an operator would use it by hand.
async fn monitor_conn(addr: SocketAddr) -> anyhow::Result<MySqlConnection> {
    let options = MySqlConnectOptions::new()
        .host(&addr.ip().to_string())
        .port(addr.port())
        .username(MONITOR_USER)
        .password(MONITOR_PASSWORD);
    Ok(MySqlConnection::connect_with(&options).await?)
}

async fn app_conn(addr: SocketAddr) -> anyhow::Result<MySqlConnection> {
    let options = MySqlConnectOptions::new()
        .host(&addr.ip().to_string())
        .port(addr.port())
        .username(APP_USER)
        .password(APP_PASSWORD)
        .database(APP_DATABASE);
    Ok(MySqlConnection::connect_with(&options).await?)
}

/// A GET to a router's whole admin listener (health, metrics, the topology's routes), as
/// the service serves it.
async fn admin_get(router: &Guard, path: &str) -> anyhow::Result<(u16, String)> {
    let request = axum::http::Request::get(path).body(axum::body::Body::empty())?;
    send(foobar_service::admin::router(&router.0), request).await
}

async fn send(
    router: axum::Router,
    request: axum::http::Request<axum::body::Body>,
) -> anyhow::Result<(u16, String)> {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let response = router.oneshot(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `foobar-db-router COMMAND ARGS --config FILE` (the binary, as an operator runs it)
/// against this router's admin listener, served on a port of 127.0.0.1: success, and what
/// it said.
async fn operator_command(router: &Guard, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    serve_admin(router, listener);
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("db-router.toml");
    std::fs::write(&config, format!("[service]\nadmin_listen = \"{addr}\"\n"))?;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_foobar-db-router"))
        .args(args)
        .arg("--config")
        .arg(&config)
        .output()
        .await?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), said))
}

/// The value of one sample in Prometheus text (`name{labels} value`).
fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}
