//! What runs the stack, as the demo needs it: a [`Runtime`] kills, pauses, starts and
//! partitions a service's container, runs a command in it, and says which services the stack
//! has and which of them are not healthy. [`crate::compose::Compose`] is one (`docker
//! compose`: `make up`), [`crate::swarm::Swarm`] the other (a stack on Docker Swarm: `make
//! swarm-up`); [`crate::Scenario`], the faults and the roles are written once, against this.
//!
//! Also [`Fault::perform`], which applies or restores each [`Fault`] on a runtime (a
//! partition as iptables rules), and the plain `docker` and `nsenter` commands both runtimes
//! use on one container, by id.

use std::future::Future;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;

use crate::faults::Fault;

/// Longest any one docker command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The stack's containers, by service name (`web-a` on compose, `web` on a swarm).
pub trait Runtime: Sync {
    /// How a person brings the stack up, for messages (`make up`).
    fn start_hint(&self) -> &'static str;

    /// The faults it can apply; the demo refuses the others before it starts.
    fn faults(&self) -> &'static [Fault];

    /// Whether a killed container is replaced by the runtime itself, so that a kill needs no
    /// restore from the demo and its "to healthy" counts from the kill (a swarm's engine).
    fn repairs_kills(&self) -> bool;

    /// The stack's long-running services, those the demo waits on to be healthy.
    fn services(&self) -> impl Future<Output = anyhow::Result<Vec<String>>> + Send;

    /// Which of `expected` are not at full strength and healthy (missing ones included),
    /// sorted.
    fn not_healthy(
        &self,
        expected: &[String],
    ) -> impl Future<Output = anyhow::Result<Vec<String>>> + Send;

    /// SIGKILL to the service's container (one of its containers, on a swarm: a task).
    fn kill(&self, service: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Mends a kill: starts the container again, or nothing where [`Runtime::repairs_kills`].
    fn start(&self, service: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Freezes the service's container (the cgroup freezer, as `docker pause`).
    fn pause(&self, service: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    fn unpause(&self, service: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// A command in the service's running container; its standard output.
    fn exec(
        &self,
        service: &str,
        command: &[&str],
    ) -> impl Future<Output = anyhow::Result<String>> + Send;

    /// The service's container's addresses on its networks.
    fn addresses(&self, service: &str) -> impl Future<Output = anyhow::Result<Vec<String>>> + Send;

    /// `iptables OP RULE...` inside the network namespace of the service's container.
    fn iptables(
        &self,
        service: &str,
        op: &str,
        rule: &[String],
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The services of `expected` for which `bad` holds, sorted: how both runtimes answer
/// [`Runtime::not_healthy`] from what they read of the stack.
pub fn sorted_where(expected: &[String], bad: impl Fn(&String) -> bool) -> Vec<String> {
    let mut found: Vec<String> = expected.iter().filter(|s| bad(s)).cloned().collect();
    found.sort();
    found
}

/// Which way [`Fault::perform`] goes: breaking a container, or mending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Apply,
    /// Mends what `Apply` broke, given the same `target` and `peer`.
    Restore,
}

/// How a [`Runtime`] applies each [`Fault`] to a service's container, and mends it.
impl Fault {
    /// Applies or restores this fault on `target` (a service of the stack). `peer` is the
    /// replica's service for `Partial`.
    pub async fn perform(
        self,
        action: Action,
        runtime: &impl Runtime,
        target: &str,
        peer: Option<&str>,
    ) -> anyhow::Result<()> {
        match (self, action) {
            (Fault::Kill, Action::Apply) => runtime.kill(target).await,
            (Fault::Kill, Action::Restore) => runtime.start(target).await,
            (Fault::Pause, Action::Apply) => runtime.pause(target).await,
            (Fault::Pause, Action::Restore) => runtime.unpause(target).await,
            (Fault::Partition | Fault::Partial, Action::Apply) => {
                self.iptables(runtime, target, peer, "-I").await
            }
            (Fault::Partition | Fault::Partial, Action::Restore) => {
                self.iptables(runtime, target, peer, "-D").await
            }
        }
    }

    /// Inserts (`-I`) or deletes (`-D`) this partition's rules in `target`'s namespace.
    async fn iptables(
        self,
        runtime: &impl Runtime,
        target: &str,
        peer: Option<&str>,
        op: &str,
    ) -> anyhow::Result<()> {
        let rules = match self {
            Fault::Partial => {
                let peer = peer.context("a partial partition needs the replica")?;
                partial_rules(&runtime.addresses(peer).await?)
            }
            _ => partition_rules(),
        };
        for rule in rules {
            runtime.iptables(target, op, &rule).await?;
        }
        Ok(())
    }
}

/// The rules of a whole-container partition: everything dropped but loopback (the engine's
/// DNS resolver at 127.0.0.11 and the container's own healthcheck stay).
fn partition_rules() -> Vec<Vec<String>> {
    [["INPUT", "!", "-i", "lo"], ["OUTPUT", "!", "-o", "lo"]]
        .into_iter()
        .map(|rule| {
            rule.iter()
                .map(|s| s.to_string())
                .chain(["-j", "DROP"].map(String::from))
                .collect()
        })
        .collect()
}

/// The rules that cut a node from `addresses`, both directions.
fn partial_rules(addresses: &[String]) -> Vec<Vec<String>> {
    addresses
        .iter()
        .flat_map(|address| {
            [("INPUT", "-s"), ("OUTPUT", "-d")].map(|(chain, side)| {
                [chain, side, address, "-j", "DROP"]
                    .map(String::from)
                    .to_vec()
            })
        })
        .collect()
}

/// The addresses of container `id` on its networks.
pub(crate) async fn container_addresses(id: &str, service: &str) -> anyhow::Result<Vec<String>> {
    let out = docker(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        id,
    ])
    .await?;
    let addresses = parse_addresses(&out).with_context(|| format!("{service}'s addresses"))?;
    if addresses.is_empty() {
        bail!("{service} has no address on any network");
    }
    Ok(addresses)
}

/// `iptables OP RULE...` inside the network namespace of container `id`, from the host
/// (`nsenter`, as root): the container needs neither iptables nor privileges.
pub(crate) async fn container_iptables(
    id: &str,
    service: &str,
    op: &str,
    rule: &[String],
) -> anyhow::Result<()> {
    let pid = docker(&["inspect", "--format", "{{.State.Pid}}", id]).await?;
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

/// A plain `docker` command.
pub(crate) async fn docker(args: &[&str]) -> anyhow::Result<String> {
    run_command("docker", args).await
}

async fn run_command(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut command = Command::new(program);
    command.args(args);
    output(command, format!("{program} {}", args.join(" "))).await
}

/// Runs `command` within [`COMMAND_TIMEOUT`]; its standard output, or an error with its
/// standard error.
pub(crate) async fn output(mut command: Command, shown: String) -> anyhow::Result<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

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
    fn partition_keeps_loopback_and_partial_cuts_only_the_peer_both_ways() {
        assert_eq!(
            partition_rules(),
            [
                names(&["INPUT", "!", "-i", "lo", "-j", "DROP"]),
                names(&["OUTPUT", "!", "-o", "lo", "-j", "DROP"])
            ]
        );
        assert_eq!(
            partial_rules(&names(&["172.20.0.5"])),
            [
                names(&["INPUT", "-s", "172.20.0.5", "-j", "DROP"]),
                names(&["OUTPUT", "-d", "172.20.0.5", "-j", "DROP"])
            ]
        );
    }
}
