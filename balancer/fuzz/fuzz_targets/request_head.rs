//! A client's request, head and body framing, on arbitrary bytes: it must never panic, a
//! request it accepts ends inside the bytes, and the same bytes with more after them end at
//! the same place (what follows a request never changes how it is framed).
#![no_main]

use foobar_balancer::http1::{Framed, frame_request};
use libfuzzer_sys::fuzz_target;

const MAX_HEADER_SIZE: usize = 8 * 1024;

fuzz_target!(|bytes: &[u8]| {
    let framed = frame_request(bytes, MAX_HEADER_SIZE);
    if let Framed::Ends(end) = framed {
        assert!(end <= bytes.len());
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(frame_request(&longer, MAX_HEADER_SIZE), Framed::Ends(end));
    }
});
