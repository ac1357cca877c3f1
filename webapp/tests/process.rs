//! The binary as a user runs it: check its config, start it, fetch a page, stop it.

use std::path::Path;
use std::time::Duration;

use foobar_service::testing;

const BINARY: &str = env!("CARGO_BIN_EXE_foobar-webapp");

fn config() -> String {
    let static_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/static");
    format!(
        "[service]\nadmin_listen = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n\n\
         [http]\nlisten = \"127.0.0.1:0\"\nstatic_dir = \"{static_dir}\"\ninstance = \"web-test\"\n"
    )
}

#[test]
fn check_config_accepts_good_and_names_the_bad_key() {
    testing::assert_check_config(Path::new(BINARY), &config()).unwrap();
}

#[tokio::test]
async fn serves_the_home_page_and_stops_on_sigterm() {
    let service = testing::assert_lifecycle(Path::new(BINARY), &config(), &["admin", "http"])
        .await
        .unwrap();
    let http = service.addr("http");
    let (status, body) = testing::http_get(http, "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("www.foobar.com"), "{body}");
    let (status, _) = testing::http_get(http, "/readyz").await.unwrap();
    assert_eq!(status, 200, "the balancer checks /readyz on the HTTP port");
    let status = service.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "exit status {status}");
}
