//! The faults the demo applies, apart from the components they hit: a [`Fault`] is one way of
//! breaking a container, a [`Step`] is one fault on one component, and [`plan`] makes the
//! run's steps from `--faults` and `--components`. How each is applied and mended on the stack
//! is [`Fault::perform`], beside the [`crate::runtime::Runtime`] it uses.
//!
//! - `kill`: SIGKILL (`docker compose kill`), restored with `docker compose start`; on a
//!   swarm SIGKILL to one task's container (`docker kill`), and the engine starts a new task.
//! - `pause`: the container frozen (`docker compose pause`, the cgroup freezer), then
//!   unpaused: it keeps its sockets open and answers nothing, as a stalled process does.
//! - `partition`: every packet in and out of the container dropped, loopback excepted, by
//!   iptables rules in its network namespace (`nsenter -t PID -n`), deleted at the restore.
//!   `docker network disconnect` would drop the compose alias, and `tc netem` is missing from
//!   the kernel here (FACTS.md).
//! - `partial`: only between the database nodes: the primary drops what comes from, and what
//!   goes to, the replica's addresses, while the routers still reach both.
//!
//! The database components name roles, not containers: `db-primary` is whichever node is the
//! primary when the fault is applied, `db-replica` the replica then ([`crate::roles`]).
//! What runs the stack, compose or a swarm, is a [`crate::runtime::Runtime`].

use std::fmt;
use std::str::FromStr;

use anyhow::{Context, bail, ensure};

/// The component that stands for the primary of the moment.
pub const PRIMARY: &str = "db-primary";
/// The component that stands for the replica of the moment.
pub const REPLICA: &str = "db-replica";

/// One way of breaking a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    Kill,
    Pause,
    Partition,
    /// The primary cut from the replica, both directions; the routers see both.
    Partial,
}

impl Fault {
    pub const ALL: [Fault; 4] = [Fault::Kill, Fault::Pause, Fault::Partition, Fault::Partial];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Partial => "partial",
        }
    }

    /// Whether it needs iptables in a container's namespace (root on the Docker host).
    pub fn needs_root(self) -> bool {
        matches!(self, Fault::Partition | Fault::Partial)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        Fault::ALL
            .into_iter()
            .find(|fault| fault.name() == text.trim())
            .with_context(|| {
                format!("unknown fault {text:?}: one of kill, pause, partition, partial")
            })
    }
}

/// `--faults`: a comma-separated list, each at most once, in the order given.
pub fn parse_faults(text: &str) -> anyhow::Result<Vec<Fault>> {
    let mut faults = Vec::new();
    for part in text.split(',') {
        let fault: Fault = part.parse()?;
        ensure!(!faults.contains(&fault), "fault {fault} is named twice");
        faults.push(fault);
    }
    Ok(faults)
}

/// One row of the demo: a fault on a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub fault: Fault,
    /// As given: a service, or a database role (`db-primary`, `db-replica`).
    pub component: String,
}

impl Step {
    /// `pause lb-1`: the row's name in the table and the timeline.
    pub fn label(&self) -> String {
        format!("{} {}", self.fault, self.component)
    }
}

/// The run's steps: each fault, in order, on each component, in order. `partial` concerns
/// only the database pair: one step, on the primary, when the components name either node.
pub fn plan(faults: &[Fault], components: &[String]) -> anyhow::Result<Vec<Step>> {
    ensure!(!faults.is_empty(), "no fault to apply");
    ensure!(
        !components.is_empty(),
        "no component to apply the faults to"
    );
    let mut steps = Vec::new();
    for &fault in faults {
        if fault == Fault::Partial {
            if !components.iter().any(|c| c == PRIMARY || c == REPLICA) {
                bail!(
                    "the partial fault cuts {PRIMARY} from {REPLICA}: name one of them in the components"
                );
            }
            steps.push(Step {
                fault,
                component: PRIMARY.to_owned(),
            });
            continue;
        }
        steps.extend(components.iter().map(|component| Step {
            fault,
            component: component.clone(),
        }));
    }
    Ok(steps)
}

/// Whether this process may enter another network namespace; partitions need it.
pub fn check_root(faults: &[Fault]) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Some(fault) = faults.iter().find(|f| f.needs_root()) else {
        return Ok(());
    };
    let uid = std::fs::metadata("/proc/self")
        .context("reading /proc/self to learn the user id")?
        .uid();
    ensure!(
        uid == 0,
        "the {fault} fault runs iptables inside the container's network namespace \
         (nsenter): run the demo as root on the Docker host, or leave {fault} out of --faults"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn faults_parse_in_order_and_hostile_lists_are_refused() {
        assert_eq!(parse_faults("kill").unwrap(), [Fault::Kill]);
        assert_eq!(
            parse_faults("partition,kill, pause,partial").unwrap(),
            [Fault::Partition, Fault::Kill, Fault::Pause, Fault::Partial]
        );
        for bad in [
            "",
            "kill,",
            ",kill",
            "Kill",
            "stop",
            "kill,kill",
            "kill;pause",
            "pause\0",
        ] {
            let error = parse_faults(bad).unwrap_err().to_string();
            assert!(
                error.contains("unknown fault") || error.contains("twice"),
                "{bad:?}: {error}"
            );
        }
        for fault in Fault::ALL {
            assert_eq!(fault.name().parse::<Fault>().unwrap(), fault);
        }
    }

    #[test]
    fn every_fault_on_every_component_and_partial_once_on_the_primary() {
        let components = names(&["lb-1", "db-replica", "db-primary"]);
        let steps = plan(&[Fault::Pause, Fault::Partial, Fault::Kill], &components).unwrap();
        let labels: Vec<String> = steps.iter().map(Step::label).collect();
        assert_eq!(
            labels,
            [
                "pause lb-1",
                "pause db-replica",
                "pause db-primary",
                "partial db-primary",
                "kill lb-1",
                "kill db-replica",
                "kill db-primary"
            ]
        );
        let error = plan(&[Fault::Partial], &names(&["lb-1"])).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("cuts db-primary from db-replica"),
            "{error}"
        );
        assert!(plan(&[], &components).is_err());
        assert!(plan(&[Fault::Kill], &[]).is_err());
    }

    #[test]
    fn only_partitions_need_root() {
        assert!(Fault::Partition.needs_root() && Fault::Partial.needs_root());
        assert!(!Fault::Kill.needs_root() && !Fault::Pause.needs_root());
        assert!(check_root(&[Fault::Kill, Fault::Pause]).is_ok());
    }
}
