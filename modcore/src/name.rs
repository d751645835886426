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
    let mut i = 0;
    while i < alias.len() {
        // Copy up to the next byte that needs a look, in one piece.
        let plain = alias[i..]
            .iter()
            .position(|&b| matches!(b, b'-' | b'[' | b']'))
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
    out.truncate(NAME_MAX);
    Ok(out)
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
        assert_eq!(normalize_alias(b"a]"), Err(AliasError::UnmatchedBracket));
        assert_eq!(normalize_alias(b"a[b"), Err(AliasError::UnmatchedBracket));
        assert_eq!(normalize_alias(b"").unwrap(), b"");
    }
}
