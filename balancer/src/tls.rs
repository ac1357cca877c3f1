//! HTTPS: the certificate the balancer presents, and the rustls configuration around it.
//!
//! With `https.cert` and `https.key` set, those PEM files are used. Without them, the first
//! start makes a local certificate authority and a certificate for `https.names` signed by it,
//! in `https.generated_dir`, and later starts reuse them (`store`: the folder, its files and
//! the lock two balancers share it under). The CA certificate (`ca.pem` there) is what `curl
//! --cacert` or a browser is told to trust, so it is made to be safe to trust (`ca`: the
//! rules the CA and the certificate it signs keep): valid 10 years at most, and
//! name-constrained to [`CA_PERMITTED_NAMES`] and their subdomains (no IP address at all), so
//! its key cannot sign a certificate another site's name would be accepted with.
//!
//! Layers: this module <- `store` <- `ca`; neither imports this one.

use std::sync::Arc;

use rustls::ServerConfig;

use crate::config::HttpsConfig;

mod ca;
mod store;

pub use ca::CA_PERMITTED_NAMES;
pub use store::CA_FILE;

/// The rustls server configuration: TLS 1.3 and 1.2 only (`foobar_service::tls`), HTTP/2 and
/// HTTP/1.1 by ALPN.
pub fn server_config(config: &HttpsConfig) -> anyhow::Result<Arc<ServerConfig>> {
    let (cert_file, key_file) = if config.cert.as_os_str().is_empty() {
        store::ensure_generated(&config.generated_dir, &config.names)?
    } else {
        (config.cert.clone(), config.key.clone())
    };
    let mut server = foobar_service::tls::server_config(&cert_file, &key_file)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_is_made_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("foobar-tls-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = HttpsConfig {
            generated_dir: dir.clone(),
            ..HttpsConfig::default()
        };
        server_config(&config).unwrap();
        let ca = std::fs::read_to_string(dir.join(CA_FILE)).unwrap();
        server_config(&config).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(CA_FILE)).unwrap(),
            ca,
            "reused, not remade"
        );
        let chain = std::fs::read_to_string(dir.join(store::CERT_FILE)).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
