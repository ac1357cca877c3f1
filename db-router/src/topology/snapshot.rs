//! Where statements go: the snapshot the monitor publishes and the sessions read, and the
//! two roles a node plays for a session.

use serde::Serialize;

/// One database node, named as configured (`db-primary:3306`); sessions resolve the name
/// when they connect, so a restarted container's new address is found.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Node {
    pub name: String,
}

/// Where statements go right now.
///
/// The three states a session must tell apart:
/// - `writer: Some`: writes go there; reads to `reader`, or to the writer when `reader` is
///   `None` (replica down, not replicating, or lagging past `max_replication_lag`).
/// - `writer: None, reader: Some`: the primary is down and not replaced yet. Writes fail at
///   once with an error (never wait for it); reads keep going to the replica, which may be
///   behind by what it had not received yet.
/// - `writer: None, reader: None`: nothing can serve; every statement fails at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Raised by every failover; recorded on the chosen primary so that a second router
    /// recognises the choice.
    pub epoch: u64,
    /// Where writes and everything that is not a plain read go. `None` while no node may
    /// take writes (the primary is down and not yet replaced): writes fail at once.
    pub writer: Option<Node>,
    /// Where autocommit reads go. `None`: reads go to the writer. May be `Some` while
    /// `writer` is `None` (see above).
    pub reader: Option<Node>,
}

/// The two kinds of backend a session talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Writer,
    Reader,
}

impl Role {
    /// The metrics' label.
    pub fn label(self) -> &'static str {
        match self {
            Role::Writer => "writer",
            Role::Reader => "reader",
        }
    }
}
