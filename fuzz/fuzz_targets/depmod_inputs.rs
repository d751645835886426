//! depmod's other inputs: modules.builtin, modules.builtin.modinfo and modules.order.
//! Whatever index depmod writes from them must read back cleanly.
#![no_main]

use kmod_rs_fuzz::Discard;
use libfuzzer_sys::fuzz_target;
use modcore::depmod::{graph, output};
use modcore::index::{Index, Layout};

fn check_index(bytes: &[u8]) {
    let ix = Index::new(bytes).expect("depmod wrote an index it cannot read");
    for e in ix.iter() {
        e.expect("depmod wrote an index whose iteration fails");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut sink = Discard::default();
    for layout in [Layout::PostOrder, Layout::PreOrder] {
        if let Ok(b) = output::builtin_bin(data, layout, &mut sink) {
            check_index(&b);
        }
        if let Ok(b) = output::builtin_alias_bin(data, layout, &mut sink) {
            check_index(&b);
        }
    }
    let _ = graph::parse_order(data);
});
