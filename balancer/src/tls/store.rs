//! The folder of generated files (`https.generated_dir`): the local CA (`ca.pem`, its key
//! `ca-key.pem`, mode 0600, readable by the balancers' user only) and the certificate chain
//! and key the balancer presents. A start reuses them while they fit `ca`'s rules; it issues
//! a new certificate from the same CA when the one there does not cover every `https.names`
//! (a name was added) or has fewer than 30 days left, so whoever trusts the CA keeps trusting
//! the balancers; a CA that breaks the rules (one made by an older version: 1975 to 4096,
//! unconstrained) or expires within 30 days is replaced, with a warning. Two balancers
//! sharing the folder (lb-1 and lb-2) share one CA and certificate: the first to start makes
//! or renews them, under a lock file, and the other waits for it and checks again. Every file
//! is written under a temporary name and renamed, so a reader never sees half of one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ca::{
    BACKDATE, CA_PERMITTED_NAMES, LEAF_LIFETIME, RENEW_BEFORE, ca_fits, ca_params, covers, expires,
    leaf_key_usages, permitted,
};

/// The files of a generated certificate, in `generated_dir`.
pub const CA_FILE: &str = "ca.pem";
pub(super) const CA_KEY_FILE: &str = "ca-key.pem";
pub(super) const CERT_FILE: &str = "cert.pem";
pub(super) const KEY_FILE: &str = "key.pem";
const LOCK_FILE: &str = ".generating";

/// The generated certificate and key files, made first if they are not there yet or do not
/// cover every one of `names`.
pub(super) fn ensure_generated(dir: &Path, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
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
    use super::super::ca::excluded_addresses;
    use super::*;
    use crate::config::HttpsConfig;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use std::sync::Arc;

    /// What a start does with `config`'s generated folder.
    fn generate(config: &HttpsConfig) -> anyhow::Result<(PathBuf, PathBuf)> {
        ensure_generated(&config.generated_dir, &config.names)
    }

    #[test]
    fn a_name_added_to_the_config_gets_a_new_certificate_from_the_same_ca() {
        let dir = std::env::temp_dir().join(format!("foobar-tls-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = HttpsConfig {
            generated_dir: dir.clone(),
            ..HttpsConfig::default()
        };
        generate(&config).unwrap();
        let ca = std::fs::read_to_string(dir.join(CA_FILE)).unwrap();
        assert!(!covers(
            &dir.join(CERT_FILE),
            &["status.foobar.com".to_owned()]
        ));

        config.names.push("status.foobar.com".into());
        generate(&config).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(CA_FILE)).unwrap(),
            ca,
            "the CA is kept"
        );
        assert!(covers(&dir.join(CERT_FILE), &config.names));

        // A client that trusts only the CA accepts the new certificate for every name.
        verify_every_name(&dir, &config.names);
        let leaf = std::fs::read_to_string(dir.join(CERT_FILE)).unwrap();
        generate(&config).unwrap();
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
        generate(&config).unwrap();
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
        generate(&config).unwrap();
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
        generate(&HttpsConfig {
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
        let refused = generate(&HttpsConfig {
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
        generate(&config).unwrap();
        let ca = std::fs::read_to_string(dir.join(CA_FILE)).unwrap();
        let names: Vec<&str> = config.names.iter().map(String::as_str).collect();

        // 31 days left: kept.
        let kept = signed_by_the_ca(&dir, &names, 31);
        write_atomically(&dir.join(CERT_FILE), &format!("{}{ca}", kept.pem()), 0o644).unwrap();
        generate(&config).unwrap();
        assert!(
            std::fs::read_to_string(dir.join(CERT_FILE))
                .unwrap()
                .starts_with(&kept.pem()),
            "31 days left: not issued again"
        );

        // 29 days left: issued again, from the same CA, for 397 days.
        let old = signed_by_the_ca(&dir, &names, 29);
        write_atomically(&dir.join(CERT_FILE), &format!("{}{ca}", old.pem()), 0o644).unwrap();
        generate(&config).unwrap();
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
        generate(&config).unwrap();
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
