//! Module names and alias normalisation (spec depmod-and-index §3.3, §7).

/// Longest module name or alias kept (PATH_MAX - 1).
pub const NAME_MAX: usize = 4095;

/// The module name of a path: basename, up to the first `.`, `-` turned into `_`.
pub fn modname_from_path(path: &[u8]) -> Vec<u8> {
    let base = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    };
    let mut out: Vec<u8> = base
        .iter()
        .take_while(|&&b| b != b'.')
        .map(|&b| if b == b'-' { b'_' } else { b })
        .collect();
    out.truncate(NAME_MAX);
    out
}

/// Normalise a module name given by a user or the kernel: `-` becomes `_` (no path handling).
pub fn normalize_name(name: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = name
        .iter()
        .map(|&b| if b == b'-' { b'_' } else { b })
        .collect();
    out.truncate(NAME_MAX);
    out
}

/// Why an alias could not be normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    #[error("unmatched bracket")]
    UnmatchedBracket,
}

/// Normalise an alias for the index: `-` becomes `_` outside bracket expressions; a bracket
/// expression `[...]` is copied verbatim. A stray `]` or an unclosed `[` is an error.
pub fn normalize_alias(alias: &[u8]) -> Result<Vec<u8>, AliasError> {
    let mut out = Vec::with_capacity(alias.len());
    normalize_alias_into(alias, &mut out)?;
    Ok(out)
}

/// [`normalize_alias`] appending to `out` (which then holds at most [`NAME_MAX`] bytes
/// more), so that a caller normalising many aliases can reuse one buffer. On error `out`
/// may hold part of the alias.
pub fn normalize_alias_into(alias: &[u8], out: &mut Vec<u8>) -> Result<(), AliasError> {
    let start = out.len();
    // Most aliases have nothing to change: one look at every byte (without stopping
    // early, which the compiler can vectorise), one copy.
    let special = |b: u8| matches!(b, b'-' | b'[' | b']');
    if !alias.iter().fold(false, |seen, &b| seen | special(b)) {
        out.extend_from_slice(&alias[..alias.len().min(NAME_MAX)]);
        return Ok(());
    }
    let mut i = 0;
    while i < alias.len() {
        // Copy up to the next byte that needs a look, in one piece.
        let plain = alias[i..]
            .iter()
            .position(|&b| special(b))
            .unwrap_or(alias.len() - i);
        out.extend_from_slice(&alias[i..i + plain]);
        i += plain;
        match alias.get(i) {
            None => break,
            Some(b'-') => out.push(b'_'),
            Some(b'[') => {
                let close = alias[i..]
                    .iter()
                    .position(|&b| b == b']')
                    .ok_or(AliasError::UnmatchedBracket)?;
                out.extend_from_slice(&alias[i..=i + close]);
                i += close;
            }
            Some(_) => return Err(AliasError::UnmatchedBracket),
        }
        i += 1;
    }
    out.truncate(start + NAME_MAX);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modname() {
        assert_eq!(
            modname_from_path(b"kernel/a/intel-uncore.ko.xz"),
            b"intel_uncore"
        );
        assert_eq!(modname_from_path(b"/x.y/foo"), b"foo");
        assert_eq!(modname_from_path(b"noext"), b"noext");
    }

    #[test]
    fn alias() {
        assert_eq!(
            normalize_alias(b"pci:v*d[0-9]-x*").unwrap(),
            b"pci:v*d[0-9]_x*"
        );
        assert_eq!(normalize_alias(b"a-b").unwrap(), b"a_b");
        // Appending, with or without anything to change; the length limit counts only
        // what was appended.
        let mut out = b"x ".to_vec();
        normalize_alias_into(b"pci:v*", &mut out).unwrap();
        normalize_alias_into(b"-[a-b]-", &mut out).unwrap();
        assert_eq!(out, b"x pci:v*_[a-b]_");
        for long in [vec![b'a'; NAME_MAX + 9], vec![b'-'; NAME_MAX + 9]] {
            let mut out = b"x".to_vec();
            normalize_alias_into(&long, &mut out).unwrap();
            assert_eq!(out.len(), 1 + NAME_MAX);
        }
        assert_eq!(normalize_alias(b"a]"), Err(AliasError::UnmatchedBracket));
        assert_eq!(normalize_alias(b"a[b"), Err(AliasError::UnmatchedBracket));
        assert_eq!(normalize_alias(b"").unwrap(), b"");
    }
}
