//! Output of modprobe's query modes (spec runtime-tools §2.6, §3.6): the action lines of
//! `-D`/`-v` (`insmod <path> <opts>`, `builtin <name>`, `install <cmd> <opts>`,
//! `rmmod <name>`, `remove <cmd>`), `-c`, `--show-modversions`, `--show-exports`.
//! (`-R` prints one module name per line; see `insert`.)

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::lookup::{IndexKind, ModPath};
use super::plan::{Action, Step};
use super::{Abort, Ctx};
use crate::compress;
use crate::diag::show as lossy;
use crate::elf::Elf;
use crate::kernel::{strerror, Errno};
use crate::root::make_absolute_cwd;

/// The line `-D`/`-v` prints for a step, or `None` (a module without a file that is not
/// built in, or a refused path). `builtin`: the module's state is BUILTIN.
///
/// Formats (note the space before an empty options string):
/// `insmod <path> <options>`, `install <command as configured> <options>`,
/// `builtin <name>`.
pub fn action_line(step: &Step, builtin: bool) -> Option<Vec<u8>> {
    let mut l = Vec::new();
    match &step.action {
        Action::Install { command } => {
            l.extend_from_slice(b"install ");
            l.extend_from_slice(command);
            l.push(b' ');
            l.extend_from_slice(&step.options);
        }
        Action::Insmod {
            path: ModPath::Ok { shown, .. },
        } => {
            l.extend_from_slice(b"insmod ");
            l.extend_from_slice(shown);
            l.push(b' ');
            l.extend_from_slice(&step.options);
        }
        Action::Builtin if builtin => {
            l.extend_from_slice(b"builtin ");
            l.extend_from_slice(&step.key.name);
        }
        _ => return None,
    }
    l.push(b'\n');
    Some(l)
}

/// `rmmod <name>`.
pub fn rmmod_line(name: &[u8]) -> Vec<u8> {
    let mut l = b"rmmod ".to_vec();
    l.extend_from_slice(name);
    l.push(b'\n');
    l
}

/// `remove <command after $CMDLINE_OPTS substitution>`.
pub fn remove_line(command: &[u8]) -> Vec<u8> {
    let mut l = b"remove ".to_vec();
    l.extend_from_slice(command);
    l.push(b'\n');
    l
}

/// `0x%08x<TAB>symbol` (CRCs wider than 32 bits print in full).
pub fn crc_line(crc: u64, symbol: &[u8]) -> Vec<u8> {
    let mut l = format!("0x{crc:08x}\t").into_bytes();
    l.extend_from_slice(symbol);
    l.push(b'\n');
    l
}

/// `-c`: the configuration, then every entry of `modules.alias.bin` and
/// `modules.symbols.bin` as `alias KEY MODULE`.
pub(super) fn show_config(ctx: &mut Ctx<'_, '_>) -> bool {
    let text = ctx.config.show_config();
    let _ = ctx.io.out.write_all(&text);
    for kind in [IndexKind::Alias, IndexKind::Symbols] {
        for (k, v) in ctx.db.dump(kind) {
            let mut l = b"alias ".to_vec();
            l.extend_from_slice(&k);
            l.push(b' ');
            l.extend_from_slice(&v);
            l.push(b'\n');
            let _ = ctx.io.out.write_all(&l);
        }
    }
    ctx.db_problems();
    true
}

/// What `--show-modversions` / `--show-exports` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    Modversions,
    Exports,
}

/// `--show-modversions FILE`: the `__versions` table.
pub(super) fn show_modversions(ctx: &mut Ctx<'_, '_>, file: &[u8]) -> Result<bool, Abort> {
    list_symbols(ctx, file, Listing::Modversions)
}

/// `--show-exports FILE`: the exported symbols with their CRCs.
pub(super) fn show_exports(ctx: &mut Ctx<'_, '_>, file: &[u8]) -> Result<bool, Abort> {
    list_symbols(ctx, file, Listing::Exports)
}

fn list_symbols(ctx: &mut Ctx<'_, '_>, file: &[u8], what: Listing) -> Result<bool, Abort> {
    // kmod 30: the operand is a file path (made absolute against the current directory).
    let path = make_absolute_cwd(PathBuf::from(OsStr::from_bytes(file)));
    if std::fs::metadata(&path).is_err() {
        ctx.fatal(format!("Module {} not found.", lossy(file)), |_| Vec::new())?;
        return Ok(false);
    }
    let fail = |ctx: &mut Ctx<'_, '_>, errno: i32| -> Result<bool, Abort> {
        let verb = match what {
            Listing::Modversions => "modversions",
            Listing::Exports => "symbols",
        };
        ctx.fatal(
            format!(
                "could not get {verb} of {}: {}",
                lossy(file),
                strerror(errno)
            ),
            |_| Vec::new(),
        )?;
        Ok(false)
    };
    let image = match compress::read_module_file(&path) {
        Ok(i) => i,
        Err(e) => return fail(ctx, e.errno()),
    };
    let elf = match Elf::parse(&image) {
        Ok(e) => e,
        Err(e) => return fail(ctx, e.errno()),
    };
    let lines: Vec<Vec<u8>> = match what {
        Listing::Modversions => match crate::module::version_records(&elf) {
            Some(v) => v.iter().map(|r| crc_line(r.crc, r.name)).collect(),
            None => return fail(ctx, Errno::ENOENT as i32),
        },
        Listing::Exports => crate::module::exports(&elf)
            .iter()
            .map(|e| crc_line(e.crc, &e.name))
            .collect(),
    };
    for l in lines {
        let _ = ctx.io.out.write_all(&l);
    }
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::modprobe::lookup::ModKey;

    fn step(action: Action, options: &str) -> Step {
        Step {
            key: ModKey::name(b"fat"),
            options: options.as_bytes().to_vec(),
            extra: Vec::new(),
            action,
            required: true,
            top: true,
        }
    }

    #[test]
    fn lines() {
        let p = ModPath::Ok {
            real: PathBuf::from("/x"),
            shown: b"/lib/modules/v/kernel/fs/fat/fat.ko".to_vec(),
        };
        assert_eq!(
            action_line(&step(Action::Insmod { path: p.clone() }, ""), false).unwrap(),
            b"insmod /lib/modules/v/kernel/fs/fat/fat.ko \n"
        );
        assert_eq!(
            action_line(&step(Action::Insmod { path: p }, "a=1 "), false).unwrap(),
            b"insmod /lib/modules/v/kernel/fs/fat/fat.ko a=1 \n"
        );
        assert_eq!(
            action_line(&step(Action::Builtin, ""), true).unwrap(),
            b"builtin fat\n"
        );
        assert_eq!(action_line(&step(Action::Builtin, ""), false), None);
        assert_eq!(action_line(&step(Action::NoFile, ""), false), None);
        assert_eq!(
            action_line(
                &step(
                    Action::Install {
                        command: b"/bin/true $CMDLINE_OPTS".to_vec()
                    },
                    "x=1"
                ),
                false
            )
            .unwrap(),
            b"install /bin/true $CMDLINE_OPTS x=1\n"
        );
        assert_eq!(rmmod_line(b"fat"), b"rmmod fat\n");
        assert_eq!(remove_line(b"/bin/true "), b"remove /bin/true \n");
        assert_eq!(crc_line(0x1234, b"sym"), b"0x00001234\tsym\n");
        assert_eq!(crc_line(0x1_0000_0000, b"s"), b"0x100000000\ts\n");
    }
}
