//! Hot keys: a bounded, sampled top-k per shard (Space-Saving, Metwally et al. 2005), merged on
//! demand by `stats hotkeys` and `/metrics`.
//!
//! Every `--hotkeys-sample`-th key command a core runs (a per-thread count, as the latency
//! sampling) is recorded in the owner shard's table, under the lock the command holds anyway: a
//! key already tracked gets +1; a new one takes a free slot, or replaces the slot with the
//! smallest count and inherits that count (+1) as its possible overestimate (`error`). With
//! [`CAPACITY`] slots every key sampled more than `samples / CAPACITY` times is in the table,
//! and a tracked key's count is at most `error` above its true sampled count. Keys belong to one
//! shard each, so merging the shards' tables is a union.

use std::cell::Cell;

/// `--hotkeys-sample`'s default: one key command in 16 is counted.
pub const DEFAULT_SAMPLE_EVERY: u32 = 16;
/// Slots per shard.
pub const CAPACITY: usize = 64;
/// Keys `stats hotkeys` and `/metrics` report.
pub const REPORTED: usize = 20;

/// One tracked key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotKey {
    /// The key.
    pub key: Box<[u8]>,
    /// Sampled requests counted for it (at most `error` too many).
    pub count: u64,
    /// The count it inherited when it took its slot.
    pub error: u64,
}

/// One shard's Space-Saving table.
#[derive(Debug, Default, Clone)]
pub struct TopK {
    slots: Vec<HotKey>,
    /// Key hash -> slot.
    index: hashbrown::HashMap<u64, u32>,
}

impl TopK {
    /// Counts one sampled request for `key` (its [`crate::storage::key_hash`] is `hash`).
    pub fn record(&mut self, key: &[u8], hash: u64) {
        if let Some(&i) = self.index.get(&hash) {
            let slot = &mut self.slots[i as usize];
            if &*slot.key == key {
                slot.count += 1;
            }
            // Else another key with the same 64-bit hash: not counted (vanishingly rare).
            return;
        }
        if self.slots.len() < CAPACITY {
            self.index.insert(hash, self.slots.len() as u32);
            self.slots.push(HotKey {
                key: key.into(),
                count: 1,
                error: 0,
            });
            return;
        }
        let (i, min) = self
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.count)
            .map(|(i, s)| (i, s.count))
            .unwrap_or((0, 0));
        let old = crate::storage::key_hash(&self.slots[i].key);
        self.index.remove(&old);
        self.index.insert(hash, i as u32);
        self.slots[i] = HotKey {
            key: key.into(),
            count: min + 1,
            error: min,
        };
    }

    /// The tracked keys.
    pub fn keys(&self) -> &[HotKey] {
        &self.slots
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.index.clear();
    }
}

thread_local! {
    static UNSAMPLED: Cell<u32> = const { Cell::new(0) };
}

/// Whether the key command about to run on this thread is sampled, one in `every` (0: none).
#[inline]
pub fn sample(every: u32) -> bool {
    if every == 0 {
        return false;
    }
    UNSAMPLED.with(|n| {
        let seen = n.get() + 1;
        let hit = seen >= every;
        n.set(if hit { 0 } else { seen });
        hit
    })
}

/// The shards' tables merged: the `limit` highest counts, highest first (ties by key).
pub fn merge<'a>(tables: impl IntoIterator<Item = &'a [HotKey]>, limit: usize) -> Vec<HotKey> {
    let mut all: Vec<HotKey> = tables.into_iter().flatten().cloned().collect();
    all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    all.truncate(limit);
    all
}

/// `stats hotkeys`: the sampling, then per rank the key, its estimated requests (sampled count
/// times the sampling interval) and the estimate's possible excess.
pub fn report(top: &[HotKey], every: u32) -> Vec<(String, String)> {
    let mut out = vec![("hotkeys_sample_every".to_string(), every.to_string())];
    let every = u64::from(every);
    for (rank, k) in top.iter().enumerate() {
        let rank = rank + 1;
        out.push((
            format!("hotkey:{rank}:key"),
            String::from_utf8_lossy(&k.key).into_owned(),
        ));
        out.push((
            format!("hotkey:{rank}:requests"),
            (k.count * every).to_string(),
        ));
        out.push((
            format!("hotkey:{rank}:error"),
            (k.error * every).to_string(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::key_hash;

    fn record(t: &mut TopK, key: &str) {
        t.record(key.as_bytes(), key_hash(key.as_bytes()));
    }

    #[test]
    fn heavy_keys_survive_a_stream_of_one_off_keys() {
        let mut t = TopK::default();
        for i in 0..100_000u32 {
            // Ten heavy keys, 1 in 5 requests each 1/50, the rest distinct keys seen once.
            if i % 5 == 0 {
                record(&mut t, &format!("heavy{}", i / 5 % 10));
            } else {
                record(&mut t, &format!("once{i}"));
            }
        }
        assert!(t.keys().len() <= CAPACITY);
        let top = merge([t.keys()], 10);
        let mut names: Vec<String> = top
            .iter()
            .map(|k| String::from_utf8_lossy(&k.key).into_owned())
            .collect();
        names.sort();
        let want: Vec<String> = (0..10).map(|i| format!("heavy{i}")).collect();
        assert_eq!(names, want);
        for k in &top {
            // True count 2,000 each; Space-Saving overestimates by at most `error`.
            assert!(k.count >= 2_000 && k.count - k.error <= 2_000, "{k:?}");
        }
    }

    #[test]
    fn exact_while_the_table_has_room() {
        let mut t = TopK::default();
        for (key, n) in [("a", 5), ("b", 3), ("c", 9)] {
            for _ in 0..n {
                record(&mut t, key);
            }
        }
        let top = merge([t.keys()], 2);
        assert_eq!(&*top[0].key, b"c");
        assert_eq!((top[0].count, top[0].error), (9, 0));
        assert_eq!(&*top[1].key, b"a");
        let rep = report(&top, 4);
        assert_eq!(rep[0], ("hotkeys_sample_every".into(), "4".into()));
        assert_eq!(rep[1], ("hotkey:1:key".into(), "c".into()));
        assert_eq!(rep[2], ("hotkey:1:requests".into(), "36".into()));
    }

    #[test]
    fn one_in_every_n_is_sampled_and_zero_samples_none() {
        assert_eq!((0..64).filter(|_| sample(16)).count(), 4);
        assert_eq!((0..64).filter(|_| sample(0)).count(), 0);
    }
}
