//! foobar-webapp: the web and application server on each backend server (the roles Nginx,
//! Gunicorn and the application files play in the classic design).
//!
//! - [`app`] builds the HTTP router: static files, health, and the `X-Served-By` header that
//!   makes round robin visible.
//! - [`run`] serves it on `http.listen` until shutdown.
//!
//! The shared parts (command line, config loading, admin listener, shutdown) come from
//! [`foobar_service`].

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::http::HeaderValue;
use foobar_service::{CommonConfig, Context, ServiceConfig, ServiceInfo};
use serde::{Deserialize, Serialize};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

pub const SERVICE: ServiceInfo = ServiceInfo {
    binary: "foobar-webapp",
    about: "Web and application server for foobar.com: static files and the guestbook app.",
    env_prefix: "FOOBAR_WEBAPP",
    metrics_prefix: "foobar_webapp",
};

/// The service's configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub service: CommonConfig,
    pub http: HttpConfig,
}

/// The `[http]` table: the listener the balancers send traffic to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The folder served at `/`.
    pub static_dir: PathBuf,
    /// This server's name in `X-Served-By`; empty means the host name (the container's name
    /// in compose).
    pub instance: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            static_dir: PathBuf::from("/usr/share/foobar/static"),
            instance: String::new(),
        }
    }
}

impl ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.service
    }

    fn validate(&self) -> Result<(), String> {
        if !self.http.static_dir.is_dir() {
            return Err(format!(
                "http.static_dir: {} is not a folder",
                self.http.static_dir.display()
            ));
        }
        HeaderValue::from_str(&self.instance_name())
            .map(drop)
            .map_err(|_| "http.instance: not a valid header value".to_owned())
    }
}

impl Config {
    /// The name this instance answers with: `http.instance`, or else the host name.
    pub fn instance_name(&self) -> String {
        if !self.http.instance.is_empty() {
            return self.http.instance.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "webapp".to_owned())
    }
}

/// The whole HTTP surface of the web server.
pub fn app(config: &Config, ctx: &Context) -> Router {
    let served_by = HeaderValue::from_str(&config.instance_name())
        .unwrap_or_else(|_| HeaderValue::from_static("webapp"));
    foobar_service::admin::health_routes(ctx)
        .fallback_service(ServeDir::new(&config.http.static_dir))
        .layer(SetResponseHeaderLayer::overriding(
            axum::http::header::HeaderName::from_static("x-served-by"),
            served_by,
        ))
}

/// Serves [`app`] on `http.listen` until `ctx.shutdown` is cancelled.
pub async fn run(config: Config, ctx: Context) -> anyhow::Result<()> {
    let router = app(&config, &ctx);
    let listener = foobar_service::admin::bind("http", config.http.listen).await?;
    ctx.readiness.set(true);
    axum::serve(listener, router)
        .with_graceful_shutdown(ctx.shutdown.clone().cancelled_owned())
        .await?;
    Ok(())
}
