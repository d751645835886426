//! Sorting by byte-string keys with most comparisons done on integers.

/// Sort `items` by `key` (byte order; the order of equal keys is unspecified).
///
/// Each item is tagged with its key's first 16 bytes as a big-endian integer (zero
/// padded), so most comparisons are one integer comparison instead of a call to
/// `memcmp`; equal tags fall back to the rest of the keys, or to the whole keys when
/// one is shorter than the tag (a zero pad never decides: keys may hold zeros or be
/// prefixes of one another).
pub fn sort_unstable_by_bytes<'k, T: Copy>(items: &mut Vec<T>, key: impl Fn(&T) -> &'k [u8]) {
    const TAG: usize = 16;
    let mut tagged: Vec<(u128, u32)> = items
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let k = key(t);
            let mut head = [0u8; TAG];
            let n = k.len().min(TAG);
            head[..n].copy_from_slice(&k[..n]);
            (u128::from_be_bytes(head), i as u32)
        })
        .collect();
    tagged.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| {
            let (x, y) = (key(&items[a.1 as usize]), key(&items[b.1 as usize]));
            if x.len() >= TAG && y.len() >= TAG {
                x[TAG..].cmp(&y[TAG..])
            } else {
                x.cmp(y)
            }
        })
    });
    *items = tagged.iter().map(|&(_, i)| items[i as usize]).collect();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sorts_like_slice_sort() {
        // Keys sharing long prefixes, prefixes of one another, zero bytes, empty keys.
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            let n = (next() % 60) as usize;
            let keys: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let mut k = b"symbol_prefix_shared_"[..(next() % 22) as usize].to_vec();
                    for _ in 0..next() % 4 {
                        k.push([0u8, b'a', b'b', 0xff][(next() % 4) as usize]);
                    }
                    k
                })
                .collect();
            let mut items: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let mut want = items.clone();
            want.sort();
            sort_unstable_by_bytes(&mut items, |&k| k);
            assert_eq!(items, want, "round {round}");
        }
    }
}
