//! The stack's containers, through the `docker compose` command a person would type.
//!
//! A kill is `docker compose kill` (SIGKILL: a crash, no clean shutdown), a restore is
//! `docker compose start`; `pause`/`unpause` freeze a container; `iptables` runs iptables in a
//! container's network namespace from the host (the faults: [`crate::faults`]); it is the
//! demo's [`Runtime`] on compose (`make up`);
//! health is what `docker compose ps --all --format json` says
//! (Compose 2.21 and newer print one JSON object per line; older ones one array: both are
//! read). The stack's long-running services are those of `docker compose config --services`,
//! which leaves out services behind a profile (the `client` tool container), less those whose
//! containers ran to completion before the demo (one-shot jobs, exit code 0).

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::process::Command;

use crate::faults::Fault;
use crate::runtime::{Runtime, container_addresses, container_iptables, output, sorted_where};

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

    /// Every service of the compose file but those behind a profile.
    pub async fn defined_services(&self) -> anyhow::Result<Vec<String>> {
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

impl Runtime for Compose {
    fn start_hint(&self) -> &'static str {
        "make up"
    }

    fn faults(&self) -> &'static [Fault] {
        &Fault::ALL
    }

    /// A killed container stays down until `docker compose start`.
    fn repairs_kills(&self) -> bool {
        false
    }

    /// The services `up` starts (profiles left out) that do not run to completion.
    async fn services(&self) -> anyhow::Result<Vec<String>> {
        let services = self.defined_services().await?;
        Ok(long_running(&services, &self.states().await?))
    }

    async fn not_healthy(&self, expected: &[String]) -> anyhow::Result<Vec<String>> {
        Ok(not_healthy(expected, &self.states().await?))
    }

    async fn kill(&self, service: &str) -> anyhow::Result<()> {
        self.run(&["kill", "--signal", "SIGKILL", service])
            .await
            .map(drop)
    }

    async fn start(&self, service: &str) -> anyhow::Result<()> {
        self.run(&["start", service]).await.map(drop)
    }

    async fn pause(&self, service: &str) -> anyhow::Result<()> {
        self.run(&["pause", service]).await.map(drop)
    }

    async fn unpause(&self, service: &str) -> anyhow::Result<()> {
        self.run(&["unpause", service]).await.map(drop)
    }

    async fn exec(&self, service: &str, command: &[&str]) -> anyhow::Result<String> {
        let mut args = vec!["exec", "-T", service];
        args.extend_from_slice(command);
        self.run(&args).await
    }

    async fn addresses(&self, service: &str) -> anyhow::Result<Vec<String>> {
        container_addresses(&self.container(service).await?, service).await
    }

    async fn iptables(&self, service: &str, op: &str, rule: &[String]) -> anyhow::Result<()> {
        container_iptables(&self.container(service).await?, service, op, rule).await
    }
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
    sorted_where(expected, |service| {
        let containers: Vec<_> = states.iter().filter(|s| &s.service == service).collect();
        containers.is_empty() || !containers.iter().all(|s| s.healthy())
    })
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
