//! The chunked decoder on arbitrary bytes: it must never panic or return more data than it
//! was given, and the bytes fed whole or one at a time (the worst a network can do) give the
//! same body, the same end and the same verdict.
#![no_main]

use bytes::BytesMut;
use foobar_balancer::framing::{Chunk, decode_chunked};
use libfuzzer_sys::fuzz_target;

/// The body decoded, whether it ended, and whether it failed.
fn decode(pieces: &mut dyn Iterator<Item = &[u8]>) -> (Vec<u8>, bool, bool) {
    let (mut state, mut buffer) = (Chunk::Size, BytesMut::new());
    let mut body = Vec::new();
    for piece in pieces {
        buffer.extend_from_slice(piece);
        loop {
            match decode_chunked(&mut state, &mut buffer) {
                Ok(Some(Some(data))) => body.extend_from_slice(&data),
                Ok(Some(None)) => return (body, true, false),
                Ok(None) => break,
                Err(_) => return (body, false, true),
            }
        }
    }
    (body, false, false)
}

fuzz_target!(|bytes: &[u8]| {
    let whole = decode(&mut std::iter::once(bytes));
    assert!(whole.0.len() <= bytes.len());
    let bytewise = decode(&mut bytes.chunks(1));
    // A failure may come sooner byte by byte (a line is judged as it completes), never a
    // different body or end for what both accepted.
    if !whole.2 && !bytewise.2 {
        assert_eq!(whole, bytewise);
    }
    assert_eq!(whole.1, bytewise.1 && !whole.2);
});
