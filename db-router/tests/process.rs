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

/// `--check-config` with `config_toml` and `env`: its exit code and stderr.
fn check_config(config_toml: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db-router.toml");
    std::fs::write(&path, config_toml).unwrap();
    let out = std::process::Command::new(BINARY)
        .arg("--check-config")
        .arg("--config")
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_config_refuses_half_a_tls_setting_and_takes_both_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

    let only_cert = CONFIG.replace("[router]\n", &format!("[router]\ntls_cert = \"{cert}\"\n"));
    let (code, output) = check_config(&only_cert, &[]);
    assert_eq!(code, Some(2), "{output}");
    assert!(
        output.contains("db-router.toml: router.tls_cert and router.tls_key go together"),
        "{output}"
    );

    let (code, output) = check_config(
        &only_cert,
        &[
            ("FOOBAR_DB_ROUTER_ROUTER__TLS_KEY", key),
            ("FOOBAR_DB_ROUTER_ROUTER__REQUIRE_TLS", "true"),
        ],
    );
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains(&format!("tls_key = \"{key}\"")), "{output}");
    assert!(output.contains("require_tls = true"), "{output}");

    let (code, output) = check_config(CONFIG, &[("FOOBAR_DB_ROUTER_ROUTER__REQUIRE_TLS", "true")]);
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("router.require_tls needs"), "{output}");

    let (code, output) = check_config(
        CONFIG,
        &[
            ("FOOBAR_DB_ROUTER_ROUTER__TLS_CERT", key),
            ("FOOBAR_DB_ROUTER_ROUTER__TLS_KEY", key),
        ],
    );
    assert_eq!(code, Some(2), "a key is not a certificate: {output}");
}
