#!/bin/sh
# vm-test guest scenarios (busybox sh), run by /init on a real kernel under qemu.
#
# Each scenario prints exactly one line on the console, which the host parses:
#   PASS <name>
#   FAIL <name>: <why>
# plus optional "INFO <name>: <text>" notes. The module tools under test are /sbin/*:
# ours, or busybox's applets when VMTEST_TOOLS=busybox (a self-check of the harness that
# runs only the basic scenarios and checks behaviour, not kmod's message texts).
# Setup and cleanup never use the tools under test: they use busybox directly.
# Note: bare names like `modprobe` would run busybox's applet even with /sbin first in
# PATH (see tool() below); the tools under test are always called as /sbin/<name>.

KVER=$(uname -r)
MODDIR=/lib/modules/$KVER
TOOLS=${VMTEST_TOOLS:-ours}
BB=/bin/busybox
OTHER_KVER=$(cat /other/kver 2>/dev/null)
BASELINE=
FAILED=0

ours() { [ "$TOOLS" = ours ]; }
now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# begin NAME: start a scenario (and mark the kernel log); bad WHY: record the first
# failure; end: print the result line.
begin() {
	NAME=$1
	WHY=
	echo "vmtest: begin $NAME" >/dev/kmsg
}
bad() { [ -n "$WHY" ] || WHY=$*; }
end() {
	if [ -z "$WHY" ]; then
		echo "PASS $NAME"
	else
		echo "FAIL $NAME: $WHY"
		FAILED=$((FAILED + 1))
	fi
}
info() { echo "INFO $1: $2"; }

# run CMD ARGS...: at most 60 s; stdout in /tmp/out, stderr in /tmp/err, status in RC.
run() { run_limit 60 "$@"; }
run_limit() {
	limit=$1
	cmd=$(tool "$2")
	shift 2
	timeout "$limit" "$cmd" "$@" >/tmp/out 2>/tmp/err
	RC=$?
}
# Debian's static busybox prefers its own applets over PATH for bare command names (in
# sh and in applets such as timeout), so the tools under test are always run by path.
tool() {
	case $1 in
	depmod | modprobe | insmod | rmmod | lsmod | modinfo) echo "/sbin/$1" ;;
	*) echo "$1" ;;
	esac
}
oneline() { tr '\n' '|' <"$1" | cut -c1-300; }
ctx() { echo "rc=$RC stdout=[$(oneline /tmp/out)] stderr=[$(oneline /tmp/err)]"; }
# Kernel log lines since the current scenario began.
kmsg() { dmesg | sed -n "/vmtest: begin $NAME\$/,\$p"; }

loaded() { grep -q "^$1 " /proc/modules; }
# The "used by" column of /proc/modules ("msdos," or "-").
users() { sed -n "s/^$1 [0-9]* [0-9-]* \([^ ]*\) .*/\1/p" /proc/modules; }
ndummies() { ls /sys/class/net | grep -c '^dummy[0-9]'; }
netdevs() { ls /sys/class/net | tr '\n' ' '; }
# Path of a module file of the running kernel (.ko or .ko.xz).
mp() { grep -m1 "/$1\.ko" /tmp/allmods; }
conf() { cat >/etc/modprobe.d/vmtest.conf; }
# need MOD...: make sure these modules are loaded (with busybox insmod, in the given order),
# so a scenario tests its own tool even when an earlier step of another tool failed.
need() {
	for m in "$@"; do
		loaded "$m" || $BB insmod "$(mp "$m")" 2>/dev/null
		loaded "$m" || bad "precondition: busybox insmod $m failed"
	done
}

# Back to the baseline: nothing on /mnt, no modprobe.d files, no modules but the baseline.
reset() {
	grep -q ' /mnt ' /proc/mounts && umount /mnt 2>/dev/null
	rm -f /etc/modprobe.d/* /tmp/out /tmp/err
	for pass in 1 2 3 4 5 6; do
		left=
		for m in $(cut -d' ' -f1 /proc/modules); do
			case " $BASELINE " in *" $m "*) continue ;; esac
			$BB rmmod "$m" 2>/dev/null || left=1
		done
		[ -z "$left" ] && break
	done
}

setup() {
	begin setup
	find "$MODDIR" -name '*.ko*' >/tmp/allmods
	info setup "$(wc -l </tmp/allmods) module files in $MODDIR; tools: $TOOLS"
	# A loop device over a small FAT image, for the mount scenarios. The loop module
	# is loaded with busybox insmod, so the scenarios do not depend on it.
	if ! [ -e /sys/module/loop ]; then
		p=$(mp loop)
		case $p in *.xz) xzcat "$p" >/tmp/loop.ko && p=/tmp/loop.ko ;; esac
		$BB insmod "$p" 2>/tmp/err || bad "busybox insmod loop: $(oneline /tmp/err)"
	fi
	dd if=/dev/zero of=/tmp/fat.img bs=1024 count=4096 2>/dev/null
	mkdosfs -n VMTEST /tmp/fat.img >/dev/null 2>&1 || bad "mkdosfs failed"
	losetup /dev/loop0 /tmp/fat.img 2>/tmp/err || bad "losetup: $(oneline /tmp/err)"
	BASELINE=$(cut -d' ' -f1 /proc/modules | tr '\n' ' ')
	info setup "baseline modules: ${BASELINE:-none}"
	end
}

sc_depmod() {
	begin depmod-a
	t=$(now)
	# Under TCG depmod of a big compressed tree can take a minute or more.
	run_limit 600 depmod -a
	[ "$RC" = 0 ] || bad "depmod -a: $(ctx)"
	info depmod-a "depmod -a took $(since "$t")s"
	if ours; then
		for f in modules.dep modules.dep.bin modules.alias.bin modules.symbols.bin \
			modules.builtin.bin; do
			[ -s "$MODDIR/$f" ] || bad "$f missing or empty after depmod -a"
		done
	fi
	grep -q '^kernel/fs/fat/msdos\.ko[.a-z]*: kernel/fs/fat/fat\.ko' "$MODDIR/modules.dep" ||
		bad "modules.dep has no 'msdos: fat' line"
	end
}

sc_insmod_unresolved() {
	reset
	begin insmod-unresolved
	p=$(mp msdos)
	run insmod "$p"
	[ "$RC" != 0 ] || bad "insmod msdos without fat succeeded"
	loaded msdos && bad "msdos is loaded"
	if ours; then
		grep -q "insmod: ERROR: could not insert module $p: Unknown symbol in module" /tmp/err ||
			bad "no kmod-compatible error line: $(ctx)"
	fi
	# The kernel logs every unresolved symbol; insmod must name at least one of them.
	syms=$(kmsg | sed -n 's/.*msdos: Unknown symbol \([^ ]*\) .*/\1/p' | sort -u)
	[ -n "$syms" ] || bad "the kernel logged no 'msdos: Unknown symbol'"
	if ours; then
		named=
		for s in $syms; do grep -qwF "$s" /tmp/err && named=$s && break; done
		[ -z "$syms" ] || [ -n "$named" ] ||
			bad "stderr names none of the unresolved symbols ($(echo $syms | cut -c1-60)...): $(ctx)"
		grep -qw fat /tmp/err || bad "stderr does not name fat as the exporter: $(ctx)"
		grep -qE 'modprobe (fat|msdos)' /tmp/err || bad "stderr does not suggest modprobe: $(ctx)"
	fi
	end
}

# modprobe msdos, then look at it, try to pull fat out from under it, remove both.
sc_msdos_chain() {
	reset
	fat=$(mp fat)
	msdos=$(mp msdos)
	if ours; then
		begin modprobe-show-depends
		run modprobe -D msdos
		want=$(printf 'insmod %s \ninsmod %s \n' "$fat" "$msdos")
		[ "$RC" = 0 ] && [ "$(cat /tmp/out)" = "$want" ] || bad "modprobe -D msdos: $(ctx)"
		loaded fat && bad "-D loaded fat"
		end
	fi

	begin modprobe-deps
	run modprobe msdos
	[ "$RC" = 0 ] || bad "modprobe msdos: $(ctx)"
	loaded fat || bad "fat not loaded"
	loaded msdos || bad "msdos not loaded"
	newest=$(grep -E '^(fat|msdos) ' /proc/modules | head -n1 | cut -d' ' -f1)
	[ "$newest" = msdos ] || bad "msdos was not loaded after fat"
	if ours && [ -s /tmp/err ]; then bad "unexpected stderr: $(ctx)"; fi
	end

	begin lsmod-holders
	need fat msdos
	u=$(users fat)
	[ "$u" = "msdos," ] || bad "/proc/modules: fat used by '$u'"
	run lsmod
	[ "$RC" = 0 ] || bad "lsmod: $(ctx)"
	if ours; then
		[ "$(head -n1 /tmp/out)" = "Module                  Size  Used by" ] ||
			bad "lsmod header: '$(head -n1 /tmp/out)'"
		grep -qE '^fat +[0-9]+  1 msdos$' /tmp/out ||
			bad "lsmod row for fat: '$(grep '^fat ' /tmp/out)'"
		grep -qE '^msdos +[0-9]+  0$' /tmp/out ||
			bad "lsmod row for msdos: '$(grep '^msdos ' /tmp/out)'"
	else
		grep -qE '^fat .*msdos' /tmp/out || bad "lsmod: no fat row naming msdos: $(ctx)"
	fi
	end

	begin rmmod-in-use
	need fat msdos
	run rmmod fat
	[ "$RC" != 0 ] || bad "rmmod fat succeeded while msdos uses it"
	loaded fat || bad "fat was removed"
	if ours; then
		grep -q '^rmmod: ERROR: Module fat is in use by: msdos$' /tmp/err ||
			bad "message: $(ctx)"
	fi
	end

	begin modprobe-remove
	need fat msdos
	run modprobe -r msdos
	[ "$RC" = 0 ] || bad "modprobe -r msdos: $(ctx)"
	loaded msdos && bad "msdos still loaded"
	loaded fat && bad "fat still loaded"
	end
}

sc_params() {
	reset
	p=$(mp dummy)
	begin insmod-params
	run insmod "$p" numdummies=3
	[ "$RC" = 0 ] || bad "insmod dummy numdummies=3: $(ctx)"
	[ "$(ndummies)" = 3 ] && [ -e /sys/class/net/dummy2 ] ||
		bad "want dummy0..dummy2, have: $(netdevs)"
	end

	begin rmmod-by-name
	need dummy
	run rmmod dummy
	[ "$RC" = 0 ] || bad "rmmod dummy: $(ctx)"
	loaded dummy && bad "dummy still loaded"
	if ours; then
		run rmmod dummy
		[ "$RC" = 1 ] && grep -q '^rmmod: ERROR: Module dummy is not currently loaded$' /tmp/err ||
			bad "second rmmod dummy: $(ctx)"
	fi
	end

	begin rmmod-by-path
	need dummy
	run rmmod "$p"
	[ "$RC" = 0 ] || bad "rmmod $p: $(ctx)"
	loaded dummy && bad "dummy still loaded"
	end
}

sc_conf() {
	reset
	begin conf-alias
	echo 'alias my-dummy dummy' | conf
	run modprobe my-dummy
	[ "$RC" = 0 ] || bad "modprobe my-dummy: $(ctx)"
	loaded dummy || bad "dummy not loaded through alias my-dummy"
	run modprobe -r my-dummy
	[ "$RC" = 0 ] || bad "modprobe -r my-dummy: $(ctx)"
	loaded dummy && bad "modprobe -r my-dummy left dummy loaded"
	end

	reset
	begin conf-options
	echo 'options dummy numdummies=2' | conf
	run modprobe dummy
	[ "$RC" = 0 ] || bad "modprobe dummy: $(ctx)"
	[ "$(ndummies)" = 2 ] || bad "options numdummies=2 gave: $(netdevs)"
	end

	reset
	begin conf-cmdline-wins
	echo 'options dummy numdummies=2' | conf
	run modprobe dummy numdummies=4
	[ "$RC" = 0 ] || bad "modprobe dummy numdummies=4: $(ctx)"
	[ "$(ndummies)" = 4 ] || bad "want 4 devices (command line over config), have: $(netdevs)"
	end

	reset
	begin conf-install
	conf <<'EOF'
install dummy echo "module=$MODPROBE_MODULE opts=$CMDLINE_OPTS" >/tmp/install.out
EOF
	run modprobe dummy numdummies=2
	[ "$RC" = 0 ] || bad "modprobe dummy (install rule): $(ctx)"
	loaded dummy && bad "dummy was inserted although an install command exists"
	got=$(cat /tmp/install.out 2>/dev/null)
	[ "$got" = "module=dummy opts=numdummies=2" ] || bad "install command wrote '$got'"
	conf <<'EOF'
install dummy /sbin/modprobe --ignore-install dummy $CMDLINE_OPTS && echo done >/tmp/install.out
EOF
	run modprobe dummy numdummies=2
	[ "$RC" = 0 ] || bad "modprobe dummy (install calling modprobe -i): $(ctx)"
	[ "$(cat /tmp/install.out 2>/dev/null)" = done ] || bad "second install command did not run"
	[ "$(ndummies)" = 2 ] || bad "install ... \$CMDLINE_OPTS: want 2 devices, have: $(netdevs)"
	end

	reset
	begin conf-blacklist-alias
	printf 'blacklist dummy\nalias my-dummy dummy\n' | conf
	run modprobe my-dummy
	[ "$RC" = 0 ] || bad "modprobe my-dummy: $(ctx)"
	loaded dummy && bad "blacklisted dummy loaded through config alias my-dummy"
	run modprobe rtnl-link-dummy
	[ "$RC" = 0 ] || bad "modprobe rtnl-link-dummy: $(ctx)"
	loaded dummy && bad "blacklisted dummy loaded through index alias rtnl-link-dummy"
	run modprobe -b dummy
	[ "$RC" = 0 ] || bad "modprobe -b dummy: $(ctx)"
	loaded dummy && bad "blacklisted dummy loaded by modprobe -b dummy"
	end

	begin conf-blacklist-name
	run modprobe dummy
	[ "$RC" = 0 ] || bad "modprobe dummy: $(ctx)"
	loaded dummy || bad "explicit 'modprobe dummy' must ignore the blacklist"
	end

	reset
	begin conf-softdep
	echo 'softdep dummy pre: nls_utf8 post: nls_cp437' | conf
	run modprobe dummy
	[ "$RC" = 0 ] || bad "modprobe dummy: $(ctx)"
	order=$(grep -E '^(nls_utf8|dummy|nls_cp437) ' /proc/modules | cut -d' ' -f1 | tr '\n' ' ')
	# /proc/modules lists the newest first.
	[ "$order" = "nls_cp437 dummy nls_utf8 " ] ||
		bad "want nls_utf8, dummy, nls_cp437 loaded in that order; /proc/modules has: $order"
	run modprobe -r dummy
	[ "$RC" = 0 ] || bad "modprobe -r dummy: $(ctx)"
	for m in dummy nls_utf8 nls_cp437; do
		loaded $m && bad "modprobe -r dummy left $m loaded"
	done
	end
}

# The kernel runs /sbin/modprobe -q -- <alias> itself.
sc_kernel_requests() {
	reset
	begin kernel-request-msdos
	mp=$(cat /proc/sys/kernel/modprobe)
	[ "$mp" = /sbin/modprobe ] || bad "/proc/sys/kernel/modprobe is '$mp'"
	run mount -t msdos /dev/loop0 /mnt
	[ "$RC" = 0 ] || bad "mount -t msdos: $(ctx) kernel: $(kmsg | tail -n 3 | tr '\n' '|')"
	grep -q ' /mnt msdos ' /proc/mounts || bad "/mnt is not an msdos mount"
	for m in fat msdos nls_cp437; do
		loaded $m || bad "$m not loaded by the kernel's request"
	done
	end

	reset
	begin kernel-request-vfat
	run mount -t vfat /dev/loop0 /mnt
	[ "$RC" = 0 ] || bad "mount -t vfat: $(ctx) kernel: $(kmsg | tail -n 3 | tr '\n' '|')"
	loaded vfat || bad "vfat not loaded (fs-vfat)"
	loaded fat || bad "fat not loaded"
	end

	reset
	begin kernel-request-rtnl
	run ip link add vmt0 type dummy
	[ "$RC" = 0 ] || bad "ip link add vmt0 type dummy: $(ctx)"
	loaded dummy || bad "dummy not loaded (rtnl-link-dummy)"
	[ -e /sys/class/net/vmt0 ] || bad "no vmt0, have: $(netdevs)"
	ip link del vmt0 2>/dev/null
	end
}

sc_foreign() {
	reset
	begin foreign-vermagic
	if [ -z "$OTHER_KVER" ]; then
		bad "no module of another kernel in /other"
	else
		run insmod /other/dummy.ko
		[ "$RC" != 0 ] || bad "insmod of a $OTHER_KVER module succeeded"
		loaded dummy && bad "foreign dummy is loaded"
		k=$(kmsg | grep -m1 -E '(module )?dummy: ' | sed 's/^\[[^]]*\] //')
		[ -n "$k" ] && info foreign-vermagic "kernel: $k"
		if ours; then
			grep -q '^insmod: ERROR: could not insert module /other/dummy.ko: Invalid module format$' /tmp/err ||
				bad "no kmod-compatible error line: $(ctx)"
			grep -qF "$OTHER_KVER" /tmp/err ||
				bad "stderr does not say the module is built for $OTHER_KVER: $(ctx)"
		fi
	fi
	end

	begin not-a-module
	run insmod /other/notamodule.ko
	[ "$RC" != 0 ] || bad "insmod of a text file succeeded"
	if ours; then
		grep -q '^insmod: ERROR: could not insert module /other/notamodule.ko: Invalid module format$' /tmp/err ||
			bad "no kmod-compatible error line: $(ctx)"
		grep -qE 'ELF|not a .*module' /tmp/err || bad "no explanation (not an ELF module): $(ctx)"
	fi
	end
}

sc_autoclean() {
	reset
	begin autoclean
	run modprobe -k dummy
	[ "$RC" = 0 ] || bad "modprobe -k dummy: $(ctx)"
	run modprobe -k msdos
	[ "$RC" = 0 ] || bad "modprobe -k msdos: $(ctx)"
	mount -t msdos /dev/loop0 /mnt 2>/tmp/err || bad "mount -t msdos: $(oneline /tmp/err)"
	run modprobe nls_utf8
	[ "$RC" = 0 ] || bad "modprobe nls_utf8: $(ctx)"
	run rmmod --all --idle=0
	[ "$RC" = 0 ] || bad "rmmod --all --idle=0: $(ctx)"
	loaded dummy && bad "unused autoclean dummy was not removed"
	loaded msdos || bad "msdos (autoclean, mounted) was removed"
	loaded fat || bad "fat (autoclean, used by msdos) was removed"
	loaded nls_utf8 || bad "nls_utf8 (loaded without -k) was removed"
	umount /mnt
	run rmmod --all --idle=0
	[ "$RC" = 0 ] || bad "second rmmod --all --idle=0: $(ctx)"
	loaded msdos && bad "msdos (autoclean, unused after umount) was not removed"
	loaded fat && bad "fat (autoclean, unused after umount) was not removed"
	loaded nls_utf8 || bad "nls_utf8 (loaded without -k) was removed"
	for m in $BASELINE; do loaded "$m" || bad "baseline module $m was removed"; done
	end
}

sc_concurrent() {
	reset
	begin concurrent-modprobe
	i=1
	while [ $i -le 8 ]; do
		(
			timeout 60 /sbin/modprobe msdos >/tmp/cc.out.$i 2>/tmp/cc.err.$i
			echo $? >/tmp/cc.rc.$i
		) &
		i=$((i + 1))
	done
	wait
	i=1
	while [ $i -le 8 ]; do
		rc=$(cat /tmp/cc.rc.$i 2>/dev/null)
		[ "$rc" = 0 ] || bad "modprobe #$i: rc=$rc stderr=[$(oneline /tmp/cc.err.$i)]"
		if ours && [ -s /tmp/cc.err.$i ]; then
			bad "modprobe #$i printed: $(oneline /tmp/cc.err.$i)"
		fi
		i=$((i + 1))
	done
	loaded msdos || bad "msdos not loaded"
	loaded fat || bad "fat not loaded"
	[ "$(grep -c '^msdos ' /proc/modules)" = 1 ] || bad "msdos listed more than once"
	end
}

sc_xz() {
	ls "$MODDIR"/kernel/fs/fat/msdos.ko.xz >/dev/null 2>&1 || return 0
	reset
	begin xz-modules
	comp=$(cat /sys/module/compression 2>/dev/null || echo none)
	info xz-modules "in-kernel module decompression (/sys/module/compression): $comp"
	run modprobe nls_utf8
	[ "$RC" = 0 ] || bad "modprobe nls_utf8: $(ctx)"
	loaded nls_utf8 || bad "nls_utf8 (.ko.xz) not loaded by modprobe"
	p=$(mp nls_cp437)
	small=$(peak_rss /sbin/insmod "$p")
	loaded nls_cp437 || bad "nls_cp437 (.ko.xz) not loaded by insmod"
	# Which decompression path did insmod take? No log tells, so compare its peak memory
	# for a tiny module and for f2fs (2 MiB decompressed): decompressing in user space
	# needs the whole image in memory, finit_module(MODULE_INIT_COMPRESSED_FILE) does not.
	big=$(mp f2fs)
	if [ -n "$big" ]; then
		need lz4_compress lz4hc_compress
		size=$(xzcat "$big" | wc -c)
		large=$(peak_rss /sbin/insmod "$big")
		if ! loaded f2fs; then
			bad "f2fs (.ko.xz) not loaded by insmod"
		elif [ -n "$small" ] && [ -n "$large" ]; then
			grow=$((large - small))
			if [ $((grow * 1024)) -ge $((size / 2)) ]; then
				path="in user space (then init_module)"
			else
				path="in the kernel (finit_module with MODULE_INIT_COMPRESSED_FILE)"
			fi
			info xz-modules ".ko.xz decompressed $path: insmod peak RSS ${small} KiB for nls_cp437, ${large} KiB for f2fs ($((size / 1024)) KiB decompressed)"
		fi
	fi
	end
}
# peak_rss CMD...: run CMD, print its peak resident set size in KiB.
peak_rss() {
	timeout 60 $BB time -v "$@" 2>&1 >/dev/null | sed -n 's/.*Maximum resident set size (kbytes): *//p'
}

sc_modinfo() {
	reset
	begin modinfo
	run modinfo -F depends msdos
	[ "$RC" = 0 ] && [ "$(cat /tmp/out)" = fat ] || bad "modinfo -F depends msdos: $(ctx)"
	run modinfo -F filename msdos
	[ "$(cat /tmp/out)" = "$(mp msdos)" ] || bad "modinfo -F filename msdos: $(ctx)"
	if [ -n "$OTHER_KVER" ]; then
		run modinfo -F vermagic /other/dummy.ko
		case "$(cat /tmp/out)" in "$OTHER_KVER "*) ;; *) bad "modinfo -F vermagic /other/dummy.ko: $(ctx)" ;; esac
	fi
	end
}

t0=$(now)
setup
sc_depmod
sc_insmod_unresolved
sc_msdos_chain
sc_params
ours && sc_conf
sc_kernel_requests
sc_foreign
ours && sc_autoclean
sc_concurrent
sc_xz
ours && sc_modinfo
reset
info summary "$FAILED failed; scenarios took $(since "$t0")s"
# The whole kernel log goes to the serial log for debugging (the host ignores these lines).
dmesg | sed 's/^/kmsg| /'
