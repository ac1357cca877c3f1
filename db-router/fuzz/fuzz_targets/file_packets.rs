//! A client's LOAD DATA LOCAL file on arbitrary bytes: the first eight bytes are the limit,
//! the rest wire packets, judged one by one as `relay::stream_file` does. What is passed on
//! never exceeds the limit, nothing is passed on once the limit was passed, and the file
//! ends only at an empty packet that does not continue a full one, and only once.
#![no_main]

use bytes::BytesMut;
use foobar_db_router::packet::{Decoder, MAX_CHUNK};
use foobar_db_router::relay::{FileProgress, FileStep};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((limit, packets)) = data.split_first_chunk::<8>() else {
        return;
    };
    let limit = u64::from_le_bytes(*limit) % (1 << 24);
    let decoder = Decoder {
        max_payload: 1 << 20,
    };
    let mut buf = BytesMut::from(packets);
    let mut progress = FileProgress::new(limit);
    let (mut forwarded, mut over, mut previous_full) = (0u64, false, false);
    while let Some(packet) = decoder.next_raw(&mut buf) {
        let len = packet.payload().len();
        let step = progress.step(len);
        let ends = matches!(step, FileStep::ForwardEnd | FileStep::DropEnd);
        assert_eq!(ends, len == 0 && !previous_full, "{step:?}");
        previous_full = len == MAX_CHUNK;
        match step {
            FileStep::Forward | FileStep::ForwardEnd => {
                assert!(!over, "passed on after the limit");
                forwarded += len as u64;
            }
            FileStep::Overflow => {
                assert!(!over, "over the limit twice");
                assert!(forwarded + len as u64 > limit);
                over = true;
            }
            FileStep::Drop | FileStep::DropEnd => assert!(over, "dropped within the limit"),
        }
        assert!(forwarded <= limit && forwarded == progress.sent());
        if ends {
            return;
        }
    }
});
