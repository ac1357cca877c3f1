//! The binary as a user runs it: check its config, start it, probe it, stop it.

use std::path::Path;
use std::time::Duration;

use foobar_service::testing;

const BINARY: &str = env!("CARGO_BIN_EXE_foobar-db-router");
const CONFIG: &str = r#"[service]
admin_listen = "127.0.0.1:0"
shutdown_timeout = "5s"

[router]
listen = "127.0.0.1:0"

[[users]]
name = "app"
password = "secret"

[backends]
primary = "127.0.0.1:1"
replica = "127.0.0.1:1"
"#;

#[test]
fn check_config_accepts_good_and_names_the_bad_key() {
    testing::assert_check_config(Path::new(BINARY), CONFIG).unwrap();
}

#[tokio::test]
async fn starts_answers_health_and_stops_on_sigterm() {
    let service = testing::assert_lifecycle(Path::new(BINARY), CONFIG, &["admin", "mysql"])
        .await
        .unwrap();
    let status = service.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "exit status {status}");
}
