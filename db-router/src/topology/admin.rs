//! The topology on the admin listener:
//!
//! - `GET /topology`: JSON of the monitor's last round: epoch, writer, reader, the promotion
//!   record, and per node its health, role, `read_only`, replication and lag, GTID
//!   positions, last check and last error.
//! - `POST /rejoin` (or `POST /rejoin?node=db-primary:3306`): makes a fenced node (an old
//!   primary, read-only, not replicating) a replica of the current primary. Refused, with
//!   the reason, when the node holds transactions the primary lacks (errant GTIDs). Without
//!   `node`, the one fenced node is meant.
//!
//! - `POST /seal?epoch=E&by=ROUTER`: another router is about to promote past epoch `E`:
//!   this router stops acknowledging writes (and routing them) until it sees the new primary
//!   or `POST /release?by=ROUTER` calls the promotion off, and answers what it acknowledged
//!   and last saw on the primary ([`super::ledger::Holdings`], JSON).
//!
//! - `POST /promote?give_up=GTIDS&without=PEER`: an operator forces the promotion a router
//!   refused, giving up the transactions named (the highest missing GTID per domain, as
//!   `failover_blocked` says them) and/or asking no more the peer routers named (ones that
//!   do not answer: whatever they acknowledged is given up, unknown). The next attempt goes
//!   ahead without them. Nothing else is given up.
//!
//! The service adds these with `Context::add_admin_routes`; a service with more admin routes
//! merges [`admin_routes`] into its own router first.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use std::time::Duration;

use super::Topology;
use super::actions;

/// How long reading a node's state afresh for an admin action may take.
const FRESH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

pub fn admin_routes(topology: &Topology) -> Router {
    Router::new()
        .route("/topology", get(topology_json))
        .route("/rejoin", post(rejoin))
        .route("/seal", post(seal))
        .route("/release", post(release))
        .route("/promote", post(force_promote))
        .with_state(topology.clone())
}

async fn topology_json(State(topology): State<Topology>) -> Response {
    json(StatusCode::OK, &topology.report())
}

#[derive(Deserialize)]
struct RejoinQuery {
    node: Option<String>,
}

async fn rejoin(State(topology): State<Topology>, Query(query): Query<RejoinQuery>) -> Response {
    let Some(access) = topology.shared.access.clone() else {
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            "no monitor runs in this router",
        );
    };
    let _one_at_a_time = topology.shared.admin_action.lock().await;
    let report = topology.report();
    let Some(writer) = report.writer.as_deref() else {
        return message(
            StatusCode::CONFLICT,
            "no writable primary right now: nothing to rejoin to",
        );
    };
    let fenced: Vec<_> = report
        .nodes
        .iter()
        .filter(|n| match &query.node {
            Some(name) => &n.name == name,
            None => n.role == "fenced",
        })
        .collect();
    let target = match fenced.as_slice() {
        [one] => *one,
        [] => {
            return message(
                StatusCode::NOT_FOUND,
                &match &query.node {
                    Some(name) => format!("no configured node is named {name}"),
                    None => "no fenced node to rejoin".into(),
                },
            );
        }
        _ => {
            return message(
                StatusCode::BAD_REQUEST,
                "several fenced nodes: name one with ?node=",
            );
        }
    };
    // Read both nodes now: the last round's GTID positions may already be behind (a write
    // on the fenced node since, the primary's new writes).
    let fresh = |name: &str| {
        let node = super::snapshot::Node {
            name: name.to_owned(),
        };
        let access = access.clone();
        async move {
            let mut probe = access.probe(&node)?;
            let status = probe.check(FRESH_CHECK_TIMEOUT).await?;
            anyhow::Ok((probe, status))
        }
    };
    let (mut probe, status) = match fresh(&target.name).await {
        Ok(fresh) => fresh,
        Err(e) => return message(StatusCode::CONFLICT, &format!("{}: {e:#}", target.name)),
    };
    let primary = match fresh(writer).await {
        Ok((_, status)) => status,
        Err(e) => {
            return message(
                StatusCode::CONFLICT,
                &format!("the primary {writer}: {e:#}"),
            );
        }
    };
    if primary.read_only {
        return message(
            StatusCode::CONFLICT,
            &format!("the primary {writer} is read-only right now: try again"),
        );
    }
    let node = probe.node.clone();
    tracing::warn!(node = %node.name, primary = %writer, "rejoin requested: making it a replica");
    let result = actions::rejoin(
        &mut probe,
        &status,
        &primary,
        &access.replication_user,
        &access.replication_password,
    )
    .await;
    topology.shared.wake.notify_one();
    match result {
        Ok(done) => {
            tracing::info!(node = %node.name, "rejoined: {done}");
            message(StatusCode::OK, &done)
        }
        Err(e) => {
            tracing::error!(node = %node.name, "rejoin refused or failed: {e:#}");
            message(StatusCode::CONFLICT, &format!("{e:#}"))
        }
    }
}

#[derive(Deserialize)]
struct SealQuery {
    epoch: u64,
    by: String,
}

async fn seal(State(topology): State<Topology>, Query(query): Query<SealQuery>) -> Response {
    let router = topology
        .shared
        .access
        .as_ref()
        .map_or("foobar-db-router", |a| a.router.as_str());
    let held = topology.ledger().seal(query.epoch, &query.by, router);
    topology.withdraw_writer();
    json(StatusCode::OK, &held)
}

#[derive(Deserialize)]
struct ReleaseQuery {
    by: String,
}

async fn release(State(topology): State<Topology>, Query(query): Query<ReleaseQuery>) -> Response {
    topology.ledger().release(&query.by);
    // The next round decides the writer again.
    topology.shared.wake.notify_one();
    message(StatusCode::OK, "released")
}

#[derive(Deserialize)]
struct PromoteQuery {
    #[serde(default)]
    give_up: String,
    /// Peer routers not to ask, comma-separated, as `monitor.peers` names them.
    #[serde(default)]
    without: String,
}

async fn force_promote(
    State(topology): State<Topology>,
    Query(query): Query<PromoteQuery>,
) -> Response {
    let report = topology.report();
    if report.failover_blocked.is_none() {
        return message(
            StatusCode::CONFLICT,
            "no promotion is being refused right now: nothing to force",
        );
    }
    let give_up = super::gtid::GtidSet::parse(&query.give_up);
    if !query.give_up.trim().is_empty() && give_up.is_empty() {
        return message(
            StatusCode::BAD_REQUEST,
            "give_up must name the transactions given up, as domain-server-sequence \
             (e.g. 0-1-56), as failover_blocked lists them",
        );
    }
    let peers = topology
        .shared
        .access
        .as_ref()
        .map(|access| access.peers.addresses.clone())
        .unwrap_or_default();
    let without: Vec<String> = query
        .without
        .split(',')
        .map(str::trim)
        .filter(|peer| !peer.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(unknown) = without.iter().find(|peer| !peers.contains(peer)) {
        return message(
            StatusCode::BAD_REQUEST,
            &format!(
                "without names {unknown:?}, which is not one of this router's peers \
                 (monitor.peers: {peers:?})"
            ),
        );
    }
    let forced = super::Forced { give_up, without };
    if forced.is_empty() {
        return message(
            StatusCode::BAD_REQUEST,
            "name what is given up: give_up=GTIDS (the transactions failover_blocked lists) \
             and/or without=PEER (a router that does not answer; whatever it acknowledged \
             is given up)",
        );
    }
    tracing::error!("an operator forces the promotion, giving up {forced}");
    *topology
        .shared
        .forced
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = forced.clone();
    topology.shared.wake.notify_one();
    message(
        StatusCode::ACCEPTED,
        &format!(
            "the next promotion attempt goes ahead without {forced} (GET /topology shows \
             whether it did; it refuses again if more is missing)"
        ),
    )
}

fn message(status: StatusCode, text: &str) -> Response {
    json(
        status,
        &serde_json::json!({ "ok": status.is_success(), "message": text }),
    )
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body + "\n",
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode: {e}\n"),
        )
            .into_response(),
    }
}
