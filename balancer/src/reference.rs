//! Where a request ends by another implementation's parser (httparse's request head and
//! chunk-size parsers, hyper's framing rules), to compare with the balancer's own
//! (`http1::frame_request`): built only for tests and fuzzing.
//!
//! The rule the comparison checks: when the balancer accepts a request, the reference ends
//! it at the same byte. The balancer may refuse more (it is stricter: bare LF in chunk
//! lines, an empty chunk size, whitespace after one, both framings), never frame otherwise.

use crate::http1::Framed;

/// `frame_request`'s answer by httparse: the head by `httparse::Request`, the body chunked
/// when the last transfer coding is chunked (`httparse::parse_chunk_size`, trailers by
/// `httparse::parse_headers`), else by `Content-Length` (comma lists of equal values, as
/// hyper accepts), else none.
pub fn request_end(bytes: &[u8]) -> Framed {
    let mut fields = [httparse::EMPTY_HEADER; 100];
    let mut request = httparse::Request::new(&mut fields);
    let head_len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Framed::Incomplete,
        Err(_) => return Framed::Refused,
    };
    let values = |name: &'static str| {
        request
            .headers
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value)
    };
    if let Some(last) = values("transfer-encoding").next_back() {
        let last = last.rsplit(|&b| b == b',').next().unwrap_or_default();
        if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Framed::Refused;
        }
        return chunked_end(bytes, head_len);
    }
    let mut length = None;
    for value in values("content-length") {
        for element in value.split(|&b| b == b',') {
            let element = element.trim_ascii();
            let Some(n) = std::str::from_utf8(element)
                .ok()
                .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|e| e.parse::<u64>().ok())
            else {
                return Framed::Refused;
            };
            if length.is_some_and(|m| m != n) {
                return Framed::Refused;
            }
            length = Some(n);
        }
    }
    // A length near u64::MAX: no input of ours is that long, so the body never ends.
    let Some(end) = (head_len as u64).checked_add(length.unwrap_or(0)) else {
        return Framed::Incomplete;
    };
    if (bytes.len() as u64) < end {
        Framed::Incomplete
    } else {
        Framed::Ends(end as usize)
    }
}

fn chunked_end(bytes: &[u8], mut at: usize) -> Framed {
    loop {
        let (line, size) = match httparse::parse_chunk_size(&bytes[at..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Framed::Incomplete,
            Err(_) => return Framed::Refused,
        };
        at += line;
        if size == 0 {
            let mut trailers = [httparse::EMPTY_HEADER; 100];
            return match httparse::parse_headers(&bytes[at..], &mut trailers) {
                Ok(httparse::Status::Complete((n, _))) => Framed::Ends(at + n),
                Ok(httparse::Status::Partial) => Framed::Incomplete,
                Err(_) => Framed::Refused,
            };
        }
        let Some(end) = usize::try_from(size).ok().and_then(|s| at.checked_add(s)) else {
            return Framed::Refused;
        };
        match bytes.get(end..end + 2) {
            None => return Framed::Incomplete,
            Some(b"\r\n") => at = end + 2,
            Some(_) => return Framed::Refused,
        }
    }
}

/// Compares the two on `bytes`: None when they agree (or the balancer refuses), else the
/// disagreement.
pub fn disagreement(bytes: &[u8]) -> Option<(Framed, Framed)> {
    let ours = crate::http1::frame_request(bytes, 64 * 1024);
    let theirs = request_end(bytes);
    let ends = matches!(ours, Framed::Ends(_)) || matches!(theirs, Framed::Ends(_));
    let refused = ours == Framed::Refused;
    (ends && !refused && ours != theirs).then_some((ours, theirs))
}

/// Requests the differential test and the fuzz targets start from (`balancer/fuzz/corpus`
/// holds the same as files).
pub const SEEDS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\nHost: a\n\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nT: 1\r\n\r\nX",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n\r\nX",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;\nx\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: 1\nU: 2\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
    // Found by the differential fuzz target: a trailer line that is no field.
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0;k=b\r\nhello\r\n0\r\nT: 1\r\n\r\nX",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The balancer and httparse agree on where each seed ends, wherever the balancer
    /// accepts it; and the comparison can fail (a request the two frame differently).
    #[test]
    fn the_balancer_and_httparse_agree_on_where_requests_end() {
        for seed in SEEDS {
            assert_eq!(
                disagreement(seed),
                None,
                "{:?}",
                String::from_utf8_lossy(seed)
            );
            // Every prefix too: incomplete is incomplete for both.
            for cut in 0..seed.len() {
                assert_eq!(disagreement(&seed[..cut]), None, "{:?}", &seed[..cut]);
            }
        }
        let accepted = crate::http1::frame_request(SEEDS[4], 64 * 1024);
        assert_eq!(accepted, Framed::Ends(SEEDS[4].len() - 1));
        // httparse takes an empty chunk-size line for 0, the balancer refuses it.
        assert_eq!(request_end(SEEDS[5]), Framed::Ends(SEEDS[5].len() - 1));
        assert_eq!(
            crate::http1::frame_request(SEEDS[5], 64 * 1024),
            Framed::Refused
        );
    }
}
