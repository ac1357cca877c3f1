//! The whole demo, [`Scenario::run`], against real kills: two foobar-balancer containers (the
//! workspace's release binary in a Debian image, on the host's network so they listen on
//! 127.0.0.3 and 127.0.0.4) in a compose project of the test's own, behind foobar-dns with
//! health-checked answers, in front of the test's guestbook server. Each balancer is killed
//! under load, restored, and waited for; the report must show what the visitor saw.
//!
//! Needs Docker with the `debian:bookworm-slim` image (`make images` provides it) and the
//! release binaries of foobar-dns and foobar-balancer.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LB_A, LB_B, Stack, free_port, sibling_binary};
use foobar_demo::account::Targets;
use foobar_demo::faults::Fault;
use foobar_demo::load::LoadConfig;
use foobar_demo::timeline::EventKind;
use foobar_demo::{Config, Scenario};

/// A compose project, taken down when the test ends, pass or fail.
struct Project {
    dir: PathBuf,
    file: PathBuf,
}

impl Project {
    fn compose(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .arg("compose")
            .arg("--file")
            .arg(&self.file)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "--timeout", "0"]);
    }
}

fn balancer_service(name: &str, config: &std::path::Path, dir: &std::path::Path) -> String {
    let binary = sibling_binary("foobar-balancer");
    format!(
        "  {name}:\n    image: debian:bookworm-slim\n    network_mode: host\n    init: true\n\
         \x20   volumes: [\"{}:/usr/local/bin/foobar-balancer:ro\", \"{dir}:{dir}\"]\n\
         \x20   command: [foobar-balancer, --config, \"{config}\"]\n\
         \x20   healthcheck:\n      test: [CMD, foobar-balancer, --config, \"{config}\", --probe]\n\
         \x20     interval: 1s\n      timeout: 1s\n      retries: 2\n",
        binary.display(),
        dir = dir.display(),
        config = config.display(),
    )
}

#[tokio::test]
async fn each_balancer_killed_under_load_is_reported_as_the_visitor_saw_it() {
    let admin_port = loop {
        let port = free_port(LB_A);
        if std::net::TcpListener::bind((LB_B, port)).is_ok() {
            break port;
        }
    };
    // The DNS server answers only the balancers whose admin listener says ready.
    let health = format!(
        "\n[[health_check]]\nname = \"www.foobar.com\"\nport = {admin_port}\npath = \"/readyz\"\n\
         interval = \"250ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 2\nttl = \"1s\"\n"
    );
    let stack = Stack::start("scenario", &[LB_A, LB_B], &health).await;
    let (config_a, config_b) = (
        stack.balancer_config(LB_A, admin_port),
        stack.balancer_config(LB_B, admin_port),
    );
    let file = stack.dir.join("compose.yml");
    std::fs::write(
        &file,
        format!(
            "name: foobar-demo-test-{}\nservices:\n{}{}",
            std::process::id(),
            balancer_service("lb-a", &config_a, &stack.dir),
            balancer_service("lb-b", &config_b, &stack.dir),
        ),
    )
    .unwrap();
    let project = Project {
        dir: stack.dir.clone(),
        file: file.clone(),
    };
    let up = project.compose(&["up", "--detach", "--wait", "--wait-timeout", "60"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );

    let config = Config {
        visitor: stack.visitor_config(50),
        load: LoadConfig {
            readers: 2,
            writers: 1,
            read_rate: 40.0,
            write_rate: 10.0,
            ..LoadConfig::default()
        },
        compose_dir: stack.dir.clone(),
        compose_file: Some(file),
        compose_env_file: None,
        components: vec!["lb-a".into(), "lb-b".into()],
        faults: vec![Fault::Kill],
        warmup: Duration::from_secs(2),
        hold: Duration::from_secs(3),
        settle: Duration::from_secs(2),
        healthy_timeout: Duration::from_secs(30),
        targets: Targets {
            may_fail_writes: Vec::new(),
            ..Targets::default()
        },
    };
    let lines = Arc::new(Mutex::new(Vec::new()));
    let collected = Arc::clone(&lines);
    let report = Scenario::run(&config, move |line| {
        eprintln!("{line}");
        collected.lock().unwrap().push(line.to_owned());
    })
    .await
    .unwrap();
    eprintln!("{}", report.text());

    let names: Vec<&str> = report
        .components
        .iter()
        .map(|c| c.component.as_str())
        .collect();
    assert_eq!(names, ["lb-a", "lb-b"]);
    assert!(report.skipped.is_empty());
    for component in &report.components {
        // A GET whose balancer died goes once more; none fails.
        assert_eq!(component.failed_reads, 0, "{component:?}");
        assert!(component.reads > 0 && component.writes > 0, "{component:?}");
        let to_healthy = component.to_healthy.expect("healthy again");
        assert!(to_healthy < Duration::from_secs(30), "{component:?}");
    }
    let kinds: Vec<(EventKind, &str)> = report
        .events
        .iter()
        .map(|e| (e.kind, e.component.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Fault, "lb-a"),
            (EventKind::Restored, "lb-a"),
            (EventKind::Healthy, "lb-a"),
            (EventKind::Fault, "lb-b"),
            (EventKind::Restored, "lb-b"),
            (EventKind::Healthy, "lb-b"),
        ]
    );
    assert!(report.events[1].at - report.events[0].at >= config.hold);
    assert!(report.events.windows(2).all(|w| w[0].at <= w[1].at));

    // Every acknowledged write is there; failed ones are the unknown outcomes.
    let failed_writes: u64 = report.components.iter().map(|c| c.failed_writes).sum();
    let verification = &report.verification;
    assert!(verification.lost.is_empty() && verification.duplicated.is_empty());
    assert_eq!(verification.unknown as u64, failed_writes);
    assert!(verification.acknowledged > 0);
    assert_eq!(
        report.requests,
        report
            .seconds
            .iter()
            .map(|s| s.requests as usize)
            .sum::<usize>()
    );
    assert!(report.seconds.iter().any(|s| s.web.contains_key("web-x")));

    let lines = lines.lock().unwrap();
    assert!(lines.iter().any(|l| l.contains("] kill lb-a: SIGKILL")));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("] kill lb-b ") && l.contains("rps"))
    );
    // Without a database router there is no redundancy to ask about.
    assert!(
        report
            .components
            .iter()
            .all(|c| c.to_redundant == foobar_demo::account::Redundancy::NotChecked)
    );
    let svg = report.svg();
    assert!(svg.contains(">kill lb-b ("));
    // The picture of the last run, for a person to look at.
    let picture = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("demo-scenario-timeline.svg");
    std::fs::write(&picture, svg).unwrap();
    eprintln!("timeline picture: {}", picture.display());
    assert!(report.text().contains("lb-a"));
}
