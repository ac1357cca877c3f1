//! Everything the router parses from a client, on arbitrary bytes: compressed frames
//! (inflated within their declared size; encoding a frame's payload again gives it back),
//! the packet decoder (framing, joining, the size limit), also over what the frames held,
//! the handshake response, COM_CHANGE_USER, and a COM_STMT_EXECUTE's parameter types and its
//! rewriting for a backend or for a replay. None may panic; joined payloads must hold exactly
//! the bytes their wire packets carried.
#![no_main]

use bytes::BytesMut;
use foobar_db_router::packet::{Decoder, MAX_CHUNK};
use foobar_db_router::{compress, handshake, prepared, wire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoder = Decoder {
        max_payload: 1 << 20,
    };
    let mut codec = compress::Codec::default();
    let mut frames = BytesMut::from(data);
    let mut inflated = BytesMut::new();
    while let Ok(Some(frame)) = codec.next_frame(&mut frames) {
        assert!(frame.payload.len() <= compress::MAX_FRAME);
        let mut again = BytesMut::new();
        codec.encode(&mut again, frame.seq, &frame.payload);
        let back = codec.next_frame(&mut again).unwrap().unwrap();
        assert_eq!((back.seq, &back.payload[..]), (frame.seq, &frame.payload[..]));
        assert!(again.is_empty());
        inflated.extend_from_slice(&frame.payload);
    }
    while let Ok(Some((_, payload))) = decoder.next_packet(&mut inflated) {
        parse_as_client_message(&payload);
    }
    let mut buf = BytesMut::from(data);
    while let Ok(Some((_, payload))) = decoder.next_packet(&mut buf) {
        assert!(payload.len() <= decoder.max_payload);
        parse_as_client_message(&payload);
    }
    let mut raw = BytesMut::from(data);
    while let Some(packet) = decoder.next_raw(&mut raw) {
        assert!(packet.payload().len() <= MAX_CHUNK);
    }
    parse_as_client_message(data);
});

fn parse_as_client_message(payload: &[u8]) {
    // An SSLRequest is never a login, and a login never an SSLRequest.
    assert!(!(handshake::is_ssl_request(payload) && handshake::parse_login(payload).is_ok()));
    let _ = handshake::parse_change_user(payload, wire::cap::ROUTER);
    let _ = handshake::parse_greeting(payload);
    let _ = wire::parse_ok(payload);
    let _ = wire::ok_without_session_track(payload);
    let _ = wire::parse_err(payload);
    let params = payload.first().map_or(0, |&b| u16::from(b));
    if let Ok(types) = prepared::sent_types(payload, params) {
        let types = types.map(<[u8]>::to_vec);
        for has_types in [false, true] {
            if let Ok(rewritten) =
                prepared::execute_for_backend(payload, 7, params, types.as_deref(), has_types)
            {
                assert_eq!(wire::statement_id(&rewritten), Some(7));
            }
        }
        let fallback = vec![0u8; usize::from(params) * 2];
        if let Ok(rewritten) =
            prepared::execute_for_backend(payload, 7, params, Some(&fallback), false)
        {
            assert!(rewritten.len() >= payload.len());
        }
        if let Ok(replay) = prepared::replayable_execute(payload, params, types.as_deref()) {
            assert_eq!(wire::statement_id(&replay), Some(0));
            assert_eq!(replay[5] & 0x07, 0, "a replay opens no cursor");
        }
    }
}
