//! A module's data as depmod's steps read it, wherever it lives: a [`ModuleData`] read
//! from the module file, or an entry of the incremental cache read in place (no copy, no
//! allocation per string: a big tree's cache holds some 200,000 needed symbols).

use super::cache::Body;
use crate::module::ModuleData;

/// See the module documentation. Cheap to copy.
#[derive(Clone, Copy)]
pub enum ModView<'a> {
    Data(&'a ModuleData),
    Cached(&'a Body),
}

/// One of two iterators with the same items.
enum Either<L, R> {
    Left(L),
    Right(R),
}

impl<T, L: Iterator<Item = T>, R: Iterator<Item = T>> Iterator for Either<L, R> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match self {
            Either::Left(l) => l.next(),
            Either::Right(r) => r.next(),
        }
    }
}

impl<'a> ModView<'a> {
    /// `.modinfo` entries (key, value), in file order.
    pub fn modinfo(self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        match self {
            ModView::Data(d) => {
                Either::Left(d.modinfo.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
            }
            ModView::Cached(b) => Either::Right(b.modinfo()),
        }
    }

    /// Exported symbols (name, CRC).
    pub fn exports(self) -> impl Iterator<Item = (&'a [u8], u64)> + 'a {
        match self {
            ModView::Data(d) => Either::Left(d.exports.iter().map(|e| (e.name.as_slice(), e.crc))),
            ModView::Cached(b) => Either::Right(b.exports()),
        }
    }

    /// How many symbols the module exports.
    pub fn export_count(self) -> usize {
        match self {
            ModView::Data(d) => d.exports.len(),
            ModView::Cached(b) => b.export_count(),
        }
    }

    /// Needed symbols (name, CRC, weak).
    pub fn needs(self) -> impl Iterator<Item = (&'a [u8], u64, bool)> + 'a {
        match self {
            ModView::Data(d) => {
                Either::Left(d.needs.iter().map(|n| (n.name.as_slice(), n.crc, n.weak)))
            }
            ModView::Cached(b) => Either::Right(b.needs()),
        }
    }
}
