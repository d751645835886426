//! Insertion (spec runtime-tools §3.5): the top-level checks, the per-module actions,
//! install commands, and the error report with its explanation.

use std::path::Path;

use super::lookup::{Found, ModPath, RefuseReason, Source};
use super::plan::{self, Action, Step};
use super::{show, Abort, CommandStatus, Ctx, FailureRecord};
use crate::diag::{show as lossy, Level};
use crate::explain::{self, FailedInsert, KmsgCursor};
use crate::kernel::{strerror, Errno};
use crate::load;

const EEXIST: i32 = Errno::EEXIST as i32;
const ENOENT: i32 = Errno::ENOENT as i32;
const EINVAL: i32 = Errno::EINVAL as i32;
const EACCES: i32 = Errno::EACCES as i32;

/// A positive result: the requested module is blacklisted and was skipped.
pub const PROBE_BLACKLISTED: i32 = 1;

/// kmod's `insmod()`: look `name` up and probe every module found. Returns 0 or a
/// negative errno (the result of the last module found, like kmod).
pub(super) fn insmod(
    ctx: &mut Ctx<'_, '_>,
    name: &[u8],
    extra: Option<&[u8]>,
) -> Result<i32, Abort> {
    let found = ctx.lookup(name);
    let invalid = found.is_err();
    let found = found.unwrap_or_default();
    if found.is_empty() {
        let msg = format!(
            "Module {} not found in directory {}",
            lossy(name),
            lossy(ctx.db.moddir_shown())
        );
        ctx.fatal(msg, |c| not_found_notes(c, name, invalid))?;
        return Ok(-ENOENT);
    }
    let mut err = 0;
    for f in &found {
        if ctx.opts.resolve_alias {
            let mut line = f.key.name.clone();
            line.push(b'\n');
            ctx.print(&line);
            continue;
        }
        ctx.failure = None;
        let r = probe_insert(ctx, f, extra)?;
        if r >= 0 {
            err = 0;
            continue;
        }
        err = r;
        let text = match -r {
            EEXIST => "Module already in kernel".to_string(),
            ENOENT => "Unknown symbol in module, or unknown parameter (see dmesg)".to_string(),
            e => strerror(e),
        };
        let msg = format!("could not insert '{}': {}", lossy(&f.key.name), text);
        if ctx.log(Level::Error, msg) {
            let lines = insert_notes(ctx, f, r);
            ctx.notes(Level::Error, lines);
        }
    }
    Ok(err)
}

/// Explanations for "Module X not found in directory D".
fn not_found_notes(ctx: &Ctx<'_, '_>, name: &[u8], invalid: bool) -> Vec<String> {
    let mut out = Vec::new();
    let shown = lossy(ctx.db.moddir_shown()).into_owned();
    if invalid {
        out.push(format!(
            "'{}' is not a valid module name or alias: a '[' or ']' is unbalanced",
            lossy(name)
        ));
        return out;
    }
    if !ctx.db.moddir().is_dir() {
        out.push(format!(
            "{shown} does not exist: no modules are installed for kernel {} (-S selects another version)",
            ctx.release
        ));
        return out;
    }
    if !ctx.db.moddir().join("modules.dep.bin").exists()
        && !ctx.db.moddir().join("modules.dep").exists()
    {
        out.push(format!(
            "{shown} has no modules.dep.bin: its indexes were never built (run 'depmod {}')",
            ctx.release
        ));
        return out;
    }
    if name.contains(&b'/') {
        out.push(format!(
            "'{}' was looked up as a module name; modprobe does not load files by path (use insmod for that)",
            lossy(name)
        ));
    }
    out
}

/// Explanations for "could not insert 'X': ...".
fn insert_notes(ctx: &Ctx<'_, '_>, top: &Found, err: i32) -> Vec<String> {
    let mut out = Vec::new();
    let Some(fail) = &ctx.failure else {
        return out;
    };
    let name = lossy(&fail.name).into_owned();
    if fail.name != top.key.name {
        let at = fail
            .shown_path
            .as_ref()
            .map(|p| format!(" ({})", lossy(p)))
            .unwrap_or_default();
        out.push(format!(
            "the module that failed is {name}{at}, which {} needs; {} itself was not loaded",
            lossy(&top.key.name),
            lossy(&top.key.name)
        ));
    }
    if fail.errno != -err {
        return out;
    }
    if fail.path.is_none() {
        let moddir = lossy(ctx.db.moddir_shown()).into_owned();
        match (&top.key.alias, top.source) {
            (Some(alias), Source::ConfigAlias) if fail.name == top.key.name => out.push(format!(
                "{name} is not a module in {moddir}: the configuration alias '{}' points to it, and aliases are not followed to other aliases",
                lossy(alias)
            )),
            _ => out.push(format!(
                "{name} is not a module in {moddir}: modules.dep has no entry for it"
            )),
        }
        return out;
    }
    let ectx = ctx.explain_context();
    let f = FailedInsert {
        name: &name,
        path: fail.path.as_deref(),
        errno: fail.errno,
        from_kernel: fail.from_kernel,
        forced: ctx.load_opts.forced(),
        path_from_index: true,
        kmsg: fail.kmsg.as_deref(),
    };
    out.extend(explain::explain_insert(&ectx, &f));
    out
}

/// kmod's `kmod_module_probe_insert_module` for one module found by the lookup.
/// Returns 0, [`PROBE_BLACKLISTED`] or a negative errno.
fn probe_insert(ctx: &mut Ctx<'_, '_>, found: &Found, extra: Option<&[u8]>) -> Result<i32, Abort> {
    let opts = ctx.opts;
    let key = &found.key;
    if !opts.ignore_loaded() && ctx.in_kernel(key) {
        return Ok(if opts.first_time { -EEXIST } else { 0 });
    }
    if plan::blacklisted(&ctx.config, found, opts.use_blacklist) {
        let why = match &key.alias {
            Some(a) if found.source.via_alias() => {
                format!("it was requested through the alias {}", lossy(a))
            }
            _ => "-b was given".to_string(),
        };
        ctx.log(
            Level::Notice,
            format!(
                "not loading {}: it is blacklisted and {why}",
                lossy(&key.name)
            ),
        );
        return Ok(PROBE_BLACKLISTED);
    }

    let list = plan::probe_list(ctx, key, opts.ignore_commands);
    let steps = {
        let c: &Ctx<'_, '_> = ctx;
        plan::build_steps(&c.config, &list, key, extra, &mut |k| c.facts(k))
    };
    ctx.db_problems();

    let mut err = 0;
    for step in &steps {
        ctx.failure = None;
        err = if !opts.ignore_loaded() && ctx.in_kernel(&step.key) {
            -EEXIST
        } else {
            do_step(ctx, step)?
        };
        if err == -EEXIST && step.top && opts.first_time {
            break;
        }
        if err == -EEXIST || !step.required {
            err = 0;
        } else if err < 0 {
            break;
        }
    }
    Ok(err)
}

/// Show and (unless dry run) perform one step.
fn do_step(ctx: &mut Ctx<'_, '_>, step: &Step) -> Result<i32, Abort> {
    if let Action::Insmod {
        path: ModPath::Refused { entry, why },
    } = &step.action
    {
        let msg = match why {
            RefuseReason::Escapes => format!(
                "refusing to load {}: its modules.dep entry '{}' points outside {}",
                lossy(&step.key.name),
                lossy(entry),
                lossy(ctx.db.moddir_shown())
            ),
            RefuseReason::OtherName => format!(
                "refusing to load {}: its modules.dep entry '{}' is the file of another module (the index is damaged; run depmod)",
                lossy(&step.key.name),
                lossy(entry)
            ),
        };
        ctx.log(Level::Error, msg);
        return Ok(-EACCES);
    }
    if ctx.opts.show_actions() {
        let builtin = matches!(step.action, Action::Builtin)
            && ctx.initstate(&step.key) == Some(crate::procfs::InitState::Builtin);
        if let Some(line) = show::action_line(step, builtin) {
            ctx.print(&line);
        }
    }
    if ctx.opts.effective_dry_run() {
        return Ok(0);
    }
    match &step.action {
        Action::Install { command } => run_install(ctx, step, command),
        Action::Builtin => Ok(0),
        Action::NoFile => {
            ctx.log(
                Level::Error,
                format!("could not find module by name='{}'", lossy(&step.key.name)),
            );
            ctx.failure = Some(FailureRecord {
                name: step.key.name.clone(),
                path: None,
                shown_path: None,
                errno: ENOENT,
                from_kernel: false,
                kmsg: None,
            });
            Ok(-ENOENT)
        }
        Action::Insmod {
            path: ModPath::Ok { real, shown },
        } => Ok(insert_file(ctx, step, real, shown)),
        Action::Insmod { .. } => Ok(-EACCES),
    }
}

/// Put one module file into the kernel (the shared load step of [`crate::load`]).
fn insert_file(ctx: &mut Ctx<'_, '_>, step: &Step, real: &Path, shown: &[u8]) -> i32 {
    let mut cursor = KmsgCursor::open(ctx.root);
    let r = {
        let mut sink = super::Threshold {
            inner: &mut *ctx.io.diag,
            verbosity: ctx.opts.verbosity,
        };
        load::insert_module(ctx.kernel, real, &step.options, &ctx.load_opts, &mut sink)
    };
    match r {
        Ok(_) => {
            if ctx.opts.autoclean {
                let name = lossy(&step.key.name).into_owned();
                if let Err(e) = crate::autoclean::record(ctx.root, &name, ctx.opts.now) {
                    ctx.log(
                        Level::Error,
                        format!("could not record {name} for autoclean: {e}"),
                    );
                }
            }
            0
        }
        Err(e) => {
            let errno = e.errno();
            ctx.log(
                Level::Info,
                format!(
                    "Failed to insert module '{}': {}",
                    lossy(shown),
                    strerror(errno)
                ),
            );
            if errno != EEXIST {
                let kmsg = cursor.as_mut().map(KmsgCursor::read_new);
                ctx.failure = Some(FailureRecord {
                    name: step.key.name.clone(),
                    path: Some(real.to_path_buf()),
                    shown_path: Some(shown.to_vec()),
                    errno,
                    from_kernel: e.from_kernel(),
                    kmsg,
                });
            }
            -errno
        }
    }
}

/// Run an install command (libkmod's `module_do_install_commands`): `$CMDLINE_OPTS`
/// becomes the options string; failures are EINVAL.
fn run_install(ctx: &mut Ctx<'_, '_>, step: &Step, command: &[u8]) -> Result<i32, Abort> {
    let name = lossy(&step.key.name).into_owned();
    let uses_opts = command.windows(13).any(|w| w == b"$CMDLINE_OPTS");
    if uses_opts {
        if let Some(c) = plan::shell_unsafe(&step.extra) {
            ctx.log(
                Level::Error,
                format!(
                    "not running the install command for module {name}: the parameters given on the command line contain '{}', which the shell would interpret",
                    char::from(c).escape_default()
                ),
            );
            return Ok(-EINVAL);
        }
    }
    let cmd = plan::substitute_cmdline_opts(command, &step.options);
    let shown = lossy(&cmd).into_owned();
    match ctx.run_command(&cmd, &step.key.name) {
        Ok(CommandStatus::Exited(0)) => Ok(0),
        Ok(CommandStatus::Exited(code)) => {
            ctx.log(
                Level::Error,
                format!(
                    "Error running install command '{shown}' for module {name}: retcode {code}"
                ),
            );
            Ok(-EINVAL)
        }
        Ok(CommandStatus::Signaled(sig)) => {
            ctx.log(
                Level::Error,
                format!(
                    "Error running install command '{shown}' for module {name}: killed by signal {sig}"
                ),
            );
            Ok(-EINVAL)
        }
        Err(e) => {
            ctx.log(
                Level::Error,
                format!(
                    "Could not run install command '{shown}' for module {name}: {}",
                    crate::kernel::strerror_io(&e)
                ),
            );
            Ok(-EINVAL)
        }
    }
}
