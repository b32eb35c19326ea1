#!/usr/bin/env bash
# Replication benchmark: replicafs against its peers (rsync, lsyncd).
#
# One run measures (medians of --reps repetitions):
#   1. a 4 KiB overwrite in the middle of a SIZE file, until identical on the
#      target: local `rsync -a --inplace` (whole-file default and
#      --no-whole-file), lsyncd delay=0 (as configured with whole_file=false,
#      and with an explicit --no-whole-file), replicafs (until visible on the
#      target; until `replicafs sync` returns);
#   2. N x 4 KiB files created until all are on the target: native create,
#      lsyncd delay=0, replicafs (until `replicafs sync`; until the target's
#      listing is complete).
# Prints a markdown table and writes it to benches/replication/results/<date>.md.
# Run as root. See --help.
set -u -o pipefail
export LC_ALL=C

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
ORIG_CMD=$(printf '%q ' "$0" "$@"); ORIG_CMD=${ORIG_CMD% }
HELPER=$SCRIPT_DIR/helper.py

# ---- settings: env first, flags override ------------------------------------
REPS=${BENCH_REPS:-3}
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
NFILES=${BENCH_FILES:-10000}
WORKDIR=${BENCH_WORKDIR:-/var/tmp/replicafs-repl-bench}
RESULTS_DIR=${BENCH_RESULTS_DIR:-$SCRIPT_DIR/results}
TIMEOUT=${BENCH_TIMEOUT:-300}
POLL_SLEEP=${BENCH_POLL_SLEEP:-0.0002}
FILES_POLL_SLEEP=${BENCH_FILES_POLL_SLEEP:-0.002}
ONLY=${BENCH_ONLY:-overwrite,files}
INSTALL=${BENCH_INSTALL:-1}
KEEP=${BENCH_KEEP:-0}
NOTE=${BENCH_NOTE:-}
REPLICAFS_BIN=${REPLICAFS_BIN:-$REPO_ROOT/target/release/replicafs}
REPLICAFS_ARGS=${REPLICAFS_ARGS:-}

usage() {
    cat <<EOF
Usage: benches/replication/peers.sh [options]

Measures replication latency of replicafs against local rsync and lsyncd
(4 KiB overwrite in a big file; many small files), prints a markdown table and
writes it to benches/replication/results/<date>.md.

Options (environment variable in brackets):
  --reps N             repetitions, median reported [BENCH_REPS, 3]
  --size-mib N         big file size in MiB, even [BENCH_SIZE_MIB, 1024]
  --files N            small-file count [BENCH_FILES, 10000]
  --only LIST          sections: overwrite,files [BENCH_ONLY, both]
  --workdir DIR        scratch dir on a disk filesystem (ext4), never tmpfs
                       [BENCH_WORKDIR, /var/tmp/replicafs-repl-bench]
  --results-dir DIR    where <date>.md goes [BENCH_RESULTS_DIR, benches/replication/results]
  --timeout SECS       bound on every single wait [BENCH_TIMEOUT, 300]
  --poll-sleep SECS    sleep between target polls of the 4 KiB [BENCH_POLL_SLEEP, 0.0002]
  --files-poll-sleep SECS  sleep between target listings [BENCH_FILES_POLL_SLEEP, 0.002]
  --note TEXT          free text recorded in the results [BENCH_NOTE]
  --replicafs-bin PATH binary to copy and use [REPLICAFS_BIN, target/release/replicafs]
  --replicafs-args STR extra 'replicafs mount' arguments, word-split [REPLICAFS_ARGS]
  --no-install         never apt-get install rsync/lsyncd [BENCH_INSTALL=0]
  --keep               keep the scratch data [BENCH_KEEP=1]
  -h, --help           this text

The replicafs binary is copied into the work dir at start, so a rebuild during
the run does not change what is measured. Must run as root.
EOF
}

die() { echo "peers.sh: error: $*" >&2; exit 2; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

while [ $# -gt 0 ]; do
    case $1 in
        --reps) REPS=${2:?}; shift 2 ;;
        --size-mib) SIZE_MIB=${2:?}; shift 2 ;;
        --files) NFILES=${2:?}; shift 2 ;;
        --only) ONLY=${2:?}; shift 2 ;;
        --workdir) WORKDIR=${2:?}; shift 2 ;;
        --results-dir) RESULTS_DIR=${2:?}; shift 2 ;;
        --timeout) TIMEOUT=${2:?}; shift 2 ;;
        --poll-sleep) POLL_SLEEP=${2:?}; shift 2 ;;
        --files-poll-sleep) FILES_POLL_SLEEP=${2:?}; shift 2 ;;
        --note) NOTE=${2:?}; shift 2 ;;
        --replicafs-bin) REPLICAFS_BIN=${2:?}; shift 2 ;;
        --replicafs-args) REPLICAFS_ARGS=${2:?}; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "--reps '$REPS' is not a positive integer"
[[ $SIZE_MIB =~ ^[1-9][0-9]*$ ]] && (( SIZE_MIB % 2 == 0 )) || die "--size-mib '$SIZE_MIB' must be an even positive integer"
[[ $NFILES =~ ^[1-9][0-9]*$ ]] && (( NFILES <= 99999 )) || die "--files '$NFILES' must be 1..99999"
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout '$TIMEOUT' must be whole seconds"
DO_OVERWRITE=0; DO_FILES=0
IFS=, read -r -a _only <<<"$ONLY"
for s in "${_only[@]}"; do
    case $s in
        overwrite) DO_OVERWRITE=1 ;;
        files) DO_FILES=1 ;;
        *) die "--only: unknown section '$s' (overwrite, files)" ;;
    esac
done
[ "$(id -u)" = 0 ] || die "must run as root (mounts, apt-get)"
[ -x "$REPLICAFS_BIN" ] || die "replicafs binary '$REPLICAFS_BIN' is missing; run 'cargo build --release'"
[ -f "$HELPER" ] || die "helper '$HELPER' is missing"
SEEK=$(( SIZE_MIB * 1024 * 1024 / 2 / 4096 ))   # 4 KiB blocks: the middle

PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3) || die "python3 is required"

# ---- tools ------------------------------------------------------------------
need() {  # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    [ "$INSTALL" = 1 ] || die "'$1' is missing (package $2) and --no-install was given"
    log "installing $2"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1 ||
        { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1; } ||
        die "could not install $2"
    command -v "$1" >/dev/null 2>&1 || die "'$1' still missing after installing $2"
}
need rsync rsync
need lsyncd lsyncd
need dd coreutils
need findmnt util-linux

# ---- work dir -----------------------------------------------------------------
mkdir -p "$WORKDIR" || die "cannot create work dir '$WORKDIR'"
WORKDIR=$(cd "$WORKDIR" && pwd -P)
FSTYPE=$(findmnt -n -o FSTYPE --target "$WORKDIR" | head -1)
case $FSTYPE in
    tmpfs|ramfs|devtmpfs) die "work dir '$WORKDIR' is on $FSTYPE; use a disk filesystem (ext4)" ;;
    ext4) ;;
    *) log "warning: work dir '$WORKDIR' is on '$FSTYPE', not ext4; results are not comparable" ;;
esac
mounts_under() { findmnt -rn -o TARGET | awk -v p="$1/" 'index($0 "/", p) == 1'; }
if [ -n "$(mounts_under "$WORKDIR")" ]; then
    die "something is still mounted under '$WORKDIR' (a previous run?): $(mounts_under "$WORKDIR" | tr '\n' ' ')"
fi
RUN=$WORKDIR/run
rm -rf "$RUN" || die "cannot clear '$RUN'"
mkdir -p "$RUN/bin" "$RUN/logs" || die "cannot create '$RUN'"
RFS=$RUN/bin/replicafs
cp "$REPLICAFS_BIN" "$RFS" || die "cannot copy '$REPLICAFS_BIN'"
RECORDS=$RUN/records.jsonl; : >"$RECORDS"
META=$RUN/meta.tsv; : >"$META"
meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }

# ---- cleanup: only what this run started --------------------------------------
LSYNCD_PIDS=()
MOUNTS=()
RFS_PIDS=()
is_proc() { [ -r "/proc/$1/comm" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]; }
alive() {  # alive PID: exists and is not a zombie
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    [ "${st%% *}" != Z ]
}
stop_pid() {  # stop_pid PID COMM: TERM, wait up to 15 s, KILL
    local pid=$1 comm=$2 i
    is_proc "$pid" "$comm" || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 150; i++)); do is_proc "$pid" "$comm" || break; sleep 0.1; done
    if is_proc "$pid" "$comm"; then kill -KILL "$pid" 2>/dev/null; sleep 0.2; fi
    wait "$pid" 2>/dev/null
    return 0
}
unmount_rfs() {  # unmount_rfs MNT
    local m=$1
    mountpoint -q "$m" 2>/dev/null || return 0
    timeout 90 "$RFS" unmount "$m" --timeout 60s >>"$RUN/logs/unmount.log" 2>&1 && return 0
    log "warning: 'replicafs unmount $m' failed; detaching it"
    umount -l "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null
    return 1
}
cleanup() {
    local rc=$? p m
    trap - EXIT INT TERM
    for p in "${LSYNCD_PIDS[@]}"; do stop_pid "$p" lsyncd; done
    for m in "${MOUNTS[@]}"; do unmount_rfs "$m"; done
    for p in "${RFS_PIDS[@]}"; do stop_pid "$p" replicafs; done
    if [ "$KEEP" = 1 ]; then
        log "kept scratch data in $RUN"
    elif [ -n "$(mounts_under "$RUN")" ]; then
        log "not removing $RUN: still mounted: $(mounts_under "$RUN" | tr '\n' ' ')"
    else
        rm -rf "$RUN/big" "$RUN/files"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---- helpers ------------------------------------------------------------------
load1() { local l _; read -r l _ </proc/loadavg; echo "$l"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }
busiest() {  # top 4 processes by %CPU over one second
    top -b -n 2 -d 1 -w 200 2>/dev/null | awk '/^top -/ { f++ } f == 2 && $1 ~ /^[0-9]+$/ { printf "%s%s %s%%", (n ? ", " : ""), $12, $9; if (++n == 4) exit }'
}
rec() {  # rec KEY REP LOAD JSON-OBJECT
    local key=$1 rep=$2 load=$3 json=$4
    case $json in
        '{'*'}') ;;
        *) json='{"ok": false, "error": "helper gave no result"}' ;;
    esac
    printf '{"key": "%s", "rep": %s, "load1": %s, %s\n' "$key" "$rep" "$load" "${json#\{}" >>"$RECORDS"
    log "  $key #$rep: ${json}"
}
helper() {  # helper ARGS...: run the python helper, bounded; print its last line
    local out
    out=$(timeout $((TIMEOUT + 60)) "$PY" "$HELPER" "$@" 2>>"$RUN/logs/helper.err" | tail -1)
    printf '%s\n' "$out"
}
json_ok() { case $1 in *'"ok": true'*) return 0 ;; *) return 1 ;; esac; }

# lsyncd ---------------------------------------------------------------------
LSYNCD_PID=
lsyncd_start() {  # lsyncd_start NAME SRC DST RSYNC_LUA_TABLE [LSYNCD FLAGS...]
    local name=$1 src=$2 dst=$3 rs=$4 cfg=$RUN/lsyncd-$1.lua lg=$RUN/logs/lsyncd-$1.log i
    cat >"$cfg" <<EOF
-- written by benches/replication/peers.sh
settings {
    logfile = "$lg",
    nodaemon = true,
    maxProcesses = 1,
}
sync {
    default.rsync,
    source = "$src",
    target = "$dst",
    delay = 0,
    rsync = $rs,
}
EOF
    : >"$lg"
    date +%s%N >"$src/.lsyncd-ready"
    lsyncd "${@:5}" -nodaemon "$cfg" >>"$RUN/logs/lsyncd-$name.stdout" 2>&1 &
    LSYNCD_PID=$!
    LSYNCD_PIDS+=("$LSYNCD_PID")
    # startup sync done = the marker reached the target and lsyncd said so
    for ((i = 0; i < TIMEOUT * 20; i++)); do
        alive "$LSYNCD_PID" || die "lsyncd ($cfg) exited during startup; see $lg and $RUN/logs/lsyncd-$name.stdout"
        if [ -f "$dst/.lsyncd-ready" ] && grep -q 'Startup of .* finished' "$lg" 2>/dev/null; then
            break
        fi
        sleep 0.05
    done
    [ -f "$dst/.lsyncd-ready" ] || die "lsyncd startup sync did not finish within ${TIMEOUT}s ($cfg)"
    helper idle --pid "$LSYNCD_PID" --timeout "$TIMEOUT" >/dev/null
    sleep 0.5
}
lsyncd_stop() {
    [ -n "$LSYNCD_PID" ] && stop_pid "$LSYNCD_PID" lsyncd
    LSYNCD_PID=
}

# replicafs ------------------------------------------------------------------
RFS_MOUNT_S=
rfs_mount() {  # rfs_mount SRC MNT DST STATE
    local t0 t1 pid
    mkdir -p "$2" "$4"
    t0=$EPOCHREALTIME
    # shellcheck disable=SC2086
    timeout 120 "$RFS" mount "$1" "$2" --target "$3" --state-dir "$4" --daemon $REPLICAFS_ARGS \
        >>"$RUN/logs/mount.log" 2>&1 || die "replicafs mount $1 $2 --target $3 failed; see $RUN/logs/mount.log and $4/replicafs.log"
    MOUNTS+=("$2")
    pid=$(timeout 30 "$RFS" status "$2" --json 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin).get("pid",""))' 2>/dev/null)
    [[ $pid =~ ^[0-9]+$ ]] && RFS_PIDS+=("$pid")
    timeout $((TIMEOUT + 30)) "$RFS" sync "$2" --timeout "${TIMEOUT}s" >>"$RUN/logs/mount.log" 2>&1 ||
        die "initial 'replicafs sync $2' failed; see $4/replicafs.log"
    t1=$EPOCHREALTIME
    RFS_MOUNT_S=$(elapsed "$t0" "$t1")
}

# ---- environment record -------------------------------------------------------
T_START=$EPOCHREALTIME
DATE=$(date +%Y-%m-%d_%H%M%S)
GIT_REV=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(git -C "$REPO_ROOT" status --porcelain 2>/dev/null | grep -v '^??' | wc -l)
BIN_SUM=$(sha256sum "$RFS" | cut -c1-12)
BIN_TIME=$(date -r "$REPLICAFS_BIN" '+%Y-%m-%d %H:%M:%S')
meta date "$(date '+%Y-%m-%d %H:%M:%S %Z')"
meta command "$ORIG_CMD"
meta note "$NOTE"
meta host "$(hostname)"
meta cpus "$(nproc)"
meta mem "$(free -g | awk '/^Mem:/ { print $2 " GiB RAM" }')"
meta kernel "$(uname -r)"
meta os "$(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-?}")"
meta workdir "$WORKDIR"
meta fstype "$FSTYPE"
meta rsync "$(rsync --version | head -1 | sed 's/  */ /g')"
meta lsyncd "$(lsyncd --version 2>&1 | awk '/Version/ { print $2 }')"
meta python "$("$PY" -c 'import platform; print(platform.python_version())')"
meta replicafs "$REPLICAFS_BIN (built $BIN_TIME, sha256 $BIN_SUM…) at git $GIT_REV$([ "$GIT_DIRTY" != 0 ] && echo " + $GIT_DIRTY uncommitted changes in tracked files")"
meta replicafs_args "$REPLICAFS_ARGS"
meta reps "$REPS"
meta size_mib "$SIZE_MIB"
meta files "$NFILES"
meta seek "$SEEK"
meta poll_sleep "$POLL_SLEEP"
meta files_poll_sleep "$FILES_POLL_SLEEP"
meta sections "$ONLY"
meta load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
meta busy_start "$(busiest)"
log "work dir $WORKDIR ($FSTYPE), replicafs copy $RFS ($BIN_SUM), load $(cut -d' ' -f1-3 /proc/loadavg)"

# ==== 1. 4 KiB overwrite in a big file =======================================
if [ "$DO_OVERWRITE" = 1 ]; then
    B=$RUN/big; S=$B/src; D=$B/dst
    mkdir -p "$S" "$D"
    log "creating a ${SIZE_MIB} MiB random file and its copy"
    t0=$EPOCHREALTIME
    dd if=/dev/urandom of="$S/big.bin" bs=1M count="$SIZE_MIB" iflag=fullblock status=none || die "cannot create $S/big.bin"
    timeout $((TIMEOUT * 4)) rsync -a "$S/" "$D/" || die "initial copy failed"
    cat "$S/big.bin" "$D/big.bin" >/dev/null   # warm the page cache
    meta overwrite_note "setup (create + copy + warm the ${SIZE_MIB} MiB pair): $(elapsed "$t0" "$EPOCHREALTIME" | cut -c1-5) s"
    OW=(--write-file "$S/big.bin" --src "$S/big.bin" --dst "$D/big.bin" --seek "$SEEK")

    # -- a. rsync -------------------------------------------------------------
    for variant in whole delta; do
        extra=(); [ "$variant" = delta ] && extra=(--no-whole-file)
        log "rsync -a --inplace ${extra[*]}"
        for ((r = 1; r <= REPS; r++)); do
            ld=$(load1)
            j=$(helper overwrite "${OW[@]}" --mode none)
            if ! json_ok "$j"; then rec "rsync_$variant" "$r" "$ld" "$j"; continue; fi
            out=$RUN/logs/rsync-$variant-$r.out
            t0=$EPOCHREALTIME
            timeout "$TIMEOUT" rsync -a --inplace "${extra[@]}" --stats "$S/" "$D/" >"$out" 2>&1
            rc=$?
            t1=$EPOCHREALTIME
            bytes=$(awk -F': ' '/^Total bytes sent:/ { gsub(",", "", $2); print $2 }' "$out")
            same=false; helper cmpat --src "$S/big.bin" --dst "$D/big.bin" --seek "$SEEK" | grep -q '"same": true' && same=true
            ok=false; [ "$rc" = 0 ] && [ "$same" = true ] && ok=true
            rec "rsync_$variant" "$r" "$ld" "{\"rsync_s\": $(elapsed "$t0" "$t1"), \"rsync_rc\": $rc, \"bytes_sent\": ${bytes:-null}, \"target_matches\": $same, \"ok\": $ok}"
        done
    done
    cmp -s "$S/big.bin" "$D/big.bin" && meta check "rsync: source and target files identical (cmp) after the rsync runs" ||
        meta check "rsync: source and target files DIFFER after the rsync runs"

    # -- b. lsyncd ------------------------------------------------------------
    for variant in cfg delta; do
        if [ "$variant" = cfg ]; then
            rs='{ inplace = true, whole_file = false }'
        else
            rs='{ inplace = true, whole_file = false, _extra = { "--no-whole-file" } }'
        fi
        log "lsyncd delay=0 rsync=$rs"
        lsyncd_start "big-$variant" "$S" "$D" "$rs" -log Exec
        for ((r = 1; r <= REPS; r++)); do
            ld=$(load1)
            j=$(helper overwrite "${OW[@]}" --mode poll --timeout "$TIMEOUT" --poll-sleep "$POLL_SLEEP" --idle-pid "$LSYNCD_PID")
            rec "lsyncd_$variant" "$r" "$ld" "$j"
            helper idle --pid "$LSYNCD_PID" --timeout "$TIMEOUT" >/dev/null
            sleep 0.3
        done
        # the rsync command lines lsyncd ran, for the record
        cmdline=$(grep -m1 -o 'Exec: /usr/bin/rsync.*' "$RUN/logs/lsyncd-big-$variant.log" 2>/dev/null | head -c 300)
        [ -n "$cmdline" ] && meta overwrite_note "lsyncd ($variant) ran: \`${cmdline#Exec: }\`"
        lsyncd_stop
        [ "$variant" = delta ] && meta lsyncd_config "$RUN/lsyncd-big-delta.lua"
        cmp -s "$S/big.bin" "$D/big.bin" && meta check "lsyncd ($variant): source and target files identical (cmp)" ||
            meta check "lsyncd ($variant): source and target files DIFFER"
    done
    rm -f "$S/.lsyncd-ready" "$D/.lsyncd-ready"

    # -- c. replicafs ---------------------------------------------------------
    log "replicafs"
    M=$B/mnt
    rfs_mount "$S" "$M" "$D" "$B/state"
    meta overwrite_note "replicafs mount + first \`replicafs sync\` (start-up reconcile of the ${SIZE_MIB} MiB pair): ${RFS_MOUNT_S:0:5} s"
    OWM=(--write-file "$M/big.bin" --src "$S/big.bin" --dst "$D/big.bin" --seek "$SEEK")
    for ((r = 1; r <= REPS; r++)); do
        ld=$(load1)
        j=$(helper overwrite "${OWM[@]}" --mode poll --timeout "$TIMEOUT" --poll-sleep "$POLL_SLEEP")
        rec replicafs_poll "$r" "$ld" "$j"
        timeout $((TIMEOUT + 30)) "$RFS" sync "$M" --timeout "${TIMEOUT}s" >/dev/null 2>&1   # settle, untimed
    done
    for ((r = 1; r <= REPS; r++)); do
        ld=$(load1)
        j=$(helper overwrite "${OWM[@]}" --mode sync --timeout "$TIMEOUT" -- "$RFS" sync "$M" --timeout "${TIMEOUT}s")
        rec replicafs_sync "$r" "$ld" "$j"
    done
    t0=$EPOCHREALTIME
    unmount_rfs "$M" && meta overwrite_note "replicafs unmount: $(elapsed "$t0" "$EPOCHREALTIME" | cut -c1-5) s"
    v=$(timeout "$TIMEOUT" "$RFS" verify "$S" "$D" 2>&1 | head -5 | tr '\n' ' '); vrc=${PIPESTATUS[0]}
    meta check "replicafs (overwrite): \`replicafs verify SRC DST\` exit $vrc${v:+: $v}"
    cmp -s "$S/big.bin" "$D/big.bin" && meta check "replicafs (overwrite): source and target files identical (cmp)" ||
        meta check "replicafs (overwrite): source and target files DIFFER"
    rm -rf "$B"
fi

# ==== 2. N x 4 KiB files ======================================================
if [ "$DO_FILES" = 1 ]; then
    F=$RUN/files
    fresh() { rm -rf "$F" && mkdir -p "$F/src" "$F/dst" || die "cannot reset $F"; }

    log "native create of $NFILES files"
    for ((r = 1; r <= REPS; r++)); do
        fresh; sync; ld=$(load1)
        j=$(helper files --dir "$F/src" --n "$NFILES" --mode none)
        rec files_native "$r" "$ld" "$j"
    done

    log "lsyncd delay=0, $NFILES files"
    bad=0
    for ((r = 1; r <= REPS; r++)); do
        fresh; sync
        lsyncd_start "files-$r" "$F/src" "$F/dst" '{ inplace = true, whole_file = false, _extra = { "--no-whole-file" } }'
        ld=$(load1)
        j=$(helper files --dir "$F/src" --n "$NFILES" --mode poll --target "$F/dst" --timeout "$TIMEOUT" \
                --poll-sleep "$FILES_POLL_SLEEP" --idle-pid "$LSYNCD_PID")
        rec files_lsyncd "$r" "$ld" "$j"
        runs=$(grep -c 'Calling rsync with filter-list' "$RUN/logs/lsyncd-files-$r.log" 2>/dev/null)
        meta files_note "lsyncd run $r: ${runs:-?} rsync invocations after startup"
        lsyncd_stop
        helper cmptree --src "$F/src" --dst "$F/dst" --n "$NFILES" | grep -q '"same": true' || bad=$((bad + 1))
    done
    meta check "lsyncd (files): target content equal to source in $((REPS - bad))/$REPS runs"

    for variant in sync poll; do
        log "replicafs $NFILES files, until $variant"
        bad=0; vbad=
        for ((r = 1; r <= REPS; r++)); do
            fresh
            rfs_mount "$F/src" "$F/mnt" "$F/dst" "$F/state"
            sync; ld=$(load1)
            if [ "$variant" = sync ]; then
                j=$(helper files --dir "$F/mnt" --n "$NFILES" --mode sync --timeout "$TIMEOUT" -- "$RFS" sync "$F/mnt" --timeout "${TIMEOUT}s")
            else
                j=$(helper files --dir "$F/mnt" --n "$NFILES" --mode poll --target "$F/dst" --timeout "$TIMEOUT" --poll-sleep "$FILES_POLL_SLEEP")
            fi
            rec "files_replicafs_$variant" "$r" "$ld" "$j"
            timeout $((TIMEOUT + 30)) "$RFS" sync "$F/mnt" --timeout "${TIMEOUT}s" >/dev/null 2>&1
            unmount_rfs "$F/mnt"
            helper cmptree --src "$F/src" --dst "$F/dst" --n "$NFILES" | grep -q '"same": true' || bad=$((bad + 1))
            v=$(timeout "$TIMEOUT" "$RFS" verify "$F/src" "$F/dst" 2>&1 | head -3 | tr '\n' ' '); vrc=${PIPESTATUS[0]}
            [ "$vrc" = 0 ] || vbad+="run $r: exit $vrc ${v} "
        done
        meta check "replicafs (files, $variant): target content equal in $((REPS - bad))/$REPS runs; \`replicafs verify\` ${vbad:-exit 0 in every run}"
    done
    rm -rf "$F"
fi

# ==== report ==================================================================
meta load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
meta busy_end "$(busiest)"
meta elapsed "$(awk -v s="$(elapsed "$T_START" "$EPOCHREALTIME")" 'BEGIN { printf "%dm%02ds", s / 60, s % 60 }')"
mkdir -p "$RESULTS_DIR" || die "cannot create '$RESULTS_DIR'"
OUT=$RESULTS_DIR/$DATE.md
"$PY" "$HELPER" report --records "$RECORDS" --meta "$META" >"$OUT" || die "report failed"
cat "$OUT"
log "results written to $OUT"
