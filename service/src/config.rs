//! Configuration: one TOML file per service, then environment overrides on top.
//!
//! A service's config is a `#[serde(deny_unknown_fields)]` struct, so a misspelt key is an
//! error, never silently ignored. Loading happens in two passes so that every error can say
//! where it came from: the file alone first (errors carry `file:line:column` and the key's
//! dotted path), then the file merged with the environment (errors name the variable).
//!
//! Environment overrides: `PREFIX_KEY=value`, where nested tables are joined by a double
//! underscore, e.g. `FOOBAR_DNS_SERVICE__ADMIN_LISTEN=0.0.0.0:9153` sets `service.admin_listen`.
//! The value is read as a TOML value when it parses as one (`5`, `true`, `["a", "b"]`) and as a
//! string otherwise.

use std::fmt;
use std::net::SocketAddr;

use ipnet::IpNet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What every service's config type provides, so the shared code can find its own settings.
pub trait ServiceConfig: DeserializeOwned + Serialize + Default + Send + 'static {
    /// The settings every service has, under `[service]`.
    fn common(&self) -> &CommonConfig;

    /// Checks that need more than one field, or the file system. Types alone catch the rest.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The `[service]` table every config file may have.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommonConfig {
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub admin_listen: SocketAddr,
    /// How long a SIGTERM may take: in-flight work past this is abandoned and the process exits.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// After SIGTERM, how long the service stays "lame duck" before it stops accepting work:
    /// `/readyz` already fails, so health checkers (the balancers, foobar-dns) send traffic
    /// elsewhere, but whoever has not noticed yet is still served. 0: stop accepting at once.
    /// Counted outside `shutdown_timeout`.
    #[serde(with = "humantime_serde")]
    pub shutdown_delay: Duration,
    /// Threads that run the service's work. 0: one per CPU this process may run on (its CPU
    /// affinity, so `taskset -c 0` or a container's cpuset counts). With one, the service runs
    /// on a single-threaded scheduler, which does less per task switch than a work-stealing
    /// one with one worker: the way HAProxy's `nbthread 1` or nginx's `worker_processes 1` run.
    pub worker_threads: usize,
    /// The file holding the token every state-changing admin request (any method but GET and
    /// HEAD: drain, enable, rejoin) must carry as `Authorization: Bearer TOKEN`. Read on each
    /// such request, so a new token applies at once. Missing or empty: every such request is
    /// refused (403), never let through.
    pub admin_token_file: PathBuf,
    /// The source addresses (CIDR) state-changing admin requests may come from; any other gets
    /// 403 whatever its token. Reading pages (`/healthz`, `/metrics`, a status page) is open to
    /// whoever reaches the port.
    pub admin_allow: Vec<IpNet>,
}

/// Where the admin token is by default: the Docker secret `admin_token`.
pub const DEFAULT_ADMIN_TOKEN_FILE: &str = "/run/secrets/admin_token";

impl CommonConfig {
    /// The defaults, with the admin port each service documents as its own.
    pub fn with_admin_port(port: u16) -> Self {
        Self {
            admin_listen: SocketAddr::from(([0, 0, 0, 0], port)),
            ..Self::default()
        }
    }
}

impl Default for CommonConfig {
    fn default() -> Self {
        Self {
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9000)),
            shutdown_timeout: Duration::from_secs(10),
            shutdown_delay: Duration::ZERO,
            worker_threads: 0,
            admin_token_file: PathBuf::from(DEFAULT_ADMIN_TOKEN_FILE),
            // The loopback: an operator inside the container (`docker compose exec`).
            admin_allow: ["127.0.0.0/8", "::1/128"]
                .map(|net| net.parse().expect("a valid CIDR"))
                .to_vec(),
        }
    }
}

/// A config that could not be loaded, with where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A problem in the file: a syntax error, an unknown key or a value of the wrong type.
    #[error("{path}:{line}:{column}: {}{message}", key_prefix(key))]
    File {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    /// A problem with an environment override.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// A semantic check of [`ServiceConfig::validate`] failed.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() || key == "." {
        String::new()
    } else {
        format!("key `{key}`: ")
    }
}

/// Where a config came from, for messages: a file, or the built-in defaults.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// Loads `C` from `path` (or the defaults when `path` is `None`), then applies every
/// environment variable in `env` that starts with `prefix` followed by `_`.
pub fn load<C: ServiceConfig>(
    path: Option<&Path>,
    prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<C, ConfigError> {
    let source = match path {
        Some(path) => Source {
            path: path.to_owned(),
            text: std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?,
        },
        None => Source {
            path: PathBuf::from("(built-in defaults)"),
            text: String::new(),
        },
    };
    let from_file: C = parse(&source)?;
    let overrides = env_overrides(prefix, env)?;
    let config = if overrides.is_empty() {
        from_file
    } else {
        merge(&from_file, &overrides)?
    };
    config.validate().map_err(|message| ConfigError::Invalid {
        path: source.path.clone(),
        message,
    })?;
    Ok(config)
}

/// Parses a file's text, turning errors into `file:line:column: key: message`.
pub fn parse<C: DeserializeOwned>(source: &Source) -> Result<C, ConfigError> {
    let file_error = |key: String, message: &str, span: Option<std::ops::Range<usize>>| {
        let (line, column) = span.map_or((1, 1), |s| line_column(&source.text, s.start));
        ConfigError::File {
            path: source.path.clone(),
            line,
            column,
            key,
            message: message.trim().to_owned(),
        }
    };
    let deserializer = toml::de::Deserializer::parse(&source.text)
        .map_err(|e| file_error(String::new(), e.message(), e.span()))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        file_error(key, inner.message(), inner.span())
    })
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// One environment override: the variable, the key path it sets, and the value.
#[derive(Debug)]
struct Override {
    var: String,
    path: Vec<String>,
    value: toml::Value,
}

fn env_overrides(
    prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, ConfigError> {
    let prefix = format!("{prefix}_");
    let mut overrides: Vec<Override> = env
        .into_iter()
        .filter_map(|(var, raw)| {
            let rest = var.strip_prefix(&prefix)?.to_ascii_lowercase();
            let path = rest.split("__").map(str::to_owned).collect();
            Some(Override {
                value: parse_env_value(&raw),
                var,
                path,
            })
        })
        .collect();
    if let Some(bad) = overrides
        .iter()
        .find(|o| o.path.iter().any(String::is_empty))
    {
        return Err(ConfigError::Env {
            var: bad.var.clone(),
            message: "empty key".into(),
        });
    }
    overrides.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(overrides)
}

/// `5` is a number, `true` a boolean, `["a"]` an array; anything else is taken as a string, so
/// `0.0.0.0:53` needs no quotes.
fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// Applies overrides one at a time, so an error names the variable that caused it.
fn merge<C: ServiceConfig>(base: &C, overrides: &[Override]) -> Result<C, ConfigError> {
    let env_error = |var: &str, message: String| ConfigError::Env {
        var: var.to_owned(),
        message,
    };
    let mut table = toml::Table::try_from(base)
        .map_err(|e| env_error(&overrides[0].var, format!("internal: {e}")))?;
    for o in overrides {
        set_path(&mut table, &o.path, o.value.clone()).map_err(|m| env_error(&o.var, m))?;
        // Deserialize after each override so an unknown key or a bad value is pinned to `o`.
        C::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| env_error(&o.var, e.message().trim().to_owned()))?;
    }
    C::deserialize(toml::Value::Table(table))
        .map_err(|e| env_error(&overrides[overrides.len() - 1].var, e.to_string()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("override paths are never empty");
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Table::new().into());
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{key}` is not a table"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// Every key a config has, as `(dotted.key, ENV_VAR)`, read from its defaults: the list
/// `--help` prints, so it can never fall out of step with the config type.
pub fn env_keys<C: ServiceConfig>(prefix: &str) -> Vec<(String, String)> {
    fn walk(table: &toml::Table, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        for (key, value) in table {
            path.push(key.clone());
            match value {
                toml::Value::Table(t) => walk(t, path, out),
                _ => out.push(path.clone()),
            }
            path.pop();
        }
    }
    let table = toml::Table::try_from(C::default()).unwrap_or_default();
    let mut paths = Vec::new();
    walk(&table, &mut Vec::new(), &mut paths);
    paths
        .into_iter()
        .map(|p| {
            (
                p.join("."),
                format!("{prefix}_{}", p.join("__").to_ascii_uppercase()),
            )
        })
        .collect()
}

/// The effective config as TOML, for `--check-config`.
pub fn render<C: ServiceConfig>(config: &C) -> String {
    toml::to_string_pretty(config).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Example {
        service: CommonConfig,
        pool: Pool,
    }

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Pool {
        size: u32,
        name: String,
        backends: Vec<String>,
    }

    impl Default for Pool {
        fn default() -> Self {
            Self {
                size: 4,
                name: "main".into(),
                backends: vec![],
            }
        }
    }

    impl ServiceConfig for Example {
        fn common(&self) -> &CommonConfig {
            &self.service
        }
        fn validate(&self) -> Result<(), String> {
            if self.pool.size == 0 {
                Err("pool.size must be at least 1".into())
            } else {
                Ok(())
            }
        }
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Example, ConfigError> {
        let file = write(text);
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        load::<Example>(Some(file.path()), "EX", env)
    }

    #[test]
    fn good_file_is_loaded_and_defaults_fill_the_rest() {
        let config = load_text(
            "[service]\nadmin_listen = \"127.0.0.1:9999\"\nshutdown_timeout = \"3s\"\n\
             [pool]\nsize = 8\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            config.service.admin_listen,
            "127.0.0.1:9999".parse().unwrap()
        );
        assert_eq!(config.service.shutdown_timeout, Duration::from_secs(3));
        assert_eq!(config.pool.size, 8);
        assert_eq!(config.pool.name, "main");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let file = write("[pool]\nsize = 2\nsizee = 3\n");
        let err = load::<Example>(Some(file.path()), "EX", [])
            .unwrap_err()
            .to_string();
        let expected = format!("{}:3:1: ", file.path().display());
        assert!(err.starts_with(&expected), "{err}");
        assert!(err.contains("sizee"), "{err}");
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn bad_value_names_file_line_and_key() {
        let file =
            write("[service]\nadmin_listen = \"127.0.0.1:9999\"\n\n[pool]\nsize = \"big\"\n");
        let err = load::<Example>(Some(file.path()), "EX", [])
            .unwrap_err()
            .to_string();
        let expected = format!(
            "{}:5:8: key `pool.size`: invalid type",
            file.path().display()
        );
        assert!(err.starts_with(&expected), "{err}");
    }

    #[test]
    fn bad_duration_and_address_are_explained() {
        let err = load_text("[service]\nshutdown_timeout = \"soon\"\n", &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains(":2:20: key `service.shutdown_timeout`"),
            "{err}"
        );
        let err = load_text("[service]\nadmin_listen = \"localhost\"\n", &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains(":2:16: key `service.admin_listen`"),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_names_the_line() {
        let file = write("[pool]\nsize = 2\nname = \"unterminated\n");
        let err = load::<Example>(Some(file.path()), "EX", [])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{}:3:", file.path().display())),
            "{err}"
        );
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = load::<Example>(Some(Path::new("/nonexistent/x.toml")), "EX", []).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/x.toml: cannot read:"),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = load_text(
            "[pool]\nsize = 2\n",
            &[
                ("EX_POOL__SIZE", "9"),
                ("EX_POOL__NAME", "from-env"),
                ("EX_POOL__BACKENDS", "[\"a:1\", \"b:2\"]"),
                ("EX_SERVICE__ADMIN_LISTEN", "127.0.0.1:7000"),
                ("OTHER_POOL__SIZE", "100"),
            ],
        )
        .unwrap();
        assert_eq!(config.pool.size, 9);
        assert_eq!(config.pool.name, "from-env");
        assert_eq!(config.pool.backends, vec!["a:1", "b:2"]);
        assert_eq!(
            config.service.admin_listen,
            "127.0.0.1:7000".parse().unwrap()
        );
    }

    #[test]
    fn bad_environment_override_names_the_variable() {
        let err = load_text("", &[("EX_POOL__SIZE", "many")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("environment variable EX_POOL__SIZE: invalid type"),
            "{err}"
        );
        let err = load_text("", &[("EX_POOL__COLOUR", "red")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("environment variable EX_POOL__COLOUR: unknown field"),
            "{err}"
        );
    }

    #[test]
    fn semantic_validation_runs_after_overrides() {
        let err = load_text("", &[("EX_POOL__SIZE", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("pool.size must be at least 1"), "{err}");
    }

    #[test]
    fn env_keys_lists_every_leaf_of_the_defaults() {
        let keys = env_keys::<Example>("EX");
        assert!(keys.contains(&("pool.size".into(), "EX_POOL__SIZE".into())));
        assert!(keys.contains(&(
            "service.admin_listen".into(),
            "EX_SERVICE__ADMIN_LISTEN".into()
        )));
    }

    #[test]
    fn rendered_config_loads_back_to_the_same_value() {
        let config = load_text("[pool]\nsize = 7\nbackends = [\"x:1\"]\n", &[]).unwrap();
        let again: Example = parse(&Source {
            path: "rendered".into(),
            text: render(&config),
        })
        .unwrap();
        assert_eq!(config, again);
    }
}
