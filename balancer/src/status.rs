//! The admin listener's pages: what HAProxy's stats page is to HAProxy.
//!
//! - `GET /status`: an HTML table a person reads, refreshing itself every 2 s: each backend's
//!   pool (`default`, or a site's name), state (UP, DOWN, DRAIN), role, weight, requests in
//!   flight, requests per second, total requests and errors, and its last health check; above
//!   it, each pool's algorithm and the hosts that choose it.
//! - `GET /status.json`: the same, for scripts.
//! - `POST /backends/{name}/drain`: no new requests for that backend, in-flight ones finish;
//!   `POST /backends/{name}/enable` puts it back. `{name}` is a backend's name, or a config
//!   entry's address (`web:8080`), which means every backend it resolved to, in every pool
//!   that has it.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};

use crate::config::{Algorithm, Config};
use crate::pool::Backend;
use crate::proxy::Proxy;

pub fn routes(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .route("/status", get(page))
        .route("/status.json", get(json))
        .route("/backends/{name}/drain", post(drain))
        .route("/backends/{name}/enable", post(enable))
        .with_state(proxy)
}

fn last_check(backend: &Backend) -> String {
    match &*backend.last_check.lock().unwrap_or_else(|e| e.into_inner()) {
        Some((when, what)) => {
            let ago = SystemTime::now()
                .duration_since(*when)
                .unwrap_or_default()
                .as_secs_f64();
            format!("{what}, {ago:.1} s ago")
        }
        None => "not yet".into(),
    }
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RoundRobin => "round robin",
        Algorithm::LeastConnections => "least connections",
    }
}

/// The hosts that send requests to the pool named `pool`.
fn hosts_of<'a>(config: &'a Config, pool: &str) -> Option<&'a [String]> {
    config
        .sites
        .iter()
        .find(|site| site.name == pool)
        .map(|site| &site.hosts[..])
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn page(State(proxy): State<Arc<Proxy>>) -> Html<String> {
    let name = escape(proxy.via.to_str().unwrap_or("").trim_start_matches("1.1 "));
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"2\"><title>{name}: foobar-balancer status</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:1.5rem}}table{{border-collapse:collapse}}\
         th,td{{padding:.3rem .7rem;border-bottom:1px solid #ddd;text-align:right}}\
         th:first-child,td:first-child{{text-align:left}}.UP{{color:#176f2c}}.DOWN{{color:#b3261e;font-weight:bold}}\
         .DRAIN{{color:#8a5a00}}</style></head><body>\n<h1>{name}</h1>\n\
         <p>Pools of backends, refreshed every 2 s. Requests go to UP primaries of the pool their \
         host chooses; backups only when no primary is up; DRAIN gets no new requests.</p>\n\
         <p id=\"clients\">Client connections: {open} open, at most {max} (more wait to be accepted).</p>\n\
         <ul id=\"pools\">\n",
        open = proxy.connections.gauge.get(),
        max = proxy.connections.max(),
    );
    let pools = proxy.pools.load();
    let config = proxy.config.load();
    for pool in &pools.all {
        let hosts = hosts_of(&config, &pool.name)
            .map_or_else(|| "every other host".to_owned(), |hosts| hosts.join(", "));
        let _ = writeln!(
            html,
            "<li data-pool=\"{name}\">{name}: {algorithm}; {hosts}</li>",
            name = escape(&pool.name),
            algorithm = algorithm_name(pool.algorithm()),
            hosts = escape(&hosts),
        );
    }
    html.push_str(
        "</ul>\n<table id=\"backends\">\
         <tr><th>backend</th><th>pool</th><th>role</th><th>state</th><th>weight</th><th>in flight</th>\
         <th>req/s</th><th>requests</th><th>errors</th><th>last check</th></tr>\n",
    );
    for backend in pools.backends() {
        let state = backend.state();
        let _ = writeln!(
            html,
            "<tr data-backend=\"{name}\"><td>{name}</td><td>{pool}</td><td>{role}</td><td class=\"{state}\">{state}</td>\
             <td>{weight}</td><td>{in_flight}</td><td>{rate}</td><td>{requests}</td><td>{errors}</td>\
             <td>{check}</td></tr>",
            name = escape(&backend.name),
            pool = escape(&backend.pool),
            role = if backend.is_backup() {
                "backup"
            } else {
                "primary"
            },
            weight = backend.weight(),
            in_flight = backend.in_flight.get(),
            rate = backend.rate.load(Ordering::Relaxed),
            requests = backend.requests.load(Ordering::Relaxed),
            errors = backend.errors.load(Ordering::Relaxed),
            check = escape(&last_check(backend)),
        );
    }
    html.push_str("</table>\n<p><a href=\"/status.json\">JSON</a> · <a href=\"/metrics\">metrics</a></p></body></html>\n");
    Html(html)
}

async fn json(State(proxy): State<Arc<Proxy>>) -> impl IntoResponse {
    let pools = proxy.pools.load();
    let config = proxy.config.load();
    let pool_list: Vec<serde_json::Value> = pools
        .all
        .iter()
        .map(|pool| {
            serde_json::json!({
                "name": pool.name,
                "algorithm": algorithm_name(pool.algorithm()),
                "hosts": hosts_of(&config, &pool.name),
            })
        })
        .collect();
    let backends: Vec<serde_json::Value> = pools
        .backends()
        .map(|b| {
            serde_json::json!({
                "name": b.name,
                "pool": b.pool,
                "address": b.addr.to_string(),
                "role": if b.is_backup() { "backup" } else { "primary" },
                "state": b.state(),
                "weight": b.weight(),
                "in_flight": b.in_flight.get(),
                "requests_per_second": b.rate.load(Ordering::Relaxed),
                "requests": b.requests.load(Ordering::Relaxed),
                "errors": b.errors.load(Ordering::Relaxed),
                "last_check": last_check(b),
            })
        })
        .collect();
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::json!({
            "client_connections": proxy.connections.gauge.get(),
            "max_connections": proxy.connections.max(),
            "pools": pool_list,
            "backends": backends,
        })
        .to_string(),
    )
}

async fn drain(State(proxy): State<Arc<Proxy>>, Path(name): Path<String>) -> (StatusCode, String) {
    set_draining(&proxy, &name, true)
}

async fn enable(State(proxy): State<Arc<Proxy>>, Path(name): Path<String>) -> (StatusCode, String) {
    set_draining(&proxy, &name, false)
}

fn set_draining(proxy: &Proxy, name: &str, draining: bool) -> (StatusCode, String) {
    let pools = proxy.pools.load();
    let chosen: Vec<_> = pools
        .backends()
        .filter(|b| b.name == name || b.group == name)
        .collect();
    if chosen.is_empty() {
        return (StatusCode::NOT_FOUND, format!("no backend named {name}\n"));
    }
    let what = if draining {
        "draining: no new requests"
    } else {
        "back in service"
    };
    let mut answer = String::new();
    for backend in chosen {
        backend.set_draining(draining);
        tracing::info!(pool = %backend.pool, backend = %backend.name, "{what} (admin request)");
        let _ = writeln!(answer, "{} ({}): {what}", backend.name, backend.pool);
    }
    (StatusCode::OK, answer)
}
