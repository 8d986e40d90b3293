//! memcached's meta commands (mg, ms, md, ma, mn, me) on a text connection.
use super::{Decode, Limits, Outcome};

/// How to answer one meta request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaCtx;

/// Decodes the meta command whose line is `content`.
pub(crate) fn decode<'a>(
    _buf: &'a [u8],
    _content: &'a [u8],
    _line_len: usize,
    _limits: &Limits,
) -> Decode<'a, super::text::ReplyCtx> {
    Decode::Close
}

/// Appends the reply to a meta request.
pub(crate) fn encode(_out: &mut Vec<u8>, _ctx: &MetaCtx, _key: &[u8], _outcome: &Outcome<&[u8]>) {}
