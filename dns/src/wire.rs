//! The query bytes the fast path reads itself, without building a full message.
//!
//! A query is answered from the answer cache when it is the ordinary kind: one question,
//! opcode QUERY, no answer or authority records, and at most an EDNS OPT record with no
//! options. For those, the cache key is the question (name lower-cased) plus what shapes the
//! answer (transport, EDNS buffer size, DO bit), and a cached answer is made the client's by
//! patching in its ID, its RD and CD flags, and its question exactly as sent (resolvers that
//! randomise the case of names check it). Everything else goes the general way, through
//! hickory's catalog.

/// Header flag bits (RFC 1035 4.1.1, RFC 4035 3.2.2).
const QR: u8 = 0x80;
const OPCODE_MASK: u8 = 0x78;
const RD: u8 = 0x01;
const CD: u8 = 0x10;
const TYPE_OPT: u16 = 41;
const DO_BIT: u32 = 0x8000;
pub const HEADER_LEN: usize = 12;
/// Longest key: a 255-byte name, type, class, transport, buffer size, DO.
pub const MAX_KEY_LEN: usize = 255 + 2 + 2 + 1 + 2 + 1;

/// What the first look at a packet decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Inspection {
    /// Not worth an answer: too short for a header, or a response rather than a query.
    Drop,
    /// A header, but nothing sensible after it: answer FORMERR.
    Malformed,
    /// A query the answer cache can serve; `key_len` bytes of the key buffer are its key.
    Cacheable(Query),
    /// A well-formed packet of another kind: the general path decides. The question's type,
    /// when there was one question to read.
    General(Option<u16>),
}

/// Where the parts of a cacheable query are, in the packet and in the key buffer.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Query {
    /// The end of the question section (it starts at [`HEADER_LEN`]).
    pub question_end: usize,
    pub key_len: usize,
    /// The client's UDP buffer, as the answer must respect it.
    pub udp_payload: u16,
    pub qtype: u16,
    /// Offset of the OPT record's CLASS field (its buffer size), to cap it in place.
    pub opt_class_at: Option<usize>,
}

/// Reads `packet`'s header and question; writes the cache key into `key`.
pub fn inspect(packet: &[u8], tcp: bool, key: &mut [u8; MAX_KEY_LEN]) -> Inspection {
    if packet.len() < HEADER_LEN || packet[2] & QR != 0 {
        return Inspection::Drop;
    }
    let count = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if packet[2] & OPCODE_MASK != 0 || qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return Inspection::General(None);
    }

    // The name: labels lower-cased into the key. Compression pointers never appear in a
    // query's only question, so one is taken as malformed.
    let mut at = HEADER_LEN;
    let mut key_len = 0;
    loop {
        let Some(&len) = packet.get(at) else {
            return Inspection::Malformed;
        };
        if len & 0xC0 != 0 {
            return Inspection::Malformed;
        }
        let label_end = at + 1 + usize::from(len);
        if label_end > packet.len() || key_len + 1 + usize::from(len) > 255 {
            return Inspection::Malformed;
        }
        key[key_len] = len;
        for (dst, src) in key[key_len + 1..]
            .iter_mut()
            .zip(&packet[at + 1..label_end])
        {
            *dst = src.to_ascii_lowercase();
        }
        key_len += 1 + usize::from(len);
        at = label_end;
        if len == 0 {
            break;
        }
    }
    let Some(type_class) = packet.get(at..at + 4) else {
        return Inspection::Malformed;
    };
    key[key_len..key_len + 4].copy_from_slice(type_class);
    key_len += 4;
    let qtype = u16::from_be_bytes([type_class[0], type_class[1]]);
    let question_end = at + 4;

    let (udp_payload, dnssec_ok, opt_class_at) = if ar == 0 {
        if question_end != packet.len() {
            return Inspection::Malformed;
        }
        (512, false, None)
    } else {
        // OPT: root name, TYPE 41, CLASS = buffer size, TTL = ext-rcode/version/flags, RDLEN.
        let Some(opt) = packet.get(question_end..question_end + 11) else {
            return Inspection::Malformed;
        };
        if opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != TYPE_OPT {
            return Inspection::General(Some(qtype));
        }
        let ttl = u32::from_be_bytes([opt[5], opt[6], opt[7], opt[8]]);
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        if question_end + 11 + rdlen != packet.len() {
            return Inspection::Malformed;
        }
        // A version other than 0 must get BADVERS, and options other than those the answer
        // never depends on may call for a different answer: the general path's to handle.
        if (ttl >> 16) & 0xFF != 0 || !only_ignored_options(&packet[question_end + 11..]) {
            return Inspection::General(Some(qtype));
        }
        let size = u16::from_be_bytes([opt[3], opt[4]]).max(512);
        (size, ttl & DO_BIT != 0, Some(question_end + 3))
    };
    key[key_len] = u8::from(tcp) | (u8::from(opt_class_at.is_some()) << 1);
    key[key_len + 1..key_len + 3].copy_from_slice(&udp_payload.to_be_bytes());
    key[key_len + 3] = u8::from(dnssec_ok);
    key_len += 4;
    Inspection::Cacheable(Query {
        question_end,
        key_len,
        udp_payload,
        qtype,
        opt_class_at,
    })
}

/// EDNS options this server ignores, so the answer is the same with or without them:
/// COOKIE (10; RFC 7873 lets a server without cookie support ignore it, and dig sends one by
/// default) and PADDING (12).
fn only_ignored_options(mut options: &[u8]) -> bool {
    while !options.is_empty() {
        let Some(head) = options.get(..4) else {
            return false;
        };
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        if !matches!(code, 10 | 12) || options.len() < 4 + len {
            return false;
        }
        options = &options[4 + len..];
    }
    true
}

/// Makes a cached answer the client's: its ID, its RD and CD flags, its question's bytes.
/// `answer` must be the cached answer to a query with the same key, so the question has the
/// same length (the names differ at most in case).
pub fn personalise(answer: &mut [u8], query: &[u8], question_end: usize) {
    answer[0..2].copy_from_slice(&query[0..2]);
    answer[2] = (answer[2] & !RD) | (query[2] & RD);
    answer[3] = (answer[3] & !CD) | (query[3] & CD);
    answer[HEADER_LEN..question_end].copy_from_slice(&query[HEADER_LEN..question_end]);
}

/// The RCODE of an answer (the header's low four bits; EDNS extended codes are not cached).
pub fn rcode(answer: &[u8]) -> u8 {
    answer.get(3).map_or(2, |b| b & 0x0F)
}

/// Whether an answer was truncated (TC).
pub fn truncated(answer: &[u8]) -> bool {
    answer.get(2).is_some_and(|b| b & 0x02 != 0)
}

/// A FORMERR answer to a packet whose header could be read: its ID and opcode, no sections.
pub fn format_error(packet: &[u8]) -> [u8; HEADER_LEN] {
    let mut answer = [0u8; HEADER_LEN];
    answer[0..2].copy_from_slice(&packet[0..2]);
    answer[2] = QR | (packet[2] & (OPCODE_MASK | RD));
    answer[3] = 1; // FORMERR
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[&str], qtype: u16, opt: Option<(u16, bool, &[u8])>) -> Vec<u8> {
        let mut p = vec![
            0xAB,
            0xCD,
            RD,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(opt.is_some()),
        ];
        for label in name {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        if let Some((size, dnssec_ok, options)) = opt {
            p.push(0);
            p.extend_from_slice(&TYPE_OPT.to_be_bytes());
            p.extend_from_slice(&size.to_be_bytes());
            p.extend_from_slice(&(if dnssec_ok { DO_BIT } else { 0 }).to_be_bytes());
            p.extend_from_slice(&(options.len() as u16).to_be_bytes());
            p.extend_from_slice(options);
        }
        p
    }

    fn key_of(packet: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let mut key = [0u8; MAX_KEY_LEN];
        match inspect(packet, tcp, &mut key) {
            Inspection::Cacheable(q) => Some(key[..q.key_len].to_vec()),
            _ => None,
        }
    }

    #[test]
    fn names_differing_in_case_share_a_key() {
        let lower = key_of(&query(&["www", "foobar", "com"], 1, None), false).unwrap();
        let mixed = key_of(&query(&["wWw", "FooBar", "COM"], 1, None), false).unwrap();
        assert_eq!(lower, mixed);
    }

    #[test]
    fn transport_type_buffer_and_do_bit_are_part_of_the_key() {
        let base = query(&["www", "foobar", "com"], 1, None);
        let keys = [
            key_of(&base, false),
            key_of(&base, true),
            key_of(&query(&["www", "foobar", "com"], 28, None), false),
            key_of(
                &query(&["www", "foobar", "com"], 1, Some((1232, false, &[]))),
                false,
            ),
            key_of(
                &query(&["www", "foobar", "com"], 1, Some((4096, false, &[]))),
                false,
            ),
            key_of(
                &query(&["www", "foobar", "com"], 1, Some((1232, true, &[]))),
                false,
            ),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn edns_options_that_matter_and_other_opcodes_take_the_general_path() {
        let mut key = [0u8; MAX_KEY_LEN];
        let subnet = query(&["www"], 1, Some((1232, false, &[0, 8, 0, 4, 0, 1, 24, 0])));
        assert_eq!(
            inspect(&subnet, false, &mut key),
            Inspection::General(Some(1))
        );
        let mut notify = query(&["www"], 1, None);
        notify[2] |= 4 << 3;
        assert_eq!(inspect(&notify, false, &mut key), Inspection::General(None));
    }

    #[test]
    fn a_cookie_does_not_change_the_key() {
        let plain = key_of(&query(&["www"], 1, Some((1232, false, &[]))), false).unwrap();
        let cookie = query(
            &["www"],
            1,
            Some((1232, false, &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8])),
        );
        assert_eq!(key_of(&cookie, false), Some(plain));
        let cut_option = query(&["www"], 1, Some((1232, false, &[0, 10, 0, 8, 1, 2])));
        assert_eq!(key_of(&cut_option, false), None);
    }

    #[test]
    fn junk_is_dropped_or_malformed() {
        let mut key = [0u8; MAX_KEY_LEN];
        assert_eq!(inspect(&[1, 2, 3], false, &mut key), Inspection::Drop);
        let mut response = query(&["www"], 1, None);
        response[2] |= QR;
        assert_eq!(inspect(&response, false, &mut key), Inspection::Drop);
        let good = query(&["www", "foobar", "com"], 1, None);
        for cut in HEADER_LEN + 1..good.len() {
            assert_eq!(
                inspect(&good[..cut], false, &mut key),
                Inspection::Malformed,
                "cut {cut}"
            );
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(inspect(&trailing, false, &mut key), Inspection::Malformed);
        let mut pointer = good;
        pointer[HEADER_LEN] = 0xC0;
        assert_eq!(inspect(&pointer, false, &mut key), Inspection::Malformed);
    }

    #[test]
    fn a_cached_answer_takes_the_clients_id_flags_and_question() {
        let cached_query = query(&["www", "foobar", "com"], 1, None);
        let mut answer = cached_query.clone();
        answer[2] = QR | 0x04 | RD; // AA, RD
        answer[3] = 0;
        let mut client = query(&["WWW", "foobar", "COM"], 1, None);
        client[0] = 0x12;
        client[1] = 0x34;
        client[2] = 0; // RD off
        client[3] = CD;
        let Inspection::Cacheable(q) = inspect(&client, false, &mut [0; MAX_KEY_LEN]) else {
            panic!()
        };
        personalise(&mut answer, &client, q.question_end);
        assert_eq!(&answer[0..2], &[0x12, 0x34]);
        assert_eq!(answer[2], QR | 0x04);
        assert_eq!(answer[3], CD);
        assert_eq!(
            &answer[HEADER_LEN..q.question_end],
            &client[HEADER_LEN..q.question_end]
        );
    }

    #[test]
    fn format_error_keeps_id_and_opcode() {
        let packet = [9, 8, RD | (2 << 3), 0, 0, 5, 0, 0, 0, 0, 0, 0];
        let answer = format_error(&packet);
        assert_eq!(&answer[0..2], &[9, 8]);
        assert_eq!(answer[2], QR | RD | (2 << 3));
        assert_eq!(rcode(&answer), 1);
    }

    /// Thousands of mutations of real queries (bit flips, cuts, inserted bytes): the reader
    /// never panics, and what it calls cacheable stays inside the packet. The fuzz target
    /// (`dns/fuzz`) does the same with coverage guidance; this runs in every `cargo test`.
    #[test]
    fn mutated_queries_never_panic() {
        let seeds = [
            query(&["www", "foobar", "com"], 1, None),
            query(&["www", "foobar", "com"], 28, Some((1232, true, &[]))),
            query(&["a"], 255, Some((4096, false, &[0, 10, 0, 2, 1, 2]))),
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut key = [0u8; MAX_KEY_LEN];
        for round in 0..30_000 {
            let mut packet = seeds[round % seeds.len()].clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % packet.len();
                match next() % 3 {
                    0 => packet[at] ^= 1 << (next() % 8),
                    1 => packet.truncate(at),
                    _ => packet.insert(at, next() as u8),
                }
                if packet.is_empty() {
                    break;
                }
            }
            if let Inspection::Cacheable(q) = inspect(&packet, round % 2 == 0, &mut key) {
                assert!(q.question_end <= packet.len() && q.key_len <= MAX_KEY_LEN);
            }
        }
    }
}
