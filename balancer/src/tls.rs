//! HTTPS: the certificate the balancer presents, and the rustls configuration around it.
//!
//! With `https.cert` and `https.key` set, those PEM files are used. Without them, the first
//! start makes a local certificate authority and a certificate for `https.names` signed by it,
//! in `https.generated_dir`, and later starts reuse them. The CA certificate (`ca.pem` there)
//! is what `curl --cacert` or a browser is told to trust, so it is made to be safe to trust:
//! valid 10 years at most, and name-constrained to [`CA_PERMITTED_NAMES`] and their
//! subdomains (no IP address at all), so its key cannot sign a certificate another site's
//! name would be accepted with; that key (`ca-key.pem`, mode 0600) is readable by the
//! balancers' user only. The certificate is valid 397 days at most (what browsers accept),
//! with the key usages of its key type. A start issues a new certificate from the same CA
//! when the one there does not cover every `https.names` (a name was added) or has fewer
//! than 30 days left, so whoever trusts the CA keeps trusting the balancers; a CA that breaks
//! these rules (one made by an older version: 1975 to 4096, unconstrained) or expires within
//! 30 days is replaced, with a warning. Two balancers sharing the folder (lb-1 and lb-2)
//! share one CA and certificate: the first to start makes or renews them, under a lock file,
//! and the other waits for it and checks again.

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

/// The names the local CA may sign a certificate for: these and their subdomains.
pub const CA_PERMITTED_NAMES: [&str; 2] = ["foobar.com", "localhost"];
/// How long the local CA is valid.
const CA_LIFETIME: time::Duration = time::Duration::days(3650);
/// How long a certificate is valid: the most browsers accept (Apple: 398 days).
const LEAF_LIFETIME: time::Duration = time::Duration::days(397);
/// A certificate (or the CA) with less left than this is issued again at start.
const RENEW_BEFORE: time::Duration = time::Duration::days(30);
/// Validity starts this long before the moment of issue, for clocks a little behind.
const BACKDATE: time::Duration = time::Duration::hours(1);

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
    let ready = || {
        let now = time::OffsetDateTime::now_utc();
        key.exists()
            && covers(&cert, names)
            && expires(&cert).is_some_and(|end| end - now >= RENEW_BEFORE)
            && ca_fits(&dir.join(CA_FILE), now)
    };
    if ready() {
        return Ok((cert, key));
    }
    if let Some(name) = names.iter().find(|name| !permitted(name)) {
        anyhow::bail!(
            "https.names: the local CA signs only {} and their subdomains, not {name:?}; give \
             https.cert and https.key for it",
            CA_PERMITTED_NAMES.join(", ")
        );
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

/// Whether the local CA may sign `name`: one of [`CA_PERMITTED_NAMES`] or a subdomain of one
/// (the name constraint's rule, RFC 5280 section 4.2.1.10), compared without case.
fn permitted(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    CA_PERMITTED_NAMES.iter().any(|base| {
        name == *base
            || name
                .strip_suffix(base)
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1)
    })
}

/// When the certificate (the first of the PEM file `path`) expires; None if unreadable.
fn expires(path: &Path) -> Option<time::OffsetDateTime> {
    let der = CertificateDer::from_pem_file(path).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    time::OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp()).ok()
}

/// Whether the CA in `path` is one this version makes: valid at most [`CA_LIFETIME`], with
/// at least [`RENEW_BEFORE`] left, and constrained to exactly [`CA_PERMITTED_NAMES`] with
/// every IP address excluded.
fn ca_fits(path: &Path, now: time::OffsetDateTime) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok(der) = CertificateDer::from_pem_file(path) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let validity = cert.validity();
    let (start, end) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if end - start > CA_LIFETIME.whole_seconds()
        || end - now.unix_timestamp() < RENEW_BEFORE.whole_seconds()
    {
        return false;
    }
    let Ok(Some(constraints)) = cert.name_constraints() else {
        return false;
    };
    let mut permitted: Vec<&str> = constraints
        .value
        .permitted_subtrees
        .iter()
        .flatten()
        .filter_map(|subtree| match subtree.base {
            GeneralName::DNSName(name) => Some(name),
            _ => None,
        })
        .collect();
    permitted.sort_unstable();
    let mut wanted = CA_PERMITTED_NAMES;
    wanted.sort_unstable();
    let excluded = excluded_addresses(constraints.value);
    permitted == wanted && excluded.contains(&&[0u8; 8][..]) && excluded.contains(&&[0u8; 32][..])
}

/// The address ranges a CA's name constraints exclude (`address ++ mask` bytes: 8 for IPv4,
/// 32 for IPv6; all zeros is every address).
fn excluded_addresses<'a>(
    constraints: &'a x509_parser::extensions::NameConstraints<'a>,
) -> Vec<&'a [u8]> {
    constraints
        .excluded_subtrees
        .iter()
        .flatten()
        .filter_map(|subtree| match subtree.base {
            x509_parser::extensions::GeneralName::IPAddress(bytes) => Some(bytes),
            _ => None,
        })
        .collect()
}

/// The local CA's settings, valid from `now` (less [`BACKDATE`]) for [`CA_LIFETIME`]. The
/// name is the same every time: it is what a certificate names as its issuer.
fn ca_params(now: time::OffsetDateTime) -> anyhow::Result<rcgen::CertificateParams> {
    use rcgen::{
        BasicConstraints, CertificateParams, CidrSubnet, DnType, GeneralSubtree, IsCa,
        KeyUsagePurpose, NameConstraints,
    };
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
    ca_params.not_before = now - BACKDATE;
    ca_params.not_after = ca_params.not_before + CA_LIFETIME;
    // Permitted DNS names constrain DNS names only; IP addresses are excluded outright, so
    // the CA can sign no certificate for an address either.
    ca_params.name_constraints = Some(NameConstraints {
        permitted_subtrees: CA_PERMITTED_NAMES
            .iter()
            .map(|name| GeneralSubtree::DnsName((*name).to_owned()))
            .collect(),
        excluded_subtrees: vec![
            GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
            GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
        ],
    });
    Ok(ca_params)
}

/// The key usages of a server certificate whose key is of `algorithm`: a signature only
/// (ECDSA, Ed25519: TLS 1.2's ECDHE and TLS 1.3 sign), or also key encipherment for RSA
/// (TLS 1.2's RSA key exchange encrypts to the key).
fn leaf_key_usages(algorithm: &rcgen::SignatureAlgorithm) -> Vec<rcgen::KeyUsagePurpose> {
    use rcgen::KeyUsagePurpose::{DigitalSignature, KeyEncipherment};
    let rsa = [
        &rcgen::PKCS_RSA_SHA256,
        &rcgen::PKCS_RSA_SHA384,
        &rcgen::PKCS_RSA_SHA512,
    ];
    if rsa.contains(&algorithm) {
        vec![DigitalSignature, KeyEncipherment]
    } else {
        vec![DigitalSignature]
    }
}

/// A certificate for `names` signed by the CA in `dir`, which is made first if it is not
/// there or does not fit [`ca_fits`].
fn issue(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
    let now = time::OffsetDateTime::now_utc();
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    };
    let ca_file = dir.join(CA_FILE);
    let kept = ca_file.exists() && dir.join(CA_KEY_FILE).exists() && ca_fits(&ca_file, now);
    if !kept && ca_file.exists() {
        tracing::warn!(
            ca = %ca_file.display(),
            "replacing the local CA there: it is valid longer than 10 years, not constrained \
             to {}, or expires within 30 days; trust the new one and remove the old (docs/operations.md, HTTPS and the local CA)",
            CA_PERMITTED_NAMES.join(", ")
        );
    }
    let (ca_key, ca_pem) = if kept {
        let key = KeyPair::from_pem(&read(CA_KEY_FILE)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(CA_KEY_FILE).display()))?;
        (key, read(CA_FILE)?)
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params(now)?.self_signed(&key)?;
        write_atomically(&dir.join(CA_KEY_FILE), &key.serialize_pem(), 0o600)?;
        write_atomically(&ca_file, &cert.pem(), 0o644)?;
        (key, cert.pem())
    };
    let ca_end = expires(&ca_file)
        .ok_or_else(|| anyhow::anyhow!("{}: not a readable certificate", ca_file.display()))?;
    let issuer = Issuer::new(ca_params(now)?, &ca_key);

    let mut leaf_params = CertificateParams::new(names.to_vec())?;
    leaf_params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("localhost", String::as_str),
    );
    let leaf_key = KeyPair::generate()?;
    leaf_params.key_usages = leaf_key_usages(leaf_key.algorithm());
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.not_before = now - BACKDATE;
    // Never past the CA's own end.
    leaf_params.not_after = (leaf_params.not_before + LEAF_LIFETIME).min(ca_end);
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
    tracing::info!(
        ca = %ca_file.display(),
        until = %leaf_params.not_after.date(),
        "{what} for {}",
        names.join(", ")
    );
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

    /// A fresh folder for one test's generated files.
    fn test_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("foobar-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn der(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(path).unwrap()
    }

    const DAY: i64 = 86_400;

    #[test]
    fn the_generated_ca_is_short_lived_name_constrained_and_its_key_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = test_dir("ca");
        let config = HttpsConfig {
            generated_dir: dir.clone(),
            ..HttpsConfig::default()
        };
        server_config(&config).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let ca = der(&dir.join(CA_FILE));
        let (_, ca) = x509_parser::parse_x509_certificate(&ca).unwrap();
        let (start, end) = (
            ca.validity().not_before.timestamp(),
            ca.validity().not_after.timestamp(),
        );
        assert!(
            start <= now && now - start <= 2 * 3600,
            "not before {start}, now {now}"
        );
        assert!(
            end - start <= 3650 * DAY,
            "valid {} days",
            (end - start) / DAY
        );
        assert!(
            end - now >= 3649 * DAY,
            "valid {} more days",
            (end - now) / DAY
        );
        assert!(ca.is_ca());
        let usage = ca.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign() && usage.crl_sign());

        let constraints = ca.name_constraints().unwrap().unwrap();
        assert!(constraints.critical, "name constraints must be critical");
        let permitted: Vec<String> = constraints
            .value
            .permitted_subtrees
            .iter()
            .flatten()
            .map(|subtree| format!("{:?}", subtree.base))
            .collect();
        assert_eq!(
            permitted,
            [r#"DNSName("foobar.com")"#, r#"DNSName("localhost")"#],
            "permitted: foobar.com and its subdomains, localhost; nothing else"
        );
        let excluded = excluded_addresses(constraints.value);
        assert_eq!(
            excluded,
            [&[0u8; 8][..], &[0u8; 32][..]],
            "every IP excluded"
        );

        let mode = std::fs::metadata(dir.join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the CA key: its owner only");
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the certificate's key: its owner only");
        assert!(ca_fits(&dir.join(CA_FILE), time::OffsetDateTime::now_utc()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_certificate_is_valid_397_days_for_a_server_with_its_key_type_usages() {
        let dir = test_dir("leaf");
        let config = HttpsConfig {
            generated_dir: dir.clone(),
            names: vec!["www.foobar.com".into(), "localhost".into()],
            ..HttpsConfig::default()
        };
        server_config(&config).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let leaf = der(&dir.join(CERT_FILE));
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        let (start, end) = (
            leaf.validity().not_before.timestamp(),
            leaf.validity().not_after.timestamp(),
        );
        assert!(start <= now && end - start <= 397 * DAY, "{start}..{end}");
        assert!(
            end - now >= 396 * DAY,
            "valid {} more days",
            (end - now) / DAY
        );
        assert!(!leaf.is_ca());
        let usage = leaf.key_usage().unwrap().unwrap().value;
        assert!(
            usage.digital_signature() && !usage.key_encipherment(),
            "an ECDSA key signs, it encrypts nothing: {usage:?}"
        );
        assert_eq!(usage.flags.count_ones(), 1, "{usage:?}");
        let extended = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(extended.server_auth && !extended.client_auth && !extended.any);
        let names: Vec<String> = leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|name| format!("{name:?}"))
            .collect();
        assert_eq!(
            names,
            [r#"DNSName("www.foobar.com")"#, r#"DNSName("localhost")"#]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn key_usages_follow_the_key_type() {
        use rcgen::KeyUsagePurpose::{DigitalSignature, KeyEncipherment};
        assert_eq!(
            leaf_key_usages(&rcgen::PKCS_RSA_SHA256),
            [DigitalSignature, KeyEncipherment]
        );
        for ecdsa_or_eddsa in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            assert_eq!(leaf_key_usages(ecdsa_or_eddsa), [DigitalSignature]);
        }
    }

    /// A verifier that trusts only the CA in `dir`.
    fn verifier(dir: &Path) -> Arc<rustls::client::WebPkiServerVerifier> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(&dir.join(CA_FILE))).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap()
    }

    /// A certificate for `names` signed with the CA key in `dir`, valid until `days` from now.
    fn signed_by_the_ca(dir: &Path, names: &[&str], days: i64) -> rcgen::Certificate {
        let ca_key =
            rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.join(CA_KEY_FILE)).unwrap())
                .unwrap();
        let now = time::OffsetDateTime::now_utc();
        let issuer = rcgen::Issuer::new(ca_params(now).unwrap(), ca_key);
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = now - time::Duration::days(300);
        params.not_after = now + time::Duration::days(days);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        write_atomically(&dir.join(KEY_FILE), &key.serialize_pem(), 0o600).unwrap();
        cert
    }

    #[test]
    fn the_ca_key_cannot_sign_another_sites_name() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        let dir = test_dir("constrained");
        server_config(&HttpsConfig {
            generated_dir: dir.clone(),
            ..HttpsConfig::default()
        })
        .unwrap();
        let verifier = verifier(&dir);
        for (name, accepted) in [
            ("status.foobar.com", true),
            ("a.b.foobar.com", true),
            ("localhost", true),
            ("www.example.com", false),
            ("foobar.com.evil.example", false),
            ("notfoobar.com", false),
            ("127.0.0.1", false),
        ] {
            let cert = signed_by_the_ca(&dir, &[name], 30);
            let server = ServerName::try_from(name).unwrap();
            let verdict =
                verifier.verify_server_cert(cert.der(), &[], &server, &[], UnixTime::now());
            assert_eq!(verdict.is_ok(), accepted, "{name}: {verdict:?}");
            assert_eq!(permitted(name), accepted, "{name}");
        }
        let refused = server_config(&HttpsConfig {
            generated_dir: dir.clone(),
            names: vec!["www.foobar.com".into(), "www.example.com".into()],
            ..HttpsConfig::default()
        })
        .expect_err("a name the CA may not sign is refused");
        assert!(refused.to_string().contains("www.example.com"), "{refused}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_certificate_with_less_than_30_days_left_is_issued_again_from_the_same_ca() {
        let dir = test_dir("renew");
        let config = HttpsConfig {
            generated_dir: dir.clone(),
            ..HttpsConfig::default()
        };
        server_config(&config).unwrap();
        let ca = std::fs::read_to_string(dir.join(CA_FILE)).unwrap();
        let names: Vec<&str> = config.names.iter().map(String::as_str).collect();

        // 31 days left: kept.
        let kept = signed_by_the_ca(&dir, &names, 31);
        write_atomically(&dir.join(CERT_FILE), &format!("{}{ca}", kept.pem()), 0o644).unwrap();
        server_config(&config).unwrap();
        assert!(
            std::fs::read_to_string(dir.join(CERT_FILE))
                .unwrap()
                .starts_with(&kept.pem()),
            "31 days left: not issued again"
        );

        // 29 days left: issued again, from the same CA, for 397 days.
        let old = signed_by_the_ca(&dir, &names, 29);
        write_atomically(&dir.join(CERT_FILE), &format!("{}{ca}", old.pem()), 0o644).unwrap();
        server_config(&config).unwrap();
        let chain = std::fs::read_to_string(dir.join(CERT_FILE)).unwrap();
        assert!(!chain.starts_with(&old.pem()), "issued again");
        assert_eq!(
            std::fs::read_to_string(dir.join(CA_FILE)).unwrap(),
            ca,
            "same CA"
        );
        let left = expires(&dir.join(CERT_FILE)).unwrap() - time::OffsetDateTime::now_utc();
        assert!(left.whole_days() >= 396, "{left}");
        verify_every_name(&dir, &config.names);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_ca_of_the_old_kind_is_replaced() {
        let dir = test_dir("old-ca");
        std::fs::create_dir_all(&dir).unwrap();
        // What earlier versions made: rcgen's default validity (1975 to 4096), no constraints.
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = ca_params(time::OffsetDateTime::now_utc()).unwrap();
        let defaults = rcgen::CertificateParams::default();
        (params.not_before, params.not_after) = (defaults.not_before, defaults.not_after);
        params.name_constraints = None;
        let old = params.self_signed(&key).unwrap();
        write_atomically(&dir.join(CA_KEY_FILE), &key.serialize_pem(), 0o600).unwrap();
        write_atomically(&dir.join(CA_FILE), &old.pem(), 0o644).unwrap();
        assert!(!ca_fits(
            &dir.join(CA_FILE),
            time::OffsetDateTime::now_utc()
        ));

        let config = HttpsConfig {
            generated_dir: dir.clone(),
            ..HttpsConfig::default()
        };
        server_config(&config).unwrap();
        assert_ne!(
            std::fs::read_to_string(dir.join(CA_FILE)).unwrap(),
            old.pem()
        );
        assert!(ca_fits(&dir.join(CA_FILE), time::OffsetDateTime::now_utc()));
        verify_every_name(&dir, &config.names);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A client that trusts only the CA in `dir` accepts the chain there for every name.
    fn verify_every_name(dir: &Path, names: &[String]) {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        let chain: Vec<_> = CertificateDer::pem_file_iter(dir.join(CERT_FILE))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let verifier = verifier(dir);
        for name in names {
            let name = ServerName::try_from(name.as_str()).unwrap();
            verifier
                .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
                .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
    }
}
