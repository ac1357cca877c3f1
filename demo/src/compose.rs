//! The stack's containers, through the `docker compose` command a person would type.
//!
//! A kill is `docker compose kill` (SIGKILL: a crash, no clean shutdown), a restore is
//! `docker compose start`; `pause`/`unpause` freeze a container; [`Compose::iptables`] runs
//! iptables in a container's network namespace from the host (the faults: [`crate::faults`]);
//! health is what `docker compose ps --all --format json` says
//! (Compose 2.21 and newer print one JSON object per line; older ones one array: both are
//! read). The stack's long-running services are those of `docker compose config --services`,
//! which leaves out services behind a profile (the `client` tool container), less those whose
//! containers ran to completion before the demo (one-shot jobs, exit code 0).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::process::Command;

/// Longest any one compose command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// `docker compose` run in a project folder, optionally on a given file and with a given
/// environment file (which may name the project: `COMPOSE_PROJECT_NAME`).
#[derive(Debug, Clone)]
pub struct Compose {
    dir: PathBuf,
    file: Option<PathBuf>,
    env_file: Option<PathBuf>,
}

/// One container's state, as `docker compose ps` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServiceState {
    #[serde(rename = "Service")]
    pub service: String,
    /// `running`, `exited`, `restarting` ...
    #[serde(rename = "State")]
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or empty without a healthcheck.
    #[serde(rename = "Health", default)]
    pub health: String,
    #[serde(rename = "ExitCode", default)]
    pub exit_code: i64,
}

impl ServiceState {
    pub fn healthy(&self) -> bool {
        self.state == "running" && (self.health == "healthy" || self.health.is_empty())
    }

    /// A container that ran to completion (a one-shot job), not one that crashed or was
    /// killed (those exit 137 and the like).
    pub fn completed(&self) -> bool {
        self.state == "exited" && self.exit_code == 0
    }
}

impl Compose {
    pub fn new(dir: PathBuf, file: Option<PathBuf>, env_file: Option<PathBuf>) -> Self {
        Self {
            dir,
            file,
            env_file,
        }
    }

    /// SIGKILL to the service's container.
    pub async fn kill(&self, service: &str) -> anyhow::Result<()> {
        self.run(&["kill", "--signal", "SIGKILL", service])
            .await
            .map(drop)
    }

    pub async fn start(&self, service: &str) -> anyhow::Result<()> {
        self.run(&["start", service]).await.map(drop)
    }

    /// Freezes the service's container (the cgroup freezer, as `docker pause`).
    pub async fn pause(&self, service: &str) -> anyhow::Result<()> {
        self.run(&["pause", service]).await.map(drop)
    }

    pub async fn unpause(&self, service: &str) -> anyhow::Result<()> {
        self.run(&["unpause", service]).await.map(drop)
    }

    /// A command in the service's running container; its standard output.
    pub async fn exec(&self, service: &str, command: &[&str]) -> anyhow::Result<String> {
        let mut args = vec!["exec", "-T", service];
        args.extend_from_slice(command);
        self.run(&args).await
    }

    /// The id of the service's one container.
    pub async fn container(&self, service: &str) -> anyhow::Result<String> {
        let out = self.run(&["ps", "--quiet", service]).await?;
        let ids: Vec<&str> = out.split_whitespace().collect();
        match ids.as_slice() {
            [id] if id.bytes().all(|b| b.is_ascii_hexdigit()) => Ok((*id).to_owned()),
            [] => bail!("{service} has no running container"),
            _ => bail!("{service}: expected one container id, got {out:?}"),
        }
    }

    /// The service's container's addresses on its networks.
    pub async fn addresses(&self, service: &str) -> anyhow::Result<Vec<String>> {
        let id = self.container(service).await?;
        let out = docker(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            &id,
        ])
        .await?;
        let addresses = parse_addresses(&out).with_context(|| format!("{service}'s addresses"))?;
        if addresses.is_empty() {
            bail!("{service} has no address on any network");
        }
        Ok(addresses)
    }

    /// `iptables OP RULE...` inside the network namespace of the service's container, from the
    /// host (`nsenter`, as root): the container needs neither iptables nor privileges.
    pub async fn iptables(&self, service: &str, op: &str, rule: &[String]) -> anyhow::Result<()> {
        let id = self.container(service).await?;
        let pid = docker(&["inspect", "--format", "{{.State.Pid}}", &id]).await?;
        let pid: u32 = pid
            .trim()
            .parse()
            .ok()
            .filter(|pid| *pid > 0)
            .with_context(|| format!("{service}: no process id in {pid:?}"))?;
        let pid = pid.to_string();
        let mut args = vec!["-t", pid.as_str(), "-n", "iptables", "-w", op];
        args.extend(rule.iter().map(String::as_str));
        run_command("nsenter", &args).await.map(drop)
    }

    /// The services `up` starts (profiles left out).
    pub async fn services(&self) -> anyhow::Result<Vec<String>> {
        let out = self.run(&["config", "--services"]).await?;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    pub async fn states(&self) -> anyhow::Result<Vec<ServiceState>> {
        parse_ps(&self.run(&["ps", "--all", "--format", "json"]).await?)
    }

    /// Which of `expected` are not running and healthy (missing ones included), sorted.
    pub async fn not_healthy(&self, expected: &[String]) -> anyhow::Result<Vec<String>> {
        Ok(not_healthy(expected, &self.states().await?))
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new("docker");
        command.arg("compose");
        if let Some(env_file) = &self.env_file {
            command.arg("--env-file").arg(env_file);
        }
        if let Some(file) = &self.file {
            command.arg("--file").arg(file);
        }
        command.args(args).current_dir(&self.dir);
        output(command, format!("docker compose {}", args.join(" "))).await
    }
}

/// A plain `docker` command (one container, by id).
async fn docker(args: &[&str]) -> anyhow::Result<String> {
    run_command("docker", args).await
}

async fn run_command(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut command = Command::new(program);
    command.args(args);
    output(command, format!("{program} {}", args.join(" "))).await
}

/// Runs `command` within [`COMMAND_TIMEOUT`]; its standard output, or an error with its
/// standard error.
async fn output(mut command: Command, shown: String) -> anyhow::Result<String> {
    command.stdin(Stdio::null()).kill_on_drop(true);
    let output = tokio::time::timeout(COMMAND_TIMEOUT, command.output())
        .await
        .with_context(|| format!("{shown}: still running after {COMMAND_TIMEOUT:?}"))?
        .with_context(|| format!("{shown}: could not run it"))?;
    if !output.status.success() {
        bail!(
            "{shown}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `docker inspect`'s addresses, blank-separated; an empty one (a network without IPv4) is
/// skipped, anything that is not an IP address refused.
pub fn parse_addresses(text: &str) -> anyhow::Result<Vec<String>> {
    text.split_whitespace()
        .map(|word| {
            word.parse::<std::net::IpAddr>()
                .map(|ip| ip.to_string())
                .with_context(|| format!("{word:?} is not an IP address"))
        })
        .collect()
}

/// `docker compose ps --format json`: one object per line, or one array.
pub fn parse_ps(text: &str) -> anyhow::Result<Vec<ServiceState>> {
    let text = text.trim();
    if text.starts_with('[') {
        return serde_json::from_str(text).context("docker compose ps output");
    }
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).with_context(|| format!("docker compose ps: {line}"))
        })
        .collect()
}

/// The long-running services among `services`: all but those whose containers all ran to
/// completion (one-shot jobs), judged from the states before anything is killed.
pub fn long_running(services: &[String], states: &[ServiceState]) -> Vec<String> {
    services
        .iter()
        .filter(|service| {
            let containers: Vec<_> = states.iter().filter(|s| &s.service == *service).collect();
            containers.is_empty() || !containers.iter().all(|s| s.completed())
        })
        .cloned()
        .collect()
}

/// The services of `expected` without a running, healthy container.
pub fn not_healthy(expected: &[String], states: &[ServiceState]) -> Vec<String> {
    let mut bad: Vec<String> = expected
        .iter()
        .filter(|service| {
            let containers: Vec<_> = states.iter().filter(|s| &s.service == *service).collect();
            containers.is_empty() || !containers.iter().all(|s| s.healthy())
        })
        .cloned()
        .collect();
    bad.sort();
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two lines of `docker compose ps --all --format json` from Compose 2.26.1, trimmed of
    /// fields the demo does not read: a healthy container and a killed one without a
    /// healthcheck.
    const PS_2_26: &str = r#"{"Command":"\"sleep 120\"","ExitCode":0,"Health":"healthy","ID":"7e57ea5cefb2","Name":"foobar-demo-probe-ok-1","Project":"foobar-demo-probe","Publishers":null,"Service":"ok","State":"running","Status":"Up 1 second (healthy)"}
{"Command":"\"sleep 120\"","ExitCode":137,"Health":"","ID":"1644754ca569","Name":"foobar-demo-probe-plain-1","Project":"foobar-demo-probe","Publishers":null,"Service":"plain","State":"exited","Status":"Exited (137) Less than a second ago"}
"#;

    #[test]
    fn addresses_are_ip_addresses_or_refused() {
        assert_eq!(
            parse_addresses("172.20.0.5 10.153.53.11 \n").unwrap(),
            ["172.20.0.5", "10.153.53.11"]
        );
        assert!(parse_addresses("  ").unwrap().is_empty());
        for bad in [
            "172.20.0.5; rm -rf /",
            "-j ACCEPT",
            "172.20.0",
            "<no value>",
        ] {
            assert!(parse_addresses(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_one_object_per_line_and_an_array() {
        let states = parse_ps(PS_2_26).unwrap();
        assert_eq!(states.len(), 2);
        assert!(states[0].healthy());
        assert!(!states[1].healthy());
        let array = r#"[{"Service":"dns","State":"running","Health":"starting"}]"#;
        let states = parse_ps(array).unwrap();
        assert_eq!(states[0].health, "starting");
        assert!(!states[0].healthy());
        assert!(parse_ps("").unwrap().is_empty());
    }

    #[test]
    fn missing_exited_and_starting_services_are_not_healthy() {
        let state = |service: &str, state: &str, health: &str| ServiceState {
            service: service.into(),
            state: state.into(),
            health: health.into(),
            exit_code: 0,
        };
        let states = [
            state("web-a", "running", "healthy"),
            state("lb-1", "exited", ""),
            state("dns", "running", "starting"),
            state("prometheus", "running", ""),
        ];
        let expected: Vec<String> = ["web-a", "lb-1", "dns", "prometheus", "db-primary"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            not_healthy(&expected, &states),
            ["db-primary", "dns", "lb-1"]
        );
    }

    #[test]
    fn a_job_that_ran_to_completion_is_not_long_running_a_killed_service_is() {
        let mut states = parse_ps(PS_2_26).unwrap();
        let services: Vec<String> = ["ok", "plain", "gone"].map(String::from).to_vec();
        // `plain` was killed (137): still one of the stack's services, and not healthy.
        assert_eq!(long_running(&services, &states), services);
        states[1].exit_code = 0;
        assert_eq!(long_running(&services, &states), ["ok", "gone"]);
    }
}
