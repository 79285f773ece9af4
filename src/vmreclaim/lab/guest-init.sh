#!/bin/busybox sh
# PID 1 of the vmreclaim lab guest.
#
# Loads the modules listed in /modules/order, mounts the host's /usr and vmreclaim's package
# read-only over 9p (nothing else of the host is shared), the scratch disk if there is one, then
# serves the command channel on the virtio-serial port named org.vmreclaim.cmd until the host
# closes it, and powers off.
#
# Command channel protocol (the host side is vmreclaim/lab/channel.py):
#   guest -> host, once:  "VMREADY <kernel release>\n"
#   host -> guest:        "RUN <id> <timeout s> <base64 of a shell script>\n"
#   guest -> host:        "DONE <id> <exit code> <stdout bytes> <stderr bytes>\n", stdout, stderr
# Output goes through files, so stdout and stderr stay apart and any size or byte comes through.
#
# With `vmreclaim.init=systemd` on the kernel command line (MachineConfig.init = "systemd"),
# it builds a root on tmpfs instead (the host's /usr and the mounts above moved into it, a
# minimal /etc, units that need what the lab lacks masked) and hands PID 1 to the host's
# systemd; a service, vmreclaim-lab-channel, runs this script again as `init serve PORT` to
# serve the command channel. So the project's systemd units can be started by a real
# systemd, sandbox and all.

export HOME=/root PYTHONPATH=/opt/vmreclaim/lib PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8

say() { echo "vmreclaim-init: $*" > /dev/console; }

serve() {
    exec 3<>"$port"
    work=/run/vmreclaim
    mkdir -p "$work"
    printf 'VMREADY %s\n' "$(uname -r)" >&3
    while read -r verb id limit script <&3; do
        if [ "$verb" != RUN ]; then
            say "bad request on the command channel: $verb"
            continue
        fi
        echo "$script" | base64 -d > "$work/cmd.sh"
        (cd /root && exec timeout -s KILL "$limit" sh "$work/cmd.sh") \
            < /dev/null > "$work/out" 2> "$work/err"
        code=$?
        printf 'DONE %s %s %s %s\n' "$id" "$code" \
            "$(stat -c %s "$work/out")" "$(stat -c %s "$work/err")" >&3
        cat "$work/out" "$work/err" >&3
        rm -f "$work/out" "$work/err" "$work/cmd.sh"
    done
}

if [ "$1" = serve ]; then
    # Under systemd: the tools are the host's (/usr), busybox only for the final reboot.
    export PATH=/usr/sbin:/usr/bin
    port="$2"
    serve
    sync
    /opt/vmreclaim-lab/busybox reboot -f
fi

/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup || say "no cgroup2"

while read -r module; do
    insmod "/modules/$module" || say "insmod $module failed"
done < /modules/order

ninep="trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose"
mount -t 9p -o "$ninep" usr /usr || say "could not mount the host's /usr"
mount -t 9p -o "$ninep" vmreclaim /opt/vmreclaim/lib/vmreclaim || say "could not mount vmreclaim"
if [ -b /dev/vda ]; then
    mount -t ext4 /dev/vda /mnt/scratch || say "could not mount the scratch disk"
fi

port=""
tries=0
while [ -z "$port" ] && [ "$tries" -lt 50 ]; do
    for dir in /sys/class/virtio-ports/*; do
        if [ "$(cat "$dir/name" 2>/dev/null)" = org.vmreclaim.cmd ] && [ -c "/dev/${dir##*/}" ]; then
            port="/dev/${dir##*/}"
        fi
    done
    [ -n "$port" ] || { tries=$((tries + 1)); sleep 0.1; }
done

# Units masked under systemd: they need what the lab has not (a console to prompt on, D-Bus's
# users, a writable /usr, a network) and would only slow the boot.
masked="systemd-firstboot.service getty.target dbus.service dbus.socket systemd-logind.service
systemd-repart.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount
systemd-update-utmp.service systemd-update-utmp-runlevel.service systemd-pcrphase.service
systemd-pcrphase-sysinit.service systemd-random-seed.service systemd-journal-flush.service
systemd-machine-id-commit.service systemd-udevd.service systemd-udev-trigger.service
systemd-udev-settle.service systemd-networkd.service systemd-resolved.service
systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer
fstrim.timer man-db.timer cron.service ssh.service rsyslog.service"

boot_systemd() {
    new=/newroot
    mkdir -p "$new" && mount -t tmpfs -o mode=0755 tmpfs "$new" || return 1
    units="$new/etc/systemd/system"
    mkdir -p "$new/usr" "$new/proc" "$new/sys" "$new/dev" "$new/run" "$new/root" "$new/var/log" \
        "$new/var/lib" "$new/mnt/scratch" "$new/opt/vmreclaim/lib/vmreclaim" \
        "$new/opt/vmreclaim-lab" "$units/multi-user.target.wants"
    mkdir -m 1777 "$new/tmp" "$new/var/tmp"
    for dir in bin sbin lib lib64; do ln -s "usr/$dir" "$new/$dir"; done
    cp /etc/passwd /etc/group /etc/hosts /etc/hostname "$new/etc/"
    # A machine id of its own: without one systemd runs its first-boot setup.
    tr -d '-' < /proc/sys/kernel/random/uuid > "$new/etc/machine-id"
    ln -s ../usr/lib/os-release "$new/etc/os-release"
    for unit in $masked; do ln -s /dev/null "$units/$unit"; done
    cp /bin/busybox /init "$new/opt/vmreclaim-lab/"
    {
        echo "[Unit]"
        echo "Description=vmreclaim lab command channel"
        echo "[Service]"
        echo "Environment=HOME=/root PYTHONPATH=/opt/vmreclaim/lib PYTHONDONTWRITEBYTECODE=1"
        echo "Environment=LANG=C.UTF-8"
        echo "ExecStart=/opt/vmreclaim-lab/busybox sh /opt/vmreclaim-lab/init serve $port"
    } > "$units/vmreclaim-lab-channel.service"
    ln -s ../vmreclaim-lab-channel.service "$units/multi-user.target.wants/"
    ln -s /usr/lib/systemd/system/multi-user.target "$units/default.target"
    # Which of them are mounted, read once: /proc goes with the moves, and so does /usr, where
    # the host's tools are (busybox has no mountpoint applet).
    mounts=$(cut -d' ' -f2 /proc/mounts)
    for mounted in /usr /opt/vmreclaim/lib/vmreclaim /mnt/scratch /run /dev /sys /proc; do
        if echo "$mounts" | grep -qx "$mounted"; then
            mount --move "$mounted" "$new$mounted" || say "could not move $mounted"
        fi
    done
    say "starting systemd"
    exec switch_root "$new" /usr/lib/systemd/systemd
}

if [ -n "$port" ] && grep -q 'vmreclaim.init=systemd' /proc/cmdline; then
    boot_systemd
    say "could not start systemd"
fi
if [ -z "$port" ]; then
    say "no command channel (virtio-serial port org.vmreclaim.cmd)"
elif grep -q 'vmreclaim.shell=1' /proc/cmdline; then
    serve &
    setsid cttyhack sh -l
else
    serve
fi
sync
reboot -f
