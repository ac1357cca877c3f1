//! foobar-balancer: the load balancer in front of the web servers (HAProxy's role in the
//! classic design), built so that a dead backend costs no client request.
//!
//! - [`config`]: `balancer.toml`: listener, pool (algorithm, backends, backups), health, timeouts.
//! - [`pool`]: backends' state and the choice of one per request (round robin, least
//!   connections, active-passive).
//! - [`proxy`]: forwarding a request, its headers, retries that never repeat a sent write.
//! - [`health`]: active HTTP checks.
//! - [`tls`]: HTTPS: configured or generated certificates, rustls settings.
//! - [`status`]: the admin listener's status page, its JSON, and drain/enable actions.
//! - [`metrics`]: what `/metrics` exports.
//!
//! The shared parts (command line, config loading, admin listener, shutdown) come from
//! [`foobar_service`].

pub mod config;
pub mod health;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod status;
pub mod tls;

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use foobar_service::{Context, ServiceInfo};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

pub use config::Config;

use crate::metrics::Metrics;
use crate::pool::{Backend, Pool};
use crate::proxy::Proxy;

pub const SERVICE: ServiceInfo = ServiceInfo {
    binary: "foobar-balancer",
    about: "HTTP load balancer in front of the web servers: health-checked round robin, least \
            connections or active-passive; retries that never repeat a request a backend may \
            have processed; drains on SIGTERM.",
    env_prefix: "FOOBAR_BALANCER",
    metrics_prefix: "foobar_balancer",
};

/// A client that sends its request head slower than this is cut off (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves the backends, starts their health checks and serves until shutdown; then stops
/// accepting and lets in-flight requests finish.
pub async fn run(config: Config, ctx: Context) -> anyhow::Result<()> {
    let metrics = Metrics::register(&ctx);
    let mut backends = Vec::new();
    for backend in &config.pool.backends {
        let addr = tokio::net::lookup_host(&backend.address)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| anyhow::anyhow!("pool.backends: cannot resolve {}", backend.address))?;
        metrics
            .backend_up
            .get_or_create(&metrics::BackendLabels {
                backend: backend.address.clone(),
            })
            .set(1);
        backends.push(Backend::new(
            backend.address.clone(),
            addr,
            backend.weight,
            backend.backup,
        ));
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "foobar-balancer".to_owned(), |h| h.trim().to_owned());
    let proxy = Arc::new(Proxy::new(
        Pool::new(backends, config.pool.algorithm),
        config.timeouts.connect,
        config.timeouts.response,
        config.health.fall,
        &name,
        metrics,
    ));
    for index in 0..proxy.pool.backends.len() {
        tokio::spawn(health::check_backend(
            Arc::clone(&proxy),
            index,
            config.health.clone(),
            ctx.shutdown.clone(),
        ));
    }
    {
        let mut registry = ctx.metrics.lock().unwrap_or_else(|e| e.into_inner());
        for backend in &proxy.pool.backends {
            let label = (Cow::Borrowed("backend"), Cow::Owned(backend.name.clone()));
            registry.sub_registry_with_label(label).register(
                "in_flight",
                "Requests assigned to the backend and not yet answered in full",
                backend.in_flight.clone(),
            );
        }
    }
    tokio::spawn(sample_rates(Arc::clone(&proxy), ctx.shutdown.clone()));
    ctx.add_admin_routes(status::routes(Arc::clone(&proxy)));

    let graceful = Arc::new(GracefulShutdown::new());
    let mut listeners = tokio::task::JoinSet::new();
    let plain = foobar_service::admin::bind("http", config.http.listen).await?;
    let redirect =
        (config.https.enabled && config.http.redirect_to_https).then_some(config.http.https_port);
    let front = Front {
        proxy: Arc::clone(&proxy),
        redirect,
        hsts: None,
    };
    listeners.spawn(accept(
        plain,
        None,
        front,
        Arc::clone(&graceful),
        ctx.shutdown.clone(),
    ));
    if config.https.enabled {
        let tls = tls::server_config(&config.https)?;
        let secure = foobar_service::admin::bind("https", config.https.listen).await?;
        let hsts = (config.https.hsts_max_age.as_secs() > 0)
            .then(|| {
                HeaderValue::from_str(&format!("max-age={}", config.https.hsts_max_age.as_secs()))
            })
            .transpose()?;
        let front = Front {
            proxy: Arc::clone(&proxy),
            redirect: None,
            hsts,
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        listeners.spawn(accept(
            secure,
            Some(acceptor),
            front,
            Arc::clone(&graceful),
            ctx.shutdown.clone(),
        ));
    }
    ctx.readiness.set(true);
    while listeners.join_next().await.is_some() {}
    tracing::info!("draining: no new connections; waiting for in-flight requests");
    if let Ok(graceful) = Arc::try_unwrap(graceful) {
        graceful.shutdown().await;
    }
    Ok(())
}

/// Keeps each backend's requests-per-second figure for the status page.
async fn sample_rates(proxy: Arc<Proxy>, shutdown: tokio_util::sync::CancellationToken) {
    use std::sync::atomic::Ordering;
    let mut previous: Vec<u64> = proxy
        .pool
        .backends
        .iter()
        .map(|b| b.requests.load(Ordering::Relaxed))
        .collect();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        for (backend, previous) in proxy.pool.backends.iter().zip(previous.iter_mut()) {
            let now = backend.requests.load(Ordering::Relaxed);
            backend
                .rate
                .store(now.saturating_sub(*previous), Ordering::Relaxed);
            *previous = now;
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
        self,
        request: Request<Incoming>,
        client: SocketAddr,
        scheme: &'static str,
    ) -> Response<proxy::ProxyBody> {
        if let Some(port) = self.redirect {
            return redirect_to_https(&request, port);
        }
        let mut response = Arc::clone(&self.proxy)
            .handle(request, client, scheme)
            .await;
        if let Some(hsts) = self.hsts {
            response
                .headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
        }
        response
    }
}

/// Accepts connections until shutdown; with `tls`, each is a TLS handshake first, then HTTP/2
/// or HTTP/1.1 as ALPN decided. Connections are watched for a graceful drain.
async fn accept(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    front: Front,
    graceful: Arc<GracefulShutdown>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let scheme = if tls.is_some() { "https" } else { "http" };
    while let Some((stream, client)) = foobar_service::admin::accept(&listener, &shutdown).await {
        let _ = stream.set_nodelay(true);
        let front = front.clone();
        let service = service_fn(move |request| {
            let front = front.clone();
            async move { Ok::<_, Infallible>(front.answer(request, client, scheme).await) }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        let graceful = Arc::clone(&graceful);
        match &tls {
            None => {
                let connection = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%client, "client connection ended: {e}");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let stream =
                        match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                return tracing::debug!(%client, "TLS handshake failed: {e}");
                            }
                            Err(_) => return tracing::debug!(%client, "TLS handshake too slow"),
                        };
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    if let Err(e) = graceful.watch(connection).await {
                        tracing::debug!(%client, "client connection ended: {e}");
                    }
                });
            }
        }
    }
}

/// 308 to the same host and path on HTTPS.
fn redirect_to_https(request: &Request<Incoming>, https_port: u16) -> Response<proxy::ProxyBody> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or("www.foobar.com");
    let host = host
        .rsplit_once(':')
        .filter(|(_, port)| port.parse::<u16>().is_ok())
        .map_or(host, |(name, _)| name);
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{https_port}{path}")
    };
    let mut response = proxy::error_page(
        StatusCode::PERMANENT_REDIRECT,
        "This site is served over HTTPS.",
    );
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}
