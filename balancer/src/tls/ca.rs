//! What the local CA and the certificates it signs are: the CA's settings (10 years at most,
//! name-constrained to [`CA_PERMITTED_NAMES`] and their subdomains, every IP address
//! excluded), a certificate's key usages by key type, and the checks a start makes of the
//! certificates it finds (does the CA fit these rules, does a certificate cover every name,
//! when does it expire). It reads certificates and writes nothing: `store` keeps the files.

use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The names the local CA may sign a certificate for: these and their subdomains.
pub const CA_PERMITTED_NAMES: [&str; 2] = ["foobar.com", "localhost"];
/// How long the local CA is valid.
pub(super) const CA_LIFETIME: time::Duration = time::Duration::days(3650);
/// How long a certificate is valid: the most browsers accept (Apple: 398 days).
pub(super) const LEAF_LIFETIME: time::Duration = time::Duration::days(397);
/// A certificate (or the CA) with less left than this is issued again at start.
pub(super) const RENEW_BEFORE: time::Duration = time::Duration::days(30);
/// Validity starts this long before the moment of issue, for clocks a little behind.
pub(super) const BACKDATE: time::Duration = time::Duration::hours(1);

/// Whether the certificate (the first of the chain in `cert`) is valid for each of `names`
/// that is a server name; false when it is missing or unreadable.
pub(super) fn covers(cert: &Path, names: &[String]) -> bool {
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
pub(super) fn permitted(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    CA_PERMITTED_NAMES.iter().any(|base| {
        name == *base
            || name
                .strip_suffix(base)
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1)
    })
}

/// When the certificate (the first of the PEM file `path`) expires; None if unreadable.
pub(super) fn expires(path: &Path) -> Option<time::OffsetDateTime> {
    let der = CertificateDer::from_pem_file(path).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    time::OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp()).ok()
}

/// Whether the CA in `path` is one this version makes: valid at most [`CA_LIFETIME`], with
/// at least [`RENEW_BEFORE`] left, and constrained to exactly [`CA_PERMITTED_NAMES`] with
/// every IP address excluded.
pub(super) fn ca_fits(path: &Path, now: time::OffsetDateTime) -> bool {
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
pub(super) fn excluded_addresses<'a>(
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
pub(super) fn ca_params(now: time::OffsetDateTime) -> anyhow::Result<rcgen::CertificateParams> {
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
pub(super) fn leaf_key_usages(
    algorithm: &rcgen::SignatureAlgorithm,
) -> Vec<rcgen::KeyUsagePurpose> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
