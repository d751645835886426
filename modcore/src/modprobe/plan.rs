//! Building the load list of one module (spec runtime-tools §3.5.3, §3.5.4).
//!
//! [`probe_list`] orders a module, its dependencies and the soft dependencies of all of
//! them exactly like kmod; [`build_steps`] turns that order into [`Step`]s carrying the
//! options string and the action (install command, `insmod`, `builtin`). Both are pure:
//! what they need from the module directory and configuration comes through
//! [`PlanSource`].
//!
//! The helpers for the parts of a plan that do not depend on the order live here too:
//! the option-string rule ([`concat_options`]; the extra parameters come from
//! [`crate::load::params_from_args`]), the blacklist rule
//! ([`blacklisted`]) and weak dependencies ([`weakdeps`]).

use std::collections::HashMap;

use super::lookup::{Found, ModKey, ModPath};
use crate::modprobe_conf::ModprobeConfig;

/// What the plan needs to know about modules.
pub trait PlanSource {
    /// The module's dependencies, in load order (the reverse of `modules.dep`).
    fn deps(&mut self, key: &ModKey) -> Vec<ModKey>;
    /// The module's first matching softdep, each name resolved with the lookup chain.
    fn softdeps(&mut self, key: &ModKey) -> (Vec<ModKey>, Vec<ModKey>);
}

/// kmod's per-module-object flags while a probe list is built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub visited: bool,
    /// A failure of this module fails the whole load (top module and its dependencies).
    pub required: bool,
    /// Load directly, ignoring the module's install command (set for modules with a
    /// softdep, and for the top module with `-i`).
    pub ignorecmd: bool,
}

/// The ordered list and the final flags of every module object in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeList {
    /// Load order; a module may appear more than once (kmod does not de-duplicate).
    pub order: Vec<ModKey>,
    pub flags: HashMap<ModKey, Flags>,
}

impl ProbeList {
    /// The flags of a module of the list.
    pub fn flags(&self, key: &ModKey) -> Flags {
        self.flags.get(key).copied().unwrap_or_default()
    }
}

/// Build the probe list of `top` (spec §3.5.3). `ignorecmd` is `-i`: the top module's
/// own install command and softdeps are ignored.
pub fn probe_list(src: &mut dyn PlanSource, top: &ModKey, ignorecmd: bool) -> ProbeList {
    let mut pl = ProbeList::default();
    visit(src, &mut pl, top, true, ignorecmd);
    pl
}

fn visit(
    src: &mut dyn PlanSource,
    pl: &mut ProbeList,
    x: &ModKey,
    required: bool,
    ignorecmd: bool,
) {
    {
        let f = pl.flags.entry(x.clone()).or_default();
        if f.visited {
            return;
        }
        f.visited = true;
    }
    let deps = src.deps(x);
    if required {
        pl.flags.entry(x.clone()).or_default().required = true;
        for d in &deps {
            pl.flags.entry(d.clone()).or_default().required = true;
        }
    }
    for d in &deps {
        add(src, pl, d);
    }
    if ignorecmd {
        pl.order.push(x.clone());
        pl.flags.entry(x.clone()).or_default().ignorecmd = true;
    } else {
        add(src, pl, x);
    }
}

fn add(src: &mut dyn PlanSource, pl: &mut ProbeList, y: &ModKey) {
    let (pre, post) = src.softdeps(y);
    for p in &pre {
        visit(src, pl, p, false, false);
    }
    pl.order.push(y.clone());
    pl.flags.entry(y.clone()).or_default().ignorecmd = !pre.is_empty() || !post.is_empty();
    for q in &post {
        visit(src, pl, q, false, false);
    }
}

/// What to do for one module of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run this install command (as written in the configuration).
    Install { command: Vec<u8> },
    /// Load this file.
    Insmod { path: ModPath },
    /// Built into the kernel: nothing to load.
    Builtin,
    /// Neither a file nor built in (an alias pointing at a non-module, a module whose
    /// `modules.dep` line is missing); loading it fails with ENOENT.
    NoFile,
}

/// One step of a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub key: ModKey,
    /// The options string given to the kernel (or to `$CMDLINE_OPTS`).
    pub options: Vec<u8>,
    /// The part of `options` that came from the command line (user text).
    pub extra: Vec<u8>,
    pub action: Action,
    pub required: bool,
    /// This is the requested module.
    pub top: bool,
}

/// Facts about one module that [`build_steps`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFacts {
    /// The install command, if any (first match, or the one that defined the module).
    pub install_command: Option<Vec<u8>>,
    pub path: Option<ModPath>,
    pub builtin: bool,
}

/// Turn a probe list into steps. `facts` answers per module; `extra` is the extra
/// parameter string of the top module (command-line operands, see [`crate::load::params_from_args`]).
pub fn build_steps(
    config: &ModprobeConfig,
    list: &ProbeList,
    top: &ModKey,
    extra: Option<&[u8]>,
    facts: &mut dyn FnMut(&ModKey) -> ModuleFacts,
) -> Vec<Step> {
    let mut out = Vec::with_capacity(list.order.len());
    for key in &list.order {
        let flags = list.flags(key);
        let is_top = key == top;
        let cfg_opts = config.module_options(&key.name, key.alias.as_deref());
        let x = if is_top { extra } else { None };
        let options = concat_options(&cfg_opts, x);
        let f = facts(key);
        let action = match (flags.ignorecmd, f.install_command) {
            (false, Some(command)) => Action::Install { command },
            _ => match f.path {
                Some(path) => Action::Insmod { path },
                None if f.builtin => Action::Builtin,
                None => Action::NoFile,
            },
        };
        out.push(Step {
            key: key.clone(),
            options,
            extra: x.unwrap_or_default().to_vec(),
            action,
            required: flags.required,
            top: is_top,
        });
    }
    out
}

/// kmod's `module_options_concat`: configured options, then (if any) one space and the
/// extra parameters. Configured options are always followed by a space, so
/// `"cfgopt=1 "` is what reaches the kernel when there are no extra parameters.
pub fn concat_options(config: &[u8], extra: Option<&[u8]>) -> Vec<u8> {
    let extra = extra.unwrap_or_default();
    if config.is_empty() && extra.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(config.len() + extra.len() + 1);
    if !config.is_empty() {
        out.extend_from_slice(config);
        out.push(b' ');
    }
    out.extend_from_slice(extra);
    out
}

/// The blacklist rule for the requested module (spec §3.5.2): an exact blacklist entry
/// skips it when it was reached through an alias, or always with `-b`.
pub fn blacklisted(config: &ModprobeConfig, found: &Found, use_blacklist: bool) -> bool {
    config.is_blacklisted(&found.key.name) && (found.source.via_alias() || use_blacklist)
}

/// The module's weak dependencies (first matching `weakdep`, names as written). modprobe
/// never loads them; they are information for initramfs builders.
pub fn weakdeps(config: &ModprobeConfig, name: &[u8]) -> Vec<Vec<u8>> {
    config
        .weakdep(name)
        .map(|w| w.deps.clone())
        .unwrap_or_default()
}

/// Bytes of user text that could change what `/bin/sh -c` does if pasted into a
/// command: anything but letters, digits, blanks, quotes and `_-.,:/=+@%^~`.
pub fn shell_unsafe(text: &[u8]) -> Option<u8> {
    text.iter().copied().find(|&c| {
        !(c.is_ascii_alphanumeric()
            || matches!(
                c,
                b' ' | b'"'
                    | b'\''
                    | b'_'
                    | b'-'
                    | b'.'
                    | b','
                    | b':'
                    | b'/'
                    | b'='
                    | b'+'
                    | b'@'
                    | b'%'
                    | b'^'
                    | b'~'
            ))
    })
}

/// Replace every `$CMDLINE_OPTS` in an install/remove command by `options` (textually,
/// like kmod).
pub fn substitute_cmdline_opts(command: &[u8], options: &[u8]) -> Vec<u8> {
    const VAR: &[u8] = b"$CMDLINE_OPTS";
    let mut out = Vec::with_capacity(command.len() + options.len());
    let mut i = 0;
    while i < command.len() {
        if command[i..].starts_with(VAR) {
            out.extend_from_slice(options);
            i += VAR.len();
        } else {
            out.push(command[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    struct Fake {
        deps: HashMap<&'static str, Vec<&'static str>>,
        soft: HashMap<&'static str, (Vec<&'static str>, Vec<&'static str>)>,
    }

    fn k(s: &str) -> ModKey {
        ModKey::name(s.as_bytes())
    }

    impl PlanSource for Fake {
        fn deps(&mut self, key: &ModKey) -> Vec<ModKey> {
            let n = String::from_utf8_lossy(&key.name).into_owned();
            self.deps
                .get(n.as_str())
                .map(|v| v.iter().map(|s| k(s)).collect())
                .unwrap_or_default()
        }
        fn softdeps(&mut self, key: &ModKey) -> (Vec<ModKey>, Vec<ModKey>) {
            let n = String::from_utf8_lossy(&key.name).into_owned();
            match self.soft.get(n.as_str()) {
                Some((a, b)) => (
                    a.iter().map(|s| k(s)).collect(),
                    b.iter().map(|s| k(s)).collect(),
                ),
                None => (vec![], vec![]),
            }
        }
    }

    fn names(pl: &ProbeList) -> Vec<String> {
        pl.order
            .iter()
            .map(|k| String::from_utf8_lossy(&k.name).into_owned())
            .collect()
    }

    #[test]
    fn btrfs_order_from_spec() {
        let mut f = Fake {
            deps: HashMap::from([(
                "btrfs",
                vec!["libcrc32c", "zstd_compress", "raid6_pq", "xor"],
            )]),
            soft: HashMap::from([
                ("libcrc32c", (vec!["crc32c_intel"], vec![])),
                ("btrfs", (vec!["blake2b_generic"], vec![])),
            ]),
        };
        let pl = probe_list(&mut f, &k("btrfs"), false);
        assert_eq!(
            names(&pl),
            [
                "crc32c_intel",
                "libcrc32c",
                "zstd_compress",
                "raid6_pq",
                "xor",
                "blake2b_generic",
                "btrfs"
            ]
        );
        assert!(pl.flags(&k("xor")).required);
        assert!(!pl.flags(&k("crc32c_intel")).required);
        assert!(pl.flags(&k("btrfs")).ignorecmd);
        assert!(!pl.flags(&k("xor")).ignorecmd);
    }

    #[test]
    fn softdep_loops_terminate_and_post_order() {
        let mut f = Fake {
            deps: HashMap::new(),
            soft: HashMap::from([("a", (vec!["b"], vec!["c"])), ("b", (vec!["a"], vec![]))]),
        };
        let pl = probe_list(&mut f, &k("a"), false);
        assert_eq!(names(&pl), ["b", "a", "c"]);
        // -i: the top module's softdeps are ignored.
        let pl = probe_list(&mut f, &k("a"), true);
        assert_eq!(names(&pl), ["a"]);
        assert!(pl.flags(&k("a")).ignorecmd);
    }

    #[test]
    fn option_strings() {
        assert_eq!(concat_options(b"", None), b"");
        assert_eq!(concat_options(b"a=1", None), b"a=1 ");
        assert_eq!(concat_options(b"", Some(b"x=1")), b"x=1");
        assert_eq!(concat_options(b"a=1", Some(b"x=1")), b"a=1 x=1");
    }

    #[test]
    fn command_substitution() {
        assert_eq!(
            substitute_cmdline_opts(b"a $CMDLINE_OPTS b $CMDLINE_OPTS", b"x=1"),
            b"a x=1 b x=1"
        );
        assert_eq!(
            substitute_cmdline_opts(b"$CMDLINE_OPT", b"x"),
            b"$CMDLINE_OPT"
        );
        assert_eq!(shell_unsafe(b"a=1 b=\"c d\""), None);
        assert_eq!(shell_unsafe(b"a=$(id)"), Some(b'$'));
        assert_eq!(shell_unsafe(b"a;b"), Some(b';'));
        assert_eq!(shell_unsafe(b"a`b`"), Some(b'`'));
    }
}
