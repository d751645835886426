//! The .bin index reader: header check, exact lookup, wildcard search, iteration.
//! Input: one length byte, that many bytes of lookup key, then the index file.
#![no_main]

use kmod_rs_fuzz::split_head;
use libfuzzer_sys::fuzz_target;
use modcore::index::Index;

fuzz_target!(|data: &[u8]| {
    let (key, file) = split_head(data);
    let Ok(ix) = Index::new(file) else {
        return;
    };
    let _ = ix.get(key);
    let _ = ix.get_first(key);
    let _ = ix.search_wildcard(key);
    let mut n = 0usize;
    for e in ix.iter() {
        match e {
            Ok(e) => {
                n += 1;
                assert!(n <= file.len(), "more keys than bytes");
                let _ = ix.get(&e.key);
            }
            Err(_) => break,
        }
    }
    let _ = ix.for_each(|_, _| {});
});
