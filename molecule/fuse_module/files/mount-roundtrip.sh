#!/bin/bash
# Runs in the VM: serves one brick with glusterpyd, mounts the volume with glusterpy's FUSE
# client, writes a file through the mount and reads it back through a second mount, then prints
# what verify asserts on (key=value lines). Everything it starts is stopped again, even on error.
set -euo pipefail
bin=/opt/glusterpy/venv/bin
state=$(mktemp -d /var/tmp/glusterpy-verify.XXXXXX)
mnt1=$state/mnt1
mnt2=$state/mnt2
mnt3=$state/mnt3
mkdir -p "$state/brick" "$mnt1" "$mnt2" "$mnt3"

# The mount's entry in the mount table ("MAJ:MIN" of its device), without touching the mount.
mount_device() {
    awk -v m="$1" '$5 == m { print $3 }' /proc/self/mountinfo
}

cleanup() {
    if [ -n "$(mount_device "$mnt3")" ]; then
        fusermount3 -u "$mnt3" || umount -l "$mnt3" || true
    fi
    if [ -n "${plain_pid:-}" ]; then
        kill "$plain_pid" 2>/dev/null || true
    fi
    for m in "$mnt1" "$mnt2"; do
        if mountpoint -q "$m"; then
            "$bin/glusterpy" umount "$m" 2>/dev/null || umount -l "$m" || true
        fi
    done
    if [ -s "$state/glusterpyd.pid" ]; then
        kill "$(cat "$state/glusterpyd.pid")" 2>/dev/null || true
    fi
    rm -rf "$state"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$state/brick.vol" <<VOL
volume posix
    type storage/posix
    option directory $state/brick
end-volume

volume server
    type protocol/server
    option transport-type tcp
    option transport.socket.bind-address 127.0.0.1
    option transport.socket.listen-port $port
    option auth.addr.posix.allow 127.0.0.1
    subvolumes posix
end-volume
VOL
cat > "$state/client.vol" <<VOL
volume posix
    type protocol/client
    option transport-type tcp
    option remote-host 127.0.0.1
    option remote-port $port
    option remote-subvolume posix
end-volume
VOL

"$bin/glusterpyd" -f "$state/brick.vol" --log-file "$state/brick.log" --pid-file "$state/glusterpyd.pid" &
for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.2
done
"$bin/glusterpy" mount -f "$state/client.vol" "$mnt1" --log-file "$state/mount1.log"
"$bin/glusterpy" mount -f "$state/client.vol" "$mnt2" --log-file "$state/mount2.log"

# 3 MiB of random data: several full-size requests, read back through the other mount so the
# bytes come from the brick, not from the first mount's page cache.
head -c 3145728 /dev/urandom > "$state/source"
cp "$state/source" "$mnt1/roundtrip.bin"
sync "$mnt1/roundtrip.bin"
echo "fstype=$(findmnt -no FSTYPE "$mnt1")"
echo "written_sha256=$(sha256sum < "$state/source" | cut -d' ' -f1)"
echo "read_sha256=$(sha256sum < "$mnt2/roundtrip.bin" | cut -d' ' -f1)"
echo "brick_sha256=$(sha256sum < "$state/brick/roundtrip.bin" | cut -d' ' -f1)"
echo "read_ahead_kb=$(cat "/sys/class/bdi/$(mountpoint -d "$mnt1")/read_ahead_kb")"
echo "module_version=$(cat /sys/module/fuse/version)"
# What the client says at mount time about the module, and the request size it negotiated.
echo "client_module=$(grep -o 'fuse module: [^;]*' "$state/mount1.log" | head -n 1)"
echo "client_max_pages=$(grep -o 'max_pages [0-9]*' "$state/mount1.log" | head -n 1 | cut -d' ' -f2)"

# A pyfuse3 file system with only its root directory: unlike glusterpy's client it leaves
# read-ahead to libfuse, which answers INIT with what the kernel offered, so its mount shows the
# module's own default (128 KiB stock, 1024 KiB patched).
cat > "$state/plain_fuse.py" <<'PY'
import errno
import stat
import sys

import pyfuse3
import trio


class RootOnly(pyfuse3.Operations):
    async def getattr(self, inode, ctx=None):
        if inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOENT)
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        attr.st_mode = stat.S_IFDIR | 0o755
        attr.st_nlink = 2
        return attr


pyfuse3.init(RootOnly(), sys.argv[1], {"fsname=plainfuse"})
try:
    trio.run(pyfuse3.main)
finally:
    pyfuse3.close(unmount=False)
PY
"$bin/python" "$state/plain_fuse.py" "$mnt3" > "$state/plain_fuse.log" 2>&1 &
plain_pid=$!
for _ in $(seq 300); do
    [ -n "$(mount_device "$mnt3")" ] && break
    sleep 0.2
done
plain_device=$(mount_device "$mnt3")
plain_ra=none
if [ -n "$plain_device" ]; then
    plain_ra=$(cat "/sys/class/bdi/$plain_device/read_ahead_kb")
else
    sed 's/^/plain_fuse: /' "$state/plain_fuse.log" >&2
fi
echo "plain_read_ahead_kb=$plain_ra"
