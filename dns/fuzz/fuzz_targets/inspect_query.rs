//! The fast path's packet reader on arbitrary bytes: it must never panic, and what it calls
//! cacheable must be consistent with the packet (the key fits, the question is in bounds,
//! and personalising a copy of the packet with itself changes nothing).
#![no_main]

use foobar_dns::wire::{self, Inspection, MAX_KEY_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|packet: &[u8]| {
    for tcp in [false, true] {
        let mut key = [0u8; MAX_KEY_LEN];
        if let Inspection::Cacheable(query) = wire::inspect(packet, tcp, &mut key) {
            assert!(query.key_len <= MAX_KEY_LEN);
            assert!(query.question_end <= packet.len());
            let mut copy = packet.to_vec();
            wire::personalise(&mut copy, packet, query.question_end);
            assert_eq!(copy, packet);
        }
        if packet.len() >= wire::HEADER_LEN {
            let answer = wire::format_error(packet);
            assert_eq!(wire::rcode(&answer), 1);
        }
    }
});
