//! Module file decompression (xz, zstd, gzip, plain), with every decoder set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modcore::compress::{self, Decoders, MAX_DECOMPRESSED_LEN};

fuzz_target!(|data: &[u8]| {
    for decoders in [Decoders::ALL, Decoders::KMOD30] {
        if let Ok(out) = compress::decompress_with(data, decoders) {
            assert!(out.len() <= MAX_DECOMPRESSED_LEN.max(data.len()));
            // What a module read does next.
            let _ = modcore::module::extract(&out);
        }
    }
});
