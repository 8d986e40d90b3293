//! TEMPORARY stand-in for `protocol::binary` until the codec branch lands.
#![allow(dead_code, missing_docs)]
use crate::protocol::{Decode, Limits, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyCtx;

pub fn decode<'a>(_buf: &'a [u8], _limits: &Limits) -> Decode<'a, ReplyCtx> {
    todo!()
}

pub fn encode_response(_out: &mut Vec<u8>, _ctx: &ReplyCtx, _key: &[u8], _o: &Outcome<&[u8]>) {
    todo!()
}
