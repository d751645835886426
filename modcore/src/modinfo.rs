//! Parsing of NUL-separated string sections: `.modinfo` and `__ksymtab_strings`.
//!
//! Both sections are split the same way (spec depmod-and-index §4.3 and §4.4 step 2):
//!
//! 1. leading NUL bytes are removed, but at least one byte is kept;
//! 2. if at most one byte remains, the section holds no strings at all (even when that
//!    byte is not NUL);
//! 3. the rest is split at every run of NUL bytes and empty pieces are dropped; an
//!    unterminated final string is accepted.
//!
//! `.modinfo` strings are then split at the first `=` into key and value.
//! These functions only look at the bytes they are given.

/// `.modinfo` entries: `(key, value)` pairs in section order.
pub type ModinfoEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// Splits a string section into its non-empty NUL-separated strings, in order.
///
/// The returned slices borrow from `section` and contain no NUL byte.
pub fn split_strings(section: &[u8]) -> Vec<&[u8]> {
    let mut rest = section;
    while rest.len() > 1 && rest[0] == 0 {
        rest = &rest[1..];
    }
    if rest.len() <= 1 {
        return Vec::new();
    }
    rest.split(|&b| b == 0).filter(|s| !s.is_empty()).collect()
}

/// Splits one `.modinfo` string at its first `=`.
///
/// A string without `=` is a key with an empty value.
pub fn split_entry(entry: &[u8]) -> (&[u8], &[u8]) {
    match entry.iter().position(|&b| b == b'=') {
        Some(eq) => (&entry[..eq], &entry[eq + 1..]),
        None => (entry, &[]),
    }
}

/// Parses the contents of a `.modinfo` section into `(key, value)` pairs, in section
/// order, duplicates kept.
pub fn parse(section: &[u8]) -> ModinfoEntries {
    split_strings(section)
        .into_iter()
        .map(|s| {
            let (k, v) = split_entry(s);
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(v: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        v.iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn basic() {
        assert_eq!(
            parse(b"alias=fs-fat\0license=GPL\0"),
            owned(&[("alias", "fs-fat"), ("license", "GPL")])
        );
    }

    #[test]
    fn leading_nuls_runs_and_unterminated_tail() {
        assert_eq!(
            parse(b"\0\0\0a=1\0\0\0b=2=3\0c"),
            owned(&[("a", "1"), ("b", "2=3"), ("c", "")])
        );
    }

    #[test]
    fn tiny_sections_have_no_entries() {
        assert!(parse(b"").is_empty());
        assert!(parse(b"\0").is_empty());
        assert!(parse(b"\0\0\0\0").is_empty());
        // One byte left after the NUL strip: no entries, even though it is not NUL.
        assert!(parse(b"\0\0x").is_empty());
        assert!(parse(b"x").is_empty());
        assert_eq!(parse(b"xy"), owned(&[("xy", "")]));
        assert_eq!(parse(b"x\0"), owned(&[("x", "")]));
    }

    #[test]
    fn empty_key_and_value() {
        assert_eq!(
            parse(b"=v\0k=\0alias\0"),
            owned(&[("", "v"), ("k", ""), ("alias", "")])
        );
    }
}
