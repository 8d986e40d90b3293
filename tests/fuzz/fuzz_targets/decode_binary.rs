//! Fuzzes the binary request decoder as a connection uses it: decode, consume or skip, repeat.
//! Asserts what was decoded, not only that nothing panicked: bounds of `consumed`/`skip`, header
//! facts echoed in the reply context, borrowed fields inside the packet, limits respected,
//! requests re-encoding to the same bytes (modulo fields memcached ignores), and rejections
//! answering with a well-formed packet.
#![no_main]

use corecached::protocol::binary::{
    self, decode_response, encode_request, encode_response, ResponseDecode, Variant, HEADER_LEN,
    REQUEST_MAGIC,
};
use corecached::protocol::{Command, Decode, Limits, Outcome};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The default limits, and a small item limit so "Too large." paths are reached.
    for limits in [
        Limits::default(),
        Limits {
            max_key_len: 250,
            max_item_size: 64,
            ..Limits::default()
        },
    ] {
        check_stream(data, &limits);
    }
});

fn bodylen(packet: &[u8]) -> usize {
    u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]) as usize
}

/// Whether `inner` lies within `outer` (a borrowed field of the packet).
fn within(inner: &[u8], outer: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr_range(), inner.as_ptr_range());
    inner.is_empty() || (o.start <= i.start && i.end <= o.end)
}

fn check_stream(data: &[u8], limits: &Limits) {
    let mut rest = data;
    loop {
        match binary::decode(rest, limits) {
            Decode::Request {
                command,
                ctx,
                consumed,
            } => {
                assert!(consumed >= HEADER_LEN && consumed <= rest.len());
                let packet = &rest[..consumed];
                assert_eq!(packet[0], REQUEST_MAGIC);
                assert_eq!(consumed, HEADER_LEN + bodylen(packet));
                assert_eq!(ctx.opcode, packet[1]);
                assert_eq!(ctx.opaque.to_be_bytes(), packet[12..16]);
                check_fields(&command, packet, limits);
                check_reencoding(&command, ctx, packet, limits);
                rest = &rest[consumed..];
            }
            Decode::Incomplete => {
                // Only a partial header, or a header whose packet is not all here.
                assert!(rest.len() < HEADER_LEN || rest.len() < HEADER_LEN + bodylen(rest));
                return;
            }
            Decode::Reject {
                ctx,
                outcome,
                skip,
                close,
                unlink_key,
            } => {
                assert!(rest.len() >= HEADER_LEN && skip >= HEADER_LEN);
                assert_eq!(ctx.opcode, rest[1]);
                match outcome {
                    Outcome::UnknownCommand | Outcome::InvalidArguments if close => {
                        assert_eq!(skip, HEADER_LEN)
                    }
                    Outcome::UnknownCommand | Outcome::TooLarge | Outcome::OutOfMemory => {
                        assert!(!close);
                        assert_eq!(skip, HEADER_LEN + bodylen(rest));
                    }
                    other => panic!("unexpected rejection {other:?}"),
                }
                if outcome == Outcome::TooLarge {
                    let body = bodylen(rest);
                    assert!(body > limits.max_item_size);
                }
                if let Some(key) = unlink_key {
                    assert!(matches!(ctx.opcode, 0x01 | 0x11) && outcome == Outcome::TooLarge);
                    assert!(!key.is_empty() && key.len() <= limits.max_key_len);
                    assert!(within(key, rest));
                }
                // The refusal is answered, even for quiet opcodes, with one well-formed packet
                // carrying the outcome.
                let mut reply = Vec::new();
                encode_response(&mut reply, &ctx, b"", &outcome);
                match decode_response(&reply) {
                    ResponseDecode::Response { response, consumed } => {
                        assert_eq!(consumed, reply.len());
                        assert_eq!(response.outcome(), Some(outcome));
                        assert_eq!((response.opcode, response.opaque), (ctx.opcode, ctx.opaque));
                    }
                    other => panic!("bad reply {other:?}"),
                }
                if close || skip >= rest.len() {
                    return;
                }
                rest = &rest[skip..];
            }
            Decode::Close => {
                assert_ne!(rest[0], REQUEST_MAGIC);
                return;
            }
        }
    }
}

/// Borrowed fields lie inside the packet and respect the limits.
fn check_fields(command: &Command<&[u8]>, packet: &[u8], limits: &Limits) {
    let body = &packet[HEADER_LEN..];
    let mut fields = Vec::new();
    command.clone().map_bytes(|b| fields.push(b));
    for field in fields {
        assert!(within(field, body));
    }
    if let Some(key) = command.key() {
        assert!(!key.is_empty() && key.len() <= limits.max_key_len);
    }
    if let Command::Store { value, .. } = command {
        assert!(value.len() <= limits.max_item_size);
    }
}

/// Re-encoding the request gives the same bytes, except where memcached ignores the wire:
/// data type and vbucket, the CAS of commands without one, the initial value of a counter that
/// is not auto-created, and a Flush whose 4-byte delay is 0 (encoded without extras).
fn check_reencoding(
    command: &Command<&[u8]>,
    ctx: binary::ReplyCtx,
    packet: &[u8],
    limits: &Limits,
) {
    let variant = Variant {
        quiet: ctx.quiet,
        echo_key: ctx.echo_key,
    };
    let mut again = Vec::new();
    let ctx_again = encode_request(&mut again, command, variant, ctx.opaque).expect("encodable");
    assert_eq!(ctx_again, ctx);
    match binary::decode(&again, limits) {
        Decode::Request {
            command: c,
            ctx: x,
            consumed,
        } => {
            assert_eq!(&c, command);
            assert_eq!(x, ctx);
            assert_eq!(consumed, again.len());
        }
        other => panic!("re-encoded request does not decode: {other:?}"),
    }
    if again.len() != packet.len() {
        assert_eq!(*command, Command::Flush { delay: 0 });
        assert_eq!(packet.len(), HEADER_LEN + 4);
        return;
    }
    let mut expected = packet.to_vec();
    expected[5..8].fill(0);
    match command {
        Command::Store { .. } | Command::Delete { .. } | Command::Arith { .. } => {}
        _ => expected[16..24].fill(0),
    }
    if let Command::Arith { on_miss: None, .. } = command {
        expected[HEADER_LEN + 8..HEADER_LEN + 16].fill(0);
    }
    assert_eq!(again, expected);
}
