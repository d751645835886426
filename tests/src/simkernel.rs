//! A simulated kernel for integration tests of modprobe, insmod, rmmod and lsmod.
//!
//! [`SimKernel`] implements [`modcore::kernel::Kernel`]. It keeps a list of loaded
//! modules, resolves every needed symbol of a module against a `vmlinux` symbol list and
//! the exports of the loaded modules (weak symbols may stay unresolved), keeps reference
//! counts and holders the way Linux does (a module using another's export holds it), and
//! refuses or accepts `delete_module` with the kernel's errno in the kernel's check order
//! (spec runtime-tools §8.2). After every change it writes `/proc/modules` and
//! `/sys/module/NAME/{initstate,refcnt,coresize,taint,holders/}` into its fixture
//! [`Root`], so the tools' own readers see what they would see on a real machine, and it
//! appends its reasons (`msdos: Unknown symbol fat_get (err -2)`, spec §8.3) to a
//! `/dev/kmsg`-like file (one `PRIO,SEQ,USEC,-;MESSAGE` record per line).
//!
//! Every call is recorded ([`SimKernel::calls`]) with its parameter string and flag bits,
//! like the observation harness of spec Appendix B.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use modcore::compress::Compression;
use modcore::kernel::{DeleteFlags, Errno, Kernel, KernelError, LoadFlags};
use modcore::module::ModuleData;
use modcore::root::Root;

/// The symbol every modversions-enabled module lists in `__versions`; always provided.
const MODULE_LAYOUT: &str = "module_layout";

/// One recorded system call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `finit_module`; `module` is the name found in the image (if it could be read).
    FinitModule {
        module: Option<String>,
        params: String,
        flags: u32,
    },
    /// `init_module` with an image of `len` bytes.
    InitModule {
        module: Option<String>,
        len: usize,
        params: String,
    },
    /// `delete_module`.
    DeleteModule { name: String, flags: u32 },
}

/// What the simulation knows about one loaded module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimModule {
    pub name: String,
    /// Bytes (page-rounded image size).
    pub size: u64,
    /// Names of the modules this one uses (it holds a reference on each).
    pub uses: Vec<String>,
    /// References held by something else than modules (an open device, a mount).
    pub extra_refs: i64,
    /// Exported symbols with their CRCs.
    pub exports: Vec<(String, u64)>,
    /// `false` for modules with an init but no exit routine (`[permanent]`).
    pub has_exit: bool,
    /// Taint letters (`F` after a forced load, `R` after a forced unload attempt).
    pub taints: String,
    /// The parameter string the module was loaded with.
    pub params: String,
    /// Core base address shown in `/proc/modules`.
    pub address: u64,
}

/// Everything that can be configured and observed, behind the mutex.
#[derive(Debug)]
struct State {
    release: String,
    vermagic: Option<String>,
    vmlinux: BTreeMap<String, u64>,
    /// Load order: oldest first.
    modules: Vec<SimModule>,
    builtin: BTreeMap<String, bool>,
    calls: Vec<Call>,
    kmsg: Vec<String>,
    seq: u64,
    next_address: u64,
    modules_disabled: bool,
    force_load: bool,
    force_unload: bool,
    unload_supported: bool,
    decompression: Option<Compression>,
    module_blacklist: BTreeSet<String>,
    init_errors: BTreeMap<String, Errno>,
    delete_errors: BTreeMap<String, Errno>,
    permanent: BTreeSet<String>,
}

/// The simulated kernel. See the module documentation.
#[derive(Debug)]
pub struct SimKernel {
    root: Root,
    state: Mutex<State>,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Kernel `parameq`: `-` and `_` are the same character.
fn param_eq(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.replace('-', "_");
    norm(a) == norm(b)
}

/// Split a module parameter string the way the kernel's `next_arg` does: blank
/// separated, double quotes group (and are removed from) values, `--` ends the list.
/// Returns `(name, value)` pairs and the words after `--`.
pub fn split_params(args: &str) -> (Vec<(String, Option<String>)>, Vec<String>) {
    let b = args.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    skip(&mut i);
    while i < b.len() {
        let mut start = i;
        let mut in_quote = false;
        let mut quoted = false;
        if b[start] == b'"' {
            start += 1;
            in_quote = true;
            quoted = true;
        }
        let mut j = start;
        let mut equals = None;
        while j < b.len() {
            if b[j].is_ascii_whitespace() && !in_quote {
                break;
            }
            if equals.is_none() && b[j] == b'=' {
                equals = Some(j);
            }
            if b[j] == b'"' {
                in_quote = !in_quote;
            }
            j += 1;
        }
        let mut end = j;
        if quoted && end > start && b[end - 1] == b'"' {
            end -= 1;
        }
        let (name, value) = match equals {
            None => (lossy(&b[start..end.max(start)]), None),
            Some(e) => {
                let mut v0 = e + 1;
                let mut v1 = j;
                if v0 < b.len() && b[v0] == b'"' {
                    v0 += 1;
                    if v1 > v0 && b[v1 - 1] == b'"' {
                        v1 -= 1;
                    }
                } else if quoted && v1 > v0 && b[v1 - 1] == b'"' {
                    v1 -= 1;
                }
                (lossy(&b[start..e]), Some(lossy(&b[v0..v1.max(v0)])))
            }
        };
        i = j;
        skip(&mut i);
        if value.is_none() && name == "--" {
            let rest = String::from_utf8_lossy(&b[i..]);
            return (out, rest.split_whitespace().map(String::from).collect());
        }
        out.push((name, value));
    }
    (out, Vec::new())
}

impl SimKernel {
    /// A kernel whose `/proc` and `/sys` live under `root`. It starts with no modules,
    /// release `6.1.0-sim`, no vermagic check, forced loading and unloading allowed,
    /// unloading supported, no in-kernel decompression.
    pub fn new(root: Root) -> SimKernel {
        let mut vmlinux = BTreeMap::new();
        vmlinux.insert(MODULE_LAYOUT.to_string(), 0);
        let sim = SimKernel {
            root,
            state: Mutex::new(State {
                release: "6.1.0-sim".to_string(),
                vermagic: None,
                vmlinux,
                modules: Vec::new(),
                builtin: BTreeMap::new(),
                calls: Vec::new(),
                kmsg: Vec::new(),
                seq: 0,
                next_address: 0xffff_ffff_c000_0000,
                modules_disabled: false,
                force_load: true,
                force_unload: true,
                unload_supported: true,
                decompression: None,
                module_blacklist: BTreeSet::new(),
                init_errors: BTreeMap::new(),
                delete_errors: BTreeMap::new(),
                permanent: BTreeSet::new(),
            }),
        };
        // A fresh kernel: empty /proc/modules, /sys/module present.
        let st = sim.lock();
        let _ = sim.sync(&st);
        drop(st);
        sim
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The fixture root this kernel writes into.
    pub fn root(&self) -> &Root {
        &self.root
    }

    // ----- configuration ------------------------------------------------------------

    /// Set `uname -r`.
    pub fn set_release(&self, release: &str) {
        self.lock().release = release.to_string();
    }

    /// Require this vermagic string (`None`: accept any).
    pub fn set_vermagic(&self, vermagic: Option<&str>) {
        self.lock().vermagic = vermagic.map(String::from);
    }

    /// Add symbols exported by vmlinux, with their CRCs (0: no CRC check).
    pub fn add_vmlinux_symbols<'a>(&self, syms: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut st = self.lock();
        for (s, crc) in syms {
            st.vmlinux.insert(s.to_string(), crc);
        }
    }

    /// `/proc/sys/kernel/modules_disabled`: every call fails with EPERM.
    pub fn set_modules_disabled(&self, v: bool) {
        self.lock().modules_disabled = v;
    }

    /// CONFIG_MODULE_FORCE_LOAD (forced loads are refused with ENOEXEC without it).
    pub fn set_force_load_allowed(&self, v: bool) {
        self.lock().force_load = v;
    }

    /// CONFIG_MODULE_FORCE_UNLOAD (`O_TRUNC` is ignored without it).
    pub fn set_force_unload_allowed(&self, v: bool) {
        self.lock().force_unload = v;
    }

    /// CONFIG_MODULE_UNLOAD: without it there is no `refcnt` file, `/proc/modules`
    /// shows `-` and `delete_module` fails with ENOSYS.
    pub fn set_unload_supported(&self, v: bool) {
        let mut st = self.lock();
        st.unload_supported = v;
        let _ = self.sync(&st);
    }

    /// The in-kernel decompressor (`MODULE_INIT_COMPRESSED_FILE`); also written to
    /// `/sys/module/compression`.
    pub fn set_decompression(&self, c: Option<Compression>) {
        let mut st = self.lock();
        st.decompression = c;
        let _ = self.sync(&st);
    }

    /// The `module_blacklist=` kernel parameter: loads of these names fail with EPERM.
    pub fn set_module_blacklist<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        self.lock().module_blacklist = names.into_iter().map(String::from).collect();
    }

    /// Make the module's init routine fail with `errno` (the module is then freed).
    pub fn fail_init(&self, name: &str, errno: Errno) {
        self.lock().init_errors.insert(name.to_string(), errno);
    }

    /// Make `delete_module(name)` fail with `errno` once every kernel check passed.
    pub fn fail_delete(&self, name: &str, errno: Errno) {
        self.lock().delete_errors.insert(name.to_string(), errno);
    }

    /// Modules loaded later with this name have no exit routine (`[permanent]`).
    pub fn set_permanent(&self, name: &str) {
        self.lock().permanent.insert(name.to_string());
    }

    /// Register built-in code. With `sysfs_dir`, `/sys/module/NAME/parameters/` exists
    /// (built-ins with parameters), without `initstate`, `refcnt` or `holders`.
    pub fn add_builtin(&self, name: &str, sysfs_dir: bool) {
        let mut st = self.lock();
        st.builtin.insert(name.to_string(), sysfs_dir);
        let _ = self.sync(&st);
    }

    /// Take a non-module reference (like a mounted file system does).
    pub fn get(&self, name: &str) -> bool {
        let mut st = self.lock();
        let Some(m) = st.modules.iter_mut().find(|m| m.name == name) else {
            return false;
        };
        m.extra_refs += 1;
        let _ = self.sync(&st);
        true
    }

    /// Drop a reference taken with [`SimKernel::get`].
    pub fn put(&self, name: &str) -> bool {
        let mut st = self.lock();
        let Some(m) = st
            .modules
            .iter_mut()
            .find(|m| m.name == name && m.extra_refs > 0)
        else {
            return false;
        };
        m.extra_refs -= 1;
        let _ = self.sync(&st);
        true
    }

    // ----- observation --------------------------------------------------------------

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The kernel log messages so far (without record prefixes).
    pub fn kmsg(&self) -> Vec<String> {
        self.lock().kmsg.clone()
    }

    /// Loaded module names, newest first (`/proc/modules` order).
    pub fn loaded(&self) -> Vec<String> {
        self.lock()
            .modules
            .iter()
            .rev()
            .map(|m| m.name.clone())
            .collect()
    }

    /// A snapshot of one loaded module.
    pub fn module(&self, name: &str) -> Option<SimModule> {
        self.lock().modules.iter().find(|m| m.name == name).cloned()
    }

    /// Reference count as `/sys/module/NAME/refcnt` shows it.
    pub fn refcnt(&self, name: &str) -> Option<i64> {
        let st = self.lock();
        st.modules
            .iter()
            .find(|m| m.name == name)
            .map(|m| refcnt_of(&st, m))
    }

    /// Holders, newest user first.
    pub fn holders(&self, name: &str) -> Vec<String> {
        holders_of(&self.lock(), name)
    }

    /// Path of the kernel log file (`<root>/dev/kmsg`).
    pub fn kmsg_path(&self) -> PathBuf {
        self.root.join("/dev/kmsg")
    }

    // ----- the work -----------------------------------------------------------------

    fn log(&self, st: &mut State, prio: u8, msg: String) {
        st.seq += 1;
        let rec = format!("{},{},{},-;{}\n", prio, st.seq, st.seq * 1000, msg);
        let path = self.kmsg_path();
        if let Some(dir) = path.parent() {
            let _ = fs::create_dir_all(dir);
        }
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(&path) {
            let _ = f.write_all(rec.as_bytes());
        }
        st.kmsg.push(msg);
    }

    fn load(
        &self,
        st: &mut State,
        image: &[u8],
        params: &str,
        flags: LoadFlags,
    ) -> Result<(), Errno> {
        if st.modules_disabled {
            return Err(Errno::EPERM);
        }
        if image.len() < 4 || &image[..4] != b"\x7fELF" {
            self.log(st, 3, "Invalid ELF header magic: != \x7fELF".to_string());
            return Err(Errno::ENOEXEC);
        }
        let data: ModuleData = match modcore::module::extract(image) {
            Ok(d) => d,
            Err(_) => {
                self.log(st, 3, "Module has invalid ELF structures".to_string());
                return Err(Errno::ENOEXEC);
            }
        };
        let info = |key: &str| -> Option<String> {
            data.modinfo
                .iter()
                .find(|(k, _)| k == key.as_bytes())
                .map(|(_, v)| lossy(v))
        };
        let Some(name) = info("name") else {
            self.log(
                st,
                4,
                "(missing .modinfo section or name field): No module found in object".to_string(),
            );
            return Err(Errno::ENOEXEC);
        };
        if st.module_blacklist.contains(&name) {
            self.log(st, 3, format!("Module {name} is blacklisted"));
            return Err(Errno::EPERM);
        }

        // vermagic
        let mut taint_forced = false;
        if let Some(want) = st.vermagic.clone() {
            let have = info("vermagic");
            if have.as_deref() != Some(want.as_str()) {
                if flags.ignore_vermagic || have.is_none() {
                    if !st.force_load {
                        return Err(Errno::ENOEXEC);
                    }
                    self.log(st, 4, format!("{name}: bad vermagic: kernel tainted."));
                    taint_forced = true;
                } else {
                    let have = have.unwrap_or_default();
                    self.log(
                        st,
                        3,
                        format!("{name}: version magic '{have}' should be '{want}'"),
                    );
                    return Err(Errno::ENOEXEC);
                }
            }
        }
        if flags.ignore_modversions {
            if !st.force_load {
                return Err(Errno::ENOEXEC);
            }
            taint_forced = true;
        }

        // Same name already present.
        if st.modules.iter().any(|m| m.name == name) {
            return Err(Errno::EEXIST);
        }

        // Symbols: every failure is logged, the last one decides the errno.
        let mut uses: Vec<String> = Vec::new();
        let mut err: Option<Errno> = None;
        for need in &data.needs {
            let sym = lossy(&need.name);
            let found: Option<(Option<String>, u64)> = match st.vmlinux.get(&sym) {
                Some(&crc) => Some((None, crc)),
                None => st.modules.iter().rev().find_map(|m| {
                    m.exports
                        .iter()
                        .find(|(e, _)| *e == sym)
                        .map(|(_, crc)| (Some(m.name.clone()), *crc))
                }),
            };
            match found {
                None if need.weak => {}
                None => {
                    self.log(st, 4, format!("{name}: Unknown symbol {sym} (err -2)"));
                    err = Some(Errno::ENOENT);
                }
                Some((owner, crc)) => {
                    if !flags.ignore_modversions && need.crc != 0 && crc != 0 && need.crc != crc {
                        self.log(
                            st,
                            4,
                            format!("{name}: disagrees about version of symbol {sym}"),
                        );
                        self.log(st, 4, format!("{name}: Unknown symbol {sym} (err -22)"));
                        err = Some(Errno::EINVAL);
                        continue;
                    }
                    if let Some(o) = owner {
                        if !uses.contains(&o) {
                            uses.push(o);
                        }
                    }
                }
            }
        }
        if let Some(e) = err {
            return Err(e);
        }

        // Parameters: unknown ones are only warned about.
        let known: Vec<String> = data
            .modinfo
            .iter()
            .filter(|(k, _)| k == b"parm" || k == b"parmtype")
            .filter_map(|(_, v)| v.split(|&c| c == b':').next().map(lossy))
            .collect();
        let (pairs, _after_dashes) = split_params(params);
        for (p, _) in &pairs {
            let ok = known.iter().any(|k| param_eq(k, p))
                || param_eq(p, "async_probe")
                || param_eq(p, "dyndbg");
            if !ok {
                self.log(st, 4, format!("{name}: unknown parameter '{p}' ignored"));
            }
        }

        // Built-in code of the same name owns the sysfs directory.
        if st.builtin.get(&name) == Some(&true) {
            self.log(st, 3, format!("{name}: module is already loaded"));
            return Err(Errno::EINVAL);
        }

        if let Some(e) = st.init_errors.get(&name).copied() {
            return Err(e);
        }

        let address = st.next_address;
        st.next_address += 0x10000;
        let mut taints = String::new();
        if taint_forced {
            taints.push('F');
        }
        let has_exit = !st.permanent.contains(&name);
        st.modules.push(SimModule {
            name,
            size: (image.len() as u64).div_ceil(4096) * 4096,
            uses,
            extra_refs: 0,
            exports: data
                .exports
                .iter()
                .map(|e| (lossy(&e.name), e.crc))
                .collect(),
            has_exit,
            taints,
            params: params.to_string(),
            address,
        });
        Ok(())
    }

    fn delete(&self, st: &mut State, name: &str, flags: DeleteFlags) -> Result<(), Errno> {
        if st.modules_disabled {
            return Err(Errno::EPERM);
        }
        if !st.unload_supported {
            return Err(Errno::ENOSYS);
        }
        let Some(idx) = st.modules.iter().position(|m| m.name == name) else {
            return Err(Errno::ENOENT);
        };
        if !holders_of(st, name).is_empty() {
            return Err(Errno::EWOULDBLOCK);
        }
        let forced = flags.force && st.force_unload;
        if !st.modules[idx].has_exit && !forced {
            return Err(Errno::EBUSY);
        }
        if refcnt_of(st, &st.modules[idx]) > 0 {
            if !forced {
                return Err(Errno::EWOULDBLOCK);
            }
            if !st.modules[idx].taints.contains('R') {
                st.modules[idx].taints.push('R');
            }
        }
        if let Some(e) = st.delete_errors.get(name).copied() {
            return Err(e);
        }
        st.modules.remove(idx);
        Ok(())
    }

    /// Write `/proc/modules`, `/sys/module/...` and `/sys/module/compression`.
    fn sync(&self, st: &State) -> io::Result<()> {
        let proc = self.root.proc_modules();
        if let Some(d) = proc.parent() {
            fs::create_dir_all(d)?;
        }
        let mut text = Vec::new();
        for m in st.modules.iter().rev() {
            text.extend_from_slice(&proc_line(st, m));
            text.push(b'\n');
        }
        fs::write(&proc, text)?;

        let sys = self.root.sys_module();
        fs::create_dir_all(&sys)?;
        // Remove directories of modules that are gone.
        for ent in fs::read_dir(&sys)? {
            let ent = ent?;
            let n = ent.file_name().to_string_lossy().into_owned();
            let known = st.modules.iter().any(|m| m.name == n) || st.builtin.get(&n) == Some(&true);
            if ent.file_type()?.is_dir() && !known {
                fs::remove_dir_all(ent.path())?;
            }
        }
        for (b, &dir) in &st.builtin {
            if dir {
                fs::create_dir_all(self.root.sys_module_attr(b.as_bytes(), "parameters"))?;
            }
        }
        for m in &st.modules {
            let n = m.name.as_bytes();
            let dir = self.root.sys_module_dir(n);
            fs::create_dir_all(&dir)?;
            fs::write(dir.join("initstate"), "live\n")?;
            fs::write(dir.join("coresize"), format!("{}\n", m.size))?;
            fs::write(dir.join("initsize"), "0\n")?;
            fs::write(dir.join("taint"), format!("{}\n", m.taints))?;
            if st.unload_supported {
                fs::write(dir.join("refcnt"), format!("{}\n", refcnt_of(st, m)))?;
            } else if dir.join("refcnt").exists() {
                fs::remove_file(dir.join("refcnt"))?;
            }
            let holders = dir.join("holders");
            if holders.exists() {
                fs::remove_dir_all(&holders)?;
            }
            fs::create_dir_all(&holders)?;
            for h in holders_of(st, &m.name) {
                std::os::unix::fs::symlink(format!("../../{h}"), holders.join(&h))?;
            }
        }
        let comp = self.root.sys_module_compression();
        match st.decompression {
            Some(c) if c != Compression::None => fs::write(&comp, format!("{}\n", c.name()))?,
            _ => {
                if comp.exists() {
                    fs::remove_file(&comp)?;
                }
            }
        }
        Ok(())
    }

    fn finish(&self, st: &State, r: Result<(), Errno>) -> Result<(), Errno> {
        if r.is_ok() && self.sync(st).is_err() {
            return Err(Errno::EIO);
        }
        r
    }
}

/// Names of the modules using `name`, newest first.
fn holders_of(st: &State, name: &str) -> Vec<String> {
    st.modules
        .iter()
        .rev()
        .filter(|m| m.uses.iter().any(|u| u == name))
        .map(|m| m.name.clone())
        .collect()
}

fn refcnt_of(st: &State, m: &SimModule) -> i64 {
    holders_of(st, &m.name).len() as i64 + m.extra_refs
}

fn proc_line(st: &State, m: &SimModule) -> Vec<u8> {
    let holders = holders_of(st, &m.name);
    let mut users = String::new();
    if st.unload_supported {
        for h in &holders {
            users.push_str(h);
            users.push(',');
        }
        if !m.has_exit {
            users.push_str("[permanent],");
        }
    }
    if users.is_empty() {
        users.push('-');
    }
    let refcnt = if st.unload_supported {
        refcnt_of(st, m).to_string()
    } else {
        "-".to_string()
    };
    let mut line = format!(
        "{} {} {} {} Live 0x{:016x}",
        m.name, m.size, refcnt, users, m.address
    );
    if !m.taints.is_empty() {
        line.push_str(&format!(" ({})", m.taints));
    }
    line.into_bytes()
}

fn read_file(file: &File) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    loop {
        let n = file.read_at(&mut buf, off)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        off += n as u64;
    }
}

fn image_name(image: &[u8]) -> Option<String> {
    let data = modcore::module::extract(image).ok()?;
    data.modinfo
        .iter()
        .find(|(k, _)| k == b"name")
        .map(|(_, v)| lossy(v))
}

impl Kernel for SimKernel {
    fn finit_module(
        &self,
        file: &File,
        params: &CStr,
        flags: LoadFlags,
    ) -> Result<(), KernelError> {
        let mut st = self.lock();
        let params_s = lossy(params.to_bytes());
        let raw = read_file(file);
        let image = match (&raw, flags.compressed_file) {
            (Ok(bytes), true) => match st.decompression {
                None => Err(Errno::EOPNOTSUPP),
                Some(kind) if modcore::compress::detect(bytes) != kind => Err(Errno::EINVAL),
                Some(_) => modcore::compress::decompress(bytes)
                    .map(|c| c.into_owned())
                    .map_err(|_| Errno::EINVAL),
            },
            (Ok(bytes), false) => Ok(bytes.clone()),
            (Err(_), _) => Err(Errno::EBADF),
        };
        st.calls.push(Call::FinitModule {
            module: image.as_ref().ok().and_then(|i| image_name(i)),
            params: params_s.clone(),
            flags: flags.bits(),
        });
        let r = image.and_then(|img| self.load(&mut st, &img, &params_s, flags));
        self.finish(&st, r).map_err(KernelError::FinitModule)
    }

    fn init_module(&self, image: &[u8], params: &CStr) -> Result<(), KernelError> {
        let mut st = self.lock();
        let params_s = lossy(params.to_bytes());
        st.calls.push(Call::InitModule {
            module: image_name(image),
            len: image.len(),
            params: params_s.clone(),
        });
        let r = self.load(&mut st, image, &params_s, LoadFlags::default());
        self.finish(&st, r).map_err(KernelError::InitModule)
    }

    fn delete_module(&self, name: &CStr, flags: DeleteFlags) -> Result<(), KernelError> {
        let mut st = self.lock();
        let name = lossy(name.to_bytes());
        st.calls.push(Call::DeleteModule {
            name: name.clone(),
            flags: flags.bits(),
        });
        let r = self.delete(&mut st, &name, flags);
        // A refused forced removal may still have tainted the module.
        let _ = self.sync(&st);
        self.finish(&st, r).map_err(KernelError::DeleteModule)
    }

    fn release(&self) -> Result<String, KernelError> {
        Ok(self.lock().release.clone())
    }
}

// ===================================================================================
// Minimal module images
// ===================================================================================

/// A tiny description of a module image for [`build_module`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleSpec {
    /// `name=` in `.modinfo`.
    pub name: String,
    /// Further `.modinfo` entries (`vermagic`, `parm`, `parmtype`, ...), in order.
    pub modinfo: Vec<(String, String)>,
    /// Exported symbols and their CRCs (`__crc_` absolute symbols).
    pub exports: Vec<(String, u64)>,
    /// Undefined symbols: name, CRC (0: none), weak.
    pub needs: Vec<(String, u64, bool)>,
}

impl ModuleSpec {
    pub fn new(name: &str) -> ModuleSpec {
        ModuleSpec {
            name: name.to_string(),
            ..ModuleSpec::default()
        }
    }

    /// Add an export with CRC 0.
    pub fn export(mut self, sym: &str) -> Self {
        self.exports.push((sym.to_string(), 0));
        self
    }

    /// Add a needed (strong) symbol without CRC.
    pub fn need(mut self, sym: &str) -> Self {
        self.needs.push((sym.to_string(), 0, false));
        self
    }

    /// Add a needed weak symbol.
    pub fn weak(mut self, sym: &str) -> Self {
        self.needs.push((sym.to_string(), 0, true));
        self
    }

    /// Add a `.modinfo` entry.
    pub fn info(mut self, key: &str, value: &str) -> Self {
        self.modinfo.push((key.to_string(), value.to_string()));
        self
    }

    /// Build the image (x86-64 relocatable ELF).
    pub fn build(&self) -> Vec<u8> {
        build_module(self)
    }
}

/// Build a minimal relocatable x86-64 ELF module image: `.modinfo`, `__crc_*` symbols for
/// the exports, undefined (optionally weak) symbols for the needs and, when any need has
/// a CRC, a `__versions` table. Enough for `modcore::module::extract` and [`SimKernel`];
/// not a loadable module.
pub fn build_module(spec: &ModuleSpec) -> Vec<u8> {
    use object::write::{Object, Symbol, SymbolSection};
    use object::{
        Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
    };

    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let mut info = Vec::new();
    for (k, v) in &spec.modinfo {
        info.extend_from_slice(format!("{k}={v}\0").as_bytes());
    }
    info.extend_from_slice(format!("name={}\0", spec.name).as_bytes());
    let modinfo = obj.add_section(
        Vec::new(),
        b".modinfo".to_vec(),
        SectionKind::ReadOnlyString,
    );
    obj.append_section_data(modinfo, &info, 1);
    let text = obj.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
    obj.append_section_data(text, &[0xc3], 16);

    if spec.needs.iter().any(|n| n.1 != 0) {
        let mut vers = Vec::new();
        for (n, crc, _) in &spec.needs {
            let mut rec = [0u8; 64];
            rec[..8].copy_from_slice(&crc.to_le_bytes());
            let nb = n.as_bytes();
            let l = nb.len().min(55);
            rec[8..8 + l].copy_from_slice(&nb[..l]);
            vers.extend_from_slice(&rec);
        }
        let v = obj.add_section(
            Vec::new(),
            b"__versions".to_vec(),
            SectionKind::ReadOnlyData,
        );
        obj.append_section_data(v, &vers, 8);
    }
    for (e, crc) in &spec.exports {
        obj.add_symbol(Symbol {
            name: e.as_bytes().to_vec(),
            value: 0,
            size: 1,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
        obj.add_symbol(Symbol {
            name: format!("__crc_{e}").into_bytes(),
            value: *crc,
            size: 0,
            kind: SymbolKind::Data,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Absolute,
            flags: SymbolFlags::None,
        });
    }
    for (n, _, weak) in &spec.needs {
        obj.add_symbol(Symbol {
            name: n.as_bytes().to_vec(),
            value: 0,
            size: 0,
            kind: SymbolKind::Unknown,
            scope: SymbolScope::Linkage,
            weak: *weak,
            section: SymbolSection::Undefined,
            flags: SymbolFlags::None,
        });
    }
    // Writing only fails for unsupported symbol kinds, which this builder never uses.
    obj.write().unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kernel_param_splitting() {
        let (p, rest) = split_params("  a=1 b=\"x y\" c \"d=e f\" g=h\"i j\" -- k l");
        assert_eq!(
            p,
            vec![
                ("a".to_string(), Some("1".to_string())),
                ("b".to_string(), Some("x y".to_string())),
                ("c".to_string(), None),
                ("d".to_string(), Some("e f".to_string())),
                ("g".to_string(), Some("h\"i j\"".to_string())),
            ]
        );
        assert_eq!(rest, vec!["k".to_string(), "l".to_string()]);
        assert_eq!(split_params("").0, vec![]);
        assert_eq!(
            split_params("x='a b'").0.len(),
            2,
            "single quotes are not special"
        );
        assert!(param_eq("a-b", "a_b"));
    }

    #[test]
    fn built_images_read_back() {
        let img = ModuleSpec::new("fat")
            .export("fat_get")
            .need("printk")
            .weak("maybe")
            .info("parm", "debug:int")
            .build();
        let d = modcore::module::extract(&img).unwrap();
        assert!(d.modinfo.contains(&(b"name".to_vec(), b"fat".to_vec())));
        assert_eq!(d.exports.len(), 1);
        assert_eq!(d.exports[0].name, b"fat_get");
        let needs: Vec<_> = d.needs.iter().map(|n| (lossy(&n.name), n.weak)).collect();
        assert_eq!(
            needs,
            vec![("printk".to_string(), false), ("maybe".to_string(), true)]
        );

        let mut s = ModuleSpec::new("v");
        s.needs.push(("sym".to_string(), 0x1234, false));
        let d = modcore::module::extract(&s.build()).unwrap();
        assert_eq!(d.needs[0].crc, 0x1234);
    }
}
