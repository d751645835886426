//! The hash that decides kmod's hash-table iteration order (spec depmod-and-index §5.1).
//!
//! depmod's outputs list modules and symbols in the order kmod's hash table iterates them:
//! buckets `0..N` in turn, keys sorted byte-wise inside a bucket. That order is
//! `sort by (superfast_hash(key) & (N - 1), key)`, independent of insertion order.

/// Buckets of the table keyed by module name (initial module order, §5.2).
pub const MODULE_BUCKETS: u32 = 512;
/// Buckets of the table keyed by symbol name (`modules.symbols` line order).
pub const SYMBOL_BUCKETS: u32 = 2048;

/// Paul Hsieh's "SuperFastHash" as computed by kmod 30 on x86-64: 16-bit reads are
/// little-endian, and the odd tail bytes are C `char`, i.e. signed.
pub fn superfast_hash(key: &[u8]) -> u32 {
    // `len` is an int in C; truncation is what the C code does for absurd lengths too.
    let mut h = key.len() as u32;
    let pair = |lo: u8, hi: u8| u32::from(lo) | (u32::from(hi) << 8);
    // A byte as a signed C char, sign-extended to 32 bits.
    let signed = |b: u8| i32::from(b as i8) as u32;

    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        h = h.wrapping_add(pair(c[0], c[1]));
        let t = (pair(c[2], c[3]) << 11) ^ h;
        h = (h << 16) ^ t;
        h = h.wrapping_add(h >> 11);
    }
    match *chunks.remainder() {
        [b0, b1, b2] => {
            h = h.wrapping_add(pair(b0, b1));
            h ^= h << 16;
            h ^= signed(b2) << 18;
            h = h.wrapping_add(h >> 11);
        }
        [b0, b1] => {
            h = h.wrapping_add(pair(b0, b1));
            h ^= h << 11;
            h = h.wrapping_add(h >> 17);
        }
        [b0] => {
            h = h.wrapping_add(signed(b0));
            h ^= h << 10;
            h = h.wrapping_add(h >> 1);
        }
        _ => {}
    }

    h ^= h << 3;
    h = h.wrapping_add(h >> 5);
    h ^= h << 4;
    h = h.wrapping_add(h >> 17);
    h ^= h << 25;
    h = h.wrapping_add(h >> 6);
    h
}

/// The bucket of `key` in a table of `buckets` buckets (a power of two).
pub fn bucket_of(key: &[u8], buckets: u32) -> u32 {
    superfast_hash(key) & buckets.wrapping_sub(1)
}

/// The sort key that reproduces kmod's iteration order: compare these tuples.
pub fn bucket_sort_key(key: &[u8], buckets: u32) -> (u32, &[u8]) {
    (bucket_of(key, buckets), key)
}

/// Sort `items` into kmod's hash-table iteration order for a table of `buckets` buckets,
/// using `key` to get each item's key. Items with equal keys keep their relative order.
pub fn sort_hash_order<T, F>(items: &mut Vec<T>, buckets: u32, key: F)
where
    F: Fn(&T) -> &[u8],
{
    let mut tagged: Vec<(u32, T)> = items
        .drain(..)
        .map(|item| (bucket_of(key(&item), buckets), item))
        .collect();
    tagged.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| key(&a.1).cmp(key(&b.1))));
    items.extend(tagged.into_iter().map(|(_, item)| item));
}

/// [`sort_hash_order`] of items already sorted by key (and stable among equal keys):
/// a distribution by bucket that keeps the order inside each bucket, so no key is
/// compared. The result is what `sort_hash_order` makes of the same items.
pub fn hash_order_of_sorted<T: Copy, F>(sorted: &[T], buckets: u32, key: F) -> Vec<T>
where
    F: Fn(&T) -> &[u8],
{
    // One counter per bucket: only sensible for the real (small, power-of-two) tables.
    if !buckets.is_power_of_two() || buckets > 1 << 16 {
        let mut items = sorted.to_vec();
        sort_hash_order(&mut items, buckets, key);
        return items;
    }
    let tags: Vec<u32> = sorted.iter().map(|t| bucket_of(key(t), buckets)).collect();
    // starts[b]: where bucket b's items begin in the result.
    let mut starts = vec![0usize; buckets as usize + 1];
    for &b in &tags {
        starts[b as usize + 1] += 1;
    }
    for b in 1..starts.len() {
        starts[b] += starts[b - 1];
    }
    let mut slots: Vec<u32> = vec![0; sorted.len()];
    for (i, &b) in tags.iter().enumerate() {
        slots[starts[b as usize]] = i as u32;
        starts[b as usize] += 1;
    }
    slots.into_iter().map(|i| sorted[i as usize]).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    // Expected values were computed independently from the algorithm text in the spec
    // (a separate script), and the 2048-bucket order was checked against the line order
    // of a real kmod 30 modules.symbols.
    #[test]
    fn known_values() {
        assert_eq!(superfast_hash(b""), 0);
        assert_eq!(superfast_hash(b"a"), 0x115e_a782); // tail 1
        assert_eq!(superfast_hash(b"ab"), 0x516b_8b44); // tail 2
        assert_eq!(superfast_hash(b"abc"), 0xd2be_198a); // tail 3
        assert_eq!(superfast_hash(b"abcd"), 0xdad8_b8db); // tail 0
        assert_eq!(superfast_hash(b"ext4"), 0xe679_ab16);
        assert_eq!(superfast_hash(b"usbcore"), 0x923b_1427);
        assert_eq!(superfast_hash(b"snd_hda_intel"), 0x6e40_28a1);
    }

    #[test]
    fn signed_tail_bytes() {
        assert_eq!(superfast_hash(b"\x80"), 0xf305_33c4);
        assert_eq!(superfast_hash(b"ab\xff"), 0xc25f_0954);
        assert_eq!(superfast_hash(b"abcd\xfe"), 0x6aef_5b6e);
    }

    #[test]
    fn order() {
        let mut v: Vec<&[u8]> = vec![b"usbcore", b"ext4", b"a", b"abc", b"ab", b"abcd"];
        sort_hash_order(&mut v, MODULE_BUCKETS, |k| *k);
        let mut expect = v.clone();
        expect.sort_by_key(|k| bucket_sort_key(k, MODULE_BUCKETS));
        assert_eq!(v, expect);
        for w in v.windows(2) {
            assert!(bucket_sort_key(w[0], MODULE_BUCKETS) <= bucket_sort_key(w[1], MODULE_BUCKETS));
        }
        assert_eq!(bucket_of(b"a", 512), 0x115e_a782 & 511);
        // The same order from items sorted by key first, without comparing keys again.
        let mut sorted = v.clone();
        sorted.sort();
        for buckets in [MODULE_BUCKETS, SYMBOL_BUCKETS, 2, 1, 0, 3] {
            let mut expect = sorted.clone();
            sort_hash_order(&mut expect, buckets, |k| *k);
            assert_eq!(hash_order_of_sorted(&sorted, buckets, |k| *k), expect);
        }
        // Degenerate bucket counts do not panic.
        let _ = bucket_of(b"a", 0);
    }

    #[test]
    fn order_of_sorted_items_keeps_equal_keys_in_place() {
        // Enough keys that buckets hold several, some keys twice (told apart by the tag).
        let keys: Vec<Vec<u8>> = (0..6000u32)
            .map(|i| format!("sym_{}", (i * 7919) % 4001).into_bytes())
            .collect();
        let mut items: Vec<(&[u8], u32)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_slice(), i as u32))
            .collect();
        items.sort_by(|a, b| a.0.cmp(b.0));
        let mut expect = items.clone();
        sort_hash_order(&mut expect, SYMBOL_BUCKETS, |(k, _)| k);
        let got = hash_order_of_sorted(&items, SYMBOL_BUCKETS, |(k, _)| k);
        assert_eq!(got, expect);
        assert!(got.windows(2).any(|w| w[0].0 == w[1].0));
    }
}
