//! memcached's UDP framing, pure: every datagram starts with an 8-byte header of four
//! big-endian u16 — request id, sequence number, datagrams in the message, reserved (0).
//!
//! As memcached 1.6.18: a request is one datagram (a header announcing more than one datagram,
//! or a datagram of 8 bytes or less, is dropped unanswered; the sequence number and the
//! reserved field are not looked at). Each response is its own message: its bytes are cut into
//! datagrams of at most [`MAX_PAYLOAD`] bytes, header included, numbered from 0, each carrying
//! the message's datagram count and the request id. An empty response is one header-only
//! datagram with a count of 0 (memcached sends it for, e.g., a missed key of a multi-key get).

/// Bytes of the frame header.
pub const HEADER_LEN: usize = 8;
/// Largest datagram sent, header included (memcached's `UDP_MAX_PAYLOAD_SIZE`).
pub const MAX_PAYLOAD: usize = 1400;
/// Response bytes per datagram (memcached's `UDP_DATA_SIZE`).
pub const DATA_PER_DATAGRAM: usize = MAX_PAYLOAD - HEADER_LEN;

/// A request datagram's id and payload; `None` for what memcached drops unanswered.
pub fn parse_request(datagram: &[u8]) -> Option<(u16, &[u8])> {
    if datagram.len() <= HEADER_LEN {
        return None;
    }
    // Requests spanning several datagrams are not supported (memcached drops them too).
    if datagram[4..6] != [0, 1] {
        return None;
    }
    let id = u16::from_be_bytes([datagram[0], datagram[1]]);
    Some((id, &datagram[HEADER_LEN..]))
}

/// The header of datagram `seq` of a `total`-datagram message answering request `id`.
pub fn header(id: u16, seq: u16, total: u16) -> [u8; HEADER_LEN] {
    let [a, b] = id.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    let [e, f] = total.to_be_bytes();
    [a, b, c, d, e, f, 0, 0]
}

/// Datagrams in the message carrying `len` response bytes (capped at u16's range as memcached
/// caps it; the sequence numbers of a longer message wrap).
pub fn datagram_count(len: usize) -> u16 {
    len.div_ceil(DATA_PER_DATAGRAM).min(u16::MAX as usize) as u16
}

/// Hands each datagram of the message carrying `response` to `emit` as header and data, in
/// order.
pub fn frame(id: u16, response: &[u8], mut emit: impl FnMut(&[u8; HEADER_LEN], &[u8])) {
    let total = datagram_count(response.len());
    if response.is_empty() {
        emit(&header(id, 0, 0), &[]);
        return;
    }
    for (seq, chunk) in response.chunks(DATA_PER_DATAGRAM).enumerate() {
        emit(&header(id, seq as u16, total), chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagrams(id: u16, response: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        frame(id, response, |h, d| out.push([&h[..], d].concat()));
        out
    }

    #[test]
    fn requests_are_one_datagram_with_a_payload() {
        assert_eq!(parse_request(b""), None);
        assert_eq!(parse_request(&[0, 1, 0, 0, 0, 1, 0, 0]), None);
        assert_eq!(
            parse_request(b"\x01\x02\x00\x00\x00\x01\x00\x00get a\r\n"),
            Some((0x0102, &b"get a\r\n"[..]))
        );
        // The count must be 1; the sequence and reserved fields are ignored.
        assert_eq!(
            parse_request(b"\x00\x07\x00\x00\x00\x02\x00\x00get a\r\n"),
            None
        );
        assert_eq!(
            parse_request(b"\x00\x07\x00\x00\x00\x00\x00\x00get a\r\n"),
            None
        );
        assert_eq!(parse_request(b"\x01\x00\x00\x01\x00get a\r\n"), None);
        assert!(parse_request(b"\x00\x07\x00\x05\x00\x01\x00\x09get a\r\n").is_some());
    }

    #[test]
    fn responses_split_into_numbered_datagrams() {
        let small = datagrams(7, b"STORED\r\n");
        assert_eq!(
            small,
            vec![b"\x00\x07\x00\x00\x00\x01\x00\x00STORED\r\n".to_vec()]
        );
        assert_eq!(datagrams(7, b""), vec![vec![0, 7, 0, 0, 0, 0, 0, 0]]);
        let big = vec![b'x'; 5025];
        let d = datagrams(0xabcd, &big);
        assert_eq!(d.len(), 4);
        for (i, g) in d.iter().enumerate() {
            assert_eq!(&g[..8], &header(0xabcd, i as u16, 4));
            assert!(g.len() <= MAX_PAYLOAD);
        }
        assert_eq!(d[3].len(), 8 + 5025 - 3 * DATA_PER_DATAGRAM);
        let exact = datagrams(1, &vec![b'y'; DATA_PER_DATAGRAM * 2]);
        assert_eq!(exact.len(), 2);
        assert_eq!(exact[1].len(), MAX_PAYLOAD);
        assert_eq!(datagram_count(usize::MAX / 2), u16::MAX);
    }
}
