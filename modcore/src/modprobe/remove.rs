//! Removal (`modprobe -r`, spec runtime-tools §3.7): softdeps, holders, the in-use check,
//! `delete_module` (with `-w` retries), remove commands, and the single pass over the
//! dependencies that are no longer used.

use std::time::{Duration, Instant};

use super::lookup::ModKey;
use super::{show, Abort, CommandStatus, Ctx};
use crate::diag::{show as lossy, Level};
use crate::explain::{self, RemoveFailure};
use crate::kernel::{strerror, DeleteFlags, Errno};
use crate::procfs::InitState;

const ENOENT: i32 = Errno::ENOENT as i32;
const EBUSY: i32 = Errno::EBUSY as i32;
const EAGAIN: i32 = Errno::EAGAIN as i32;

/// Flags of one removal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RmFlags {
    /// Remove the modules holding this one first (`--remove-holders`).
    holders: bool,
    /// A built-in module is skipped silently (softdeps, holders).
    ignore_builtin: bool,
}

const RECURSIVE: RmFlags = RmFlags {
    holders: false,
    ignore_builtin: true,
};

/// kmod's `rmmod()` for one operand: look it up and remove every module found, stopping
/// at the first error. Returns 0 or a negative errno.
pub(super) fn rmmod(ctx: &mut Ctx<'_, '_>, name: &[u8]) -> Result<i32, Abort> {
    let found = ctx.lookup(name).unwrap_or_default();
    if found.is_empty() {
        ctx.fatal(format!("Module {} not found.", lossy(name)), |_| Vec::new())?;
        return Ok(-ENOENT);
    }
    let flags = RmFlags {
        holders: ctx.opts.remove_holders,
        ignore_builtin: false,
    };
    let mut err = 0;
    for f in &found {
        err = remove_module(ctx, &f.key, flags)?;
        if err < 0 {
            break;
        }
    }
    Ok(err)
}

fn remove_module(ctx: &mut Ctx<'_, '_>, key: &ModKey, flags: RmFlags) -> Result<i32, Abort> {
    let opts = ctx.opts;
    let name = key.name.clone();
    let (pre, post, cmd) = if opts.ignore_commands {
        (Vec::new(), Vec::new(), None)
    } else {
        let (pre, post) = super::plan::PlanSource::softdeps(ctx, key);
        (pre, post, ctx.remove_command(key))
    };

    if cmd.is_none() && !opts.ignore_loaded() {
        match ctx.initstate(key) {
            None => {
                if opts.first_time {
                    ctx.fatal(format!("Module {} is not in kernel.", lossy(&name)), |_| {
                        Vec::new()
                    })?;
                    return Ok(-ENOENT);
                }
                return Ok(0);
            }
            Some(InitState::Builtin) => {
                if flags.ignore_builtin {
                    return Ok(0);
                }
                ctx.fatal(format!("Module {} is builtin.", lossy(&name)), |_| {
                    Vec::new()
                })?;
                return Ok(-ENOENT);
            }
            Some(_) => {}
        }
    }

    for p in post.iter().rev() {
        remove_module(ctx, p, RECURSIVE)?;
    }

    let mut removed_holders = false;
    if flags.holders {
        for h in ctx.holders(&name).iter().rev() {
            removed_holders = true;
            let r = remove_module(ctx, &ModKey::name(h), RECURSIVE)?;
            if r < 0 {
                return Ok(r);
            }
        }
    }

    if cmd.is_none() && !opts.ignore_loaded() && opts.wait_msec == 0 {
        if let Some(refs) = ctx.refcnt(&name) {
            if refs > 0 {
                let n = lossy(&name).into_owned();
                ctx.fatal(format!("Module {n} is in use."), |c| {
                    explain::explain_remove(&c.explain_context(), &n, None, RemoveFailure::InUse)
                })?;
                return Ok(-EBUSY);
            }
        }
    }

    let err = match &cmd {
        Some(c) => run_remove(ctx, &name, c)?,
        None => {
            // The module may already be gone: removed as an unused dependency of one of
            // its holders (kmod 30 then called delete_module a second time and failed).
            if removed_holders
                && !opts.effective_dry_run()
                && !crate::procfs::LiveModules::new(ctx.root).has_sys_dir(&name)
            {
                0
            } else {
                delete(ctx, &name)
            }
        }
    };
    if err < 0 {
        return Ok(err);
    }

    if cmd.is_none() {
        let deps = super::plan::PlanSource::deps(ctx, key);
        for d in deps {
            if ctx.refcnt(&d.name) == Some(0) {
                delete(ctx, &d.name);
            }
        }
    }

    for p in pre.iter().rev() {
        remove_module(ctx, p, RECURSIVE)?;
    }
    Ok(0)
}

/// `rmmod NAME`: show the line, then (unless dry run) `delete_module`, retrying on
/// EAGAIN while `-w` allows. Returns 0 or a negative errno.
fn delete(ctx: &mut Ctx<'_, '_>, name: &[u8]) -> i32 {
    if ctx.opts.show_actions() {
        ctx.print(&show::rmmod_line(name));
    }
    if ctx.opts.effective_dry_run() {
        return 0;
    }
    let Ok(cname) = std::ffi::CString::new(name.to_vec()) else {
        return -(Errno::EINVAL as i32);
    };
    let flags = DeleteFlags {
        force: ctx.opts.force,
    };
    let wait = ctx.opts.wait_msec;
    // With -w the deadline starts at the first EAGAIN; sleeps double from 2 ms, the
    // last one trimmed to the deadline.
    let mut deadline: Option<Instant> = None;
    let mut interval = Duration::from_millis(2);
    let errno = loop {
        match ctx.kernel.delete_module(&cname, flags) {
            Ok(()) => return 0,
            Err(e) => {
                let errno = e.raw();
                if errno != EAGAIN || wait == 0 {
                    break errno;
                }
                let now = Instant::now();
                let end = *deadline.get_or_insert(now + Duration::from_millis(wait));
                if now >= end {
                    break errno;
                }
                std::thread::sleep(interval.min(end - now));
                interval *= 2;
            }
        }
    };
    let n = lossy(name).into_owned();
    if ctx.log(
        Level::Error,
        format!("could not remove '{n}': {}", strerror(errno)),
    ) {
        let lines = explain::explain_remove(
            &ctx.explain_context(),
            &n,
            None,
            RemoveFailure::Kernel(errno),
        );
        ctx.notes(Level::Error, lines);
    }
    -errno
}

/// Run a remove command (`$CMDLINE_OPTS` becomes empty). A failure is kmod's FATAL
/// `Error running remove command for NAME`.
fn run_remove(ctx: &mut Ctx<'_, '_>, name: &[u8], command: &[u8]) -> Result<i32, Abort> {
    let cmd = super::plan::substitute_cmdline_opts(command, b"");
    if ctx.opts.show_actions() {
        ctx.print(&show::remove_line(&cmd));
    }
    if ctx.opts.effective_dry_run() {
        return Ok(0);
    }
    let code = match ctx.run_command(&cmd, name) {
        Ok(CommandStatus::Exited(0)) => return Ok(0),
        Ok(CommandStatus::Exited(code)) => -code.abs(),
        Ok(CommandStatus::Signaled(_)) | Err(_) => -1,
    };
    ctx.fatal(
        format!("Error running remove command for {}", lossy(name)),
        |_| Vec::new(),
    )?;
    Ok(code)
}
