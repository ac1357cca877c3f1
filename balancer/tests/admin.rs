//! The admin listener's door, as an operator and a stranger meet it: the balancer binary
//! started as a process, asked with curl. Reading (status pages, health, metrics) is open;
//! drain and enable need an allowed source address and the token of
//! `service.admin_token_file`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use foobar_service::testing::RunningService;

const BINARY: &str = env!("CARGO_BIN_EXE_foobar-balancer");
const TOKEN: &str = "admin-test-token-4f9c";

/// A balancer whose admin actions are allowed from 127.0.0.1 only, with its token in a file
/// of `dir`. Its one backend (port 1) never answers: drain and enable need no live backend.
async fn balancer(dir: &Path) -> RunningService {
    std::fs::write(dir.join("admin_token"), format!("{TOKEN}\n")).unwrap();
    let config = dir.join("balancer.toml");
    std::fs::write(
        &config,
        format!(
            "[service]\nadmin_listen = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n\
             admin_token_file = \"{}\"\nadmin_allow = [\"127.0.0.1/32\"]\n\n\
             [http]\nlisten = \"127.0.0.1:0\"\nredirect_to_https = false\n\n\
             [https]\nlisten = \"127.0.0.1:0\"\ngenerated_dir = \"{}\"\n\n\
             [[pool.backends]]\naddress = \"127.0.0.1:1\"\n",
            dir.join("admin_token").display(),
            dir.join("tls").display(),
        ),
    )
    .unwrap();
    RunningService::start(Path::new(BINARY), &config, &[], &["admin", "http", "https"])
        .await
        .unwrap()
}

/// curl from source address `from` (`--interface`): the status and the body.
async fn curl(from: &str, method: &str, url: &str, headers: &[String]) -> (u16, String) {
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["-sS", "--max-time", "10", "--interface", from, "-X", method])
        .args(["-w", "\n%{http_code}"]);
    for header in headers {
        command.arg("-H").arg(header);
    }
    let out = command.arg(url).output().await.expect("curl runs");
    assert!(out.status.success(), "curl: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

fn bearer(token: &str) -> Vec<String> {
    vec![format!("Authorization: Bearer {token}")]
}

/// Every log line so far.
fn logs(lb: &mut RunningService) -> String {
    let mut lines = Vec::new();
    while let Ok(line) = lb.logs.try_recv() {
        lines.push(line);
    }
    lines.join("\n")
}

#[tokio::test]
async fn admin_actions_need_the_token_and_an_allowed_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut lb = balancer(dir.path()).await;
    let admin: SocketAddr = lb.addr("admin");
    let url = |path: &str| format!("http://{admin}{path}");
    let drain = url("/backends/127.0.0.1:1/drain");
    let enable = url("/backends/127.0.0.1:1/enable");

    // A stranger (127.0.0.2: not in admin_allow) reads every page.
    for page in ["/status", "/status.json", "/healthz", "/metrics"] {
        let (status, _) = curl("127.0.0.2", "GET", &url(page), &[]).await;
        assert_eq!(status, 200, "GET {page}");
    }

    // From the allowed address: no token, a wrong one, the right one with a typo.
    let (status, body) = curl("127.0.0.1", "POST", &drain, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    for wrong in [
        "wrong",
        "admin-test-token-4f9",
        "admin-test-token-4f9cX",
        "",
    ] {
        let (status, body) = curl("127.0.0.1", "POST", &drain, &bearer(wrong)).await;
        assert_eq!(status, 401, "{wrong:?}: {body}");
    }
    let (_, json) = curl("127.0.0.1", "GET", &url("/status.json"), &[]).await;
    assert!(!json.contains("DRAIN"), "nothing refused was done: {json}");

    // The right token from an address not allowed: refused whatever it carries.
    let (status, body) = curl("127.0.0.2", "POST", &drain, &bearer(TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("127.0.0.2"), "{body}");

    // The right token from the allowed address: done.
    let (status, body) = curl("127.0.0.1", "POST", &drain, &bearer(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let (_, json) = curl("127.0.0.2", "GET", &url("/status.json"), &[]).await;
    assert!(json.contains("\"state\":\"DRAIN\""), "{json}");
    let (status, body) = curl("127.0.0.1", "POST", &enable, &bearer(TOKEN)).await;
    assert_eq!(status, 200, "{body}");

    // The token file gone: closed to everyone, and the answer says why.
    std::fs::remove_file(dir.path().join("admin_token")).unwrap();
    let (status, body) = curl("127.0.0.1", "POST", &drain, &bearer(TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin token file"), "{body}");
    let (status, _) = curl("127.0.0.2", "GET", &url("/status"), &[]).await;
    assert_eq!(status, 200);

    let logged = logs(&mut lb);
    assert!(logged.contains("admin action refused"), "{logged}");
    assert!(
        !logged.contains(TOKEN),
        "the token is never logged:\n{logged}"
    );
    lb.terminate(Duration::from_secs(10)).await.unwrap();
}

/// `--check-config` shows the admin defaults (the token's file, never a token).
#[test]
fn check_config_shows_the_admin_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("balancer.toml");
    std::fs::write(&config, "[[pool.backends]]\naddress = \"127.0.0.1:1\"\n").unwrap();
    let out = std::process::Command::new(BINARY)
        .arg("--check-config")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("admin_token_file = \"/run/secrets/admin_token\""),
        "{text}"
    );
    assert!(
        text.contains("admin_allow = [\n    \"127.0.0.0/8\",\n    \"::1/128\",\n]"),
        "{text}"
    );
}
