#!/bin/bash
# O_DIRECT through the mount, against the same I/O on the work dir directly:
# dd with oflag=direct / iflag=direct (4 KiB and 1 MiB blocks), the page
# cache dropped before each run, and how much of the file SOURCE's page
# cache holds afterwards (util-linux fincore).
#
#   sudo benches/odirect/run.sh [--bin PATH] [--reps N] [--workdir DIR]
#
# Prints one line per run; docs/benchmarks.md keeps the results.
set -euo pipefail

BIN=target/release/replicafs
REPS=3
WORK=${TMPDIR:-/tmp}
while [ $# -gt 0 ]; do
    case $1 in
        --bin) BIN=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        --workdir) WORK=$2; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "run as root (mount, drop_caches)" >&2; exit 2; }

R=$(mktemp -d "$WORK/odirect-bench.XXXX")
cleanup() {
    "$BIN" unmount "$R/mnt" >/dev/null 2>&1 || true
    rm -rf "$R"
}
trap cleanup EXIT
mkdir -p "$R/src" "$R/mnt" "$R/tgt" "$R/state" "$R/native"
"$BIN" mount "$R/src" "$R/mnt" --target "$R/tgt" --state-dir "$R/state" --daemon >/dev/null

cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
rate() { tail -1 | sed 's/.*copied, //'; }
res() { fincore --noheadings --output RES "$1" | tr -d ' '; }

echo "# $(date -u '+%F %T') $(uname -r), $(nproc) CPUs, $BIN, $(df -T "$WORK" | awk 'NR==2 {print $2}')"
for rep in $(seq "$REPS"); do
    for where in native mnt; do
        D=$R/$where
        S=$D; [ "$where" = mnt ] && S=$R/src
        cold
        w4=$(dd if=/dev/zero of="$D/small" bs=4k count=8192 oflag=direct conv=notrunc 2>&1 | rate)
        cold
        w1=$(dd if=/dev/zero of="$D/big" bs=1M count=256 oflag=direct conv=notrunc 2>&1 | rate)
        [ "$where" = mnt ] && "$BIN" sync "$R/mnt" >/dev/null
        cold
        r1=$(dd if="$D/big" of=/dev/null bs=1M iflag=direct 2>&1 | rate)
        r1res=$(res "$S/big")
        cold
        r4=$(dd if="$D/small" of=/dev/null bs=4k iflag=direct 2>&1 | rate)
        r4res=$(res "$S/small")
        echo "rep $rep $where: write 4k $w4 | write 1M $w1 | read 1M $r1 (SOURCE cache $r1res) | read 4k $r4 (SOURCE cache $r4res)"
    done
done
"$BIN" sync "$R/mnt" >/dev/null
cmp "$R/src/big" "$R/tgt/big" && cmp "$R/src/small" "$R/tgt/small" && echo "target matches SOURCE"
