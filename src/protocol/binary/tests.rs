//! Unit and property tests of the binary codec.
//!
//! Byte strings are written down from the binary protocol spec (doc/protocol-binary.xml examples)
//! and memcached's `protocol_binary.h` / `proto_bin.c` behaviour, as hex with quoted ASCII. Every
//! decode input also goes through [`events`], which feeds it again cut into fragments of 1, 2, 5,
//! 10 and 100 bytes and checks that the connection sees the same thing.

use proptest::prelude::*;

use super::*;
use crate::protocol::{ArithOp, Codec, Command, Decode, Limits, Outcome, StoreMode};

/// Bytes from hex pairs and `'quoted ASCII'`; whitespace separates nothing and is ignored.
fn hex(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => out.extend(chars.by_ref().take_while(|&c| c != '\'').map(|c| c as u8)),
            c if c.is_whitespace() => {}
            c => {
                let lo = chars.next().expect("odd hex digit count");
                let pair = [c, lo].iter().collect::<String>();
                out.push(u8::from_str_radix(&pair, 16).expect("hex digit"));
            }
        }
    }
    out
}

/// A decode result with owned bytes, so results of differently fragmented runs compare.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Request(Command<Vec<u8>>, ReplyCtx, usize),
    Reject {
        ctx: ReplyCtx,
        outcome: Outcome<Vec<u8>>,
        skip: usize,
        close: bool,
        unlink_key: Option<Vec<u8>>,
    },
    Close,
}

/// What a connection saw after feeding it an input.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    events: Vec<Event>,
    /// Bytes of a partial request left in the buffer (0 once closed).
    buffered: usize,
    /// Bytes of a refused request still to be discarded as they arrive.
    skipping: usize,
}

fn owned(decoded: Decode<'_, ReplyCtx>, buf_len: usize) -> Option<Event> {
    Some(match decoded {
        Decode::Request {
            command,
            ctx,
            consumed,
        } => {
            assert!((HEADER_LEN..=buf_len).contains(&consumed));
            Event::Request(command.map_bytes(<[u8]>::to_vec), ctx, consumed)
        }
        Decode::Incomplete => return None,
        Decode::Reject {
            ctx,
            outcome,
            skip,
            close,
            unlink_key,
        } => {
            assert!(skip >= HEADER_LEN && buf_len >= HEADER_LEN);
            Event::Reject {
                ctx,
                outcome: outcome.map_bytes(<[u8]>::to_vec),
                skip,
                close,
                unlink_key: unlink_key.map(<[u8]>::to_vec),
            }
        }
        Decode::Close => Event::Close,
    })
}

/// Feeds `input` to a simulated connection in reads of `chunk` bytes, as the server's read loop
/// does: decode until incomplete, drop what was consumed, keep skipping refused bodies.
fn feed(input: &[u8], chunk: usize, limits: &Limits) -> Seen {
    let mut buf = Vec::new();
    let mut seen = Seen {
        events: Vec::new(),
        buffered: 0,
        skipping: 0,
    };
    for read in input.chunks(chunk) {
        let drop = seen.skipping.min(read.len());
        seen.skipping -= drop;
        buf.extend_from_slice(&read[drop..]);
        while let Some(event) = owned(decode(&buf, limits), buf.len()) {
            seen.events.push(event.clone());
            match event {
                Event::Request(_, _, consumed) => {
                    buf.drain(..consumed);
                }
                Event::Reject {
                    close: true, skip, ..
                } => {
                    assert_eq!(skip, HEADER_LEN);
                    return seen;
                }
                Event::Close => return seen,
                Event::Reject { skip, .. } if skip <= buf.len() => {
                    buf.drain(..skip);
                }
                Event::Reject { skip, .. } => {
                    seen.skipping = skip - buf.len();
                    buf.clear();
                }
            }
        }
    }
    seen.buffered = buf.len();
    seen
}

/// Decodes `input` whole and in fragments of 1, 2, 5, 10 and 100 bytes; all must agree.
fn events_with(input: &[u8], limits: &Limits) -> Seen {
    let whole = feed(input, input.len().max(1), limits);
    for chunk in [1, 2, 5, 10, 100] {
        assert_eq!(
            feed(input, chunk, limits),
            whole,
            "fragments of {chunk} bytes"
        );
    }
    whole
}

fn events(input: &[u8]) -> Seen {
    events_with(input, &Limits::default())
}

/// The single request `input` holds, checked to use all of it.
fn request(input: &[u8]) -> (Command<Vec<u8>>, ReplyCtx) {
    let seen = events(input);
    assert_eq!(seen.buffered, 0);
    match seen.events.as_slice() {
        [Event::Request(command, ctx, consumed)] => {
            assert_eq!(*consumed, input.len());
            (command.clone(), *ctx)
        }
        other => panic!("expected one request, got {other:?}"),
    }
}

/// The single rejection `input` causes: (outcome, skip, close).
fn rejection(input: &[u8]) -> (Outcome<Vec<u8>>, usize, bool) {
    rejection_with(input, &Limits::default())
}

fn rejection_with(input: &[u8], limits: &Limits) -> (Outcome<Vec<u8>>, usize, bool) {
    match events_with(input, limits).events.as_slice() {
        [Event::Reject {
            outcome,
            skip,
            close,
            ..
        }, ..] => (outcome.clone(), *skip, *close),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Opcode, extras, key, value of a hand-built request.
type Packet = (u8, &'static [u8], &'static [u8], &'static [u8]);

const INVALID: (Outcome<Vec<u8>>, usize, bool) = (Outcome::InvalidArguments, HEADER_LEN, true);

/// Encodes `command` and checks it gives `wire` and the reply context decoding would give.
fn assert_encodes(command: &Command<Vec<u8>>, variant: Variant, opaque: u32, wire: &[u8]) {
    let mut out = Vec::new();
    let ctx = encode_request(&mut out, &map_ref(command), variant, opaque).expect("encodable");
    assert_eq!(out, wire, "request encoding");
    assert_eq!(ctx, ReplyCtx::new(wire[1], opaque));
}

/// Borrows an owned command's byte fields.
fn map_ref(command: &Command<Vec<u8>>) -> Command<&[u8]> {
    // map_bytes visits byte fields in declaration order; hand it references in that order.
    let mut fields: Vec<&[u8]> = Vec::new();
    match command {
        Command::Get { key, .. }
        | Command::Delete { key, .. }
        | Command::Touch { key, .. }
        | Command::Arith { key, .. } => fields.push(key),
        Command::Store { key, value, .. } => {
            fields.push(key);
            fields.push(value);
        }
        Command::Stats { group } => fields.push(group),
        Command::SaslAuth { mechanism, data } | Command::SaslStep { mechanism, data } => {
            fields.push(mechanism);
            fields.push(data);
        }
        _ => {}
    }
    let mut it = fields.into_iter();
    command.clone().map_bytes(|_| it.next().expect("field"))
}

fn response(ctx: &ReplyCtx, key: &[u8], outcome: Outcome<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_response(&mut out, ctx, key, &outcome);
    out
}

fn ctx(opcode: u8) -> ReplyCtx {
    ReplyCtx::new(opcode, 0)
}

// ---------------------------------------------------------------------------------------------
// Requests, one test per opcode family with its quiet (and K) variants.

#[test]
fn get_family_decodes_spec_example_in_every_variant() {
    // Spec "Get" example: key "Hello".
    for (op, quiet, echo_key) in [
        (0x00, false, false),
        (0x09, true, false),
        (0x0c, false, true),
        (0x0d, true, true),
    ] {
        let wire = hex(&format!(
            "80 {op:02x} 0005 00 00 0000 00000005 00000000 0000000000000000 'Hello'"
        ));
        let (command, ctx) = request(&wire);
        let expected = Command::Get {
            key: b"Hello".to_vec(),
            touch: None,
            meta: None,
        };
        assert_eq!(command, expected);
        assert_eq!(
            ctx,
            ReplyCtx {
                opcode: op,
                opaque: 0,
                quiet,
                echo_key
            }
        );
        assert_encodes(&expected, Variant { quiet, echo_key }, 0, &wire);
    }
}

#[test]
fn gat_family_decodes_exptime_extras_in_every_variant() {
    for (op, quiet, echo_key) in [
        (0x1d, false, false),
        (0x1e, true, false),
        (0x23, false, true),
        (0x24, true, true),
    ] {
        let wire = hex(&format!(
            "80 {op:02x} 0003 04 00 0000 00000007 a1b2c3d4 0000000000000000 00001c20 'foo'"
        ));
        let (command, ctx) = request(&wire);
        let expected = Command::Get {
            key: b"foo".to_vec(),
            touch: Some(7200),
            meta: None,
        };
        assert_eq!(command, expected);
        assert_eq!(
            (ctx.quiet, ctx.echo_key, ctx.opaque),
            (quiet, echo_key, 0xa1b2c3d4)
        );
        assert_encodes(&expected, Variant { quiet, echo_key }, 0xa1b2c3d4, &wire);
    }
}

#[test]
fn touch_decodes_exptime_as_unsigned() {
    let wire = hex("80 1c 0003 04 00 0000 00000007 00000001 0000000000000000 ffffffff 'foo'");
    let (command, ctx) = request(&wire);
    // 0xffffffff is year 2106 on the wire, never -1.
    let expected = Command::Touch {
        key: b"foo".to_vec(),
        exptime: 0xffff_ffff,
    };
    assert_eq!(command, expected);
    assert!(!ctx.quiet && !ctx.echo_key);
    assert_encodes(&expected, Variant::default(), 1, &wire);
}

#[test]
fn set_add_replace_decode_spec_example_with_quiet_variants() {
    // Spec "Add" example: flags 0xdeadbeef, expiry 7200, key "Hello", value "World"; here with a
    // request CAS, which every store carries.
    for (op, mode, quiet) in [
        (0x01, StoreMode::Set, false),
        (0x11, StoreMode::Set, true),
        (0x02, StoreMode::Add, false),
        (0x12, StoreMode::Add, true),
        (0x03, StoreMode::Replace, false),
        (0x13, StoreMode::Replace, true),
    ] {
        let wire = hex(&format!(
            "80 {op:02x} 0005 08 00 0000 00000012 00000000 000000000000abcd
             deadbeef 00001c20 'Hello' 'World'"
        ));
        let (command, ctx) = request(&wire);
        let expected = Command::Store {
            mode,
            key: b"Hello".to_vec(),
            value: b"World".to_vec(),
            flags: 0xdeadbeef,
            exptime: 7200,
            cas: 0xabcd,
            meta: None,
        };
        assert_eq!(command, expected);
        assert_eq!((ctx.opcode, ctx.quiet, ctx.echo_key), (op, quiet, false));
        assert_encodes(
            &expected,
            Variant {
                quiet,
                echo_key: false,
            },
            0,
            &wire,
        );
    }
}

#[test]
fn set_with_empty_value_and_max_exptime() {
    let wire =
        hex("80 01 0001 08 00 0000 00000009 00000000 0000000000000000 00000000 ffffffff 'k'");
    let (command, _) = request(&wire);
    assert_eq!(
        command,
        Command::Store {
            mode: StoreMode::Set,
            key: b"k".to_vec(),
            value: vec![],
            flags: 0,
            exptime: 0xffff_ffff,
            cas: 0,
            meta: None,
        }
    );
}

#[test]
fn append_prepend_decode_spec_example_with_quiet_variants() {
    // Spec "Append" example: append "!" to "Hello".
    for (op, mode, quiet) in [
        (0x0e, StoreMode::Append, false),
        (0x19, StoreMode::Append, true),
        (0x0f, StoreMode::Prepend, false),
        (0x1a, StoreMode::Prepend, true),
    ] {
        let wire = hex(&format!(
            "80 {op:02x} 0005 00 00 0000 00000006 00000000 0000000000000000 'Hello!'"
        ));
        let (command, ctx) = request(&wire);
        let expected = Command::Store {
            mode,
            key: b"Hello".to_vec(),
            value: b"!".to_vec(),
            flags: 0,
            exptime: 0,
            cas: 0,
            meta: None,
        };
        assert_eq!(command, expected);
        assert_eq!(ctx.quiet, quiet);
        assert_encodes(
            &expected,
            Variant {
                quiet,
                echo_key: false,
            },
            0,
            &wire,
        );
    }
}

#[test]
fn delete_decodes_spec_example_with_quiet_variant_and_cas() {
    for (op, quiet) in [(0x04, false), (0x14, true)] {
        let wire = hex(&format!(
            "80 {op:02x} 0005 00 00 0000 00000005 00000000 0000000000000007 'Hello'"
        ));
        let (command, ctx) = request(&wire);
        let expected = Command::Delete {
            key: b"Hello".to_vec(),
            cas: 7,
        };
        assert_eq!(command, expected);
        assert_eq!(ctx.quiet, quiet);
        assert_encodes(
            &expected,
            Variant {
                quiet,
                echo_key: false,
            },
            0,
            &wire,
        );
    }
}

#[test]
fn incr_decr_decode_spec_example_with_quiet_variants() {
    // Spec "Increment" example: key "counter", delta 1, initial 0, expiry 7200.
    for (op, arith, quiet) in [
        (0x05, ArithOp::Incr, false),
        (0x15, ArithOp::Incr, true),
        (0x06, ArithOp::Decr, false),
        (0x16, ArithOp::Decr, true),
    ] {
        let wire = hex(&format!(
            "80 {op:02x} 0007 14 00 0000 0000001b 00000000 0000000000000000
             0000000000000001 0000000000000000 00001c20 'counter'"
        ));
        let (command, ctx) = request(&wire);
        let expected = Command::Arith {
            op: arith,
            key: b"counter".to_vec(),
            delta: 1,
            on_miss: Some((0, 7200)),
            cas: 0,
            meta: None,
        };
        assert_eq!(command, expected);
        assert_eq!(ctx.quiet, quiet);
        assert_encodes(
            &expected,
            Variant {
                quiet,
                echo_key: false,
            },
            0,
            &wire,
        );
    }
}

#[test]
fn incr_exptime_all_ones_means_no_auto_create() {
    let wire = hex("80 05 0001 14 00 0000 00000015 00000000 0000000000000009
         0000000000000005 0000000000000000 ffffffff 'c'");
    let expected = Command::Arith {
        op: ArithOp::Incr,
        key: b"c".to_vec(),
        delta: 5,
        on_miss: None,
        cas: 9,
        meta: None,
    };
    assert_eq!(request(&wire).0, expected);
    assert_encodes(&expected, Variant::default(), 0, &wire);
}

#[test]
fn quit_decodes_spec_example_with_quiet_variant() {
    for (op, quiet) in [(0x07, false), (0x17, true)] {
        let wire = hex(&format!(
            "80 {op:02x} 0000 00 00 0000 00000000 00000000 0000000000000000"
        ));
        let (command, ctx) = request(&wire);
        assert_eq!(command, Command::Quit);
        assert_eq!(ctx.quiet, quiet);
        assert_encodes(
            &Command::Quit,
            Variant {
                quiet,
                echo_key: false,
            },
            0,
            &wire,
        );
    }
}

#[test]
fn flush_decodes_with_and_without_extras_and_quiet() {
    for (op, quiet) in [(0x08, false), (0x18, true)] {
        // Spec "Flush" example: expiry 7200 in 4 bytes of extras.
        let wire = hex(&format!(
            "80 {op:02x} 0000 04 00 0000 00000004 00000000 0000000000000000 00001c20"
        ));
        let (command, ctx) = request(&wire);
        assert_eq!(command, Command::Flush { delay: 7200 });
        assert_eq!(ctx.quiet, quiet);
        assert_encodes(
            &command,
            Variant {
                quiet,
                echo_key: false,
            },
            0,
            &wire,
        );

        let bare = hex(&format!(
            "80 {op:02x} 0000 00 00 0000 00000000 00000000 0000000000000000"
        ));
        let (command, _) = request(&bare);
        assert_eq!(command, Command::Flush { delay: 0 });
        assert_encodes(
            &command,
            Variant {
                quiet,
                echo_key: false,
            },
            0,
            &bare,
        );
    }
}

#[test]
fn noop_and_version_decode_spec_examples() {
    for (op, expected) in [(0x0a, Command::Noop), (0x0b, Command::Version)] {
        let wire = hex(&format!(
            "80 {op:02x} 0000 00 00 0000 00000000 deadbeef 0000000000000000"
        ));
        let (command, ctx) = request(&wire);
        assert_eq!(command, expected);
        assert_eq!(ctx, ReplyCtx::new(op, 0xdeadbeef));
        assert!(!ctx.quiet);
        assert_encodes(&expected, Variant::default(), 0xdeadbeef, &wire);
    }
}

#[test]
fn stat_decodes_with_and_without_group() {
    // Spec "Stat" example: all statistics.
    let wire = hex("80 10 0000 00 00 0000 00000000 00000000 0000000000000000");
    let expected = Command::Stats { group: vec![] };
    assert_eq!(request(&wire).0, expected);
    assert_encodes(&expected, Variant::default(), 0, &wire);
    for group in [
        "settings",
        "items",
        "slabs",
        "sizes",
        "detail dump",
        "reset",
    ] {
        let wire = [
            hex(&format!(
                "80 10 {:04x} 00 00 0000 {:08x} 00000000 0000000000000000",
                group.len(),
                group.len()
            )),
            group.as_bytes().to_vec(),
        ]
        .concat();
        let expected = Command::Stats {
            group: group.as_bytes().to_vec(),
        };
        assert_eq!(request(&wire).0, expected);
        assert_encodes(&expected, Variant::default(), 0, &wire);
    }
}

#[test]
fn sasl_frames_decode() {
    let list = hex("80 20 0000 00 00 0000 00000000 00000000 0000000000000000");
    assert_eq!(request(&list).0, Command::SaslListMechs);
    assert_encodes(&Command::SaslListMechs, Variant::default(), 0, &list);
    for (op, step) in [(0x21, false), (0x22, true)] {
        let wire = hex(&format!(
            "80 {op:02x} 0005 00 00 0000 0000000f 00000000 0000000000000000
             'PLAIN' 00 'user' 00 'pass'"
        ));
        let (mechanism, data) = (b"PLAIN".to_vec(), b"\0user\0pass".to_vec());
        let expected = if step {
            Command::SaslStep { mechanism, data }
        } else {
            Command::SaslAuth { mechanism, data }
        };
        assert_eq!(request(&wire).0, expected);
        assert_encodes(&expected, Variant::default(), 0, &wire);
    }
}

#[test]
fn verbosity_is_unknown_command_like_memcached_1_6_18() {
    let wire = hex("80 1b 0000 04 00 0000 00000004 00000005 0000000000000000 00000001");
    let mut out = Vec::new();
    let ctx = encode_request(
        &mut out,
        &Command::Verbosity { level: 1 },
        Variant::default(),
        5,
    )
    .expect("encodable");
    assert_eq!(out, wire);
    assert_eq!(rejection(&wire), (Outcome::UnknownCommand, 28, false));
    assert_eq!(
        response(&ctx, b"", Outcome::UnknownCommand),
        hex("81 1b 0000 00 00 0081 0000000f 00000005 0000000000000000 'Unknown command'")
    );
}

// ---------------------------------------------------------------------------------------------
// Malformed input.

#[test]
fn bad_magic_closes_without_reply() {
    for first in [0x00, 0x08, 0x18, 0x81, 0x82, 0x83, b'g', 0xff] {
        assert_eq!(events(&[first]).events, [Event::Close]);
        let mut wire = hex("80 0a 0000 00 00 0000 00000000 00000000 0000000000000000");
        wire[0] = first;
        assert_eq!(events(&wire).events, [Event::Close]);
    }
    // A later packet with bad magic on a binary connection: the good one is served first.
    let wire = hex("80 0a 0000 00 00 0000 00000000 00000000 0000000000000000
         81 0a 0000 00 00 0000 00000000 00000000 0000000000000000");
    let seen = events(&wire);
    assert_eq!(seen.events.len(), 2);
    assert!(matches!(
        seen.events[0],
        Event::Request(Command::Noop, _, 24)
    ));
    assert_eq!(seen.events[1], Event::Close);
}

#[test]
fn set_with_short_extras_is_invalid_and_closes() {
    for extlen in [0u8, 4, 7, 9, 20] {
        let mut wire = Vec::new();
        encode_packet(
            &mut wire,
            0x01,
            0,
            0,
            &vec![0; usize::from(extlen)],
            b"k",
            b"v",
        )
        .unwrap();
        assert_eq!(rejection(&wire), INVALID, "extlen {extlen}");
    }
}

#[test]
fn extras_on_get_family_and_delete_are_invalid() {
    for op in [
        0x00, 0x09, 0x0c, 0x0d, 0x04, 0x14, 0x0e, 0x0f, 0x19, 0x1a, 0x10,
    ] {
        let mut wire = Vec::new();
        encode_packet(&mut wire, op, 0, 0, &[0, 0, 0, 0], b"key", b"").unwrap();
        assert_eq!(rejection(&wire), INVALID, "opcode {op:#04x}");
    }
}

#[test]
fn key_or_body_on_noop_version_quit_is_invalid() {
    for op in [0x0a, 0x0b, 0x07, 0x17, 0x20] {
        for (extras, key, value) in [
            (&b""[..], &b"k"[..], &b""[..]),
            (b"", b"", b"v"),
            (b"\0\0\0\0", b"", b""),
        ] {
            let mut wire = Vec::new();
            encode_packet(&mut wire, op, 0, 0, extras, key, value).unwrap();
            assert_eq!(rejection(&wire), INVALID, "opcode {op:#04x}");
        }
    }
}

#[test]
fn missing_key_is_invalid() {
    for (op, extras) in [
        (0x00, &[][..]),
        (0x0d, &[]),
        (0x01, &[0; 8]),
        (0x02, &[0; 8]),
        (0x04, &[]),
        (0x05, &[0; 20]),
        (0x0e, &[]),
        (0x1c, &[0; 4]),
        (0x1d, &[0; 4]),
        (0x23, &[0; 4]),
        (0x21, &[]),
        (0x22, &[]),
    ] {
        let mut wire = Vec::new();
        encode_packet(&mut wire, op, 0, 0, extras, b"", b"").unwrap();
        assert_eq!(rejection(&wire), INVALID, "opcode {op:#04x}");
    }
}

#[test]
fn wrong_shapes_are_invalid() {
    // (opcode, extras, key, value)
    let cases: [Packet; 12] = [
        (0x00, &[], b"k", b"value"),  // get with a value
        (0x04, &[], b"k", b"v"),      // delete with a value
        (0x04, &[0; 4], b"k", b""),   // old "delete with expiration" extras
        (0x05, &[0; 8], b"k", b""),   // incr with short extras
        (0x06, &[0; 20], b"k", b"1"), // decr with a value
        (0x08, &[0; 8], b"", b""),    // flush with 8 bytes of extras
        (0x08, &[], b"k", b""),       // flush with a key
        (0x18, &[0; 4], b"", b"x"),   // flushq with a value
        (0x1c, &[], b"k", b""),       // touch without extras
        (0x1d, &[0; 4], b"k", b"v"),  // gat with a value (stricter than memcached)
        (0x10, &[], b"items", b"x"),  // stat with a value (stricter than memcached)
        (0x10, &[0; 4], b"", b""),    // stat with extras
    ];
    for (op, extras, key, value) in cases {
        let mut wire = Vec::new();
        encode_packet(&mut wire, op, 0, 0, extras, key, value).unwrap();
        assert_eq!(rejection(&wire), INVALID, "opcode {op:#04x}");
    }
}

#[test]
fn key_of_250_is_accepted_and_251_is_invalid() {
    for op in [0x00u8, 0x01, 0x10] {
        let extras: &[u8] = if op == 0x01 { &[0; 8] } else { &[] };
        let mut ok = Vec::new();
        encode_packet(&mut ok, op, 0, 0, extras, &[b'a'; 250], b"").unwrap();
        assert!(matches!(
            request(&ok).0.key().map(Vec::len),
            Some(250) | None
        ));
        let mut long = Vec::new();
        encode_packet(&mut long, op, 0, 0, extras, &[b'a'; 251], b"").unwrap();
        assert_eq!(rejection(&long), INVALID);
        // Decided from the header alone.
        assert_eq!(
            owned(decode(&long[..24], &Limits::default()), 24),
            Some(invalid_event(op))
        );
    }
}

fn invalid_event(op: u8) -> Event {
    Event::Reject {
        ctx: ReplyCtx::new(op, 0),
        outcome: Outcome::InvalidArguments,
        skip: HEADER_LEN,
        close: true,
        unlink_key: None,
    }
}

#[test]
fn key_and_extras_longer_than_body_is_unknown_command_and_closes() {
    // keylen 5 + extlen 0 > bodylen 4; keylen 1 + extlen 8 > bodylen 8; on a known and an
    // unknown opcode alike (memcached checks this before the opcode).
    for header in [
        "80 00 0005 00 00 0000 00000004 00000000 0000000000000000",
        "80 01 0001 08 00 0000 00000008 00000000 0000000000000000",
        "80 99 0001 00 00 0000 00000000 00000000 0000000000000000",
        "80 0a 0000 01 00 0000 00000000 00000000 0000000000000000",
    ] {
        let wire = [hex(header), vec![0; 16]].concat();
        assert_eq!(
            rejection(&wire),
            (Outcome::UnknownCommand, HEADER_LEN, true),
            "{header}"
        );
    }
}

#[test]
fn unknown_opcodes_are_skipped_and_the_connection_kept() {
    let noop = hex("80 0a 0000 00 00 0000 00000000 00000000 0000000000000000");
    for op in (0x25..=0xffu8).chain([0x1b, 0x1f]) {
        let mut wire = Vec::new();
        encode_packet(
            &mut wire,
            op,
            0x0102_0304,
            0,
            &[1, 2],
            b"key",
            b"some value",
        )
        .unwrap();
        let total = wire.len();
        wire.extend_from_slice(&noop);
        let seen = events(&wire);
        assert_eq!(
            seen.events,
            [
                Event::Reject {
                    ctx: ReplyCtx::new(op, 0x0102_0304),
                    outcome: Outcome::UnknownCommand,
                    skip: total,
                    close: false,
                    unlink_key: None,
                },
                Event::Request(Command::Noop, ReplyCtx::new(0x0a, 0), 24),
            ],
            "opcode {op:#04x}"
        );
        // The rejection needs only the header.
        assert!(matches!(
            decode(&wire[..24], &Limits::default()),
            Decode::Reject { skip, close: false, .. } if skip == total
        ));
    }
}

#[test]
fn unknown_opcode_with_long_key_is_invalid_like_memcached() {
    let mut wire = Vec::new();
    encode_packet(&mut wire, 0x30, 0, 0, &[], &[b'x'; 251], b"").unwrap();
    assert_eq!(rejection(&wire), INVALID);
}

#[test]
fn huge_bodylen_is_decided_from_the_header() {
    let limits = Limits::default();
    // Over 1 GiB on a known and an unknown opcode: invalid, close, nothing buffered.
    for header in [
        "80 00 0005 00 00 0000 ffffffff 00000000 0000000000000000",
        "80 01 0005 08 00 0000 40000001 00000000 0000000000000000",
        "80 77 0000 00 00 0000 ffffffff 00000000 0000000000000000",
    ] {
        let wire = hex(header);
        assert_eq!(rejection(&wire), INVALID, "{header}");
    }
    // Exactly 1 GiB on an unknown opcode: skipped, connection kept.
    let wire = hex("80 77 0000 00 00 0000 40000000 00000000 0000000000000000");
    assert_eq!(
        rejection(&wire),
        (Outcome::UnknownCommand, 24 + (1 << 30), false)
    );
    // A Get whose body is not its key is refused at once, not waited for.
    let wire = hex("80 00 0005 00 00 0000 00100000 00000000 0000000000000000");
    assert!(matches!(
        decode(&wire, &limits),
        Decode::Reject {
            outcome: Outcome::InvalidArguments,
            close: true,
            ..
        }
    ));
}

#[test]
fn too_large_values_are_skipped_and_set_names_the_key_to_unlink() {
    let limits = Limits {
        max_key_len: 250,
        max_item_size: 1024,
        ..Limits::default()
    };
    let value = vec![b'v'; 1025];
    for (op, extras, unlink) in [
        (0x01, &[0u8; 8][..], true),
        (0x11, &[0; 8], true),
        (0x02, &[0; 8], false),
        (0x12, &[0; 8], false),
        (0x03, &[0; 8], false),
        (0x0e, &[], false),
        (0x1a, &[], false),
    ] {
        let noop = hex("80 0a 0000 00 00 0000 00000000 00000000 0000000000000000");
        let mut wire = Vec::new();
        encode_packet(&mut wire, op, 9, 0, extras, b"big", &value).unwrap();
        let total = wire.len();
        wire.extend_from_slice(&noop);
        let seen = events_with(&wire, &limits);
        assert_eq!(
            seen.events,
            [
                Event::Reject {
                    ctx: ReplyCtx::new(op, 9),
                    outcome: Outcome::TooLarge,
                    skip: total,
                    close: false,
                    unlink_key: unlink.then(|| b"big".to_vec()),
                },
                Event::Request(Command::Noop, ReplyCtx::new(0x0a, 0), 24),
            ],
            "opcode {op:#04x}"
        );
        // Decided once header (+ extras + key for Set) are buffered: the body is never awaited.
        let needed = if unlink { 24 + extras.len() + 3 } else { 24 };
        assert_eq!(decode(&wire[..needed - 1], &limits), Decode::Incomplete);
        assert!(matches!(
            decode(&wire[..needed], &limits),
            Decode::Reject { outcome: Outcome::TooLarge, skip, .. } if skip == total
        ));
    }
    // At the limit it is a request.
    let mut wire = Vec::new();
    encode_packet(&mut wire, 0x01, 0, 0, &[0; 8], b"k", &value[..1024]).unwrap();
    assert!(matches!(
        events_with(&wire, &limits).events[..],
        [Event::Request(Command::Store { .. }, _, _)]
    ));
}

#[test]
fn too_large_sasl_data_is_out_of_memory_like_memcached() {
    let limits = Limits {
        max_key_len: 250,
        max_item_size: 16,
        ..Limits::default()
    };
    let mut wire = Vec::new();
    encode_packet(&mut wire, 0x21, 0, 0, &[], b"PLAIN", &[0; 17]).unwrap();
    assert_eq!(
        rejection_with(&wire, &limits),
        (Outcome::OutOfMemory, wire.len(), false)
    );
}

// ---------------------------------------------------------------------------------------------
// Streaming.

#[test]
fn pipelined_batch_with_partial_tail() {
    let mut wire = Vec::new();
    let keys: Vec<Vec<u8>> = (0..20).map(|i| format!("key:{i}").into_bytes()).collect();
    for key in &keys {
        let get = Command::Get {
            key: &key[..],
            touch: None,
            meta: None,
        };
        let quiet_key = Variant {
            quiet: true,
            echo_key: true,
        };
        encode_request(&mut wire, &get, quiet_key, 0).unwrap();
    }
    encode_request(&mut wire, &Command::Noop, Variant::default(), 0).unwrap();
    let set = Command::Store {
        mode: StoreMode::Set,
        key: &b"tail"[..],
        value: &b"0123456789"[..],
        flags: 1,
        exptime: 0,
        cas: 0,
        meta: None,
    };
    encode_request(&mut wire, &set, Variant::default(), 0).unwrap();
    let tail = 17;
    wire.truncate(wire.len() - tail);
    let seen = events(&wire);
    assert_eq!(seen.events.len(), 21);
    for (event, key) in seen.events.iter().zip(&keys) {
        assert!(
            matches!(event, Event::Request(Command::Get { key: k, touch: None, meta: None }, ctx, _)
                if k == key && ctx.opcode == 0x0d)
        );
    }
    assert!(matches!(
        seen.events[20],
        Event::Request(Command::Noop, _, 24)
    ));
    assert_eq!(seen.buffered, 24 + 8 + 4 + 10 - tail);
}

#[test]
fn request_split_at_every_byte() {
    let wire = hex("80 02 0005 08 00 0000 00000012 00000000 0000000000000000
         deadbeef 00001c20 'Hello' 'World'");
    for cut in 0..wire.len() {
        assert_eq!(
            decode(&wire[..cut], &Limits::default()),
            Decode::Incomplete,
            "cut {cut}"
        );
    }
    assert!(matches!(
        decode(&wire, &Limits::default()),
        Decode::Request { consumed: 42, .. }
    ));
}

#[test]
fn empty_buffer_is_incomplete() {
    assert_eq!(decode(&[], &Limits::default()), Decode::Incomplete);
}

// ---------------------------------------------------------------------------------------------
// Responses, per opcode with its quiet variant.

#[test]
fn get_hit_matches_spec_example_and_quiet_hits_are_sent() {
    // Spec "Get" response: flags 0xdeadbeef, CAS 1, value "World".
    for op in [0x00, 0x09] {
        let out = response(
            &ctx(op),
            b"Hello",
            Outcome::Value {
                flags: 0xdeadbeef,
                cas: 1,
                value: b"World",
            },
        );
        assert_eq!(
            out,
            hex(&format!(
                "81 {op:02x} 0000 04 00 0000 00000009 00000000 0000000000000001 deadbeef 'World'"
            ))
        );
    }
}

#[test]
fn getk_hit_matches_spec_example_with_key() {
    for op in [0x0c, 0x0d] {
        let out = response(
            &ctx(op),
            b"Hello",
            Outcome::Value {
                flags: 0xdeadbeef,
                cas: 1,
                value: b"World",
            },
        );
        assert_eq!(
            out,
            hex(&format!(
                "81 {op:02x} 0005 04 00 0000 0000000e 00000000 0000000000000001
                 deadbeef 'Hello' 'World'"
            ))
        );
    }
}

#[test]
fn get_miss_is_not_found_text_and_quiet_misses_are_silent() {
    // Spec "Not found" example, opaque echoed.
    let ctx_get = ReplyCtx::new(0x00, 0xdeadbeef);
    assert_eq!(
        response(&ctx_get, b"Hello", Outcome::NotFound),
        hex("81 00 0000 00 00 0001 00000009 deadbeef 0000000000000000 'Not found'")
    );
    let gat = ctx(0x1d);
    assert_eq!(
        response(&gat, b"Hello", Outcome::NotFound),
        hex("81 1d 0000 00 00 0001 00000009 00000000 0000000000000000 'Not found'")
    );
    for op in [0x09, 0x0d, 0x1e, 0x24] {
        assert!(response(&ctx(op), b"Hello", Outcome::NotFound).is_empty());
    }
}

#[test]
fn k_variant_miss_returns_the_key_without_text() {
    for op in [0x0c, 0x23] {
        assert_eq!(
            response(&ctx(op), b"Hello", Outcome::NotFound),
            hex(&format!(
                "81 {op:02x} 0005 00 00 0001 00000005 00000000 0000000000000000 'Hello'"
            ))
        );
    }
}

#[test]
fn quiet_get_errors_other_than_miss_are_sent() {
    let out = response(&ctx(0x0d), b"k", Outcome::OutOfMemory);
    assert_eq!(
        out,
        hex("81 0d 0000 00 00 0082 0000000d 00000000 0000000000000000 'Out of memory'")
    );
}

#[test]
fn gat_hits_carry_flags_and_value() {
    let hit = Outcome::Value {
        flags: 5,
        cas: 0x1122,
        value: &b"v"[..],
    };
    for op in [0x1d, 0x1e] {
        assert_eq!(
            response(&ctx(op), b"key", hit.clone()),
            hex(&format!(
                "81 {op:02x} 0000 04 00 0000 00000005 00000000 0000000000001122 00000005 'v'"
            ))
        );
    }
    for op in [0x23, 0x24] {
        assert_eq!(
            response(&ctx(op), b"key", hit.clone()),
            hex(&format!(
                "81 {op:02x} 0003 04 00 0000 00000008 00000000 0000000000001122 00000005 'key' 'v'"
            ))
        );
    }
}

#[test]
fn touch_reply_carries_flags_and_no_value() {
    let wire = hex("81 1c 0000 04 00 0000 00000004 00000000 0000000000000009 0000002a");
    let touched = Outcome::Touched { flags: 42, cas: 9 };
    assert_eq!(response(&ctx(0x1c), b"k", touched), wire);
    // Also when the server hands it the item as a value.
    let value = Outcome::Value {
        flags: 42,
        cas: 9,
        value: &b"ignored"[..],
    };
    assert_eq!(response(&ctx(0x1c), b"k", value), wire);
    assert_eq!(
        response(&ctx(0x1c), b"k", Outcome::NotFound),
        hex("81 1c 0000 00 00 0001 00000009 00000000 0000000000000000 'Not found'")
    );
}

#[test]
fn store_success_matches_spec_example_and_quiet_success_is_silent() {
    // Spec "Add" response: CAS 1, no body.
    for op in [0x01, 0x02, 0x03, 0x0e, 0x0f] {
        assert_eq!(
            response(&ctx(op), b"Hello", Outcome::Stored { cas: 1 }),
            hex(&format!(
                "81 {op:02x} 0000 00 00 0000 00000000 00000000 0000000000000001"
            ))
        );
    }
    for op in [0x11, 0x12, 0x13, 0x19, 0x1a] {
        assert!(response(&ctx(op), b"Hello", Outcome::Stored { cas: 1 }).is_empty());
    }
}

#[test]
fn store_errors_are_sent_for_quiet_variants_too() {
    let cases: [(Outcome<&[u8]>, &str); 5] = [
        (
            Outcome::NotFound,
            "0001 00000009 00000000 0000000000000000 'Not found'",
        ),
        (
            Outcome::Exists,
            "0002 00000014 00000000 0000000000000000 'Data exists for key.'",
        ),
        (
            Outcome::TooLarge,
            "0003 0000000a 00000000 0000000000000000 'Too large.'",
        ),
        (
            Outcome::NotStored,
            "0005 0000000b 00000000 0000000000000000 'Not stored.'",
        ),
        (
            Outcome::OutOfMemory,
            "0082 0000001d 00000000 0000000000000000 'Out of memory allocating item'",
        ),
    ];
    for op in [0x01, 0x11, 0x02, 0x12, 0x03, 0x13, 0x0e, 0x19, 0x0f, 0x1a] {
        for (outcome, rest) in &cases {
            assert_eq!(
                response(&ctx(op), b"k", outcome.clone()),
                hex(&format!("81 {op:02x} 0000 00 00 {rest}")),
                "opcode {op:#04x} {outcome:?}"
            );
        }
    }
}

#[test]
fn delete_reply_has_zero_cas_and_deleteq_success_is_silent() {
    assert_eq!(
        response(&ctx(0x04), b"Hello", Outcome::Deleted),
        hex("81 04 0000 00 00 0000 00000000 00000000 0000000000000000")
    );
    assert!(response(&ctx(0x14), b"Hello", Outcome::Deleted).is_empty());
    for op in [0x04, 0x14] {
        assert_eq!(
            response(&ctx(op), b"Hello", Outcome::NotFound),
            hex(&format!(
                "81 {op:02x} 0000 00 00 0001 00000009 00000000 0000000000000000 'Not found'"
            ))
        );
        assert_eq!(
            response(&ctx(op), b"Hello", Outcome::Exists),
            hex(&format!(
                "81 {op:02x} 0000 00 00 0002 00000014 00000000 0000000000000000
                 'Data exists for key.'"
            ))
        );
    }
}

#[test]
fn counter_reply_matches_spec_example_and_quiet_success_is_silent() {
    // Spec "Increment" response: value 0, CAS 5.
    for op in [0x05, 0x06] {
        assert_eq!(
            response(&ctx(op), b"counter", Outcome::Counter { value: 0, cas: 5 }),
            hex(&format!(
                "81 {op:02x} 0000 00 00 0000 00000008 00000000 0000000000000005 0000000000000000"
            ))
        );
    }
    assert_eq!(
        response(
            &ctx(0x05),
            b"c",
            Outcome::Counter {
                value: u64::MAX,
                cas: 1
            }
        ),
        hex("81 05 0000 00 00 0000 00000008 00000000 0000000000000001 ffffffffffffffff")
    );
    for op in [0x15, 0x16] {
        assert!(response(&ctx(op), b"c", Outcome::Counter { value: 3, cas: 5 }).is_empty());
        assert_eq!(
            response(&ctx(op), b"c", Outcome::NonNumeric),
            hex(&format!(
                "81 {op:02x} 0000 00 00 0006 0000002e 00000000 0000000000000000
                 'Non-numeric server-side value for incr or decr'"
            ))
        );
        assert_eq!(
            response(&ctx(op), b"c", Outcome::NotFound),
            hex(&format!(
                "81 {op:02x} 0000 00 00 0001 00000009 00000000 0000000000000000 'Not found'"
            ))
        );
        assert_eq!(
            response(&ctx(op), b"c", Outcome::OutOfMemory),
            hex(&format!(
                "81 {op:02x} 0000 00 00 0082 00000020 00000000 0000000000000000
                 'Out of memory incrementing value'"
            ))
        );
    }
}

#[test]
fn quit_flush_noop_replies_are_empty_with_zero_cas() {
    for op in [0x07, 0x08, 0x0a] {
        assert_eq!(
            response(&ReplyCtx::new(op, 0xdeadbeef), b"", Outcome::Done),
            hex(&format!(
                "81 {op:02x} 0000 00 00 0000 00000000 deadbeef 0000000000000000"
            ))
        );
    }
    assert!(response(&ctx(0x18), b"", Outcome::Done).is_empty());
    assert_eq!(
        response(&ctx(0x18), b"", Outcome::AuthError),
        hex("81 18 0000 00 00 0020 0000000d 00000000 0000000000000000 'Auth failure.'")
    );
}

#[test]
fn quitq_success_is_silent_but_protocol_errors_are_sent() {
    assert!(response(&ctx(0x17), b"", Outcome::Done).is_empty());
    // Found by fuzzing, checked on memcached 1.6.18: a malformed QuitQ gets its error.
    let wire = hex("80 17 0003 00 00 0000 00000002 00000000 0000000000000000 'abc'");
    let seen = events(&wire);
    let [Event::Reject {
        ctx: quitq,
        outcome,
        ..
    }] = &seen.events[..]
    else {
        panic!("{seen:?}");
    };
    assert_eq!(
        response(quitq, b"", outcome.as_ref().map_bytes(|v| &v[..])),
        hex("81 17 0000 00 00 0081 0000000f 00000000 0000000000000000 'Unknown command'")
    );
    assert_eq!(
        response(&ctx(0x17), b"", Outcome::InvalidArguments),
        hex("81 17 0000 00 00 0004 00000011 00000000 0000000000000000 'Invalid arguments'")
    );
}

#[test]
fn version_reply_carries_the_string() {
    // Spec "Version" response layout, with our version string.
    let version = crate::VERSION_STRING.as_bytes();
    let out = response(&ctx(0x0b), b"", Outcome::Version(version));
    let expected = [
        hex(&format!(
            "81 0b 0000 00 00 0000 {:08x} 00000000 0000000000000000",
            version.len()
        )),
        version.to_vec(),
    ]
    .concat();
    assert_eq!(out, expected);
    assert!(crate::VERSION_STRING.starts_with("1.6."));
}

#[test]
fn stats_stream_one_packet_per_pair_then_terminator() {
    let pairs = vec![
        ("pid".to_string(), "3078".to_string()),
        ("evictions".to_string(), "on".to_string()),
        ("empty".to_string(), String::new()),
    ];
    let out = response(&ReplyCtx::new(0x10, 7), b"", Outcome::Stats(pairs));
    // First packet: the spec's "Stat" example (key "pid", value "3078"), opaque echoed.
    let expected = hex(
        "81 10 0003 00 00 0000 00000007 00000007 0000000000000000 'pid' '3078'
         81 10 0009 00 00 0000 0000000b 00000007 0000000000000000 'evictions' 'on'
         81 10 0005 00 00 0000 00000005 00000007 0000000000000000 'empty'
         81 10 0000 00 00 0000 00000000 00000007 0000000000000000",
    );
    assert_eq!(out, expected);
    // "stats reset" and friends: the terminator alone.
    assert_eq!(
        response(&ctx(0x10), b"", Outcome::Stats(vec![])),
        hex("81 10 0000 00 00 0000 00000000 00000000 0000000000000000")
    );
}

#[test]
fn unknown_stats_group_is_one_not_found_packet() {
    assert_eq!(
        response(&ctx(0x10), b"conns", Outcome::UnknownStatsGroup),
        hex("81 10 0000 00 00 0001 00000009 00000000 0000000000000000 'Not found'")
    );
}

#[test]
fn sasl_replies() {
    assert_eq!(
        response(&ctx(0x20), b"", Outcome::SaslMechs(b"PLAIN")),
        hex("81 20 0000 00 00 0000 00000005 00000000 0000000000000000 'PLAIN'")
    );
    for op in [0x21, 0x22] {
        assert_eq!(
            response(&ctx(op), b"PLAIN", Outcome::Authenticated),
            hex(&format!(
                "81 {op:02x} 0000 00 00 0000 0000000d 00000000 0000000000000000 'Authenticated'"
            ))
        );
        assert_eq!(
            response(&ctx(op), b"PLAIN", Outcome::AuthContinue(b"nonce")),
            hex(&format!(
                "81 {op:02x} 0000 00 00 0021 00000005 00000000 0000000000000000 'nonce'"
            ))
        );
        assert_eq!(
            response(&ctx(op), b"PLAIN", Outcome::AuthError),
            hex(&format!(
                "81 {op:02x} 0000 00 00 0020 0000000d 00000000 0000000000000000 'Auth failure.'"
            ))
        );
        assert_eq!(
            response(&ctx(op), b"PLAIN", Outcome::UnknownCommand),
            hex(&format!(
                "81 {op:02x} 0000 00 00 0081 0000000f 00000000 0000000000000000 'Unknown command'"
            ))
        );
    }
}

#[test]
fn protocol_errors_are_never_suppressed() {
    for op in [0x09, 0x11, 0x14, 0x15, 0x18, 0x1e, 0x24] {
        assert_eq!(
            response(&ctx(op), b"k", Outcome::InvalidArguments),
            hex(&format!(
                "81 {op:02x} 0000 00 00 0004 00000011 00000000 0000000000000000 'Invalid arguments'"
            ))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Client side: response decoding.

#[test]
fn decode_response_reads_spec_getk_example_and_waits_for_the_rest() {
    let wire =
        hex("81 0c 0005 04 00 0000 0000000e 00000000 0000000000000001 deadbeef 'Hello' 'World'");
    for cut in 0..wire.len() {
        assert_eq!(decode_response(&wire[..cut]), ResponseDecode::Incomplete);
    }
    let ResponseDecode::Response { response, consumed } = decode_response(&wire) else {
        panic!("not decoded");
    };
    assert_eq!(consumed, wire.len());
    assert_eq!(
        (response.key, response.value),
        (&b"Hello"[..], &b"World"[..])
    );
    assert_eq!(
        response.outcome(),
        Some(Outcome::Value {
            flags: 0xdeadbeef,
            cas: 1,
            value: &b"World"[..],
        })
    );
    assert_eq!(decode_response(&[0x80]), ResponseDecode::Invalid);
    let short = hex("81 00 0005 00 00 0000 00000004 00000000 0000000000000000");
    assert_eq!(decode_response(&short), ResponseDecode::Invalid);
}

#[test]
fn encode_request_refuses_what_the_wire_cannot_carry() {
    let mut out = Vec::new();
    let quiet = Variant {
        quiet: true,
        echo_key: false,
    };
    let keyed = Variant {
        quiet: false,
        echo_key: true,
    };
    let cases: [(Command<&[u8]>, Variant, EncodeError); 6] = [
        (Command::Noop, quiet, EncodeError::NoSuchVariant),
        (Command::Version, keyed, EncodeError::NoSuchVariant),
        (
            Command::Touch {
                key: b"k",
                exptime: -1,
            },
            Variant::default(),
            EncodeError::Unrepresentable,
        ),
        (
            Command::Store {
                mode: StoreMode::Append,
                key: b"k",
                value: b"v",
                flags: 1,
                exptime: 0,
                cas: 0,
                meta: None,
            },
            Variant::default(),
            EncodeError::Unrepresentable,
        ),
        (
            Command::Arith {
                op: ArithOp::Incr,
                key: b"k",
                delta: 1,
                on_miss: Some((0, 0xffff_ffff)),
                cas: 0,
                meta: None,
            },
            Variant::default(),
            EncodeError::Unrepresentable,
        ),
        (
            Command::Get {
                key: &[0; 65536],
                touch: None,
                meta: None,
            },
            Variant::default(),
            EncodeError::TooLong,
        ),
    ];
    for (command, variant, error) in cases {
        assert_eq!(encode_request(&mut out, &command, variant, 0), Err(error));
        assert!(out.is_empty(), "nothing appended on error");
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests.

fn bytes(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), len)
}

fn exptime() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        0..=2_592_000i64,
        (0..=u32::MAX).prop_map(i64::from)
    ]
}

/// Any command the binary wire carries.
fn command() -> impl Strategy<Value = Command<Vec<u8>>> {
    let key = || bytes(1..=250);
    let mode = prop_oneof![
        Just(StoreMode::Set),
        Just(StoreMode::Add),
        Just(StoreMode::Replace),
        Just(StoreMode::Append),
        Just(StoreMode::Prepend),
    ];
    prop_oneof![
        (key(), prop::option::of(exptime())).prop_map(|(key, touch)| Command::Get {
            key,
            touch,
            meta: None
        }),
        (
            mode,
            key(),
            bytes(0..=100),
            any::<u32>(),
            exptime(),
            any::<u64>()
        )
            .prop_map(|(mode, key, value, flags, exptime, cas)| {
                let (flags, exptime) = match mode {
                    StoreMode::Append | StoreMode::Prepend => (0, 0),
                    _ => (flags, exptime),
                };
                Command::Store {
                    mode,
                    key,
                    value,
                    flags,
                    exptime,
                    cas,
                    meta: None,
                }
            }),
        (
            prop_oneof![Just(ArithOp::Incr), Just(ArithOp::Decr)],
            key(),
            any::<u64>(),
            prop::option::of((any::<u64>(), 0..u32::MAX).prop_map(|(i, e)| (i, i64::from(e)))),
            any::<u64>()
        )
            .prop_map(|(op, key, delta, on_miss, cas)| Command::Arith {
                op,
                key,
                delta,
                on_miss,
                cas,
                meta: None,
            }),
        (key(), any::<u64>()).prop_map(|(key, cas)| Command::Delete { key, cas }),
        (key(), exptime()).prop_map(|(key, exptime)| Command::Touch { key, exptime }),
        exptime().prop_map(|delay| Command::Flush { delay }),
        Just(Command::Noop),
        Just(Command::Version),
        Just(Command::Quit),
        bytes(0..=250).prop_map(|group| Command::Stats { group }),
        Just(Command::SaslListMechs),
        (key(), bytes(0..=64)).prop_map(|(mechanism, data)| Command::SaslAuth { mechanism, data }),
        (key(), bytes(0..=64)).prop_map(|(mechanism, data)| Command::SaslStep { mechanism, data }),
    ]
}

/// A command with one of the variants it has, and an opaque.
fn request_case() -> impl Strategy<Value = (Command<Vec<u8>>, Variant, u32)> {
    (command(), any::<bool>(), any::<bool>(), any::<u32>()).prop_map(
        |(command, quiet, echo_key, opaque)| {
            // Fall back to the nearest variant the command has.
            let variant = [
                Variant { quiet, echo_key },
                Variant {
                    quiet,
                    echo_key: false,
                },
                Variant::default(),
            ]
            .into_iter()
            .find(|v| request_opcode(&command, *v).is_some())
            .expect("plain variant exists");
            (command, variant, opaque)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn decode_of_encoded_request_is_the_request((command, variant, opaque) in request_case()) {
        let mut wire = Vec::new();
        let ctx = encode_request(&mut wire, &map_ref(&command), variant, opaque).unwrap();
        prop_assert_eq!(ctx.quiet, variant.quiet);
        prop_assert_eq!(ctx.echo_key, variant.echo_key);
        match decode(&wire, &Limits::default()) {
            Decode::Request { command: decoded, ctx: decoded_ctx, consumed } => {
                prop_assert_eq!(decoded.map_bytes(<[u8]>::to_vec), command);
                prop_assert_eq!(decoded_ctx, ctx);
                prop_assert_eq!(consumed, wire.len());
            }
            other => prop_assert!(false, "not a request: {:?}", other),
        }
    }

    #[test]
    fn pipelined_requests_decode_in_order_across_any_reads(
        cases in prop::collection::vec(request_case(), 1..12),
        chunk in 1usize..64,
    ) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for (command, variant, opaque) in &cases {
            let start = wire.len();
            let ctx = encode_request(&mut wire, &map_ref(command), *variant, *opaque).unwrap();
            expected.push(Event::Request(command.clone(), ctx, wire.len() - start));
        }
        let seen = feed(&wire, chunk, &Limits::default());
        prop_assert_eq!(seen.events, expected);
        prop_assert_eq!(seen.buffered, 0);
    }

    #[test]
    fn decode_of_any_bytes_keeps_its_promises(input in bytes(0..=300)) {
        // Arbitrary input: fragmenting must not change the outcome, and events() asserts
        // consumed/skip bounds on every step.
        let _ = events_with(&input, &Limits { max_key_len: 250, max_item_size: 64, ..Limits::default() });
        // Headers with a valid magic reach the opcode-level checks.
        let mut framed = input.clone();
        if framed.len() >= 24 {
            framed[0] = REQUEST_MAGIC;
            let _ = events_with(&framed, &Limits { max_key_len: 250, max_item_size: 64, ..Limits::default() });
        }
    }

    #[test]
    fn response_decodes_to_the_encoded_outcome((op, outcome) in reply_case(), opaque in any::<u32>()) {
        let ctx = ReplyCtx::new(op, opaque);
        let outcome = outcome.as_ref().map_bytes(|v| &v[..]);
        let mut wire = Vec::new();
        encode_response(&mut wire, &ctx, b"some-key", &outcome);
        let ResponseDecode::Response { response, consumed } = decode_response(&wire) else {
            return Err(TestCaseError::fail("no response"));
        };
        prop_assert_eq!(consumed, wire.len());
        prop_assert_eq!((response.opcode, response.opaque, response.datatype), (op, opaque, 0));
        prop_assert_eq!(response.outcome(), Some(outcome.clone()));
        // memcapable's header rules: errors have no extras and CAS 0.
        if response.status != status::NO_ERROR {
            prop_assert_eq!((response.cas, response.extras.len()), (0, 0));
        }
    }

    #[test]
    fn quiet_replies_are_exactly_the_suppressed_ones((op, outcome) in reply_case()) {
        let outcome = outcome.as_ref().map_bytes(|v| &v[..]);
        let quiet_op = match op {
            0x00 => 0x09, 0x0c => 0x0d, 0x1d => 0x1e, 0x23 => 0x24,
            0x01 => 0x11, 0x02 => 0x12, 0x03 => 0x13, 0x0e => 0x19, 0x0f => 0x1a,
            0x04 => 0x14, 0x05 => 0x15, 0x06 => 0x16, 0x08 => 0x18,
            other => other,
        };
        let quiet = ReplyCtx::new(quiet_op, 0);
        let mut out = Vec::new();
        encode_response(&mut out, &quiet, b"k", &outcome);
        let silent = out.is_empty();
        let expected_silent = quiet.quiet && match outcome {
            Outcome::NotFound => matches!(quiet_op, 0x09 | 0x0d | 0x1e | 0x24),
            Outcome::Stored { .. } | Outcome::Deleted | Outcome::Counter { .. } | Outcome::Done => {
                !matches!(quiet_op, 0x09 | 0x0d | 0x1e | 0x24)
            }
            _ => false,
        };
        prop_assert_eq!(silent, expected_silent);
    }
}

/// An opcode with an outcome its reply can carry (non-quiet opcodes).
fn reply_case() -> impl Strategy<Value = (u8, Outcome<Vec<u8>>)> {
    let error = prop_oneof![
        Just(Outcome::Exists),
        Just(Outcome::NotStored),
        Just(Outcome::NonNumeric),
        Just(Outcome::TooLarge),
        Just(Outcome::OutOfMemory),
        Just(Outcome::InvalidArguments),
        Just(Outcome::UnknownCommand),
        Just(Outcome::AuthError),
    ];
    let any_op = prop::sample::select(vec![
        0x00u8, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x08, 0x0a, 0x0b, 0x0c, 0x0e, 0x0f, 0x10, 0x1c,
        0x1d, 0x20, 0x21, 0x22, 0x23,
    ]);
    let get_op = prop::sample::select(vec![0x00u8, 0x0c, 0x1d, 0x23]);
    prop_oneof![
        (any_op, error),
        (get_op.clone(), any::<u32>(), any::<u64>(), bytes(0..=100))
            .prop_map(|(op, flags, cas, value)| (op, Outcome::Value { flags, cas, value })),
        get_op.prop_map(|op| (op, Outcome::NotFound)),
        (any::<u32>(), any::<u64>())
            .prop_map(|(flags, cas)| (0x1c, Outcome::Touched { flags, cas })),
        (
            prop::sample::select(vec![0x01u8, 0x02, 0x03, 0x0e, 0x0f]),
            any::<u64>()
        )
            .prop_map(|(op, cas)| (op, Outcome::Stored { cas })),
        Just((0x04, Outcome::Deleted)),
        Just((0x04, Outcome::NotFound)),
        (
            prop::sample::select(vec![0x05u8, 0x06]),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(op, value, cas)| (op, Outcome::Counter { value, cas })),
        prop::sample::select(vec![0x07u8, 0x08, 0x0a]).prop_map(|op| (op, Outcome::Done)),
        bytes(1..=40).prop_map(|v| (0x0b, Outcome::Version(v))),
        Just((0x10, Outcome::UnknownStatsGroup)),
        bytes(0..=40).prop_map(|v| (0x20, Outcome::SaslMechs(v))),
        prop::sample::select(vec![0x21u8, 0x22]).prop_map(|op| (op, Outcome::Authenticated)),
        (prop::sample::select(vec![0x21u8, 0x22]), bytes(0..=40))
            .prop_map(|(op, v)| (op, Outcome::AuthContinue(v))),
    ]
}

trait AsRefOutcome {
    fn as_ref(&self) -> Outcome<&Vec<u8>>;
}

impl AsRefOutcome for Outcome<Vec<u8>> {
    fn as_ref(&self) -> Outcome<&Vec<u8>> {
        match self {
            Outcome::Value { flags, cas, value } => Outcome::Value {
                flags: *flags,
                cas: *cas,
                value,
            },
            Outcome::Version(v) => Outcome::Version(v),
            Outcome::SaslMechs(v) => Outcome::SaslMechs(v),
            Outcome::AuthContinue(v) => Outcome::AuthContinue(v),
            other => other.clone().map_bytes(|_| unreachable!("no bytes")),
        }
    }
}

#[test]
fn values_beyond_the_buffer_room_are_out_of_memory_and_skipped() {
    let limits = Limits {
        buffer_room: 100,
        ..Limits::default()
    };
    let value = vec![b'v'; 200];
    for (op, unlink) in [(0x01u8, true), (0x02, false), (0x11, true)] {
        let mut wire = Vec::new();
        encode_packet(&mut wire, op, 5, 0, &[0; 8], b"key", &value).unwrap();
        let total = wire.len();
        // Decided from the header and key alone: the value is never awaited.
        assert!(matches!(
            decode(&wire[..24 + 8 + 3], &limits),
            Decode::Reject { outcome: Outcome::OutOfMemory, skip, unlink_key, .. }
                if skip == total && unlink_key.is_some() == unlink
        ));
        let mut out = Vec::new();
        let Decode::Reject { ctx, outcome, .. } = decode(&wire, &limits) else {
            panic!("not refused");
        };
        crate::protocol::Codec::encode(
            &mut BinaryCodec,
            &mut out,
            &ctx,
            b"",
            &outcome.map_bytes(|b| b),
        );
        assert_eq!(&out[6..8], &[0x00, 0x82], "ENOMEM status, opcode {op:#04x}");
    }
    // Within the room it is a request.
    let mut wire = Vec::new();
    encode_packet(&mut wire, 0x01, 0, 0, &[0; 8], b"k", &value[..50]).unwrap();
    assert!(matches!(decode(&wire, &limits), Decode::Request { .. }));
}

#[test]
fn split_encoding_is_the_whole_encoding_with_the_value_put_in_by_the_caller() {
    let value = b"a value sent from elsewhere";
    let hit = Outcome::Value {
        flags: 7,
        cas: 42,
        value: &value[..],
    };
    // GET, GETQ, GETK, GETKQ, GAT, GATK: each carries the value; TOUCH and misses do not split.
    for op in [0x00, 0x09, 0x0c, 0x0d, 0x1d, 0x23] {
        let c = ctx(op);
        let mut split = Vec::new();
        let done = BinaryCodec.encode_split(&mut split, &c, b"key", &hit, &mut |out| {
            out.extend_from_slice(value)
        });
        assert!(done, "opcode {op:#x}");
        assert_eq!(split, response(&c, b"key", hit.clone()), "opcode {op:#x}");
    }
    let mut out = Vec::new();
    let never = &mut |_: &mut Vec<u8>| panic!("no value to place");
    assert!(!BinaryCodec.encode_split(&mut out, &ctx(0x1c), b"key", &hit, never));
    assert!(!BinaryCodec.encode_split(&mut out, &ctx(0x00), b"key", &Outcome::NotFound, never));
    assert!(out.is_empty());
}
