#!/bin/busybox sh
# /init of the tiny initramfs that run-in-vm.sh builds (PID 1 in the guest).
#
# Loads the virtio/9p/overlay modules, mounts the host root (9p share
# "hostroot", read-only) as the lower layer of an overlay whose upper layer is
# tmpfs (the guest can write anywhere; the writes vanish at poweroff), binds the
# writable host share "vmshare" (and any --rw dirs) at their host paths, makes
# the lab kernel's modules appear at /lib/modules/<kver>, chroots into the host
# root and runs <share>/cmd.sh with the host's bash. stdout/stderr go to files
# on the share (never the serial console, which carries the kernel log); the
# exit code goes to <share>/rc, then the VM powers off.
# A failed step prints "ktls-lab-init: FATAL ..." on the console and powers off
# (no rc file: run-in-vm.sh exits 125). If /init itself dies the kernel panics,
# panic=-1 reboots and qemu's -no-reboot turns that into an exit.

export PATH=/bin
/bin/busybox --install -s /bin

log() { echo "ktls-lab-init: $*" > /dev/console; }
fail() { log "FATAL: $*"; poweroff -f; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
t_up=$(cut -d' ' -f1 /proc/uptime)

while read -r m; do # dependency order, written by run-in-vm.sh
	[ -n "$m" ] || continue
	insmod "/modules/$m" || fail "insmod $m"
done < /modules/order

msize=512000 # 9p message size; 128K..4M measured the same
mkdir -p /share /lower /ovl /newroot
# cache=none: output written here is on the host at once (a timeout keeps it)
mount -t 9p -o trans=virtio,version=9p2000.L,msize=$msize,cache=none vmshare /share || fail "mount vmshare"
. /share/ctl.sh || fail "source ctl.sh"

# cache=loose: a cold `node -e 1` is ~1.5 s faster than with cache=none
mount -t 9p -o trans=virtio,version=9p2000.L,msize=$msize,ro,cache=loose hostroot /lower || fail "mount hostroot"
mount -t tmpfs -o mode=755,size=50% tmpfs /ovl || fail "mount tmpfs /ovl"
mkdir -p /ovl/upper /ovl/work
mount -t overlay -o lowerdir=/lower,upperdir=/ovl/upper,workdir=/ovl/work overlay /newroot || fail "mount overlay"

mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm

# The writable share, at the same absolute path as on the host.
mkdir -p "/newroot$SHARE_PATH" || fail "mkdir $SHARE_PATH"
mount --bind /share "/newroot$SHARE_PATH" || fail "bind $SHARE_PATH"
i=0
while [ $i -lt "${RW_COUNT:-0}" ]; do # --rw dirs: tags rw0, rw1, ...
	eval "p=\$RW_PATH_$i"
	mkdir -p "/newroot$p" || fail "mkdir $p"
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=$msize,cache=none "rw$i" "/newroot$p" || fail "mount rw$i at $p"
	i=$((i + 1))
done

# The lab kernel lives in the lab cache, not in the host's /lib/modules: bind
# its modules dir there so that modprobe and module autoloading find it. The
# mkdir lands in the overlay's tmpfs. Paths are physical: a symlink under
# /newroot would resolve against the initramfs here.
mkdir -p "/newroot$KMOD_DST" || fail "mkdir $KMOD_DST"
mount --bind "/lower$KMOD_SRC" "/newroot$KMOD_DST" || fail "bind $KMOD_SRC at $KMOD_DST"

# Module autoloading (e.g. "crypto-gcm(aes)" when TLS_TX is installed) runs
# /proc/sys/kernel/modprobe relative to the INITRAMFS root, which has no
# modprobe: point it at a wrapper that runs the host's modprobe in the new root.
printf '#!/bin/busybox sh\nexec /bin/busybox chroot /newroot /sbin/modprobe "$@"\n' > /bin/modprobe-host
chmod 755 /bin/modprobe-host
echo /bin/modprobe-host > /proc/sys/kernel/modprobe
# What udev would load on real hardware (aesni_intel from the CPU modalias):
# without it kTLS uses the generic C AES. Failures are only logged.
for m in $PRELOAD; do
	/bin/modprobe-host "$m" > /dev/console 2>&1 || log "modprobe $m failed (ignored)"
done

ip link set lo up || fail "lo up"
hostname ktls-lab
t_cmd=$(cut -d' ' -f1 /proc/uptime)
echo "$t_up $t_cmd" > /share/guest-times

chroot /newroot /bin/bash "$SHARE_PATH/cmd.sh" > /share/stdout 2> /share/stderr < /dev/null
echo "$?" > /share/rc
sync
poweroff -f
