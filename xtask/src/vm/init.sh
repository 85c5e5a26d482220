#!/bin/busybox sh
/bin/busybox mkdir -p /busybox
/bin/busybox --install -s /busybox
export PATH=/bin:/usr/sbin:/usr/bin:/sbin:/busybox HOME=/root
mkdir -p /proc /sys /dev /tmp /run /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpffs /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
for m in /lib/modules/$(uname -r)/*.ko; do [ -e "$m" ] && insmod "$m"; done
# NETSTAT_TEST_VM: the guest CPU is emulated (about 5x slower than the host).
export NETSTAT_BIN=/bin/netstat NETSTAT_LOAD_BIN=/bin/netstat-load NETSTAT_TEST_VM=1
echo "netstat-vm: kernel $(uname -r), backend ${NETSTAT_TEST_BACKEND:-auto}, $(nproc) cpu(s)"
[ -z "$NETSTAT_VM_SELFTEST" ] && [ ! -x /etc/netstat-vm-exec ] &&
  /bin/netstat --probe-report --backend "${NETSTAT_TEST_BACKEND:-auto}" 2>&1 | sed 's/^/probe-report: /'
case "$NETSTAT_VM_SELFTEST" in
  panic) echo "netstat-vm: selftest: init exits (kernel panic)"; exit 1 ;;
  hang) echo "netstat-vm: selftest: hanging"; while :; do sleep 3600; done ;;
  fail) echo "netstat-vm: selftest: reporting failure"; rc=1 ;;
esac
rc=${rc:-0}
args=$(cat /etc/netstat-test-args)
if [ -x /etc/netstat-vm-exec ]; then
  /etc/netstat-vm-exec; rc=$?; NETSTAT_VM_SELFTEST=exec
fi
# Tests that do not depend on the backend run in the first run of a kernel only.
dirs=/tests/per-backend
[ "$NETSTAT_VM_ALL_TESTS" = 1 ] && dirs="/tests/once /tests/per-backend"
for t in $(for d in $dirs; do ls -d $d/* 2>/dev/null; done); do
  [ -n "$NETSTAT_VM_SELFTEST" ] && break
  echo "netstat-vm: running ${t##*/}"
  "$t" $args || rc=1
done
echo "netstat-vm: done, rc=$rc"
printf "\\$(printf %03o "$rc")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
poweroff -f
