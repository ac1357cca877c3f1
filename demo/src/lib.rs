//! The failover demo (docs/demo.md): a steady load of reads and writes against
//! https://www.foobar.com, as a visitor sends it, while faults (kill, pause, partition, a
//! partial partition of the database pair) hit the stack's components one at a time; then a
//! table of what the visitor saw per fault, and a timeline picture.
//!
//! A library with a thin binary, so that the stack's tests run the same code and assert on the
//! same [`Report`] a person reads. Every number comes from what the client saw.
//!
//! - [`resolve`]: asks foobar-dns for www.foobar.com's addresses, once per connection.
//! - [`http1`]: one HTTP/1.1 exchange on a stream, knowing whether any answer byte came back.
//! - [`visitor`]: connections as a browser makes them (next address on refusal, TLS with the
//!   stack's CA, keep-alive), and the one retry a browser allows itself.
//! - [`record`]: what one request saw.
//! - [`load`]: the readers and writers, at a bounded rate.
//! - [`runtime`]: what runs the stack, as the demo needs it: kill, pause, start, partition a
//!   service's container, run a command in it, say which services are not healthy; each
//!   fault's apply and restore on it.
//! - [`compose`]: that runtime through `docker compose` (`make up`).
//! - [`swarm`]: that runtime on Docker Swarm (`make swarm-up`): kills only, the engine repairs.
//! - [`faults`]: the [`faults::Fault`]s, and the run's plan of steps.
//! - [`roles`]: which node is the primary and which the replica now, from router-a.
//! - [`account`]: per fault, failures, write outage, p99 latency, time to healthy and to full
//!   redundancy; the targets.
//! - [`timeline`]: requests per second, the live line and its phases.
//! - [`svg`]: the timeline as a picture.
//! - [`verify`]: every acknowledged write still there; where unknown-outcome writes landed.
//! - [`scenario`]: the fault-restore sequence around the load, producing the [`Report`].

pub mod account;
pub mod compose;
pub mod faults;
pub mod http1;
pub mod load;
pub mod record;
pub mod resolve;
pub mod roles;
pub mod runtime;
pub mod scenario;
pub mod svg;
pub mod swarm;
pub mod timeline;
pub mod verify;
pub mod visitor;

pub use scenario::{Config, Report, Scenario};
