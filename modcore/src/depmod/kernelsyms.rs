//! Kernel symbols from System.map (`-F`) and Module.symvers (`-E`) (spec §10.2).

use super::DepmodError;
use crate::diag::{show, Level, Sink};
use std::path::Path;

fn read(path: &Path) -> Result<Vec<u8>, DepmodError> {
    std::fs::read(path).map_err(|e| DepmodError::KernelSymbols {
        path: path.display().to_string(),
        err: crate::errno_text(&e),
    })
}

fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split_inclusive(|&b| b == b'\n')
}

/// Parse System.map text: `addr type name` lines; keeps `__ksymtab_<sym>` entries.
pub fn parse_system_map(
    file: &Path,
    data: &[u8],
    prefix: Option<u8>,
    sink: &mut dyn Sink,
) -> Vec<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    for (n, line) in lines(data).enumerate() {
        let mut spaces = line.iter().enumerate().filter(|(_, &b)| b == b' ');
        let second = spaces.nth(1);
        let Some((pos, _)) = second else {
            sink.emit(
                Level::Error,
                format!("{}:{}: invalid line: {}", file.display(), n + 1, show(line)),
            );
            continue;
        };
        let mut rest = &line[pos + 1..];
        if let (Some(p), Some(&c)) = (prefix, rest.first()) {
            if c == p {
                rest = &rest[1..];
            }
        }
        if let Some(sym) = rest.strip_prefix(b"__ksymtab_") {
            let end = sym.iter().position(|&b| b == b'\n').unwrap_or(sym.len());
            out.push((sym[..end].to_vec(), 0));
        }
    }
    out
}

/// Parse Module.symvers: `crc symbol module [...]`; keeps lines whose module is `vmlinux`.
pub fn parse_symvers(
    file: &Path,
    data: &[u8],
    prefix: Option<u8>,
    sink: &mut dyn Sink,
) -> Vec<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    for (n, line) in lines(data).enumerate() {
        let toks: Vec<&[u8]> = line
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|t| !t.is_empty())
            .collect();
        if toks.len() < 3 || toks[2] != b"vmlinux" {
            continue;
        }
        let crc_tok = toks[0];
        let hex = crc_tok
            .strip_prefix(b"0x")
            .or_else(|| crc_tok.strip_prefix(b"0X"))
            .unwrap_or(crc_tok);
        let crc = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u64::from_str_radix(h, 16).ok());
        let Some(crc) = crc else {
            sink.emit(
                Level::Error,
                format!(
                    "{}:{} Invalid symbol version {}: Invalid argument",
                    file.display(),
                    n + 1,
                    show(crc_tok)
                ),
            );
            continue;
        };
        let mut sym = toks[1];
        if let (Some(p), Some(&c)) = (prefix, sym.first()) {
            if c == p {
                sym = &sym[1..];
            }
        }
        out.push((sym.to_vec(), crc));
    }
    out
}

pub fn load_system_map(
    path: &Path,
    prefix: Option<u8>,
    sink: &mut dyn Sink,
) -> Result<Vec<(Vec<u8>, u64)>, DepmodError> {
    let data = read(path)?;
    Ok(parse_system_map(path, &data, prefix, sink))
}

pub fn load_symvers(
    path: &Path,
    prefix: Option<u8>,
    sink: &mut dyn Sink,
) -> Result<Vec<(Vec<u8>, u64)>, DepmodError> {
    let data = read(path)?;
    Ok(parse_symvers(path, &data, prefix, sink))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Collect;

    #[test]
    fn system_map() {
        let mut s = Collect::default();
        let v = parse_system_map(
            Path::new("S"),
            b"ffff T __ksymtab_printk\nffff r __ksymtab_gpl_x\nbad\nffff T other\n",
            None,
            &mut s,
        );
        assert_eq!(v, vec![(b"printk".to_vec(), 0), (b"gpl_x".to_vec(), 0)]);
        assert_eq!(
            s.at(Level::Error).collect::<Vec<_>>(),
            vec!["S:3: invalid line: bad\n"]
        );
    }

    #[test]
    fn symvers() {
        let mut s = Collect::default();
        let v = parse_symvers(
            Path::new("M"),
            b"0x1234\tprintk\tvmlinux\tEXPORT_SYMBOL\n0x1\tfoo\tdrivers/x\tEXPORT_SYMBOL\nzz\tbar\tvmlinux\tE\n0x5\tbaz\tvmlinux\n",
            None,
            &mut s,
        );
        assert_eq!(v, vec![(b"printk".to_vec(), 0x1234)]);
        assert_eq!(s.0.len(), 1);
    }
}
