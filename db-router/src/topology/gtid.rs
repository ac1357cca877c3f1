//! GTID positions as sets: the highest sequence number per replication domain, merged from
//! many positions, and what a node lacks of them.
//!
//! MariaDB numbers transactions `domain-server-sequence`; within a domain the sequence only
//! grows along one history (`gtid_strict_mode`), so a node that applied `0-2-42` holds every
//! `0-*-n` with `n <= 42` of that history. A position (`@@gtid_binlog_pos`, a tracked
//! `last_gtid`) lists one GTID per domain.

use std::collections::BTreeMap;
use std::fmt;

use super::node::parse_gtid_pos;

/// Per domain, the highest GTID seen: `(server id, sequence)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidSet(BTreeMap<u32, (u32, u64)>);

impl GtidSet {
    /// The set of one position (`0-1-42,1-2-7`); unparsable parts are left out.
    pub fn parse(pos: &str) -> Self {
        Self(parse_gtid_pos(pos))
    }

    /// Adds a position: per domain, the higher sequence wins.
    pub fn insert_pos(&mut self, pos: &str) {
        for (domain, (server, seq)) in parse_gtid_pos(pos) {
            self.insert(domain, server, seq);
        }
    }

    /// Adds every domain of `other`.
    pub fn merge(&mut self, other: &GtidSet) {
        for (&domain, &(server, seq)) in &other.0 {
            self.insert(domain, server, seq);
        }
    }

    fn insert(&mut self, domain: u32, server: u32, seq: u64) {
        let entry = self.0.entry(domain).or_insert((server, seq));
        if seq > entry.1 {
            *entry = (server, seq);
        }
    }

    /// The GTIDs of this set that a node at position `have` has not got: per domain, a
    /// higher sequence than the node's, or a domain it never saw.
    pub fn missing_from(&self, have: &GtidSet) -> Vec<String> {
        self.0
            .iter()
            .filter(|(domain, (_, seq))| have.0.get(domain).is_none_or(|(_, h)| h < seq))
            .map(|(domain, (server, seq))| format!("{domain}-{server}-{seq}"))
            .collect()
    }

    /// This set less the domains `given_up` reaches: what an operator who gave those
    /// transactions up (`POST /promote?give_up=`) still requires.
    pub fn without(&self, given_up: &GtidSet) -> GtidSet {
        GtidSet(
            self.0
                .iter()
                .filter(|(domain, (_, seq))| given_up.0.get(domain).is_none_or(|(_, g)| g < seq))
                .map(|(domain, at)| (*domain, *at))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (domain, (server, seq))) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{domain}-{server}-{seq}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_merge_to_the_highest_per_domain() {
        let mut set = GtidSet::parse("0-1-42");
        set.insert_pos("0-1-40,1-3-7");
        set.insert_pos("0-2-43");
        assert_eq!(set.to_string(), "0-2-43,1-3-7");
        let mut other = GtidSet::parse("1-3-9");
        other.merge(&set);
        assert_eq!(other.to_string(), "0-2-43,1-3-9");
        assert!(GtidSet::parse("").is_empty());
    }

    #[test]
    fn missing_is_what_the_node_has_not_reached() {
        let need = GtidSet::parse("0-1-42,1-3-7");
        assert!(
            need.missing_from(&GtidSet::parse("0-1-42,1-3-7"))
                .is_empty()
        );
        assert!(
            need.missing_from(&GtidSet::parse("0-2-50,1-3-8"))
                .is_empty()
        );
        assert_eq!(
            need.missing_from(&GtidSet::parse("0-1-41,1-3-7")),
            ["0-1-42"]
        );
        assert_eq!(
            need.missing_from(&GtidSet::parse("0-1-42")),
            ["1-3-7"],
            "a domain the node never saw"
        );
        assert_eq!(need.missing_from(&GtidSet::default()).len(), 2);
    }

    #[test]
    fn giving_up_a_domain_needs_its_highest_gtid_named() {
        let need = GtidSet::parse("0-1-42,1-3-7");
        assert_eq!(need.without(&GtidSet::parse("0-1-42")).to_string(), "1-3-7");
        assert_eq!(
            need.without(&GtidSet::parse("0-1-41")).to_string(),
            "0-1-42,1-3-7",
            "naming less than the missing writes gives up nothing"
        );
        assert!(need.without(&GtidSet::parse("0-1-50,1-3-7")).is_empty());
    }
}
