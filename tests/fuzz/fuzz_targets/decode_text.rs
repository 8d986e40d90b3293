//! Fuzzes the text + meta request decoder as a connection uses it: decode, consume or skip,
//! repeat. Asserts what was decoded, not only that nothing panicked: bounds of `consumed`/`skip`,
//! borrowed fields inside the input, limits respected, meta commands matching the command word
//! and flags of their line, and every reply well-formed.
#![no_main]

use corecached::protocol::text::{ReplyCtx, TextCodec, MAX_LINE};
use corecached::protocol::{
    ArithMeta, Codec, Command, Decode, GetMeta, ItemMeta, Limits, Outcome, StoreMeta,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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

fn within(inner: &[u8], outer: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr_range(), inner.as_ptr_range());
    inner.is_empty() || (o.start <= i.start && i.end <= o.end)
}

/// The first line's words: up to `\n`, one trailing `\r` dropped, split on spaces only (a `\r`
/// inside the line belongs to its token, as in memcached).
fn first_words(rest: &[u8]) -> Vec<&[u8]> {
    let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
    line.split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .collect()
}

fn has_flag(words: &[&[u8]], f: u8) -> bool {
    words.iter().skip(2).any(|w| w[0] == f)
}

fn check_stream(data: &[u8], limits: &Limits) {
    let mut codec = TextCodec::default();
    let mut rest = data;
    // Each step consumes at least one byte, or hands out one more key of a multi-get line.
    for _ in 0..data.len() * 2 + 2 {
        match codec.decode(rest, limits) {
            Decode::Request {
                command,
                ctx,
                consumed,
            } => {
                assert!(consumed <= rest.len());
                let mut fields = Vec::new();
                command.clone().map_bytes(|b| fields.push(b));
                for f in fields {
                    assert!(within(f, rest));
                }
                if let Some(key) = command.key() {
                    assert!(key.len() <= limits.max_key_len);
                }
                if let Command::Store { value, .. } = &command {
                    assert!(value.len() <= limits.max_item_size);
                }
                check_meta(&command, &ctx, rest);
                check_replies(&mut codec, &ctx, command.key().copied().unwrap_or_default());
                if matches!(command, Command::Quit) {
                    return;
                }
                rest = &rest[consumed..];
            }
            Decode::Incomplete => {
                // No full line yet, or a storage command waiting for its data block.
                if let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                    let words = first_words(rest);
                    let storage: &[&[u8]] = &[
                        b"set", b"add", b"replace", b"append", b"prepend", b"cas", b"ms",
                    ];
                    assert!(
                        storage.contains(&words.first().copied().unwrap_or_default()),
                        "incomplete with a full line {:?}",
                        &rest[..nl]
                    );
                }
                return;
            }
            Decode::Reject {
                ctx,
                outcome,
                skip,
                close,
                ..
            } => {
                assert!(skip > 0);
                let mut out = Vec::new();
                codec.encode(&mut out, &ctx, b"", &outcome);
                if !out.is_empty() {
                    assert!(out.ends_with(b"\r\n"));
                    assert!(
                        // gat/gats without keys: memcached 1.6.18 answers a bare END.
                        out == b"END\r\n"
                            || out.starts_with(b"ERROR")
                            || out.starts_with(b"CLIENT_ERROR ")
                            || out.starts_with(b"SERVER_ERROR "),
                        "{:?}",
                        String::from_utf8_lossy(&out)
                    );
                }
                if close || skip >= rest.len() {
                    return;
                }
                rest = &rest[skip..];
            }
            Decode::Close => {
                // A line too long to be a request, or a web request line (last word HTTP/...).
                let http = first_words(rest)
                    .last()
                    .is_some_and(|w| w.starts_with(b"HTTP/"));
                assert!(rest.len() > MAX_LINE || http);
                return;
            }
        }
    }
    panic!("decoder made no progress");
}

/// Meta commands come from the matching command word, with the flags that ask for them.
fn check_meta(command: &Command<&[u8]>, ctx: &ReplyCtx, rest: &[u8]) {
    let words = first_words(rest);
    let word = words.first().copied().unwrap_or_default();
    match command {
        Command::Get {
            meta:
                Some(GetMeta {
                    vivify,
                    recache,
                    new_cas,
                    ..
                }),
            ..
        } => {
            assert_eq!(word, b"mg");
            assert_eq!(vivify.is_some(), has_flag(&words, b'N'));
            assert_eq!(recache.is_some(), has_flag(&words, b'R'));
            assert_eq!(*new_cas != 0, has_flag(&words, b'E'));
        }
        Command::Store {
            meta:
                Some(StoreMeta {
                    invalidate,
                    new_cas,
                }),
            ..
        } => {
            assert_eq!(word, b"ms");
            assert!(*invalidate || *new_cas != 0);
            assert_eq!(*invalidate, has_flag(&words, b'I'));
        }
        Command::Invalidate { exptime, .. } => {
            assert_eq!(word, b"md");
            assert!(has_flag(&words, b'I'));
            assert_eq!(exptime.is_some(), has_flag(&words, b'T'));
        }
        Command::Arith {
            meta: Some(ArithMeta { touch, .. }),
            ..
        } => {
            assert_eq!(word, b"ma");
            assert_eq!(touch.is_some(), has_flag(&words, b'T'));
        }
        _ => {}
    }
    if matches!(ctx, ReplyCtx::Meta(_)) {
        assert!(word.len() == 2 && word[0] == b'm');
    }
}

/// Every reply the request can get is empty (quiet) or whole lines.
fn check_replies(codec: &mut TextCodec, ctx: &ReplyCtx, key: &[u8]) {
    let meta = ItemMeta {
        stale: true,
        token_sent: true,
        won: false,
        ..ItemMeta::default()
    };
    let outcomes: [Outcome<&[u8]>; 8] = [
        Outcome::Item {
            flags: 1,
            cas: 2,
            value: b"v",
            meta,
        },
        Outcome::Value {
            flags: 1,
            cas: 2,
            value: b"v",
        },
        Outcome::Stored { cas: 3 },
        Outcome::Deleted,
        Outcome::NotFound,
        Outcome::Exists,
        Outcome::MetaCounter {
            value: 7,
            cas: 4,
            ttl: -1,
        },
        Outcome::Counter { value: 7, cas: 4 },
    ];
    for o in &outcomes {
        let mut out = Vec::new();
        codec.encode(&mut out, ctx, key, o);
        assert!(out.is_empty() || out.ends_with(b"\r\n"));
    }
}
