//! Zone files: RFC 1035 text, parsed by hickory, checked, and kept as record sets.
//!
//! A broken file is refused with its path, the line of the problem and what is wrong; the
//! caller keeps serving the zones it had.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hickory_proto::rr::{Name, RecordSet, RecordType, RrKey};
use hickory_proto::serialize::txt::Parser;

use crate::config::ZoneConfig;

/// One zone as loaded from its file.
#[derive(Debug, Clone)]
pub struct Zone {
    pub origin: Name,
    pub records: BTreeMap<RrKey, RecordSet>,
    pub file: PathBuf,
}

/// Why a zone could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
}

/// Loads every configured zone; the first broken one fails the whole set, so a reload is
/// all or nothing.
pub fn load_all(configs: &[ZoneConfig]) -> Result<Vec<Zone>, ZoneError> {
    configs.iter().map(load).collect()
}

pub fn load(config: &ZoneConfig) -> Result<Zone, ZoneError> {
    let file = config.file.clone();
    let text = std::fs::read_to_string(&file).map_err(|source| ZoneError::Read {
        file: file.clone(),
        source,
    })?;
    let origin = Name::from_ascii(&config.origin)
        .map(|mut n| {
            n.set_fqdn(true);
            n
        })
        .map_err(|e| ZoneError::Invalid {
            file: file.clone(),
            message: format!("origin: {e}"),
        })?;
    parse(&text, &file, origin)
}

/// Parses a zone file's text and checks what a resolver relies on: a SOA and NS at the apex,
/// every name inside the zone, no CNAME beside other data.
pub fn parse(text: &str, file: &Path, origin: Name) -> Result<Zone, ZoneError> {
    let run = |text: &str| Parser::new(text, Some(file.to_owned()), Some(origin.clone())).parse();
    let (parsed_origin, records) = match run(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            let message = e.to_string();
            let line = failing_line(text, &message, |prefix| {
                run(prefix).err().map(|e| e.to_string())
            });
            return Err(ZoneError::Syntax {
                file: file.to_owned(),
                line,
                message,
            });
        }
    };
    let invalid = |message: String| ZoneError::Invalid {
        file: file.to_owned(),
        message,
    };
    if parsed_origin != origin {
        return Err(invalid(format!(
            "$ORIGIN {parsed_origin} is not the configured {origin}"
        )));
    }
    for rtype in [RecordType::SOA, RecordType::NS] {
        if !records.contains_key(&RrKey::new(origin.clone().into(), rtype)) {
            return Err(invalid(format!("no {rtype} record at the apex {origin}")));
        }
    }
    for key in records.keys() {
        let name = Name::from(key.name.clone());
        if !origin.zone_of(&name) {
            return Err(invalid(format!("{name} is outside the zone {origin}")));
        }
        if key.record_type == RecordType::CNAME
            && records
                .keys()
                .any(|k| k.name == key.name && k.record_type != RecordType::CNAME)
        {
            return Err(invalid(format!(
                "{name} has a CNAME and other data (RFC 1034 3.6.2)"
            )));
        }
    }
    Ok(Zone {
        origin,
        records,
        file: file.to_owned(),
    })
}

/// The 1-based line where parsing first fails with `message`: the shortest prefix of the file,
/// in whole lines, that fails the same way. (hickory's parser reports no position.) A prefix
/// cut inside a parenthesised record fails differently, so it is not mistaken for the culprit.
fn failing_line(text: &str, message: &str, error_of: impl Fn(&str) -> Option<String>) -> usize {
    let ends: Vec<usize> = text
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .chain([text.len()])
        .collect();
    let fails_here = |lines: usize| error_of(&text[..ends[lines - 1]]).as_deref() == Some(message);
    // Binary search for the first prefix that fails the same way; prefixes only grow worse.
    let (mut low, mut high) = (1, ends.len());
    if !fails_here(high) {
        return high;
    }
    while low < high {
        let mid = (low + high) / 2;
        if fails_here(mid) {
            high = mid
        } else {
            low = mid + 1
        }
    }
    low
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Name {
        Name::from_ascii("example.org.").unwrap()
    }

    const GOOD: &str = "$ORIGIN example.org.\n$TTL 60\n\
        @ IN SOA ns1 host (\n 1 ; serial\n 3600 600 86400 60 )\n\
        @ IN NS ns1\nns1 IN A 192.0.2.1\nwww IN A 192.0.2.2\n";

    #[test]
    fn a_good_zone_loads() {
        let zone = parse(GOOD, Path::new("z.zone"), origin()).unwrap();
        assert_eq!(zone.records.len(), 4);
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let text = format!("{GOOD}mail IN A 192.0.2.300\nftp IN A 192.0.2.4\n");
        let err = parse(&text, Path::new("z.zone"), origin())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("z.zone:9: "), "{err}");
    }

    #[test]
    fn an_error_after_a_multiline_record_names_the_right_line() {
        let text = GOOD.replace("www IN A 192.0.2.2", "www IN BOGUS 192.0.2.2");
        let err = parse(&text, Path::new("z.zone"), origin())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("z.zone:8: "), "{err}");
    }

    #[test]
    fn a_zone_without_soa_or_ns_is_refused() {
        let err = parse(
            "$ORIGIN example.org.\nwww 60 IN A 192.0.2.2\n",
            Path::new("z"),
            origin(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no SOA record at the apex"), "{err}");
    }

    #[test]
    fn cname_beside_other_data_is_refused() {
        let text = format!("{GOOD}www IN CNAME ns1\n");
        let err = parse(&text, Path::new("z"), origin())
            .unwrap_err()
            .to_string();
        assert!(err.contains("CNAME and other data"), "{err}");
    }
}
