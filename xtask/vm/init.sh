#!/bin/sh
# PID 1 of the vm-test initramfs (busybox sh). The host passes VMTEST_MODE (test, demo,
# shell) and VMTEST_TOOLS (ours, busybox) on the kernel command line; the kernel hands
# such words to init as environment variables.
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
echo "VMTEST-BOOT $(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)s tools=${VMTEST_TOOLS:-ours}"
case "${VMTEST_MODE:-test}" in
test) sh /vm/scenarios.sh ;;
demo) sh /vm/demo.sh ;;
*)
	# busybox runs its own applet for a bare "modprobe"; these functions send the names
	# to /sbin instead.
	for t in depmod modprobe insmod rmmod lsmod modinfo; do
		echo "$t() { /sbin/$t \"\$@\"; }"
	done >/etc/profile
	echo "interactive shell: module tools from /sbin (run depmod -a first), scripts in /vm;"
	echo "'poweroff -f' (or Ctrl-A x) leaves"
	setsid cttyhack sh -l
	;;
esac
echo VMTEST-END
sync
sleep 1
poweroff -f
