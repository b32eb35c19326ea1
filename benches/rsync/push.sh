#!/usr/bin/env bash
# rsync-daemon push benchmark: a 4 KiB change in the middle of a SIZE file,
# pushed to a local `rsync --daemon`
#   - by replicafs (an rsync:// target; the time from the write through the
#     mount until `replicafs sync` returns, the daemon holding the change),
#   - by the stock rsync client (`rsync -a --inplace FILE rsync://...`),
# in the same run, into two modules of one daemon. Bytes on the wire are
# the daemon's own count ("sent N bytes  received M bytes") of every session
# the change caused. Medians of --reps; a markdown table goes to stdout and
# benches/rsync/results/<date>.md. Run as root (it mounts).
set -euo pipefail
export LC_ALL=C

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
REPS=${BENCH_REPS:-3}
WORK=${BENCH_WORKDIR:-/var/tmp/replicafs-rsync-bench}
PORT=${BENCH_PORT:-18991}
BIN=${REPLICAFS_BIN:-$REPO_ROOT/target/release/replicafs}

while (($#)); do
    case $1 in
        --size-mib) SIZE_MIB=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        --workdir) WORK=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        -h|--help)
            echo "usage: $0 [--size-mib N (1024)] [--reps N (3)] [--workdir DIR] [--port N]"
            exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[[ $EUID -eq 0 ]] || { echo "run as root (the benchmark mounts)" >&2; exit 2; }
[[ -x $BIN ]] || { echo "$BIN missing: cargo build --release" >&2; exit 2; }
command -v rsync >/dev/null || { echo "rsync missing (apt install rsync)" >&2; exit 2; }

cleanup() {
    "$BIN" unmount "$WORK/mnt" >/dev/null 2>&1 || umount -l "$WORK/mnt" 2>/dev/null || true
    [[ -f $WORK/rsyncd.pid ]] && kill "$(cat "$WORK/rsyncd.pid")" 2>/dev/null || true
}
trap cleanup EXIT
cleanup
rm -rf "$WORK"
mkdir -p "$WORK"/{src,mnt,a,b,client,state}
cat >"$WORK/rsyncd.conf" <<CONF
pid file = $WORK/rsyncd.pid
log file = $WORK/rsyncd.log
address = 127.0.0.1
port = $PORT
use chroot = yes
numeric ids = yes
uid = root
gid = root
read only = no
[a]
path = $WORK/a
[b]
path = $WORK/b
CONF
rsync --daemon --config="$WORK/rsyncd.conf"
for _ in $(seq 100); do [[ -f $WORK/rsyncd.pid ]] && break; sleep 0.05; done

echo "# writing a $SIZE_MIB MiB file" >&2
head -c "$((SIZE_MIB << 20))" /dev/urandom >"$WORK/src/big"
cp "$WORK/src/big" "$WORK/client/big"
echo "# first copies (replicafs reconcile, stock rsync)" >&2
"$BIN" mount "$WORK/src" "$WORK/mnt" --target "rsync://127.0.0.1:$PORT/a" \
    --state-dir "$WORK/state" --daemon
"$BIN" sync "$WORK/mnt" --timeout 10m
rsync -a "$WORK/client/big" "rsync://127.0.0.1:$PORT/b/"

# Sums the daemon's byte counts of the sessions for MODULE logged after line
# FROM of its log.
wire_bytes() {
    local module=$1 from=$2
    awk -v from="$from" -v m="$module" '
        NR <= from { next }
        match($0, /\[[0-9]+\]/) {
            pid = substr($0, RSTART, RLENGTH)
            if ($0 ~ "rsync to " m "/") mod[pid] = 1
            if (mod[pid] && match($0, /sent [0-9]+ bytes  received [0-9]+ bytes/)) {
                split(substr($0, RSTART, RLENGTH), f, " ")
                total += f[2] + f[5]
            }
        }
        END { print total + 0 }' "$WORK/rsyncd.log"
}
now() { date +%s.%N; }
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

ours_t=(); ours_b=(); theirs_t=(); theirs_b=()
for rep in $(seq "$REPS"); do
    off=$(((SIZE_MIB << 19) + rep * 1048576 + 4096 * rep))
    head -c 4096 /dev/urandom >"$WORK/block"
    sleep 1 # let earlier sessions finish and their log lines land
    mark=$(wc -l <"$WORK/rsyncd.log")
    t0=$(now)
    dd if="$WORK/block" of="$WORK/mnt/big" bs=4096 seek=$((off / 4096)) conv=notrunc status=none
    "$BIN" sync "$WORK/mnt"
    t1=$(now)
    sleep 1 # the session the watch starts for our own write counts too
    ours_t+=("$(echo "$t1 - $t0" | bc -l)")
    ours_b+=("$(wire_bytes a "$mark")")

    dd if="$WORK/block" of="$WORK/client/big" bs=4096 seek=$((off / 4096)) conv=notrunc status=none
    mark=$(wc -l <"$WORK/rsyncd.log")
    t0=$(now)
    rsync -a --inplace "$WORK/client/big" "rsync://127.0.0.1:$PORT/b/"
    t1=$(now)
    sleep 0.5
    theirs_t+=("$(echo "$t1 - $t0" | bc -l)")
    theirs_b+=("$(wire_bytes b "$mark")")
    echo "# rep $rep: replicafs ${ours_t[-1]} s ${ours_b[-1]} B; rsync --inplace ${theirs_t[-1]} s ${theirs_b[-1]} B" >&2
done
cmp "$WORK/src/big" "$WORK/a/big" && cmp "$WORK/client/big" "$WORK/b/big" \
    || { echo "a module differs from its source" >&2; exit 1; }

ot=$(printf '%s\n' "${ours_t[@]}" | median); ob=$(printf '%s\n' "${ours_b[@]}" | median)
tt=$(printf '%s\n' "${theirs_t[@]}" | median); tb=$(printf '%s\n' "${theirs_b[@]}" | median)
bytes=$((SIZE_MIB << 20))
report=$(cat <<MD
### 4 KiB change in a $SIZE_MIB MiB file, pushed to a local rsync daemon ($(date -u +%Y-%m-%dT%H:%MZ), median of $REPS, warm cache)

| pusher | time | bytes on the wire | of the file |
|---|---|---|---|
| replicafs (write through the mount until \`replicafs sync\` returns) | $(printf '%.3f' "$ot") s | $ob | $(echo "scale=4; 100 * $ob / $bytes" | bc -l) % |
| \`rsync -a --inplace\` client | $(printf '%.3f' "$tt") s | $tb | $(echo "scale=4; 100 * $tb / $bytes" | bc -l) % |
| ratio | $(echo "scale=2; $tt / $ot" | bc -l)× faster | $(echo "scale=2; $tb / $ob" | bc -l)× fewer | |

Command: \`benches/rsync/push.sh --size-mib $SIZE_MIB --reps $REPS\` ($(rsync --version | head -1 | awk '{print $1, $3}') daemon on 127.0.0.1)
MD
)
echo "$report"
mkdir -p "$SCRIPT_DIR/results"
echo "$report" >"$SCRIPT_DIR/results/$(date -u +%Y-%m-%d-%H%M).md"
