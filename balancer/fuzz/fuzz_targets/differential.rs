//! The balancer's request framing against httparse's (`foobar_balancer::reference`): on any
//! bytes the balancer accepts, the two must end the request at the same byte, or one of them
//! would read the start of the next request as this one's body (request smuggling).
#![no_main]

use foobar_balancer::reference::disagreement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Some((ours, theirs)) = disagreement(bytes) {
        panic!("balancer: {ours:?}, httparse: {theirs:?}");
    }
});
