#!/bin/sh
# Writes or checks the test data of the Molecule scenarios.
#   dataset.sh write ROOT SUBDIR COUNT MANIFEST   write a maildir of COUNT messages (1 KiB to
#       about 200 KiB) and one 4 MiB file under ROOT/SUBDIR, then append their checksums,
#       relative to ROOT, to MANIFEST (kept outside the volume)
#   dataset.sh check ROOT MANIFEST                every file of MANIFEST is under ROOT, equal
# Prints "dataset: written N files" or "dataset: N files intact"; exits non-zero otherwise.
set -eu
action=$1
root=$2
case "$action" in
write)
    subdir=$3 count=$4 manifest=$5
    mkdir -p "$root/$subdir/cur" "$root/$subdir/new" "$root/$subdir/tmp"
    i=1
    while [ "$i" -le "$count" ]; do
        size=$(( (i * 7919) % 200 + 1 ))
        head -c "${size}K" /dev/urandom > "$root/$subdir/tmp/$i.msg"
        mv "$root/$subdir/tmp/$i.msg" "$root/$subdir/new/$i.msg"
        i=$((i + 1))
    done
    head -c 4M /dev/urandom > "$root/$subdir/big.bin"
    cd "$root"
    find "$subdir" -type f | sort | xargs sha256sum >> "$manifest"
    sync
    echo "dataset: written $((count + 1)) files"
    ;;
check)
    manifest=$3
    cd "$root"
    sha256sum --quiet --strict -c "$manifest"
    echo "dataset: $(wc -l < "$manifest") files intact"
    ;;
*)
    echo "usage: dataset.sh write ROOT SUBDIR COUNT MANIFEST | check ROOT MANIFEST" >&2
    exit 2
    ;;
esac
