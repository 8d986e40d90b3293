//! Key choice per connection, key formatting, and values: a fixed pattern for plain runs, or in
//! verify mode values derived from (key index, version) so any returned value can be checked.

use crate::args::{KeyPattern, VERIFY_HEADER};
use crate::rng::{mix64, Rng};
use crate::zipf::Zipf;

/// Longest formatted key: a 230-byte prefix plus 20 digits.
pub const MAX_KEY: usize = 250;

/// Draws key indices for one connection.
///
/// Plain runs draw from the whole key space. In verify mode connection `j` of `n` owns the keys
/// `j, j + n, j + 2n, ...`: it draws an index over its own share with the same pattern, so it
/// alone writes those keys and knows the version each one holds.
#[derive(Debug, Clone)]
pub struct KeyGen {
    pattern: KeyPattern,
    zipf: Option<Zipf>,
    /// Keys this generator draws from (its share).
    space: u64,
    stride: u64,
    offset: u64,
    next_seq: u64,
    rng: Rng,
}

impl KeyGen {
    /// The generator of connection `conn` of `conns`, over `keys` keys. `own_keys` selects the
    /// verify-mode partition. `keys >= conns` when `own_keys`.
    pub fn new(
        pattern: KeyPattern,
        keys: u64,
        conn: u64,
        conns: u64,
        own_keys: bool,
        seed: u64,
    ) -> KeyGen {
        let (space, stride, offset) = if own_keys {
            // Keys j, j+n, ... below `keys`.
            ((keys - conn).div_ceil(conns), conns, conn)
        } else {
            (keys, 1, 0)
        };
        let zipf = match pattern {
            KeyPattern::Zipf(e) => Some(Zipf::new(space, e).expect("validated exponent")),
            _ => None,
        };
        // Sequential walkers start spread over the space so connections do not move in lockstep.
        let next_seq = if own_keys {
            0
        } else {
            keys * conn / conns.max(1)
        };
        KeyGen {
            pattern,
            zipf,
            space,
            stride,
            offset,
            next_seq,
            rng: Rng::new(seed ^ mix64(conn.wrapping_add(1))),
        }
    }

    /// Keys in this generator's share.
    #[cfg(test)]
    pub fn space(&self) -> u64 {
        self.space
    }

    /// The global key index of share position `i`.
    pub fn key_at(&self, i: u64) -> u64 {
        self.offset + i * self.stride
    }

    /// The next key index.
    pub fn next_key(&mut self) -> u64 {
        let i = match self.pattern {
            KeyPattern::Sequential => {
                let i = self.next_seq % self.space;
                self.next_seq = self.next_seq.wrapping_add(1);
                i
            }
            KeyPattern::Uniform => self.rng.below(self.space),
            KeyPattern::Zipf(_) => self.zipf.as_ref().expect("zipf").sample(&mut self.rng) - 1,
        };
        self.key_at(i)
    }

    /// A draw from this connection's random stream (value sizes in plain runs).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }
}

/// Writes `prefix` + decimal `index` into `buf`, returning the key's length.
pub fn format_key(buf: &mut [u8; MAX_KEY], prefix: &[u8], index: u64) -> usize {
    let p = prefix.len();
    buf[..p].copy_from_slice(prefix);
    let mut digits = [0u8; 20];
    let mut n = index;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let d = digits.len() - i;
    buf[p..p + d].copy_from_slice(&digits[i..]);
    p + d
}

/// The size of the value of (key, version) in verify mode, in `min..=max`.
pub fn verify_size(key: u64, version: u32, min: usize, max: usize) -> usize {
    if min == max {
        return min;
    }
    let span = (max - min + 1) as u64;
    min + (mix64(key ^ (u64::from(version) << 40) ^ 0x5eed) % span) as usize
}

fn body_seed(key: u64, version: u32) -> u64 {
    mix64(key.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(version))
}

/// Replaces `out` with the verify-mode value of (key, version): the key index (8 bytes LE), the
/// version (4 bytes LE), then bytes derived from both.
pub fn fill_verify_value(out: &mut Vec<u8>, key: u64, version: u32, min: usize, max: usize) {
    let size = verify_size(key, version, min, max);
    out.clear();
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    let mut state = body_seed(key, version);
    while out.len() < size {
        let word = crate::rng::splitmix64(&mut state).to_le_bytes();
        let take = (size - out.len()).min(8);
        out.extend_from_slice(&word[..take]);
    }
}

/// Why a returned value is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// Shorter than the header or not the length (key, version) implies.
    Length { got: usize, want: usize },
    /// The header names another key.
    WrongKey { got: u64 },
    /// A version other than the last one this connection wrote.
    WrongVersion { got: u32, want: u32 },
    /// The derived bytes differ at this offset.
    Corrupt { at: usize },
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyError::Length { got, want } => write!(f, "value length {got}, expected {want}"),
            VerifyError::WrongKey { got } => write!(f, "value belongs to key index {got}"),
            VerifyError::WrongVersion { got, want } => {
                write!(f, "value version {got}, expected {want}")
            }
            VerifyError::Corrupt { at } => write!(f, "value bytes differ from offset {at}"),
        }
    }
}

/// Checks a value returned for `key`. `expected` is the version this connection last wrote to
/// the key (0 if it has not written it this run: then any well-formed version passes). Returns the
/// value's version.
pub fn check_verify_value(
    value: &[u8],
    key: u64,
    expected: u32,
    min: usize,
    max: usize,
) -> Result<u32, VerifyError> {
    if value.len() < VERIFY_HEADER {
        return Err(VerifyError::Length {
            got: value.len(),
            want: VERIFY_HEADER,
        });
    }
    let got_key = u64::from_le_bytes(value[..8].try_into().expect("8 bytes"));
    if got_key != key {
        return Err(VerifyError::WrongKey { got: got_key });
    }
    let version = u32::from_le_bytes(value[8..12].try_into().expect("4 bytes"));
    if expected != 0 && version != expected {
        return Err(VerifyError::WrongVersion {
            got: version,
            want: expected,
        });
    }
    let want = verify_size(key, version, min, max);
    if value.len() != want {
        return Err(VerifyError::Length {
            got: value.len(),
            want,
        });
    }
    let mut state = body_seed(key, version);
    for (n, chunk) in value[VERIFY_HEADER..].chunks(8).enumerate() {
        let word = crate::rng::splitmix64(&mut state).to_le_bytes();
        if chunk != &word[..chunk.len()] {
            let at = VERIFY_HEADER
                + n * 8
                + chunk
                    .iter()
                    .zip(word)
                    .take_while(|(a, b)| **a == *b)
                    .count();
            return Err(VerifyError::Corrupt { at });
        }
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_format_as_prefix_and_decimal() {
        let mut buf = [0u8; MAX_KEY];
        for (i, want) in [
            (0u64, "k:0"),
            (7, "k:7"),
            (1234567890, "k:1234567890"),
            (u64::MAX, "k:18446744073709551615"),
        ] {
            let n = format_key(&mut buf, b"k:", i);
            assert_eq!(&buf[..n], want.as_bytes());
        }
    }

    #[test]
    fn own_keys_partition_the_space() {
        let (keys, conns) = (103u64, 4u64);
        let mut seen = vec![0u32; keys as usize];
        for c in 0..conns {
            let g = KeyGen::new(KeyPattern::Sequential, keys, c, conns, true, 1);
            for i in 0..g.space() {
                let k = g.key_at(i);
                assert_eq!(k % conns, c);
                seen[k as usize] += 1;
            }
            let mut g = g;
            for _ in 0..1000 {
                assert_eq!(g.next_key() % conns, c);
            }
            let mut z = KeyGen::new(KeyPattern::Zipf(0.99), keys, c, conns, true, 1);
            for _ in 0..1000 {
                let k = z.next_key();
                assert!(k < keys && k % conns == c);
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "every key owned exactly once");
    }

    #[test]
    fn plain_generators_stay_in_range_and_sequential_walks() {
        let mut g = KeyGen::new(KeyPattern::Sequential, 10, 0, 1, false, 1);
        let walk: Vec<u64> = (0..12).map(|_| g.next_key()).collect();
        assert_eq!(walk, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
        let mut u = KeyGen::new(KeyPattern::Uniform, 1000, 3, 8, false, 9);
        assert!((0..10_000).all(|_| u.next_key() < 1000));
    }

    #[test]
    fn verify_values_round_trip_and_catch_damage() {
        let mut v = Vec::new();
        for (min, max) in [(12, 12), (32, 32), (12, 1000)] {
            for key in [0u64, 5, 99_999] {
                for ver in [1u32, 2, 77] {
                    fill_verify_value(&mut v, key, ver, min, max);
                    assert!((min..=max).contains(&v.len()));
                    assert_eq!(check_verify_value(&v, key, ver, min, max), Ok(ver));
                    assert_eq!(check_verify_value(&v, key, 0, min, max), Ok(ver));
                    assert!(matches!(
                        check_verify_value(&v, key + 1, 0, min, max),
                        Err(VerifyError::WrongKey { .. })
                    ));
                    assert!(matches!(
                        check_verify_value(&v, key, ver + 1, min, max),
                        Err(VerifyError::WrongVersion { .. })
                    ));
                    if v.len() > VERIFY_HEADER {
                        let last = v.len() - 1;
                        v[last] ^= 1;
                        assert_eq!(
                            check_verify_value(&v, key, ver, min, max),
                            Err(VerifyError::Corrupt { at: last })
                        );
                        v.pop();
                        assert!(matches!(
                            check_verify_value(&v, key, ver, min, max),
                            Err(VerifyError::Length { .. })
                        ));
                    }
                }
            }
        }
        assert!(matches!(
            check_verify_value(b"short", 1, 0, 12, 12),
            Err(VerifyError::Length { .. })
        ));
    }
}
