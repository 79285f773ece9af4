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

/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root PYTHONPATH=/opt/vmreclaim/lib PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8

say() { echo "vmreclaim-init: $*" > /dev/console; }

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
