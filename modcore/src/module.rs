//! What the tools read out of one module file: `.modinfo`, exports, needed symbols.
//!
//! `extract` takes the (already decompressed) ELF image and returns a [`ModuleData`].
//! It does no I/O.

/// One exported symbol, as depmod sees it (spec depmod-and-index §4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub name: Vec<u8>,
    pub crc: u64,
}

/// One symbol the module needs (spec §4.5), in list order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub name: Vec<u8>,
    pub crc: u64,
    pub weak: bool,
}

/// Everything depmod (and modinfo) takes from a module image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleData {
    /// `.modinfo` entries in file order, duplicates kept (spec §4.3).
    pub modinfo: Vec<(Vec<u8>, Vec<u8>)>,
    /// Exports (spec §4.4).
    pub exports: Vec<Export>,
    /// Needed symbols (spec §4.5).
    pub needs: Vec<Need>,
}
