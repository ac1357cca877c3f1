//! The router's own config tables: `[router]` (listener, TLS, limits, timeouts, consistency) and
//! `[[users]]` (the accounts clients log in with). `[backends]` and `[monitor]` belong to
//! [`crate::topology`].
//!
//! Passwords are resolved once at start (`password_file` read, hashed) so that a session
//! never touches the file system and a missing secret stops the service with a clear error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::auth;

/// The `[router]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Where MySQL clients connect.
    pub listen: SocketAddr,
    /// PEM certificate chain (the certificate first) offered to clients that ask for TLS;
    /// empty: TLS is not offered and a client's SSLRequest is refused.
    pub tls_cert: PathBuf,
    /// PEM private key of `tls_cert`; set both or neither.
    pub tls_key: PathBuf,
    /// Refuse a client that logs in without TLS (error 3159, before its password is
    /// checked). Needs `tls_cert`.
    pub require_tls: bool,
    /// From the greeting to logged in (TLS handshake included); a client slower than this is
    /// disconnected, as MariaDB's `connect_timeout` does.
    #[serde(with = "humantime_serde")]
    pub login_timeout: Duration,
    /// Client connections served at once; the next one gets error 1040.
    pub max_client_connections: usize,
    /// Connections the router opens to each backend node, over all sessions.
    pub max_backend_connections: usize,
    /// Connecting and logging in to a backend; then the client gets a clear error.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A client silent this long (between commands) is disconnected.
    #[serde(with = "humantime_serde")]
    pub client_idle_timeout: Duration,
    /// `"session"`: a session's reads see its own writes (the replica waits for the write's
    /// GTID, or the read goes to the writer). `"eventual"`: reads go to the replica as is.
    pub consistency: Consistency,
    /// How long a read waits on the replica for the session's last write.
    #[serde(with = "humantime_serde")]
    pub gtid_wait_timeout: Duration,
    /// After a backend connection fails, how long sessions skip that node for reads.
    #[serde(with = "humantime_serde")]
    pub reader_retry_after: Duration,
    /// The largest packet (command or row) a client may send, in bytes.
    pub max_packet_size: usize,
    /// The largest file a client may send for LOAD DATA LOCAL INFILE, in bytes; beyond it
    /// nothing of the file is loaded and the client gets an error. 0: LOAD DATA LOCAL is off
    /// (the primary refuses it with 4166, as when the client does not allow files).
    pub load_data_local_max_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    Session,
    Eventual,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:3306".parse().expect("a valid address"),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            require_tls: false,
            login_timeout: Duration::from_secs(10),
            max_client_connections: 1000,
            max_backend_connections: 500,
            connect_timeout: Duration::from_secs(2),
            client_idle_timeout: Duration::from_secs(8 * 3600),
            consistency: Consistency::Session,
            gtid_wait_timeout: Duration::from_millis(500),
            reader_retry_after: Duration::from_secs(2),
            max_packet_size: 64 << 20,
            load_data_local_max_bytes: 64 << 20,
        }
    }
}

impl RouterConfig {
    /// The checks that need more than one key, or the certificate files: TLS settings that
    /// go together, and a certificate and key rustls accepts.
    pub fn validate(&self) -> Result<(), String> {
        let (cert, key) = (&self.tls_cert, &self.tls_key);
        match (cert.as_os_str().is_empty(), key.as_os_str().is_empty()) {
            (true, true) if self.require_tls => {
                Err("router.require_tls needs router.tls_cert and router.tls_key".into())
            }
            (true, true) => Ok(()),
            (false, false) => foobar_service::tls::server_config(cert, key)
                .map(drop)
                .map_err(|e| format!("router.tls_cert, router.tls_key: {e:#}")),
            _ => Err("router.tls_cert and router.tls_key go together: set both or neither".into()),
        }
    }
}

/// One `[[users]]` entry: an account clients log in to the router with.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserConfig {
    pub name: String,
    pub password: String,
    /// A file holding the password instead (a Docker secret); one trailing newline is dropped.
    pub password_file: PathBuf,
}

/// The configured users, by name, with their stored password hash (None: no password).
#[derive(Debug, Clone, Default)]
pub struct Users(HashMap<String, Option<[u8; 20]>>);

impl Users {
    pub fn resolve(users: &[UserConfig]) -> anyhow::Result<Self> {
        let mut map = HashMap::new();
        for user in users {
            anyhow::ensure!(!user.name.is_empty(), "[[users]]: an entry has no name");
            let password = password(&user.password, &user.password_file, "users.password")
                .with_context(|| format!("[[users]] {}", user.name))?;
            anyhow::ensure!(
                map.insert(user.name.clone(), auth::stored_hash(&password))
                    .is_none(),
                "[[users]]: {} is listed twice",
                user.name
            );
        }
        Ok(Self(map))
    }

    /// The stored hash of `name`'s password; None when there is no such user.
    pub fn get(&self, name: &str) -> Option<&Option<[u8; 20]>> {
        self.0.get(name)
    }
}

/// A password given inline or in a file (a Docker secret: its trailing newline dropped).
/// Setting both is an error, as in the database image. `key` names the setting in errors.
pub fn password(inline: &str, file: &Path, key: &str) -> anyhow::Result<String> {
    match (inline.is_empty(), file.as_os_str().is_empty()) {
        (_, true) => Ok(inline.to_owned()),
        (true, false) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("{key}_file {}", file.display()))?;
            Ok(text.trim_end_matches(['\r', '\n']).to_owned())
        }
        (false, false) => anyhow::bail!("both {key} and {key}_file are set; set only one"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_from_inline_or_file_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(password("inline", Path::new(""), "m.p").unwrap(), "inline");
        assert_eq!(password("", &file, "m.p").unwrap(), "s3cret");
        assert!(password("x", &file, "m.p").is_err());
        assert!(password("", &dir.path().join("missing"), "m.p").is_err());
    }

    #[test]
    fn tls_keys_go_together_and_must_load() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        let with = |cert: &Path, key: &Path, require_tls| RouterConfig {
            tls_cert: cert.to_owned(),
            tls_key: key.to_owned(),
            require_tls,
            ..RouterConfig::default()
        };
        let none = Path::new("");
        assert_eq!(with(none, none, false).validate(), Ok(()));
        assert_eq!(with(&cert, &key, false).validate(), Ok(()));
        assert_eq!(with(&cert, &key, true).validate(), Ok(()));
        let err = with(&cert, none, false).validate().unwrap_err();
        assert!(err.contains("set both or neither"), "{err}");
        let err = with(none, &key, false).validate().unwrap_err();
        assert!(err.contains("set both or neither"), "{err}");
        let err = with(none, none, true).validate().unwrap_err();
        assert!(err.starts_with("router.require_tls needs"), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = with(&missing, &key, false).validate().unwrap_err();
        assert!(err.contains("missing.pem"), "{err}");
        // A key that is not the certificate's.
        let other = dir.path().join("other.pem");
        let stranger = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&other, stranger.serialize_pem()).unwrap();
        assert!(with(&cert, &other, false).validate().is_err());
    }

    #[test]
    fn users_resolve_from_inline_and_file_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let users = Users::resolve(&[
            UserConfig {
                name: "a".into(),
                password: "inline".into(),
                ..UserConfig::default()
            },
            UserConfig {
                name: "b".into(),
                password_file: file.clone(),
                ..UserConfig::default()
            },
        ])
        .unwrap();
        assert_eq!(users.get("a"), Some(&auth::stored_hash("inline")));
        assert_eq!(users.get("b"), Some(&auth::stored_hash("from-file")));
        assert_eq!(users.get("c"), None);

        let both = UserConfig {
            name: "c".into(),
            password: "x".into(),
            password_file: file,
        };
        assert!(Users::resolve(&[both]).is_err());
    }
}
