#!/bin/sh
# `cargo xtask demo`: a short tour of the tools on a real kernel (busybox sh, run by /init).
# Commands are echoed as "$ cmd"; their stdout and stderr follow.
KVER=$(uname -r)
MODDIR=/lib/modules/$KVER

say() {
	echo
	echo "# $*"
}
# Debian's static busybox runs its own applet for a bare "modprobe" even with /sbin first
# in PATH, so the tools are called by path (and shown by name).
x() {
	echo "\$ $*"
	cmd=$1
	shift
	case $cmd in depmod | modprobe | insmod | rmmod | lsmod | modinfo) cmd=/sbin/$cmd ;; esac
	# Through a file: no tty, so no progress bars on the serial console.
	"$cmd" "$@" >/tmp/x.out 2>&1
	rc=$?
	cat /tmp/x.out
	[ $rc = 0 ] || echo "[exit status $rc]"
}

echo VMTEST-DEMO
say "Linux $KVER under qemu; the kernel runs $(cat /proc/sys/kernel/modprobe) for module requests."
say "A pristine module tree: no indexes yet."
x ls -C "$MODDIR"
t=$(cut -d' ' -f1 /proc/uptime)
x depmod -a
echo "(depmod -a: $(awk -v a="$t" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }')s)"
x ls -C "$MODDIR"

msdos=$(find "$MODDIR" -name 'msdos.ko*')
say "insmod loads one file and knows nothing about dependencies:"
x insmod "$msdos"
say "modprobe reads the indexes and loads fat first:"
x modprobe -v msdos
x lsmod
say "fat is in use, so it cannot go:"
x rmmod fat
say "modprobe -r removes msdos and then fat, which is no longer used:"
x modprobe -r -v msdos
x lsmod

say "The kernel calls modprobe by itself: mounting a FAT image asks for fs-vfat."
x modprobe loop
dd if=/dev/zero of=/tmp/fat.img bs=1024 count=4096 2>/dev/null
mkdosfs -n DEMO /tmp/fat.img >/dev/null 2>&1
losetup /dev/loop0 /tmp/fat.img
x mount -t vfat /dev/loop0 /mnt
x lsmod
umount /mnt 2>/dev/null
