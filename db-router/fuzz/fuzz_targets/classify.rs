//! The classifier on arbitrary SQL text: it must never panic, every replay range it reports
//! must lie inside the text on character boundaries of the tokens, and appending a comment
//! must not change where a statement goes.
#![no_main]

use foobar_db_router::classifier::{self, Effect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|sql: &[u8]| {
    let class = classifier::classify(sql);
    for effect in &class.effects {
        if let Effect::Replay { start, end, .. } = effect {
            assert!(
                start <= end && *end <= sql.len(),
                "{start}..{end} of {}",
                sql.len()
            );
        }
    }
    // A trailing line comment cannot change the route, unless the text ends inside a string,
    // a quoted name or a block comment (then the comment is part of that).
    let plain = sql.iter().all(|b| {
        !matches!(
            b,
            b'\'' | b'"' | b'`' | b'/' | b'*' | b'\\' | b'#' | b'-' | b'@'
        )
    });
    if plain {
        let mut commented = sql.to_vec();
        commented.extend_from_slice(b" -- note\n");
        assert_eq!(classifier::classify(&commented).route, class.route);
    }
});
