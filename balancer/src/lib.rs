//! foobar-balancer: the load balancer in front of the web servers (HAProxy's role in the
//! classic design), built so that a dead backend costs no client request.
//!
//! - [`config`]: `balancer.toml`: listeners, pool (algorithm, backends, backups), sites,
//!   health, timeouts, limits.
//! - [`sites`]: which pool a request's host chooses: a site's, or the default `[pool]`.
//! - [`pool`]: backends' state and the choice of one per request (round robin, least
//!   connections, active-passive).
//! - [`discovery`]: the pools' members: addresses from the config, host names resolved again
//!   and again; rebuilding a pool keeps the state of the backends that stay.
//! - [`proxy`]: one request's path: limits, pool, backend, retries that never repeat a sent
//!   write.
//! - [`forwarding`]: the headers this hop adds to a request (X-Forwarded-*, Via, request id)
//!   and the client's it removes.
//! - [`http1`]: HTTP/1.1 from clients, one loop per connection.
//! - [`http2`]: HTTP/2 from clients, h2's server driven by one task per connection.
//! - [`batching`]: HTTP/2 connections' writes gathered across streams, one write per turn.
//! - [`upstream`]: HTTP/1.1 to a backend, inside the request's task (no hand-offs).
//! - [`message`]: what every HTTP layer shares: body and error types, the hop-by-hop list, a
//!   backend's raw response head, the error page.
//! - [`framing`]: HTTP/1.1 bodies on the wire, both ways: by length, chunked, until close.
//! - [`replay`]: which requests may be sent again, and the copy kept to do it.
//! - [`limits`]: connections at once, per-client rate, body size.
//! - [`health`]: active HTTP checks.
//! - [`reload`]: SIGHUP: the config read again and applied, or refused.
//! - [`tls`]: HTTPS: configured or generated certificates, rustls settings.
//! - [`status`]: the admin listener's status page, its JSON, and drain/enable actions.
//! - [`metrics`]: what `/metrics` exports.
//!
//! The shared parts (command line, config loading, admin listener, shutdown) come from
//! [`foobar_service`].

pub mod batching;
pub mod config;
pub mod discovery;
pub mod forwarding;
pub mod framing;
pub mod health;
pub mod http1;
pub mod http2;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod pool;
pub mod proxy;
#[cfg(any(test, fuzzing))]
pub mod reference;
pub mod reload;
pub mod replay;
pub mod sites;
pub mod status;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use foobar_service::{Context, ServiceInfo};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::proxy::Proxy;
use crate::sites::Pools;

pub const SERVICE: ServiceInfo = ServiceInfo {
    binary: "foobar-balancer",
    about: "HTTP load balancer in front of the web servers: health-checked round robin, least \
            connections or active-passive; retries that never repeat a request a backend may \
            have processed; limits; reloads on SIGHUP; drains on SIGTERM.",
    env_prefix: "FOOBAR_BALANCER",
    metrics_prefix: "foobar_balancer",
};

/// Resolves the backends, starts their health checks and serves until shutdown; then stops
/// accepting and lets in-flight requests finish.
pub async fn run(config: Config, ctx: Context) -> anyhow::Result<()> {
    let metrics = Metrics::register(&ctx);
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "foobar-balancer".to_owned(), |h| h.trim().to_owned());
    let empty = Pool::new(config::DEFAULT_POOL, Vec::new(), config.pool.algorithm);
    let proxy = Arc::new(Proxy::new(
        Pools::new(vec![Arc::new(empty)], []),
        config.clone(),
        &name,
        metrics,
    ));
    discovery::refresh(&proxy, &config, discovery::Joining::Up, &ctx.shutdown).await;
    tokio::spawn(discovery::resolve_periodically(
        Arc::clone(&proxy),
        ctx.clone(),
    ));
    tokio::spawn(reload::on_sighup(Arc::clone(&proxy), ctx.clone()));
    tokio::spawn(sample_rates(Arc::clone(&proxy), ctx.shutdown.clone()));
    ctx.add_admin_routes(status::routes(Arc::clone(&proxy)));

    let socket = foobar_service::admin::bind("http", config.http.listen).await?;
    let redirect =
        (config.https.enabled && config.http.redirect_to_https).then_some(config.http.https_port);
    let plain = Listener {
        socket,
        tls: None,
        front: Front {
            proxy: Arc::clone(&proxy),
            redirect,
            hsts: None,
        },
    };
    let secure = if config.https.enabled {
        let tls = tls::server_config(&config.https)?;
        let socket = foobar_service::admin::bind("https", config.https.listen).await?;
        let hsts = (config.https.hsts_max_age.as_secs() > 0)
            .then(|| {
                HeaderValue::from_str(&format!("max-age={}", config.https.hsts_max_age.as_secs()))
            })
            .transpose()?;
        Some(Listener {
            socket,
            tls: Some(tokio_rustls::TlsAcceptor::from(tls)),
            front: Front {
                proxy: Arc::clone(&proxy),
                redirect: None,
                hsts,
            },
        })
    } else {
        None
    };
    ctx.readiness.set(true);
    // Every connection's task is tracked; `drain` closes idle HTTP/1.1 connections and
    // ends the others after their response in flight, and sends HTTP/2 ones GOAWAY.
    let tracker = TaskTracker::new();
    let drain = CancellationToken::new();
    accept(&plain, secure.as_ref(), (&tracker, &drain), &ctx.shutdown).await;
    tracing::info!("draining: no new connections; waiting for in-flight requests");
    drain.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Keeps each backend's requests-per-second figure for the status page.
async fn sample_rates(proxy: Arc<Proxy>, shutdown: CancellationToken) {
    use std::sync::atomic::Ordering;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        for backend in proxy.pools.load().backends() {
            let now = backend.requests.load(Ordering::Relaxed);
            let before = backend.rate_base.swap(now, Ordering::Relaxed);
            backend
                .rate
                .store(now.saturating_sub(before), Ordering::Relaxed);
        }
    }
}

/// What a listener does with a request: proxy it, or redirect it to HTTPS; and HSTS.
#[derive(Clone)]
struct Front {
    proxy: Arc<Proxy>,
    /// The HTTPS port to redirect plain-HTTP requests to.
    redirect: Option<u16>,
    hsts: Option<HeaderValue>,
}

impl Front {
    async fn answer(
        &self,
        request: Request<message::ProxyBody>,
        peer: &forwarding::Peer,
    ) -> Response<message::ProxyBody> {
        if let Some(port) = self.redirect {
            return redirect_to_https(&request, port);
        }
        let mut response = self.proxy.handle(request, peer).await;
        if let Some(hsts) = &self.hsts {
            response
                .headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        response
    }

    /// Serves a connection's HTTP/1.1 requests (`http1.rs`), or its HTTP/2 ones when it
    /// opens with HTTP/2's preface (prior knowledge).
    async fn serve<S: http1::Io>(
        self,
        io: S,
        peer: forwarding::Peer,
        settings: http1::Settings,
        drain: tokio_util::sync::CancellationToken,
    ) {
        let handle = |request| self.answer(request, &peer);
        let ended = http1::serve(io, handle, settings, drain.clone(), &self.proxy.metrics).await;
        if let http1::Ended::Http2(io) = ended {
            let limits = self.proxy.config.load().limits.clone();
            self.serve_http2(io, peer, &limits, drain).await;
        }
    }

    /// Serves a connection's HTTP/2 streams (`http2.rs`).
    async fn serve_http2<S: http1::Io>(
        self,
        io: S,
        peer: forwarding::Peer,
        limits: &config::LimitsConfig,
        drain: tokio_util::sync::CancellationToken,
    ) {
        let settings = http2::Settings {
            max_header_list_size: u32::try_from(limits.max_header_size).unwrap_or(u32::MAX),
            idle_timeout: limits.header_read_timeout,
        };
        let handle = |request| self.answer(request, &peer);
        http2::serve(io, handle, settings, drain).await;
    }
}

/// A listening socket and what its connections get.
struct Listener {
    socket: tokio::net::TcpListener,
    /// Present on the HTTPS listener: each connection is a TLS handshake first.
    tls: Option<tokio_rustls::TlsAcceptor>,
    front: Front,
}

/// The next connection on either listener, or None once `shutdown` is cancelled.
async fn next_connection<'a>(
    plain: &'a Listener,
    secure: Option<&'a Listener>,
    shutdown: &CancellationToken,
) -> Option<(tokio::net::TcpStream, SocketAddr, &'a Listener)> {
    use foobar_service::admin::accept;
    let on = |listener: &'a Listener| {
        move |(stream, client): (tokio::net::TcpStream, SocketAddr)| (stream, client, listener)
    };
    match secure {
        None => accept(&plain.socket, shutdown).await.map(on(plain)),
        Some(secure) => tokio::select! {
            accepted = accept(&plain.socket, shutdown) => accepted.map(on(plain)),
            accepted = accept(&secure.socket, shutdown) => accepted.map(on(secure)),
        },
    }
}

/// Accepts connections on both listeners until shutdown, at most `limits.max_connections` at
/// once: past it, no listener accepts, so new connections wait in the kernel's accept queue.
/// (One loop for both, so an idle listener never holds a place another needs.) On the HTTPS
/// listener each connection is a TLS handshake first, then HTTP/2 or HTTP/1.1 as ALPN
/// decided. Each connection is a task of `tracker`, which the drain waits for.
async fn accept(
    plain: &Listener,
    secure: Option<&Listener>,
    connections_of: (&TaskTracker, &CancellationToken),
    shutdown: &CancellationToken,
) {
    let (tracker, drain) = connections_of;
    let connections = Arc::clone(&plain.front.proxy.connections);
    loop {
        let (permit, waited) = tokio::select! {
            admitted = connections.admit() => admitted,
            () = shutdown.cancelled() => return,
        };
        if waited {
            plain.front.proxy.metrics.connections_waited.inc();
        }
        let Some((stream, client, listener)) = next_connection(plain, secure, shutdown).await
        else {
            return;
        };
        let scheme = if listener.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let _ = stream.set_nodelay(true);
        let limits = listener.front.proxy.config.load().limits.clone();
        let settings = http1::Settings {
            header_read_timeout: limits.header_read_timeout,
            max_header_size: limits.max_header_size,
        };
        let front = listener.front.clone();
        let peer = forwarding::Peer::new(client, scheme);
        let drain = drain.clone();
        let acceptor = listener.tls.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let Some(acceptor) = acceptor else {
                return front.serve(stream, peer, settings, drain).await;
            };
            let handshake =
                tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!(%client, "TLS handshake failed: {e}"),
                Err(_) => {
                    front.proxy.metrics.reject("header_timeout");
                    return tracing::debug!(%client, "TLS handshake too slow");
                }
            };
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                front.serve_http2(stream, peer, &limits, drain).await;
            } else {
                front.serve(stream, peer, settings, drain).await;
            }
        });
    }
}

/// 308 to the same host and path on HTTPS: `https_port` when the request named a port (a
/// client on the host, through a published port), else HTTPS's own 443 (a client that
/// reached port 80 directly).
fn redirect_to_https<B>(request: &Request<B>, https_port: u16) -> Response<message::ProxyBody> {
    let authority = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("www.foobar.com");
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = https_location(authority, path, https_port);
    let mut response = message::error_page(
        StatusCode::PERMANENT_REDIRECT,
        "This site is served over HTTPS.",
    );
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Where [`redirect_to_https`] sends a request for `authority` (the Host header) and `path`.
fn https_location(authority: &str, path: &str, https_port: u16) -> String {
    match sites::split_port(authority) {
        (host, Some(_)) if https_port != 443 => format!("https://{host}:{https_port}{path}"),
        (host, _) => format!("https://{host}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_names_the_https_port_only_when_the_request_named_a_port() {
        let location = |host, port| https_location(host, "/guestbook?page=2", port);
        assert_eq!(
            location("www.foobar.com:8080", 8443),
            "https://www.foobar.com:8443/guestbook?page=2",
            "from the host machine, through lb-1's published ports"
        );
        assert_eq!(
            location("www.foobar.com:8081", 8444),
            "https://www.foobar.com:8444/guestbook?page=2"
        );
        assert_eq!(
            location("www.foobar.com", 8443),
            "https://www.foobar.com/guestbook?page=2",
            "from a container on port 80: HTTPS on 443"
        );
        assert_eq!(
            location("www.foobar.com:80", 443),
            "https://www.foobar.com/guestbook?page=2"
        );
        assert_eq!(
            location("[::1]:8080", 8443),
            "https://[::1]:8443/guestbook?page=2"
        );
    }
}
