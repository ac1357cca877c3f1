//! foobar-webapp: the web and application server on each backend server (the roles Nginx,
//! Gunicorn and the application files play in the classic design).
//!
//! - [`config`]: the `[http]`, `[database]` and `[guestbook]` tables, and `DATABASE_URL`.
//! - [`statics`]: static files (tower-http's ServeDir over an in-memory snapshot), cache
//!   headers.
//! - [`pages`]: the home page and the guestbook, HTML rendered with askama; the static files
//!   through [`statics`], with the site's 404 page for a missing one.
//! - [`api`]: the guestbook's JSON API.
//! - [`posts`]: what a valid post is, and the SQL.
//! - [`idempotency`]: the `Idempotency-Key` of a write (header, or the form's hidden field).
//! - [`state`]: what every handler shares ([`AppState`]).
//! - [`db`]: a connection pool per database URL (the first, then the fallbacks), migrations
//!   at start, readiness that follows the database.
//! - [`metrics`]: per-route request counts and latencies, database errors.
//!
//! [`app`] builds the whole router (tests drive it with `oneshot`, no socket); [`run`] serves
//! it. The shared parts (command line, config loading, admin listener, shutdown) come from
//! [`foobar_service`].

pub mod api;
pub mod config;
pub mod db;
pub mod idempotency;
pub mod metrics;
pub mod pages;
pub mod posts;
pub mod state;
pub mod statics;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::http::header::HeaderName;
use axum::routing::get;
use foobar_service::{Context, ServiceInfo};
use tower_http::set_header::SetResponseHeaderLayer;

pub use config::Config;
use db::Database;
use metrics::Metrics;
pub use state::{AppState, Shared};
use statics::StaticFiles;

pub const SERVICE: ServiceInfo = ServiceInfo {
    binary: "foobar-webapp",
    about: "Web and application server for foobar.com: static files and the guestbook app.",
    env_prefix: "FOOBAR_WEBAPP",
    metrics_prefix: "foobar_webapp",
};

/// A post's form or JSON body is a few kilobytes at most; anything much bigger is refused
/// (413) before it is read.
const MAX_BODY: usize = 64 * 1024;

/// Everything `app` needs that outlives one router: the database and the metrics.
pub struct Parts {
    pub db: Database,
    pub metrics: Metrics,
}

impl Parts {
    /// Registers the metrics on `ctx` and creates the (not yet connected) pools.
    pub fn new(config: &Config, ctx: &Context) -> anyhow::Result<Self> {
        let metrics = Metrics::register(ctx);
        let options = config
            .database
            .connect_options(std::env::var("DATABASE_URL").ok())
            .map_err(anyhow::Error::msg)?;
        let db = Database::new(&config.database, options, metrics.clone());
        Ok(Self { db, metrics })
    }
}

/// The whole HTTP surface of the web server.
pub fn app(config: &Config, ctx: &Context, parts: &Parts) -> Router {
    let instance = config.instance_name();
    let served_by =
        HeaderValue::from_str(&instance).unwrap_or_else(|_| HeaderValue::from_static("webapp"));
    let state = AppState(Arc::new(Shared {
        instance: instance.into(),
        db: parts.db.clone(),
        guestbook: config.guestbook.clone(),
        files: StaticFiles::new(&config.http.static_dir, config.http.cache_max_file_size),
    }));
    let site = Router::new()
        .route("/", get(pages::home))
        .route("/guestbook", get(pages::guestbook).post(pages::submit))
        .route("/api/posts", get(api::list).post(api::create))
        .route("/api/posts/{id}", get(api::get))
        .route("/api/{*rest}", axum::routing::any(api::not_found))
        .fallback(pages::static_file)
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(parts.metrics.layer());
    foobar_service::admin::health_routes(ctx)
        .merge(site)
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-served-by"),
            served_by,
        ))
}

/// Serves [`app`] on `http.listen` until `ctx.shutdown` is cancelled, while
/// [`Database::maintain`] applies the schema and keeps readiness in step with the database.
pub async fn run(config: Config, ctx: Context) -> anyhow::Result<()> {
    let parts = Parts::new(&config, &ctx)?;
    let router = app(&config, &ctx, &parts);
    let listener = foobar_service::admin::bind("http", config.http.listen).await?;
    let maintain = tokio::spawn(parts.db.clone().maintain(ctx.clone()));
    axum::serve(listener, router)
        .with_graceful_shutdown(ctx.shutdown.clone().cancelled_owned())
        .await?;
    maintain.abort();
    Ok(())
}
