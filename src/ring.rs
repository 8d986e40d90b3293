//! Key -> server placement, identical to the clients corecached has to share a fleet with.
//!
//! A [`Continuum`] is built from a server list ([`Node`]s, in the order given) and a
//! [`Distribution`]; [`Continuum::server_for`] returns the index of the server a key belongs to.
//! Every mode follows its reference implementation's source, down to the float arithmetic of the
//! point counts, the tie order of equal points and the one-server shortcut:
//!
//! | name               | reference                                             | points per server          | point name        | key hash                 | equal points   |
//! |--------------------|-------------------------------------------------------|----------------------------|-------------------|--------------------------|----------------|
//! | `ketama`           | libmemcached `KETAMA_WEIGHTED` (= libketama, PHP `OPT_LIBKETAMA_COMPATIBLE`, twemproxy `hash: md5`) | 160 x weight share, 4 per MD5 | `HOST-i` / `HOST:PORT-i` | MD5, first 4 bytes LE | lower index first |
//! | `libmemcached`     | libmemcached `KETAMA` (pylibmc `{"ketama": True}`)     | 100, one-at-a-time of name | `HOST-i` / `HOST:PORT-i` | one-at-a-time (signed chars) | lower index |
//! | `libmemcached-md5` | the same with `HASH = MD5`                            | 100, MD5 of name           | as above          | MD5                      | lower index    |
//! | `libmemcached-spy` | libmemcached `CONSISTENT_KETAMA_SPY` after `KETAMA_WEIGHTED` | 160 x share, 4 per MD5 | `/HOST:PORT-i`  | MD5                      | lower index    |
//! | `spymemcached`     | spymemcached `KetamaNodeLocator`, default key format  | 160 (x share when weighted) | `HOST:PORT-i`    | MD5 (KETAMA_HASH)        | higher index (TreeMap overwrite) |
//! | `twemproxy`        | nutcracker's default pool (`distribution: ketama`, `hash: fnv1a_64`) | 160 x share, 4 per MD5 | `HOST-i` / `HOST:PORT-i` | fnv1a_64 truncated to 32 bits (signed chars) | lower index |
//! | `jump`             | Lamping-Veach jump consistent hash over the live servers (no compatibility claim; weights ignored) | - | - | MD5, first 8 bytes LE | - |
//!
//! Weighted point count (libmemcached, twemproxy and spymemcached agree, all in `float`):
//! `floor(weight / total * 160 / 4 * live_servers) * 4`, so 25 equal servers get 156 points each,
//! not 160. The lookup is the first point `>=` the key hash, wrapping to the first point. With a
//! single configured server, libmemcached and twemproxy skip hashing and use it.
//!
//! libmemcached switches a consistent distribution to the weighted continuum as soon as a server
//! with weight > 1 is added; `libmemcached` and `libmemcached-md5` do the same here (the server
//! list is taken as added after the behaviour was set). spymemcached is weighted only when a weight
//! other than 1 is given.

use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};

/// The port libmemcached and twemproxy leave out of point names.
pub const DEFAULT_PORT: u16 = 11211;

/// Points per server of the weighted (libketama) continuum.
const POINTS_WEIGHTED: u32 = 160;
/// Points per server of libmemcached's unweighted continuum.
const POINTS_PLAIN: u32 = 100;

/// A placement algorithm, by the name `mcring --distribution` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Distribution {
    /// libketama / libmemcached `KETAMA_WEIGHTED`.
    Ketama,
    /// libmemcached `KETAMA` with its default one-at-a-time hash.
    Libmemcached,
    /// libmemcached `KETAMA` with `HASH = MD5`.
    LibmemcachedMd5,
    /// libmemcached `CONSISTENT_KETAMA_SPY` (after `KETAMA_WEIGHTED`).
    LibmemcachedSpy,
    /// spymemcached's `KetamaNodeLocator`.
    Spymemcached,
    /// twemproxy (nutcracker) default pool.
    Twemproxy,
    /// Jump consistent hash.
    Jump,
}

impl Distribution {
    /// Every distribution, in documentation order.
    pub const ALL: [Distribution; 7] = [
        Distribution::Ketama,
        Distribution::Libmemcached,
        Distribution::LibmemcachedMd5,
        Distribution::LibmemcachedSpy,
        Distribution::Spymemcached,
        Distribution::Twemproxy,
        Distribution::Jump,
    ];

    /// The name `mcring` and [`FromStr`] use.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Ketama => "ketama",
            Distribution::Libmemcached => "libmemcached",
            Distribution::LibmemcachedMd5 => "libmemcached-md5",
            Distribution::LibmemcachedSpy => "libmemcached-spy",
            Distribution::Spymemcached => "spymemcached",
            Distribution::Twemproxy => "twemproxy",
            Distribution::Jump => "jump",
        }
    }

    /// The 32-bit key hash this distribution looks keys up with (for `jump`, the low 32 bits of
    /// its 64-bit key).
    pub fn key_hash(self, key: &[u8]) -> u32 {
        match self {
            Distribution::Ketama
            | Distribution::LibmemcachedMd5
            | Distribution::LibmemcachedSpy
            | Distribution::Spymemcached => md5_point(key, 0),
            Distribution::Libmemcached => one_at_a_time(key),
            Distribution::Twemproxy => fnv1a_64_low(key),
            Distribution::Jump => jump_key(key) as u32,
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Distribution {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Distribution::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Distribution::ALL.iter().map(|d| d.name()).collect();
                format!(
                    "unknown distribution {s:?} (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// One server of the list: host as given (never resolved for hashing), port, weight (>= 1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    /// Host name or address, exactly as configured (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Relative weight; 1 when not given.
    pub weight: u32,
}

impl Node {
    /// A node with weight 1.
    pub fn new(host: impl Into<String>, port: u16) -> Node {
        Node {
            host: host.into(),
            port,
            weight: 1,
        }
    }

    /// Parses `host:port[:weight]` (`[v6addr]:port[:weight]` for IPv6; a bare host means port
    /// 11211).
    pub fn parse(spec: &str) -> Result<Node, String> {
        let bad = |why: &str| format!("bad server {spec:?}: {why}");
        let (host, rest) = if let Some(v6) = spec.strip_prefix('[') {
            let (host, rest) = v6.split_once(']').ok_or_else(|| bad("missing ']'"))?;
            let rest = match rest {
                "" => "",
                r => r
                    .strip_prefix(':')
                    .ok_or_else(|| bad("expected ':' after ']'"))?,
            };
            (host, rest)
        } else {
            spec.split_once(':').unwrap_or((spec, ""))
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let mut fields = rest.split(':');
        let port = match fields.next() {
            None | Some("") => DEFAULT_PORT,
            Some(p) => p.parse().map_err(|_| bad("port is not a number"))?,
        };
        let weight = match fields.next() {
            None => 1,
            Some(w) => match w.parse::<u32>() {
                Ok(w) if w >= 1 => w,
                _ => return Err(bad("weight must be a positive integer")),
            },
        };
        if fields.next().is_some() {
            return Err(bad("expected host:port[:weight]"));
        }
        Ok(Node {
            host: host.to_owned(),
            port,
            weight,
        })
    }

    /// Parses a comma-separated list of [`Node::parse`] specs.
    pub fn parse_list(list: &str) -> Result<Vec<Node>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Node::parse)
            .collect()
    }

    /// `host:port` (`[host]:port` for IPv6), the form sockets connect to.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One point of a continuum: hash value and the index of its server in the configured list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Point {
    /// Position on the 32-bit ring.
    pub value: u32,
    /// Index into the server list the continuum was built from.
    pub index: u32,
}

/// A built continuum (or, for `jump`, the list of live servers).
#[derive(Debug, Clone)]
pub struct Continuum {
    distribution: Distribution,
    points: Vec<Point>,
    /// Live server indices (jump only).
    live: Vec<u32>,
    /// Which configured servers are live (jump only).
    live_mask: Vec<bool>,
    /// Configured server count (the one-server shortcut looks at this, not at the live count).
    configured: usize,
}

impl Continuum {
    /// Builds the continuum of `nodes`, all live.
    pub fn new(distribution: Distribution, nodes: &[Node]) -> Continuum {
        Continuum::with_live(distribution, nodes, |_| true)
    }

    /// Builds the continuum of the nodes for which `live(index)` holds, as libmemcached and
    /// twemproxy rebuild theirs while servers are ejected: the live servers share the points (and
    /// the weight total), indices still refer to the full list.
    pub fn with_live(
        distribution: Distribution,
        nodes: &[Node],
        live: impl Fn(usize) -> bool,
    ) -> Continuum {
        let live_idx: Vec<u32> = (0..nodes.len())
            .filter(|&i| live(i))
            .map(|i| i as u32)
            .collect();
        let mut c = Continuum {
            distribution,
            points: Vec::new(),
            live: Vec::new(),
            live_mask: Vec::new(),
            configured: nodes.len(),
        };
        if distribution == Distribution::Jump {
            c.live_mask = (0..nodes.len()).map(&live).collect();
            c.live = live_idx;
            return c;
        }
        let weighted = match distribution {
            Distribution::Libmemcached | Distribution::LibmemcachedMd5 => {
                nodes.iter().any(|n| n.weight > 1)
            }
            Distribution::Spymemcached => nodes.iter().any(|n| n.weight != 1),
            _ => true,
        };
        let n_live = live_idx.len();
        let total_weight: u64 = live_idx
            .iter()
            .map(|&i| u64::from(nodes[i as usize].weight.max(1)))
            .sum();
        let mut name = Vec::with_capacity(128);
        for &i in &live_idx {
            let node = &nodes[i as usize];
            if weighted {
                let per_server =
                    weighted_points(distribution, node.weight.max(1), total_weight, n_live);
                for rep in 0..per_server / 4 {
                    point_name(distribution, node, rep, &mut name);
                    let digest = Md5::digest(&name);
                    for align in 0..4 {
                        c.points.push(Point {
                            value: le_u32(&digest, align),
                            index: i,
                        });
                    }
                }
            } else if distribution == Distribution::Spymemcached {
                // Unweighted spymemcached: 160 repetitions, four points per digest.
                for rep in 0..POINTS_WEIGHTED / 4 {
                    point_name(distribution, node, rep, &mut name);
                    let digest = Md5::digest(&name);
                    for align in 0..4 {
                        c.points.push(Point {
                            value: le_u32(&digest, align),
                            index: i,
                        });
                    }
                }
            } else {
                // libmemcached unweighted: one point per name, hashed with the key hash.
                for rep in 0..POINTS_PLAIN {
                    point_name(distribution, node, rep, &mut name);
                    c.points.push(Point {
                        value: distribution.key_hash(&name),
                        index: i,
                    });
                }
            }
        }
        if distribution == Distribution::Spymemcached {
            // A TreeMap keyed by the point: the server put last (highest index) keeps an equal
            // point. Sorting it first makes the lower-bound search find it.
            c.points
                .sort_unstable_by(|a, b| a.value.cmp(&b.value).then(b.index.cmp(&a.index)));
            c.points.dedup_by_key(|p| p.value);
        } else {
            c.points.sort_unstable();
        }
        c
    }

    /// The distribution this continuum was built for.
    pub fn distribution(&self) -> Distribution {
        self.distribution
    }

    /// The sorted points (empty for `jump`).
    pub fn points(&self) -> &[Point] {
        &self.points
    }

    /// Whether no server is live.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty() && self.live.is_empty()
    }

    /// Index (into the configured list) of the server that owns `key`; `None` when no server is
    /// live.
    #[inline]
    pub fn server_for(&self, key: &[u8]) -> Option<usize> {
        if self.distribution == Distribution::Jump {
            if self.live.is_empty() {
                return None;
            }
            // Jump over the configured count keeps every live server's keys in place while
            // others are out; a key of an ejected server is re-jumped with a salted key.
            let mut k = jump_key(key);
            for _ in 0..64 {
                let bucket = jump_consistent_hash(k, self.configured as u32);
                if self.live_mask[bucket as usize] {
                    return Some(bucket as usize);
                }
                k = k.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
            }
            return Some(self.live[0] as usize);
        }
        if self.points.is_empty() {
            return None;
        }
        let hash = match self.distribution {
            // Both skip hashing when exactly one server is configured (libmemcached also when
            // it is ejected, which leaves no point at all).
            Distribution::Libmemcached
            | Distribution::LibmemcachedMd5
            | Distribution::LibmemcachedSpy
            | Distribution::Ketama
                if self.configured == 1 =>
            {
                0
            }
            Distribution::Twemproxy if self.configured == 1 || key.is_empty() => 0,
            d => d.key_hash(key),
        };
        Some(self.points[self.position(hash)].index as usize)
    }

    /// Index of the first point `>= hash`, wrapping to 0.
    #[inline]
    fn position(&self, hash: u32) -> usize {
        let at = self.points.partition_point(|p| p.value < hash);
        if at == self.points.len() {
            0
        } else {
            at
        }
    }

    /// The first `n` distinct servers of `key` in ring order from its point: the key's owner
    /// and then the servers a client's failover reaches next (the owners of a key replicated
    /// to `n - 1` more hosts).
    pub fn owners(&self, key: &[u8], n: usize) -> Vec<usize> {
        if n == 0 {
            return Vec::new();
        }
        if self.distribution == Distribution::Jump {
            let mut all = self.servers_for(key);
            all.truncate(n);
            return all;
        }
        let Some(first) = self.server_for(key) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(n.min(8));
        out.push(first);
        // Walk on from the key's point until n distinct servers are seen, at most once round.
        let start = self.position(self.distribution.key_hash(key));
        for k in 0..self.points.len() {
            if out.len() == n {
                break;
            }
            let idx = self.points[(start + k) % self.points.len()].index as usize;
            if !out.contains(&idx) {
                out.push(idx);
            }
        }
        out
    }

    /// The owner of `key` followed by the other live servers in ring order after its point
    /// (each once): the order replica reads try them in.
    pub fn servers_for(&self, key: &[u8]) -> Vec<usize> {
        let Some(first) = self.server_for(key) else {
            return Vec::new();
        };
        let mut out = vec![first];
        if self.distribution == Distribution::Jump {
            let at = self
                .live
                .iter()
                .position(|&i| i as usize == first)
                .unwrap_or(0);
            for k in 1..self.live.len() {
                out.push(self.live[(at + k) % self.live.len()] as usize);
            }
            return out;
        }
        // Walking the whole ring once from the key's point meets every server with points.
        self.owners(key, usize::MAX)
    }
}

/// Points a server gets in the weighted continuum: the float arithmetic of libmemcached
/// (`floor((float)(pct * 160 / 4 * (float)live + 1e-10f))`) and of twemproxy / spymemcached
/// (the same with a double 1e-10, rounded back to float), times four.
fn weighted_points(distribution: Distribution, weight: u32, total: u64, live: usize) -> u32 {
    let pct = weight as f32 / total as f32;
    let scaled = pct * POINTS_WEIGHTED as f32 / 4.0f32 * live as f32;
    let with_epsilon = match distribution {
        Distribution::Twemproxy | Distribution::Spymemcached => (scaled as f64 + 1e-10) as f32,
        _ => scaled + 1e-10f32,
    };
    (with_epsilon.floor() as u32) * 4
}

/// Writes the name of point group `rep` of `node` into `out`.
fn point_name(distribution: Distribution, node: &Node, rep: u32, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = match distribution {
        Distribution::LibmemcachedSpy => write!(out, "/{}:{}-{}", node.host, node.port, rep),
        Distribution::Spymemcached => write!(out, "{}:{}-{}", node.host, node.port, rep),
        _ if node.port == DEFAULT_PORT => write!(out, "{}-{}", node.host, rep),
        _ => write!(out, "{}:{}-{}", node.host, node.port, rep),
    };
}

#[inline]
fn le_u32(digest: &[u8], align: usize) -> u32 {
    let b = &digest[align * 4..align * 4 + 4];
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// First (`align` 0) to fourth little-endian u32 of the MD5 digest of `data`.
#[inline]
pub fn md5_point(data: &[u8], align: usize) -> u32 {
    le_u32(&Md5::digest(data), align)
}

/// libmemcached's one-at-a-time hash; bytes are C `char`s (signed on x86), sign-extended.
#[inline]
pub fn one_at_a_time(key: &[u8]) -> u32 {
    let mut value: u32 = 0;
    for &b in key {
        value = value.wrapping_add(b as i8 as i32 as u32);
        value = value.wrapping_add(value << 10);
        value ^= value >> 6;
    }
    value = value.wrapping_add(value << 3);
    value ^= value >> 11;
    value.wrapping_add(value << 15)
}

/// twemproxy's `hash_fnv1a_64`: the 64-bit FNV-1a constants truncated to 32 bits, signed chars.
#[inline]
pub fn fnv1a_64_low(key: &[u8]) -> u32 {
    const INIT: u32 = 0xcbf2_9ce4_8422_2325_u64 as u32;
    const PRIME: u32 = 0x0100_0000_01b3_u64 as u32;
    let mut hash = INIT;
    for &b in key {
        hash ^= b as i8 as i32 as u32;
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

/// The 64-bit key `jump` hashes: the first 8 bytes of MD5, little-endian.
#[inline]
fn jump_key(key: &[u8]) -> u64 {
    let d = Md5::digest(key);
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014).
pub fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_the_servers_failover_reaches_in_turn() {
        let nodes = Node::parse_list("10.0.0.1:11211,10.0.0.2:11211,10.0.0.3:11211,10.0.0.4:11211")
            .unwrap();
        let full = Continuum::new(Distribution::Ketama, &nodes);
        for i in 0..2000 {
            let key = format!("key:{i}");
            let owners = full.owners(key.as_bytes(), 3);
            assert_eq!(owners.len(), 3);
            assert_eq!(owners[..], full.servers_for(key.as_bytes())[..3]);
            // Ejecting the first owner moves the key to the second, as a client's auto-eject
            // does; ejecting both moves it to the third.
            let without_first =
                Continuum::with_live(Distribution::Ketama, &nodes, |s| s != owners[0]);
            assert_eq!(without_first.server_for(key.as_bytes()), Some(owners[1]));
            let without_two = Continuum::with_live(Distribution::Ketama, &nodes, |s| {
                s != owners[0] && s != owners[1]
            });
            assert_eq!(without_two.server_for(key.as_bytes()), Some(owners[2]));
        }
        assert_eq!(
            full.owners(b"k", 9).len(),
            4,
            "never more owners than servers"
        );
        assert!(full.owners(b"k", 0).is_empty());
    }

    fn nodes(list: &str) -> Vec<Node> {
        Node::parse_list(list).unwrap()
    }

    /// `tests/data/ketama-sample.csv` (a copy of ../shared/ketama-sample.csv, made by
    /// libmemcached 1.1.4's memcached_server_by_key with KETAMA_WEIGHTED): every key.
    #[test]
    fn libmemcached_sample_is_reproduced() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ketama-sample.csv");
        let text = std::fs::read_to_string(path).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        let servers = header
            .split("servers=")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        let list = nodes(servers);
        assert_eq!(list.len(), 3);
        assert_eq!(lines.next(), Some("key,server"));
        let ring = Continuum::new(Distribution::Ketama, &list);
        let mut checked = 0;
        for line in lines.filter(|l| !l.is_empty()) {
            let (field, want) = line.rsplit_once(',').unwrap();
            // CSV quoting: "a,b" and "q""uote".
            let key = match field.strip_prefix('"').and_then(|f| f.strip_suffix('"')) {
                Some(quoted) => quoted.replace("\"\"", "\""),
                None => field.to_owned(),
            };
            let got = &list[ring.server_for(key.as_bytes()).unwrap()];
            assert_eq!(got.addr(), want, "key {key:?}");
            checked += 1;
        }
        assert_eq!(checked, 198);
    }

    #[test]
    fn names_round_trip() {
        for d in Distribution::ALL {
            assert_eq!(d.name().parse::<Distribution>(), Ok(d));
        }
        assert!("modula".parse::<Distribution>().is_err());
    }

    #[test]
    fn parse_servers() {
        assert_eq!(
            Node::parse("a:1:3").unwrap(),
            Node {
                host: "a".into(),
                port: 1,
                weight: 3
            }
        );
        assert_eq!(Node::parse("a").unwrap(), Node::new("a", 11211));
        assert_eq!(Node::parse("[::1]:2").unwrap(), Node::new("::1", 2));
        assert_eq!(Node::parse("[::1]:2").unwrap().addr(), "[::1]:2");
        assert!(Node::parse("a:x").is_err());
        assert!(Node::parse("a:1:0").is_err());
        assert!(Node::parse("a:1:2:3").is_err());
    }

    #[test]
    fn hashes_match_known_values() {
        // one-at-a-time, as libhashkit's test suite lists for "apple".
        assert_eq!(one_at_a_time(b""), 0);
        // fnv1a: the first step from the 32-bit truncated offset basis.
        assert_eq!(
            fnv1a_64_low(b"a"),
            (0x8422_2325u32 ^ 0x61).wrapping_mul(0x1b3)
        );
        // signed chars: a byte >= 0x80 is sign-extended.
        assert_eq!(
            fnv1a_64_low(&[0xff]),
            (0x8422_2325u32 ^ 0xffff_ffff).wrapping_mul(0x1b3)
        );
        assert_eq!(
            md5_point(b"", 0),
            u32::from_le_bytes([0xd4, 0x1d, 0x8c, 0xd9])
        );
    }

    #[test]
    fn point_counts_follow_float_rounding() {
        // 25 equal servers: 0.04f * 160 / 4 * 25 rounds below 40 -> 39 * 4 points each.
        let list: Vec<Node> = (0..25)
            .map(|i| Node::new(format!("10.0.1.{i}"), 11211))
            .collect();
        let ring = Continuum::new(Distribution::Ketama, &list);
        let per = weighted_points(Distribution::Ketama, 1, 25, 25);
        assert_eq!(ring.points().len() as u32, per * 25);
        assert_eq!(
            Continuum::new(Distribution::Ketama, &list[..3])
                .points()
                .len(),
            480
        );
        assert_eq!(
            Continuum::new(Distribution::Libmemcached, &list[..3])
                .points()
                .len(),
            300
        );
        assert_eq!(
            Continuum::new(Distribution::Spymemcached, &list)
                .points()
                .len(),
            4000
        );
    }

    #[test]
    fn exact_hits_and_wrap() {
        // "HOST-i" hashes (MD5, first word) exactly onto the first point of that name.
        let list = nodes("10.0.0.1:11211,10.0.0.2:11211,10.0.0.3:11211");
        let ring = Continuum::new(Distribution::Ketama, &list);
        for (i, n) in list.iter().enumerate() {
            for rep in 0..40 {
                let key = format!("{}-{rep}", n.host);
                assert_eq!(ring.server_for(key.as_bytes()), Some(i), "{key}");
            }
        }
        // A hash above the last point wraps to the first point.
        let last = ring.points().last().unwrap().value;
        assert!(ring.position(last.wrapping_add(1)) == 0 || last == u32::MAX);
    }

    #[test]
    fn one_server_and_none() {
        let list = nodes("h:1");
        for d in Distribution::ALL {
            let ring = Continuum::new(d, &list);
            assert_eq!(ring.server_for(b"x"), Some(0), "{d}");
            assert_eq!(
                Continuum::with_live(d, &list, |_| false).server_for(b"x"),
                None
            );
        }
    }

    #[test]
    fn ejection_moves_only_the_ejected_keys_and_successors_are_distinct() {
        let list = nodes("a:1,b:2,c:3,d:4");
        for d in Distribution::ALL {
            let full = Continuum::new(d, &list);
            let without_b = Continuum::with_live(d, &list, |i| i != 1);
            let mut moved = 0;
            for k in 0..2000 {
                let key = format!("k{k}");
                let owner = full.server_for(key.as_bytes()).unwrap();
                let now = without_b.server_for(key.as_bytes()).unwrap();
                assert_ne!(now, 1);
                if owner != 1 && owner != now {
                    moved += 1;
                }
                let order = full.servers_for(key.as_bytes());
                assert_eq!(order[0], owner);
                let mut sorted = order.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, vec![0, 1, 2, 3], "{d} {key}");
            }
            // Weighted continua redistribute point counts among the survivors (as libmemcached
            // does), so a few keys of other servers move too; most stay.
            assert!(moved < 200, "{d}: {moved} keys of live servers moved");
        }
    }

    #[test]
    fn jump_spreads_evenly() {
        let mut counts = [0u32; 5];
        for k in 0..10_000u32 {
            counts[jump_consistent_hash(u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15), 5)
                as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (1700..2300).contains(&c)),
            "{counts:?}"
        );
    }
}
