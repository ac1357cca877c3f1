//! Who writes and who replicates now, as router-a sees it: the demo's `db-primary` and
//! `db-replica` are roles, since a failover swaps the nodes and a rejoin keeps them swapped.
//!
//! Asked with the router's own command in its container (`foobar-db-router topology`), whose
//! JSON names the writer and the reader as `host:port`; the host is the service's name (on
//! compose and on a swarm alike).

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::faults::{PRIMARY, REPLICA};
use crate::runtime::Runtime;

/// The router whose view decides the roles.
pub const ROUTER: &str = "router-a";

/// The part of the router's topology the demo reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Topology {
    /// `db-primary:3306`, or none while no node takes writes.
    pub writer: Option<String>,
    /// The replica reads go to (replicating, not lagging), or none.
    pub reader: Option<String>,
    #[serde(default)]
    pub nodes: Vec<NodeView>,
}

/// What the demo reads of one node in the topology.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NodeView {
    pub name: String,
    /// The transactions it holds that the primary lacks: the router never rejoins it.
    #[serde(default)]
    pub errant: Option<String>,
}

impl Topology {
    pub fn parse(json: &str) -> anyhow::Result<Self> {
        serde_json::from_str(json).context("the router's topology is not the JSON expected")
    }

    /// Asks [`ROUTER`] in its container.
    pub async fn ask(runtime: &impl Runtime) -> anyhow::Result<Self> {
        let json = runtime
            .exec(
                ROUTER,
                &[
                    "foobar-db-router",
                    "topology",
                    "--config",
                    "/etc/foobar/db-router.toml",
                ],
            )
            .await?;
        Self::parse(&json)
    }

    pub fn writer_node(&self) -> Option<&str> {
        self.writer.as_deref().map(host)
    }

    pub fn reader_node(&self) -> Option<&str> {
        self.reader.as_deref().map(host)
    }

    /// A writer and a replicating reader, two nodes: the stack survives the next fault.
    pub fn redundant(&self) -> bool {
        matches!((self.writer_node(), self.reader_node()), (Some(w), Some(r)) if w != r)
    }

    /// Why redundancy cannot come back by itself: a node with errant transactions stays
    /// fenced until an operator rebuilds it.
    pub fn errant(&self) -> Option<String> {
        self.nodes.iter().find_map(|node| {
            let errant = node.errant.as_deref().filter(|e| !e.is_empty())?;
            Some(format!(
                "{} holds transactions the primary lacks ({errant}): it stays fenced until \
                 rebuilt (docs/failover.md, \"Rebuilding a node\")",
                node.name
            ))
        })
    }

    /// The service a component means now: the writer for `db-primary`, the reader for
    /// `db-replica`, any other component itself.
    pub fn resolve(&self, component: &str) -> anyhow::Result<String> {
        let node = match component {
            PRIMARY => self.writer_node(),
            REPLICA => self.reader_node(),
            other => return Ok(other.to_owned()),
        };
        match node {
            Some(node) => Ok(node.to_owned()),
            None => bail!(
                "{ROUTER} sees no {}: wait until it shows a writer and a replicating reader \
                 (`foobar-db-router topology --config /etc/foobar/db-router.toml` in \
                 {ROUTER}'s container)",
                if component == PRIMARY {
                    "writer"
                } else {
                    "replicating reader"
                }
            ),
        }
    }
}

/// `db-replica:3306` -> `db-replica`.
fn host(address: &str) -> &str {
    address.rsplit_once(':').map_or(address, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_the_writer_and_the_reader_after_a_failover() {
        let swapped = Topology::parse(
            r#"{"epoch":3,"writer":"db-replica:3306","reader":"db-primary:3306",
                "nodes":[{"name":"db-primary:3306","role":"reader"}],"auto_failover":true}"#,
        )
        .unwrap();
        assert_eq!(swapped.resolve("db-primary").unwrap(), "db-replica");
        assert_eq!(swapped.resolve("db-replica").unwrap(), "db-primary");
        assert_eq!(swapped.resolve("lb-1").unwrap(), "lb-1");
        assert!(swapped.redundant());
        assert_eq!(swapped.errant(), None);
    }

    #[test]
    fn no_writer_or_no_reader_is_not_redundant_and_says_what_to_wait_for() {
        let down = Topology::parse(r#"{"writer":null,"reader":"db-replica:3306"}"#).unwrap();
        assert!(!down.redundant());
        let error = down.resolve("db-primary").unwrap_err().to_string();
        assert!(error.contains("sees no writer"), "{error}");
        assert_eq!(down.resolve("db-replica").unwrap(), "db-replica");
        let alone = Topology::parse(r#"{"writer":"db-replica:3306"}"#).unwrap();
        assert!(!alone.redundant());
        assert!(
            alone
                .resolve("db-replica")
                .unwrap_err()
                .to_string()
                .contains("replicating reader")
        );
        let errant = Topology::parse(
            r#"{"writer":"db-primary:3306","reader":null,"nodes":[
                {"name":"db-primary:3306","role":"writer","errant":null},
                {"name":"db-replica:3306","role":"fenced","errant":"0-2-3018"}]}"#,
        )
        .unwrap();
        let why = errant.errant().unwrap();
        assert!(
            why.starts_with("db-replica:3306 holds transactions the primary lacks (0-2-3018)"),
            "{why}"
        );
        assert!(!errant.redundant());
        let same = Topology::parse(r#"{"writer":"db-a:3306","reader":"db-a:3306"}"#).unwrap();
        assert!(!same.redundant());
        for bad in ["", "[]", "{\"writer\":3}", "not json", "{\"writer\":\"a\""] {
            assert!(Topology::parse(bad).is_err(), "{bad:?}");
        }
    }
}
