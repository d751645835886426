//! The appended module signature trailer and the PKCS#7 (DER/BER) reader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modcore::signature;

fuzz_target!(|data: &[u8]| {
    let _ = signature::trailer(data);
    assert!(signature::unsigned_len(data) <= data.len());
    if let Some(info) = signature::parse(data) {
        let _ = (info.id_type_name(), info.algo_name());
        for (_, v) in info.modinfo_fields() {
            assert!(v.len() <= 4 * data.len() + 64);
        }
        let _ = signature::hex_wrapped(&info.signature);
    }
});
