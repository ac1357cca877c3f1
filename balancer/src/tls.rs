//! HTTPS: the certificate the balancer presents, and the rustls configuration around it.
//!
//! With `https.cert` and `https.key` set, those PEM files are used. Without them, the first
//! start makes a local certificate authority and a certificate for `https.names` signed by it,
//! in `https.generated_dir`, and later starts reuse them. A start whose `https.names` the
//! certificate there does not cover (a name was added) issues a new certificate from the same
//! CA, so whoever trusts the CA keeps trusting the balancers. The CA certificate (`ca.pem`
//! there) is what `curl --cacert` or a browser is told to trust. Two balancers sharing the
//! folder (lb-1 and lb-2) share one CA and certificate: the first to start makes or renews
//! them, under a lock file, and the other waits for it and checks again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::HttpsConfig;

/// The files of a generated certificate, in `generated_dir`.
pub const CA_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";
const LOCK_FILE: &str = ".generating";

/// The rustls server configuration: TLS 1.3 and 1.2 only (`foobar_service::tls`), HTTP/2 and
/// HTTP/1.1 by ALPN.
pub fn server_config(config: &HttpsConfig) -> anyhow::Result<Arc<ServerConfig>> {
    let (cert_file, key_file) = if config.cert.as_os_str().is_empty() {
        ensure_generated(&config.generated_dir, &config.names)?
    } else {
        (config.cert.clone(), config.key.clone())
    };
    let mut server = foobar_service::tls::server_config(&cert_file, &key_file)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// The generated certificate and key files, made first if they are not there yet or do not
/// cover every one of `names`.
fn ensure_generated(dir: &Path, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    let ready = || key.exists() && covers(&cert, names);
    if ready() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let lock = dir.join(LOCK_FILE);
    for _ in 0..200 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(_) => {
                // Checked again under the lock: another balancer may have just finished.
                let made = if ready() { Ok(()) } else { issue(dir, names) };
                let _ = std::fs::remove_file(&lock);
                made?;
                return Ok((cert, key));
            }
            // Another balancer is making them: wait for it, then look again.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::thread::sleep(Duration::from_millis(100));
                if !lock.exists() && ready() {
                    return Ok((cert, key));
                }
            }
            Err(e) => anyhow::bail!("{}: {e}", lock.display()),
        }
    }
    anyhow::bail!(
        "{} exists but no certificate for {} appeared in 20 s; remove it if no balancer is starting",
        lock.display(),
        names.join(", ")
    )
}

/// Whether the certificate (the first of the chain in `cert`) is valid for each of `names`
/// that is a server name; false when it is missing or unreadable.
fn covers(cert: &Path, names: &[String]) -> bool {
    use rustls::pki_types::ServerName;
    let Ok(der) = CertificateDer::from_pem_file(cert) else {
        return false;
    };
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(&der) else {
        return false;
    };
    names
        .iter()
        .filter_map(|name| ServerName::try_from(name.as_str()).ok())
        .all(|name| rustls::client::verify_server_name(&parsed, &name).is_ok())
}

/// The local CA's settings; the same every time, so a certificate issued by a later start
/// names the CA made by the first.
fn ca_params() -> anyhow::Result<rcgen::CertificateParams> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "foobar local CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "foobar stack (local use only)");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(ca_params)
}

/// A certificate for `names` signed by the CA in `dir`, which is made first if it is not
/// there.
fn issue(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
    };
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    };
    let kept = dir.join(CA_FILE).exists() && dir.join(CA_KEY_FILE).exists();
    let (ca_key, ca_pem) = if kept {
        let key = KeyPair::from_pem(&read(CA_KEY_FILE)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(CA_KEY_FILE).display()))?;
        (key, read(CA_FILE)?)
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write_atomically(&dir.join(CA_KEY_FILE), &key.serialize_pem(), 0o600)?;
        write_atomically(&dir.join(CA_FILE), &cert.pem(), 0o644)?;
        (key, cert.pem())
    };
    let issuer = Issuer::new(ca_params()?, &ca_key);

    let mut leaf_params = CertificateParams::new(names.to_vec())?;
    leaf_params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("localhost", String::as_str),
    );
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

    // The key before the certificate: a reader that finds the new certificate finds its key.
    write_atomically(&dir.join(KEY_FILE), &leaf_key.serialize_pem(), 0o600)?;
    // The chain a client needs: the certificate, then the CA that signed it.
    write_atomically(
        &dir.join(CERT_FILE),
        &format!("{}{ca_pem}", leaf_cert.pem()),
        0o644,
    )?;
    let what = if kept {
        "issued a certificate from the existing local CA"
    } else {
        "generated a local CA and a certificate"
    };
    tracing::info!(ca = %dir.join(CA_FILE).display(), "{what} for {}", names.join(", "));
    Ok(())
}

/// Written under a temporary name and renamed, so a reader never sees half a file.
fn write_atomically(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents)
        .map_err(|e| anyhow::anyhow!("{}: {e}", temporary.display()))?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&temporary, path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(())
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
        let chain = std::fs::read_to_string(dir.join(CERT_FILE)).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_name_added_to_the_config_gets_a_new_certificate_from_the_same_ca() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        let dir = std::env::temp_dir().join(format!("foobar-tls-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = HttpsConfig {
            generated_dir: dir.clone(),
            ..HttpsConfig::default()
        };
        server_config(&config).unwrap();
        let ca = std::fs::read_to_string(dir.join(CA_FILE)).unwrap();
        assert!(!covers(
            &dir.join(CERT_FILE),
            &["status.foobar.com".to_owned()]
        ));

        config.names.push("status.foobar.com".into());
        server_config(&config).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(CA_FILE)).unwrap(),
            ca,
            "the CA is kept"
        );
        assert!(covers(&dir.join(CERT_FILE), &config.names));

        // A client that trusts only the CA accepts the new certificate for every name.
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(dir.join(CA_FILE)).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let chain: Vec<_> = CertificateDer::pem_file_iter(dir.join(CERT_FILE))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for name in &config.names {
            let name = ServerName::try_from(name.as_str()).unwrap();
            verifier
                .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
                .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
        let leaf = std::fs::read_to_string(dir.join(CERT_FILE)).unwrap();
        server_config(&config).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(CERT_FILE)).unwrap(),
            leaf,
            "covered now: not issued again"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
