//! ELF and module parsing: extract (modinfo, exports, needs), modinfo_only, modversions,
//! the forced-load patches and the signature trailer, on a (maybe compressed) image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modcore::{compress, elf, module, signature};

fuzz_target!(|data: &[u8]| {
    // Compressed seeds go through the decompressor first, like a real module read.
    let image = match compress::decompress(data) {
        Ok(i) => i.into_owned(),
        Err(_) => data.to_vec(),
    };
    let image = &image[..];
    if let Ok(d) = module::extract(image) {
        let total: usize = d.needs.iter().map(|n| n.name.len()).sum::<usize>()
            + d.exports.iter().map(|e| e.name.len()).sum::<usize>()
            + d.modinfo
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        // Work (and memory) stays linear in the image size.
        assert!(
            total <= 64 * image.len() + 4096,
            "{total} name bytes from {} bytes",
            image.len()
        );
    }
    let _ = module::modinfo_only(image);
    let _ = module::modversions(image);
    if let Ok(e) = elf::Elf::parse(image) {
        for i in 0..e.section_count().min(64) {
            if let Some(info) = e.section_info(i) {
                let _ = e.section_data(&info);
                let _ = e.section_name(&info);
            }
        }
        if let Some(syms) = e.symbols() {
            for s in syms.iter().take(4096) {
                let _ = (s.binding(), s.kind());
            }
        }
    }
    let mut copy = image.to_vec();
    let _ = module::strip_vermagic(&mut copy);
    let mut copy = image.to_vec();
    let _ = elf::clear_alloc_flag(&mut copy, b"__versions");
    if let Some(info) = signature::parse(image) {
        let _ = (info.id_type_name(), info.algo_name(), info.modinfo_fields());
    }
});
