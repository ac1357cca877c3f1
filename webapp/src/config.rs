//! The webapp's configuration file: `[service]`, `[http]`, `[database]`, `[guestbook]`.
//!
//! The database URL has one more source than the other keys, because every twelve-factor
//! tool expects it: `DATABASE_URL` in the environment, when set and not empty,
//! replaces `database.url` (whether that came from the file or from
//! `FOOBAR_WEBAPP_DATABASE__URL`). `database.fallback_urls` are the URLs tried, in order, when
//! the first one cannot serve a request (db.rs says when; set from the environment as a TOML list:
//! `FOOBAR_WEBAPP_DATABASE__FALLBACK_URLS='["mysql://foobar@router-b:3306/foobar"]'`). The
//! password never has to sit in a URL: `database.password_file` names a file (a Docker secret)
//! whose content is the password for every URL, and wins over a password in the URL.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use axum::http::HeaderValue;
use foobar_service::{CommonConfig, ServiceConfig};
use serde::{Deserialize, Serialize};
use sqlx::mysql::MySqlConnectOptions;

/// The service's configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub service: CommonConfig,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub guestbook: GuestbookConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            service: CommonConfig::with_admin_port(9180),
            http: HttpConfig::default(),
            database: DatabaseConfig::default(),
            guestbook: GuestbookConfig::default(),
        }
    }
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
    /// Files up to this size are read into memory at start and served from there (the folder
    /// is part of the image and does not change while the server runs); larger files are read
    /// from disk on each request. 0 turns the cache off.
    pub cache_max_file_size: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            static_dir: PathBuf::from("/usr/share/foobar/static"),
            instance: String::new(),
            cache_max_file_size: 256 * 1024,
        }
    }
}

/// The `[database]` table: where the guestbook lives (in the stack, the db-router beside this
/// web server) and how long a request may wait for it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `mysql://USER[:PASSWORD]@HOST:PORT/DATABASE`; `DATABASE_URL` replaces it when set.
    pub url: String,
    /// Tried in order when `url` cannot serve a request (no connection within
    /// `connect_timeout`, no answer within the read or query timeout, a connection lost); a
    /// URL that failed is skipped until the background check gets an answer through it again
    /// (db.rs). A URL whose pool is merely busy is not skipped.
    pub fallback_urls: Vec<String>,
    /// A file holding the password (a Docker secret); empty: the URL's password, if any.
    pub password_file: PathBuf,
    /// Connections kept open at most, per URL (at least 2).
    pub max_connections: u32,
    /// How long a request waits for one of the `max_connections` when all are in use (a busy
    /// pool, not a failed router) before it tries the next URL, or gets 503 after the last.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// How long opening a connection through one URL (TCP, the greeting, the login), or
    /// checking an idle one, may take before that URL counts as unreachable. Short: a killed
    /// router's address does not refuse, and a frozen one accepts TCP and says nothing.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a read's queries may take once connected; past it the connection is closed
    /// and the read runs again through the next URL (a frozen or cut-off router).
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// How long a write's queries may take once connected, before it gets 503 (a write with
    /// an idempotency key runs again through the next URL instead). Longer than a read's: a
    /// commit may wait for the replica's semi-synchronous acknowledgement.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// While the database is unreachable or the schema is not applied, how often to retry; also
    /// how often every URL is checked (readiness, and whether a skipped URL answers again).
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "mysql://foobar@127.0.0.1:3306/foobar".to_owned(),
            fallback_urls: Vec::new(),
            password_file: PathBuf::new(),
            max_connections: 32,
            acquire_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(500),
            read_timeout: Duration::from_secs(1),
            query_timeout: Duration::from_secs(2),
            retry_interval: Duration::from_secs(1),
        }
    }
}

/// The `[guestbook]` table: the limits a visitor's post must respect.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuestbookConfig {
    /// Posts per page (HTML and API default).
    pub page_size: u32,
    /// Longest name, in characters.
    pub max_name_chars: usize,
    /// Longest message, in characters.
    pub max_message_chars: usize,
}

impl Default for GuestbookConfig {
    fn default() -> Self {
        Self {
            page_size: 10,
            max_name_chars: 40,
            max_message_chars: 500,
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
            .map_err(|_| "http.instance: not a valid header value".to_owned())?;
        // Migrating takes two: one holds the migration lock, the other migrates.
        if self.database.max_connections < 2 {
            return Err("database.max_connections: must be at least 2".to_owned());
        }
        let db = &self.database;
        if [
            db.acquire_timeout,
            db.connect_timeout,
            db.read_timeout,
            db.query_timeout,
        ]
        .iter()
        .any(Duration::is_zero)
        {
            return Err(
                "database.acquire_timeout, connect_timeout, read_timeout, query_timeout: must \
                 be more than 0"
                    .to_owned(),
            );
        }
        if !(1..=100).contains(&self.guestbook.page_size) {
            return Err("guestbook.page_size: must be 1 to 100".to_owned());
        }
        // The bounds are the columns' sizes (webapp/migrations): VARCHAR(100), and TEXT's
        // 65 535 bytes at 4 bytes per utf8mb4 character.
        if !(1..=100).contains(&self.guestbook.max_name_chars) {
            return Err("guestbook.max_name_chars: must be 1 to 100".to_owned());
        }
        if !(1..=16_000).contains(&self.guestbook.max_message_chars) {
            return Err("guestbook.max_message_chars: must be 1 to 16000".to_owned());
        }
        self.database
            .connect_options(std::env::var("DATABASE_URL").ok())
            .map(drop)
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

impl DatabaseConfig {
    /// The URL actually used: `env_url` (the value of `DATABASE_URL`) when set and not empty,
    /// else `database.url`.
    pub fn effective_url(&self, env_url: Option<String>) -> String {
        env_url
            .filter(|url| !url.trim().is_empty())
            .unwrap_or_else(|| self.url.clone())
    }

    /// How to connect through each URL, in the order they are tried: the effective URL, then
    /// `fallback_urls`, each with the password from `password_file` if set. Errors say which
    /// setting is wrong, never the password.
    pub fn connect_options(
        &self,
        env_url: Option<String>,
    ) -> Result<Vec<MySqlConnectOptions>, String> {
        let from_env = env_url.as_deref().is_some_and(|url| !url.trim().is_empty());
        let first = (
            if from_env {
                "DATABASE_URL".to_owned()
            } else {
                "database.url".to_owned()
            },
            self.effective_url(env_url),
        );
        let fallbacks = self
            .fallback_urls
            .iter()
            .enumerate()
            .map(|(i, url)| (format!("database.fallback_urls[{i}]"), url.clone()));
        let password = self.password()?;
        std::iter::once(first)
            .chain(fallbacks)
            .map(|(source, url)| {
                let options = parse_url(&source, &url)?;
                Ok(match &password {
                    Some(password) => options.password(password),
                    None => options,
                })
            })
            .collect()
    }

    /// The content of `password_file` without its line ending; None when it is not set.
    fn password(&self) -> Result<Option<String>, String> {
        if self.password_file.as_os_str().is_empty() {
            return Ok(None);
        }
        let password = std::fs::read_to_string(&self.password_file).map_err(|e| {
            format!(
                "database.password_file: cannot read {}: {e}",
                self.password_file.display()
            )
        })?;
        Ok(Some(password.trim_end_matches(['\r', '\n']).to_owned()))
    }
}

/// One database URL, or an error naming the setting it came from.
fn parse_url(source: &str, url: &str) -> Result<MySqlConnectOptions, String> {
    if !url.starts_with("mysql://") && !url.starts_with("mariadb://") {
        return Err(format!(
            "{source}: must start with mysql:// (mysql://USER@HOST:PORT/DATABASE)"
        ));
    }
    MySqlConnectOptions::from_str(url).map_err(|e| format!("{source}: not a MySQL URL: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_from_the_environment_wins_over_the_file() {
        let db = DatabaseConfig {
            url: "mysql://foobar@file-host:3306/foobar".into(),
            ..DatabaseConfig::default()
        };
        assert_eq!(db.effective_url(None), db.url);
        assert_eq!(db.effective_url(Some("  ".into())), db.url);
        let env = "mysql://foobar@router-a:3306/foobar".to_owned();
        assert_eq!(db.effective_url(Some(env.clone())), env);
        assert_eq!(
            db.connect_options(Some(env)).unwrap()[0].get_host(),
            "router-a"
        );
    }

    #[test]
    fn fallback_urls_follow_the_first_in_order_and_a_bad_one_is_named() {
        let mut db = DatabaseConfig {
            url: "mysql://foobar@router-a:3306/foobar".into(),
            fallback_urls: vec![
                "mysql://foobar@router-b:3306/foobar".into(),
                "mysql://foobar@db-primary:3306/foobar".into(),
            ],
            ..DatabaseConfig::default()
        };
        let hosts: Vec<String> = db
            .connect_options(None)
            .unwrap()
            .iter()
            .map(|options| options.get_host().to_owned())
            .collect();
        assert_eq!(hosts, ["router-a", "router-b", "db-primary"]);

        db.fallback_urls[1] = "postgres://x@y/z".into();
        let error = db.connect_options(None).unwrap_err();
        assert!(
            error.starts_with("database.fallback_urls[1]: must start with mysql://"),
            "{error}"
        );
    }

    #[test]
    fn bad_urls_and_missing_password_files_are_named() {
        let db = DatabaseConfig {
            url: "postgres://x@y/z".into(),
            ..DatabaseConfig::default()
        };
        let error = db.connect_options(None).unwrap_err();
        assert!(
            error.starts_with("database.url: must start with mysql://"),
            "{error}"
        );
        let error = db
            .connect_options(Some("mysql://a@b:notaport/c".into()))
            .unwrap_err();
        assert!(
            error.starts_with("DATABASE_URL: not a MySQL URL"),
            "{error}"
        );

        let db = DatabaseConfig {
            password_file: "/nonexistent/secret".into(),
            ..DatabaseConfig::default()
        };
        let error = db.connect_options(None).unwrap_err();
        assert!(
            error.starts_with("database.password_file: cannot read /nonexistent/secret"),
            "{error}"
        );
    }

    #[test]
    fn the_password_file_is_read_without_its_newline_for_every_url() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("db_app_password");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let db = DatabaseConfig {
            password_file: secret,
            fallback_urls: vec!["mysql://foobar:other@router-b:3306/foobar".into()],
            ..DatabaseConfig::default()
        };
        let all = db.connect_options(None).unwrap();
        assert_eq!(all.len(), 2);
        for options in all {
            // No accessor returns the password; its Debug form shows it, without the newline.
            assert!(
                format!("{options:?}").contains(r#"password: Some("s3cret")"#),
                "{options:?}"
            );
        }
    }
}
