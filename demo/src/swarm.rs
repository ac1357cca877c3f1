//! The stack on Docker Swarm (`make swarm-up`, docs/swarm.md) as the demo's [`Runtime`]: the
//! services of the stack `foobar` (`web`, `router-a`, `db-primary` ...), each one or more
//! tasks, and each task a container on some node. Read through the `docker` command on a
//! manager node, which sees every node's services and this node's containers.
//!
//! A kill is SIGKILL to one running task's container (`docker kill`, the oldest when there
//! are several, as `web` has); the engine notices the exit and starts a new task by itself
//! (the stack file's `restart_policy`), so the demo restores nothing and counts the time to
//! healthy from the kill. A service is healthy when it has as many running tasks as the
//! engine wants (`docker service ls`) and each of them passed its health check (`docker ps`).
//!
//! Only kills: a frozen or cut-off task fails its health checks, and the engine replaces it
//! under the demo's feet, so its unpause or its deleted rules would find no container. The
//! container-level operations work on the task's container all the same.
//!
//! On several nodes a service's task may run on another node than the one the demo runs on;
//! `docker ps` and `docker kill` see only this node's. The demo is made for the one-node swarm
//! `make swarm-up` makes.

use anyhow::{Context, bail, ensure};

use crate::faults::Fault;
use crate::runtime::{Runtime, container_addresses, container_iptables, docker, sorted_where};

/// Every service of docker/swarm/stack.yml, in the order `make swarm-demo` kills a task of
/// each: the front first (what a visitor meets), the database roles last, as on compose.
pub const COMPONENTS: [&str; 8] = [
    "dns",
    "balancer",
    "web",
    "router-a",
    "router-b",
    "db-replica",
    "db-primary",
    "prometheus",
];

/// A deployed stack, by its name (`docker stack deploy ... NAME`).
#[derive(Debug, Clone)]
pub struct Swarm {
    stack: String,
}

/// One running container of the stack, as `docker ps` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The service's name in the stack (`web`, not `foobar_web`).
    pub service: String,
    pub id: String,
    /// `Up 3 minutes (healthy)`, `Up 2 seconds (health: starting)` ...
    pub status: String,
}

impl Task {
    pub fn healthy(&self) -> bool {
        self.status.contains("(healthy)")
    }
}

impl Swarm {
    pub fn new(stack: impl Into<String>) -> Self {
        Self {
            stack: stack.into(),
        }
    }

    /// The stack's running containers on this node, the newest first (`docker ps`'s order).
    pub async fn tasks(&self) -> anyhow::Result<Vec<Task>> {
        let filter = format!("label=com.docker.stack.namespace={}", self.stack);
        let out = docker(&[
            "ps",
            "--filter",
            &filter,
            "--format",
            "{{.Label \"com.docker.swarm.service.name\"}} {{.ID}} {{.Status}}",
        ])
        .await?;
        parse_tasks(&out, &self.stack)
    }

    /// Each service of the stack with the number of tasks the engine wants running.
    pub async fn desired(&self) -> anyhow::Result<Vec<(String, u32)>> {
        let filter = format!("label=com.docker.stack.namespace={}", self.stack);
        let out = docker(&[
            "service",
            "ls",
            "--filter",
            &filter,
            "--format",
            "{{.Name}} {{.Replicas}}",
        ])
        .await?;
        parse_replicas(&out, &self.stack)
    }

    /// The container of one running task of `service`: the oldest.
    async fn container(&self, service: &str) -> anyhow::Result<String> {
        let tasks = self.tasks().await?;
        tasks
            .iter()
            .rev()
            .find(|task| task.service == service)
            .map(|task| task.id.clone())
            .with_context(|| format!("{service} has no running task on this node"))
    }
}

impl Runtime for Swarm {
    fn start_hint(&self) -> &'static str {
        "make swarm-up"
    }

    fn faults(&self) -> &'static [Fault] {
        &[Fault::Kill]
    }

    fn repairs_kills(&self) -> bool {
        true
    }

    async fn services(&self) -> anyhow::Result<Vec<String>> {
        let services: Vec<String> = self.desired().await?.into_iter().map(|(s, _)| s).collect();
        ensure!(
            !services.is_empty(),
            "no stack {} on this engine's swarm (make swarm-up deploys it)",
            self.stack
        );
        Ok(services)
    }

    async fn not_healthy(&self, expected: &[String]) -> anyhow::Result<Vec<String>> {
        Ok(not_at_strength(
            expected,
            &self.desired().await?,
            &self.tasks().await?,
        ))
    }

    async fn kill(&self, service: &str) -> anyhow::Result<()> {
        let id = self.container(service).await?;
        docker(&["kill", "--signal", "SIGKILL", &id])
            .await
            .map(drop)
    }

    /// Nothing: the engine starts a new task by itself.
    async fn start(&self, _service: &str) -> anyhow::Result<()> {
        Ok(())
    }

    async fn pause(&self, service: &str) -> anyhow::Result<()> {
        docker(&["pause", &self.container(service).await?])
            .await
            .map(drop)
    }

    async fn unpause(&self, service: &str) -> anyhow::Result<()> {
        docker(&["unpause", &self.container(service).await?])
            .await
            .map(drop)
    }

    async fn exec(&self, service: &str, command: &[&str]) -> anyhow::Result<String> {
        let id = self.container(service).await?;
        let mut args = vec!["exec", id.as_str()];
        args.extend_from_slice(command);
        docker(&args).await
    }

    async fn addresses(&self, service: &str) -> anyhow::Result<Vec<String>> {
        container_addresses(&self.container(service).await?, service).await
    }

    async fn iptables(&self, service: &str, op: &str, rule: &[String]) -> anyhow::Result<()> {
        container_iptables(&self.container(service).await?, service, op, rule).await
    }
}

/// `docker service ls --format '{{.Name}} {{.Replicas}}'`: each of the stack's services
/// (its prefix taken off) with the tasks wanted, the number after the slash of `1/2` or
/// `1/1 (max 1 per node)`.
pub fn parse_replicas(text: &str, stack: &str) -> anyhow::Result<Vec<(String, u32)>> {
    let prefix = format!("{stack}_");
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut words = line.split_whitespace();
            let (Some(name), Some(replicas)) = (words.next(), words.next()) else {
                bail!("docker service ls: {line:?} is not NAME RUNNING/WANTED");
            };
            let service = name
                .strip_prefix(&prefix)
                .with_context(|| format!("docker service ls: {name} is not of stack {stack}"))?;
            let wanted = replicas
                .split_once('/')
                .and_then(|(_, wanted)| wanted.parse().ok())
                .with_context(|| format!("docker service ls: {line:?}: no wanted count"))?;
            Ok((service.to_owned(), wanted))
        })
        .collect()
}

/// `docker ps --format '{{.Label "com.docker.swarm.service.name"}} {{.ID}} {{.Status}}'`.
pub fn parse_tasks(text: &str, stack: &str) -> anyhow::Result<Vec<Task>> {
    let prefix = format!("{stack}_");
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let (Some(name), Some(id), Some(status)) = (parts.next(), parts.next(), parts.next())
            else {
                bail!("docker ps: {line:?} is not SERVICE ID STATUS");
            };
            let service = name
                .strip_prefix(&prefix)
                .with_context(|| format!("docker ps: {name} is not a service of {stack}"))?;
            ensure!(
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "docker ps: {id:?} is not a container id"
            );
            Ok(Task {
                service: service.to_owned(),
                id: id.to_owned(),
                status: status.trim().to_owned(),
            })
        })
        .collect()
}

/// The services of `expected` with fewer healthy tasks than wanted, none wanted, or a task
/// not (yet) healthy, sorted.
pub fn not_at_strength(
    expected: &[String],
    desired: &[(String, u32)],
    tasks: &[Task],
) -> Vec<String> {
    sorted_where(expected, |service| {
        let wanted = desired
            .iter()
            .find(|(name, _)| name == service)
            .map_or(0, |(_, wanted)| *wanted);
        let mine: Vec<&Task> = tasks.iter().filter(|t| &t.service == service).collect();
        let healthy = mine.iter().filter(|t| t.healthy()).count();
        wanted == 0 || healthy < wanted as usize || healthy < mine.len()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docker service ls` and `docker ps` in the shape Docker 20.10 prints them, a web task
    /// just killed and its replacement starting; `(max 1 per node)` is what the engine adds
    /// to a service that sets `max_replicas_per_node`.
    const SERVICE_LS: &str = "foobar_balancer 1/1\nfoobar_db-primary 1/1\nfoobar_web 1/2\n\
        foobar_dns 1/1 (max 1 per node)\n";
    const PS: &str = "foobar_web 0123abcd Up 1 second (health: starting)\n\
        foobar_balancer 89ef0123 Up 3 minutes (healthy)\n\
        foobar_web 4567cdef Up 3 minutes (healthy)\n\
        foobar_db-primary 0a0b0c0d Up 3 minutes (healthy)\n";

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_wanted_counts_and_the_tasks_are_read_per_service() {
        let desired = parse_replicas(SERVICE_LS, "foobar").unwrap();
        assert_eq!(
            desired,
            [
                ("balancer".to_owned(), 1),
                ("db-primary".to_owned(), 1),
                ("web".to_owned(), 2),
                ("dns".to_owned(), 1)
            ]
        );
        let tasks = parse_tasks(PS, "foobar").unwrap();
        assert_eq!(tasks.len(), 4);
        assert_eq!(tasks[0].service, "web");
        assert!(!tasks[0].healthy());
        assert!(tasks[1].healthy());
        for bad in ["foobar_web", "foobar_web 1/x", "other_web 1/1"] {
            assert!(parse_replicas(bad, "foobar").is_err(), "{bad:?}");
        }
        for bad in ["foobar_web abc", "other_web 0123 Up", "foobar_web -j Up"] {
            assert!(parse_tasks(bad, "foobar").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_service_short_of_healthy_tasks_or_with_one_starting_is_not_healthy() {
        let desired = parse_replicas(SERVICE_LS, "foobar").unwrap();
        let mut tasks = parse_tasks(PS, "foobar").unwrap();
        let expected = names(&["balancer", "db-primary", "web", "dns", "router-a"]);
        // web: one task starting; dns: no task here; router-a: not a service at all.
        assert_eq!(
            not_at_strength(&expected, &desired, &tasks),
            ["dns", "router-a", "web"]
        );
        tasks[0].status = "Up 4 seconds (healthy)".into();
        assert_eq!(
            not_at_strength(&expected, &desired, &tasks),
            ["dns", "router-a"]
        );
        // The killed task gone and its replacement not yet there: one healthy of two wanted.
        tasks.remove(0);
        assert_eq!(
            not_at_strength(&names(&["web", "balancer"]), &desired, &tasks),
            ["web"]
        );
    }
}
