//! The failover demo (issue 7): a steady load of reads and writes against
//! https://www.foobar.com, as a visitor sends it, while the stack's components are killed one
//! at a time; then a table of what the visitor saw per kill, and a timeline picture.
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
//! - [`compose`]: kills, starts and asks the health of the stack's containers.
//! - [`account`]: per killed component, failures, write outage, time to healthy; the targets.
//! - [`timeline`]: requests per second, the live line and its phases.
//! - [`svg`]: the timeline as a picture.
//! - [`verify`]: every acknowledged write still there; where unknown-outcome writes landed.
//! - [`scenario`]: the kill-restore sequence around the load, producing the [`Report`].

pub mod account;
pub mod compose;
pub mod http1;
pub mod load;
pub mod record;
pub mod resolve;
pub mod scenario;
pub mod svg;
pub mod timeline;
pub mod verify;
pub mod visitor;

pub use scenario::{Config, Report, Scenario};
