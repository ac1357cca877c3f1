//! What every foobar service does the same way, written once.
//!
//! Each service binary (`foobar-dns`, `foobar-balancer`, `foobar-webapp`, `foobar-db-router`) is
//! a thin `main.rs` that hands its [`ServiceInfo`], its config type and its `run` function to
//! [`main`]. Everything a person or an orchestrator expects of every service lives here:
//!
//! - [`cli`]: the shared command line (`--config`, `--check-config`, `--probe`) and [`main`].
//! - [`config`]: TOML files with environment overrides; errors name the file, line and key.
//! - [`admin`]: the admin HTTP listener with `/healthz`, `/readyz` and Prometheus `/metrics`.
//! - [`histogram`]: a lock-free latency histogram for hot paths.
//! - [`metrics`]: [`metrics!`], a service's metrics declared once, each with its help text.
//! - [`lifecycle`]: readiness, SIGTERM / Ctrl-C turned into a cancellation token, and SIGHUP
//!   into reload requests ([`Context::reload_config`] reads the config again).
//! - [`probe`]: the status of an HTTP GET, for health checks and `--probe`.
//! - [`telemetry`]: logs to stderr, filtered by `RUST_LOG`.
//! - [`testing`]: starting a service binary as a process in tests, as a user would.
//! - [`tls`] (feature `tls`): a TLS server's rustls settings from PEM files.
//! - `allocator`: mimalloc as the process's allocator.

pub mod admin;
mod allocator;
pub mod cli;
pub mod config;
pub mod histogram;
pub mod lifecycle;
pub mod metrics;
pub mod probe;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "tls")]
pub mod tls;

pub use cli::{ServiceInfo, main};
pub use config::{CommonConfig, ServiceConfig};
pub use lifecycle::{ConfigOrigin, Context, Readiness};
