#!/usr/bin/env bash
# Scale benchmark: trees of many small files, replicafs against rsync in the
# same run.
#
# For each tree size N (files of 100 bytes, 1,000 to a directory):
#   - first full copy to an empty directory: `rsync -a SRC/ R/` against
#     mounting SRC with an empty directory target until `replicafs sync`
#     returns (the start-up reconcile copies everything);
#   - `find -ls` over the mount (every inode looked up and stat'ed) against
#     `find -ls` over SRC itself;
#   - the daemon's descriptors and resident memory after that;
#   - an unchanged tree: `rsync -a --dry-run SRC/ R/` against mounting again
#     until `replicafs sync` returns (the start-up reconcile finds nothing).
# Page caches are dropped before each first copy, so both start cold; the
# unchanged runs are warm for both.
#
# Usage: benches/scale/run.sh [N ...]        (default: 10000 100000)
# Environment: SCALE_WORKDIR (default /var/tmp/replicafs-scale, on a disk
# filesystem), REPLICAFS_BIN (default target/release/replicafs),
# REPLICAFS_ARGS (extra mount arguments). Root, for dropping caches.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
WORK=${SCALE_WORKDIR:-/var/tmp/replicafs-scale}
BIN=${REPLICAFS_BIN:-$REPO_ROOT/target/release/replicafs}
EXTRA=${REPLICAFS_ARGS:-}
SIZES=("$@")
((${#SIZES[@]})) || SIZES=(10000 100000)
RESULTS="$SCRIPT_DIR/results/$(date -u +%Y-%m-%d_%H%M%S).md"
mkdir -p "$SCRIPT_DIR/results"

[[ $(id -u) == 0 ]] || { echo "run as root (drops page caches)" >&2; exit 2; }
[[ -x $BIN ]] || { echo "no $BIN: cargo build --release" >&2; exit 2; }
command -v rsync >/dev/null || { echo "rsync is needed" >&2; exit 2; }

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }

cleanup() {
    for m in "$WORK"/mnt*; do
        mountpoint -q "$m" 2>/dev/null && "$BIN" unmount "$m" --timeout 60s >/dev/null 2>&1
    done
    true
}
trap cleanup EXIT

make_tree() { # DIR N
    python3 - "$1" "$2" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
data = b"x" * 100
for i in range(n):
    d = os.path.join(root, "d%05d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d)
    fd = os.open(os.path.join(d, "f%04d" % (i % 1000)), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, data)
    os.close(fd)
EOF
}

daemon_pid() { # MOUNTPOINT
    "$BIN" status "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])'
}

mount_and_sync() { # SRC MNT TARGET STATE -> seconds until sync returns
    local t0 t1
    t0=$(now)
    # shellcheck disable=SC2086
    "$BIN" mount "$1" "$2" --target "$3" --state-dir "$4" --daemon $EXTRA >/dev/null
    "$BIN" sync "$2" --timeout 7200s >/dev/null
    t1=$(now)
    secs "$t0" "$t1"
}

rows=()
for n in "${SIZES[@]}"; do
    run="$WORK/$n"
    rm -rf "$run"
    mkdir -p "$run/src" "$run/rsync" "$run/replica" "$run/mnt" "$run/state"
    chmod 700 "$run/state"
    echo "== $n files: making the tree" >&2
    make_tree "$run/src" "$n"

    echo "== $n: rsync -a (first copy)" >&2
    cold; t0=$(now); rsync -a "$run/src/" "$run/rsync/"; rsync_copy=$(secs "$t0" "$(now)")
    echo "== $n: replicafs (first copy)" >&2
    cold; ours_copy=$(mount_and_sync "$run/src" "$run/mnt" "$run/replica" "$run/state")

    echo "== $n: find -ls" >&2
    t0=$(now); find "$run/src" -ls >/dev/null; native_find=$(secs "$t0" "$(now)")
    t0=$(now); find "$run/mnt" -ls >/dev/null; ours_find=$(secs "$t0" "$(now)")
    pid=$(daemon_pid "$run/mnt")
    fds=$(ls "/proc/$pid/fd" | wc -l)
    rss=$(awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status")
    "$BIN" verify "$run/src" "$run/replica" >/dev/null || { echo "verify failed at $n" >&2; exit 1; }
    "$BIN" unmount "$run/mnt" >/dev/null

    echo "== $n: unchanged" >&2
    t0=$(now); rsync -a --dry-run "$run/src/" "$run/rsync/"; rsync_same=$(secs "$t0" "$(now)")
    ours_same=$(mount_and_sync "$run/src" "$run/mnt" "$run/replica" "$run/state")
    "$BIN" unmount "$run/mnt" >/dev/null

    rows+=("| $n | $rsync_copy | $ours_copy | $(ratio "$ours_copy" "$rsync_copy") | $rsync_same | $ours_same | $(ratio "$ours_same" "$rsync_same") | $native_find | $ours_find | $fds | $rss |")
    rm -rf "$run"
done

{
    echo "# Scale: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r)"
    echo
    echo "Command: benches/scale/run.sh ${SIZES[*]}${EXTRA:+ (REPLICAFS_ARGS=$EXTRA)}"
    echo
    echo "| files | rsync -a, s | replicafs first copy, s | ratio | rsync -a --dry-run, s | replicafs unchanged, s | ratio | find -ls native, s | find -ls mount, s | daemon fds | daemon RSS, MiB |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} | tee "$RESULTS"
echo "written to $RESULTS" >&2
