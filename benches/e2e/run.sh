#!/usr/bin/env bash
# End-to-end benchmark harness for replicafs and its peers.
#
# One command measures, through each filesystem configuration in the same run:
#   1. fio sequential write SIZE bs=1M (psync, end_fsync=1)         -> MB/s
#   2. fio sequential read of that file, cold (page cache dropped)  -> MB/s
#   3. the same read again at once, warm                           -> MB/s
#   4. fio random 4 KiB writes over that file, time-based (psync)   -> IOPS
#   5. create+close, stat, unlink of N empty files (smallfiles.py)  -> files/s
# Configurations: native, bindfs, bindfs-big_writes, mergerfs-off,
# mergerfs-auto-full, replicafs. See --help and docs/benchmarks.md.
set -u -o pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
ORIG_CMD=$(printf '%q ' "$0" "$@"); ORIG_CMD=${ORIG_CMD% }

ALL_CONFIGS=(native bindfs bindfs-big_writes mergerfs-off mergerfs-auto-full replicafs)

# ---- settings: env first, flags override ------------------------------------
ONLY=${BENCH_ONLY:-}
REPS=${BENCH_REPS:-3}
SIZE=${BENCH_SIZE:-1G}
RAND_SECS=${BENCH_RAND_SECS:-20}
NFILES=${BENCH_FILES:-10000}
WORKDIR=${BENCH_WORKDIR:-/var/tmp/replicafs-bench}
RESULTS_DIR=${BENCH_RESULTS_DIR:-$SCRIPT_DIR/results}
STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-1800}
INSTALL=${BENCH_INSTALL:-1}
KEEP=${BENCH_KEEP:-0}
NOTE=${BENCH_NOTE:-}
REPLICAFS_BIN=${REPLICAFS_BIN:-$REPO_ROOT/target/release/replicafs}
REPLICAFS_ARGS=${REPLICAFS_ARGS:-}

usage() {
    cat <<EOF
Usage: benches/e2e/run.sh [options]

Runs fio + a small-file workload through native and FUSE configurations and
prints a markdown table (rows = workloads, columns = configurations, medians of
the repetitions); also writes it to benches/e2e/results/<date>.md.

Options (environment variable in brackets):
  --only LIST          comma-separated configurations [BENCH_ONLY]; default all:
                         ${ALL_CONFIGS[*]}
                       a name that is a prefix selects the family:
                       'mergerfs' = mergerfs-off,mergerfs-auto-full;
                       'bindfs' = plain bindfs only (exact name wins)
  --reps N             repetitions per configuration, median reported [BENCH_REPS, 3]
  --size SIZE          sequential file size, fio syntax (1G = 1 GiB) [BENCH_SIZE, 1G]
  --rand-secs N        random-write duration in seconds [BENCH_RAND_SECS, 20]
  --files N            small-file count [BENCH_FILES, 10000]
  --workdir DIR        scratch directory on a real disk filesystem, not tmpfs
                       [BENCH_WORKDIR, /var/tmp/replicafs-bench]
  --results-dir DIR    where the dated results file goes [BENCH_RESULTS_DIR,
                       benches/e2e/results]
  --step-timeout SECS  kill a single step after this long [BENCH_STEP_TIMEOUT, 1800]
  --note TEXT          free text recorded in the results file [BENCH_NOTE]
  --replicafs-bin PATH replicafs binary [REPLICAFS_BIN, target/release/replicafs]
  --replicafs-args STR extra arguments for 'replicafs mount', word-split
                       [REPLICAFS_ARGS], e.g. '--consistency async'
  --no-install         never apt-get install missing tools [BENCH_INSTALL=0]
  --keep               keep the scratch data of this run [BENCH_KEEP=1]
  --list               list the configurations and exit
  -h, --help           this text

Must run as root for cold reads (drop_caches) and to install tools/mount.
EOF
}

die() { echo "run.sh: error: $*" >&2; exit 2; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
loud() {
    local bar="################################################################"
    printf '\n%s\n### %s\n%s\n\n' "$bar" "$*" "$bar" >&2
}

while [ $# -gt 0 ]; do
    case $1 in
        --only) ONLY=${2:?--only needs a value}; shift 2 ;;
        --only=*) ONLY=${1#*=}; shift ;;
        --reps) REPS=${2:?}; shift 2 ;;
        --reps=*) REPS=${1#*=}; shift ;;
        --size) SIZE=${2:?}; shift 2 ;;
        --size=*) SIZE=${1#*=}; shift ;;
        --rand-secs) RAND_SECS=${2:?}; shift 2 ;;
        --rand-secs=*) RAND_SECS=${1#*=}; shift ;;
        --files) NFILES=${2:?}; shift 2 ;;
        --files=*) NFILES=${1#*=}; shift ;;
        --workdir) WORKDIR=${2:?}; shift 2 ;;
        --workdir=*) WORKDIR=${1#*=}; shift ;;
        --results-dir) RESULTS_DIR=${2:?}; shift 2 ;;
        --results-dir=*) RESULTS_DIR=${1#*=}; shift ;;
        --step-timeout) STEP_TIMEOUT=${2:?}; shift 2 ;;
        --step-timeout=*) STEP_TIMEOUT=${1#*=}; shift ;;
        --note) NOTE=${2?}; shift 2 ;;
        --note=*) NOTE=${1#*=}; shift ;;
        --replicafs-bin) REPLICAFS_BIN=${2:?}; shift 2 ;;
        --replicafs-bin=*) REPLICAFS_BIN=${1#*=}; shift ;;
        --replicafs-args) REPLICAFS_ARGS=${2?}; shift 2 ;;
        --replicafs-args=*) REPLICAFS_ARGS=${1#*=}; shift ;;
        --no-install) INSTALL=0; shift ;;
        --keep) KEEP=1; shift ;;
        --list) printf '%s\n' "${ALL_CONFIGS[@]}"; exit 0 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

is_uint() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; }
is_uint "$REPS" || die "--reps must be a positive integer, got '$REPS'"
is_uint "$RAND_SECS" || die "--rand-secs must be a positive integer, got '$RAND_SECS'"
is_uint "$NFILES" || die "--files must be a positive integer, got '$NFILES'"
is_uint "$STEP_TIMEOUT" || die "--step-timeout must be a positive integer, got '$STEP_TIMEOUT'"
[[ $SIZE =~ ^[0-9]+[KkMmGg]?$ ]] || die "--size must look like 256M or 1G (fio units, 1024-based), got '$SIZE'"
[[ $WORKDIR = /* ]] || WORKDIR=$(pwd)/$WORKDIR

size_bytes() {
    local n=${1%[KkMmGg]} u=${1##*[0-9]}
    case $u in
        K|k) echo $((n * 1024)) ;; M|m) echo $((n * 1024 * 1024)) ;;
        G|g) echo $((n * 1024 * 1024 * 1024)) ;; *) echo "$n" ;;
    esac
}
SIZE_BYTES=$(size_bytes "$SIZE")
[ "$SIZE_BYTES" -ge $((4 * 1024 * 1024)) ] || die "--size must be at least 4M, got '$SIZE'"

cfg_label() {
    case $1 in
        native) echo "native" ;;
        bindfs) echo "bindfs" ;;
        bindfs-big_writes) echo "bindfs -o big_writes" ;;
        mergerfs-off) echo "mergerfs cache.files=off" ;;
        mergerfs-auto-full) echo "mergerfs cache.files=auto-full" ;;
        replicafs) echo "replicafs" ;;
    esac
}

# ---- configuration selection -------------------------------------------------
SELECTED=()
if [ -z "$ONLY" ]; then
    SELECTED=("${ALL_CONFIGS[@]}")
else
    IFS=',' read -r -a wanted <<<"$ONLY"
    for w in "${wanted[@]}"; do
        w=${w// /}
        [ -n "$w" ] || continue
        matched=0
        for c in "${ALL_CONFIGS[@]}"; do
            if [ "$c" = "$w" ]; then matched=1; fi
        done
        if [ $matched = 0 ]; then
            for c in "${ALL_CONFIGS[@]}"; do
                case $c in "$w"-*) matched=1 ;; esac
            done
        fi
        [ $matched = 1 ] || die "unknown configuration '$w' in --only (known: ${ALL_CONFIGS[*]})"
    done
    # keep the canonical order
    for c in "${ALL_CONFIGS[@]}"; do
        for w in "${wanted[@]}"; do
            w=${w// /}
            exact=0
            for c2 in "${ALL_CONFIGS[@]}"; do [ "$c2" = "$w" ] && exact=1; done
            if [ "$c" = "$w" ] || { [ $exact = 0 ] && [[ $c == "$w"-* ]]; }; then
                SELECTED+=("$c"); break
            fi
        done
    done
fi
[ ${#SELECTED[@]} -gt 0 ] || die "no configuration selected"

wants() { local c; for c in "${SELECTED[@]}"; do [[ $c == "$1"* ]] && return 0; done; return 1; }

IS_ROOT=0; [ "$(id -u)" = 0 ] && IS_ROOT=1

# ---- tools ---------------------------------------------------------------------
declare -A SKIP=()   # config -> reason

command -v python3 >/dev/null || die "python3 is required"
command -v timeout >/dev/null || die "timeout (coreutils) is required"
command -v findmnt >/dev/null || die "findmnt (util-linux) is required"

need_pkgs=()
command -v fio >/dev/null || need_pkgs+=(fio)
if wants bindfs && ! command -v bindfs >/dev/null; then need_pkgs+=(bindfs); fi
if wants mergerfs && ! command -v mergerfs >/dev/null; then need_pkgs+=(mergerfs); fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    if [ $IS_ROOT = 1 ] && [ "$INSTALL" = 1 ] && command -v apt-get >/dev/null; then
        log "installing missing tools: ${need_pkgs[*]} (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -q "${need_pkgs[@]}" >&2; then
            apt-get update -q >&2 || true
            apt-get install -y -q "${need_pkgs[@]}" >&2 || log "apt-get install ${need_pkgs[*]} failed"
        fi
    else
        loud "missing tools: ${need_pkgs[*]} -- install them with: sudo apt-get install ${need_pkgs[*]}"
    fi
fi
command -v fio >/dev/null || die "fio is required (apt-get install fio)"
for c in "${SELECTED[@]}"; do
    case $c in
        bindfs*) command -v bindfs >/dev/null || SKIP[$c]="bindfs not installed (apt-get install bindfs)" ;;
        mergerfs*) command -v mergerfs >/dev/null || SKIP[$c]="mergerfs not installed (apt-get install mergerfs)" ;;
        replicafs)
            if [ ! -x "$REPLICAFS_BIN" ]; then
                SKIP[$c]="binary $REPLICAFS_BIN does not exist (build it: cargo build --release)"
            elif ! timeout 20 "$REPLICAFS_BIN" --help >/dev/null 2>&1; then
                SKIP[$c]="'$REPLICAFS_BIN --help' failed"
            fi ;;
    esac
    if [ "$c" != native ] && [ -z "${SKIP[$c]:-}" ] && [ ! -c /dev/fuse ]; then
        SKIP[$c]="/dev/fuse is missing (no FUSE in this kernel/container)"
    fi
done
for c in "${SELECTED[@]}"; do
    [ -n "${SKIP[$c]:-}" ] && loud "SKIPPING $c: ${SKIP[$c]}"
done

if [ $IS_ROOT = 0 ]; then
    loud "not root: cold reads cannot drop the page cache (reported as n/a); FUSE mounts with allow_other need user_allow_other in /etc/fuse.conf"
fi

# ---- work directory -------------------------------------------------------------
mkdir -p "$WORKDIR" || die "cannot create work directory $WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd -P)
WD_FSTYPE=$(findmnt -n -o FSTYPE -T "$WORKDIR" | head -1)
WD_STATFS=$(stat -f -c %T "$WORKDIR")
WD_SOURCE=$(findmnt -n -o SOURCE -T "$WORKDIR" | head -1)
WD_TARGET=$(findmnt -n -o TARGET -T "$WORKDIR" | head -1)
WD_OPTS=$(findmnt -n -o OPTIONS -T "$WORKDIR" | head -1)
case "$WD_FSTYPE/$WD_STATFS" in
    tmpfs/*|*/tmpfs|ramfs/*|*/ramfs)
        die "work directory $WORKDIR is on $WD_FSTYPE (memory, not a disk): the numbers would be meaningless; pass --workdir DIR on a disk filesystem (ext4, xfs, btrfs)" ;;
    fuse*|*/fuse*)
        die "work directory $WORKDIR is itself on a FUSE filesystem ($WD_FSTYPE); pass --workdir DIR on a disk filesystem" ;;
esac
case $WD_FSTYPE in
    ext4|ext3|ext2|xfs|btrfs|f2fs|zfs|bcachefs) ;;
    *) loud "work directory $WORKDIR is on '$WD_FSTYPE' (not a plain disk filesystem); continuing, but say so when quoting the numbers" ;;
esac

# One run per work directory at a time (the stale-mount sweep below would
# otherwise unmount a concurrent run's mounts).
exec 9>"$WORKDIR/.lock"
flock -n 9 || die "another benches/e2e/run.sh is using $WORKDIR (lock $WORKDIR/.lock); wait for it or pass --workdir"

# Stale mounts from an earlier run that was killed hard: the work directory
# belongs to this harness, so unmount anything mounted below it.
while read -r m; do
    [ -n "$m" ] || continue
    log "stale mount from an earlier run: unmounting $m"
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
done < <(findmnt -rn -o TARGET | awk -v p="$WORKDIR/" 'index($0, p) == 1' | sort -r)

avail=$(df --output=avail -B1 "$WORKDIR" | tail -1 | tr -d ' ')
need=$((SIZE_BYTES * 2 + 1024 * 1024 * 1024))
[ "$avail" -ge "$need" ] || die "work directory $WORKDIR has $((avail / 1000000)) MB free; need about $((need / 1000000)) MB (2 x size + 1 GiB)"

STAMP=$(date +%Y-%m-%d_%H%M%S)
RUN_DIR=$WORKDIR/run-$STAMP-$$
LOG_DIR=$WORKDIR/logs-$STAMP-$$
mkdir -p "$RUN_DIR" "$LOG_DIR" || die "cannot create $RUN_DIR"
RAW=$LOG_DIR/raw.tsv
CONFIGS_TSV=$LOG_DIR/configs.tsv
: >"$RAW"; : >"$CONFIGS_TSV"

# ---- cleanup: always unmount ------------------------------------------------------
# A signal is handled while a step's output is redirected to its log file;
# keep the real stdout/stderr on fds 3/4 so that cleanup messages are seen.
exec 3>&1 4>&2
ACTIVE_MOUNTS=()    # "config|mountpoint"
CHILD_PID=
CLEANED=0

is_mounted() { findmnt -n --mountpoint "$1" >/dev/null 2>&1; }

do_unmount() {   # config mountpoint
    local cfg=$1 mnt=$2 i
    is_mounted "$mnt" || return 0
    if [ "$cfg" = replicafs ] && [ -x "$REPLICAFS_BIN" ]; then
        timeout -k 5 300 "$REPLICAFS_BIN" unmount "$mnt" >>"$LOG_DIR/replicafs-unmount.log" 2>&1 \
            || log "replicafs unmount $mnt failed (see $LOG_DIR/replicafs-unmount.log); falling back to umount"
    fi
    for i in 1 2 3 4 5; do
        is_mounted "$mnt" || return 0
        umount "$mnt" 2>/dev/null || fusermount -u "$mnt" 2>/dev/null || fusermount3 -u "$mnt" 2>/dev/null || true
        is_mounted "$mnt" || return 0
        sleep 1
    done
    log "umount $mnt keeps failing; detaching it lazily (umount -l)"
    umount -l "$mnt" 2>/dev/null || fusermount -uz "$mnt" 2>/dev/null || true
    ! is_mounted "$mnt"
}

forget_mount() {
    local keep=() e
    for e in "${ACTIVE_MOUNTS[@]}"; do [ "$e" = "$1" ] || keep+=("$e"); done
    ACTIVE_MOUNTS=("${keep[@]}")
}

safe_rm() {   # remove a scratch tree only if nothing is mounted below it
    local d=$1
    [ -e "$d" ] || return 0
    if findmnt -rn -o TARGET | awk -v p="$d/" 'index($0 "/", p) == 1 { f = 1 } END { exit !f }'; then
        log "not removing $d: something is still mounted below it"
        return 1
    fi
    rm -rf --one-file-system "$d"
}

cleanup() {
    [ $CLEANED = 1 ] && return
    CLEANED=1
    exec 1>&3 2>&4
    if [ -n "$CHILD_PID" ]; then
        kill -TERM "$CHILD_PID" 2>/dev/null
        wait "$CHILD_PID" 2>/dev/null
        CHILD_PID=
    fi
    local e i
    for ((i = ${#ACTIVE_MOUNTS[@]} - 1; i >= 0; i--)); do
        e=${ACTIVE_MOUNTS[$i]}
        log "cleanup: unmounting ${e#*|}"
        do_unmount "${e%%|*}" "${e#*|}" || log "cleanup: ${e#*|} is STILL MOUNTED; unmount it by hand"
    done
    ACTIVE_MOUNTS=()
    if [ "$KEEP" = 1 ]; then
        log "keeping scratch data in $RUN_DIR"
    else
        safe_rm "$RUN_DIR"
    fi
}

on_signal() {
    trap - INT TERM HUP
    exec 1>&3 2>&4
    loud "interrupted by SIG$1: unmounting and cleaning up"
    cleanup
    exit 130
}
trap cleanup EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

# Run a command with a time limit, in the background so that a signal to this
# script is handled at once (bash defers traps while a foreground child runs).
run_bounded() {   # LIMIT_SECS cmd...
    local limit=$1 rc=0
    shift
    timeout -k 15 "$limit" "$@" 3>&- 4>&- 9>&- &
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=
    return $rc
}

drop_caches() {
    sync
    if [ $IS_ROOT = 1 ]; then
        echo 3 >/proc/sys/vm/drop_caches
    fi
}

# ---- mounting -----------------------------------------------------------------------
BINDFS_OPTS_BIG=(-o big_writes)
MERGERFS_COMMON="allow_other,category.create=ff,minfreespace=0"
MERGERFS_OPTS_OFF="$MERGERFS_COMMON,cache.files=off,fsname=bench-mergerfs-off"
MERGERFS_OPTS_AUTO="$MERGERFS_COMMON,cache.files=auto-full,fsname=bench-mergerfs-auto-full"

mount_cmd() {   # config src mnt replica state -> prints the command (for the record)
    local cfg=$1 src=$2 mnt=$3 rep=$4 st=$5
    case $cfg in
        bindfs) echo "bindfs $src $mnt" ;;
        bindfs-big_writes) echo "bindfs ${BINDFS_OPTS_BIG[*]} $src $mnt" ;;
        mergerfs-off) echo "mergerfs -o $MERGERFS_OPTS_OFF $src $mnt" ;;
        mergerfs-auto-full) echo "mergerfs -o $MERGERFS_OPTS_AUTO $src $mnt" ;;
        replicafs) echo "$REPLICAFS_BIN mount $src $mnt --target $rep --state-dir $st --daemon -o allow_other${REPLICAFS_ARGS:+ $REPLICAFS_ARGS}" ;;
    esac
}

declare -A MOUNT_CMDS=()

do_mount() {   # config src mnt replica state
    local cfg=$1 src=$2 mnt=$3 rep=$4 st=$5 i mlog=$LOG_DIR/$1-mount.log
    if is_mounted "$mnt"; then log "$mnt is already a mount point"; return 1; fi
    if [ -n "$(ls -A "$mnt")" ]; then log "$mnt is not empty"; return 1; fi
    MOUNT_CMDS[$cfg]=$(mount_cmd "$@")
    log "mount: ${MOUNT_CMDS[$cfg]}"
    ACTIVE_MOUNTS+=("$cfg|$mnt")
    local rc=0
    case $cfg in
        bindfs) run_bounded 60 bindfs "$src" "$mnt" >>"$mlog" 2>&1 || rc=$? ;;
        bindfs-big_writes) run_bounded 60 bindfs "${BINDFS_OPTS_BIG[@]}" "$src" "$mnt" >>"$mlog" 2>&1 || rc=$? ;;
        mergerfs-off) run_bounded 60 mergerfs -o "$MERGERFS_OPTS_OFF" "$src" "$mnt" >>"$mlog" 2>&1 || rc=$? ;;
        mergerfs-auto-full) run_bounded 60 mergerfs -o "$MERGERFS_OPTS_AUTO" "$src" "$mnt" >>"$mlog" 2>&1 || rc=$? ;;
        replicafs)
            # shellcheck disable=SC2086  # REPLICAFS_ARGS is word-split on purpose
            run_bounded 300 "$REPLICAFS_BIN" mount "$src" "$mnt" --target "$rep" --state-dir "$st" \
                --daemon -o allow_other $REPLICAFS_ARGS >>"$mlog" 2>&1 || rc=$? ;;
    esac
    if [ $rc != 0 ]; then
        log "mount command for $cfg exited $rc; last lines of $mlog:"; tail -n 20 "$mlog" >&2
        return 1
    fi
    for i in $(seq 1 100); do
        is_mounted "$mnt" && break
        sleep 0.1
    done
    if ! is_mounted "$mnt"; then
        log "$cfg: $mnt is not a mount point 10 s after the mount command returned; $mlog:"; tail -n 20 "$mlog" >&2
        return 1
    fi
    # mergerfs 2.33 exits 0 and mounts even with an invalid option value
    # ("* ERROR: invalid value - cache.files=bogus"), so check what it runs with.
    case $cfg in
        mergerfs-*)
            local want=${cfg#mergerfs-} got
            got=$(python3 -c 'import os,sys; print(os.getxattr(sys.argv[1], "user.mergerfs.cache.files").decode())' "$mnt/.mergerfs" 2>/dev/null)
            if [ "$got" != "$want" ]; then
                log "$cfg: mergerfs reports cache.files='$got', expected '$want'"; return 1
            fi ;;
    esac
    return 0
}

# ---- workloads -------------------------------------------------------------------------
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW"; }

FIO_COMMON=(--ioengine=psync --numjobs=1 --output-format=json)

fio_step() {   # config rep workload out.json fio-args...
    local cfg=$1 rep=$2 wl=$3 out=$4 limit=$STEP_TIMEOUT
    shift 4
    [ "$wl" = randwrite ] && limit=$((RAND_SECS + STEP_TIMEOUT))
    local flog=$LOG_DIR/$cfg-rep$rep-$wl.log
    if ! run_bounded "$limit" fio "${FIO_COMMON[@]}" --output="$out" "$@" >"$flog" 2>&1; then
        log "$cfg rep $rep $wl: fio failed; last lines of $flog:"; tail -n 15 "$flog" "$out" >&2 2>/dev/null
        return 1
    fi
}

run_rep() {   # config rep -> 0 ok, 1 mount failure
    local cfg=$1 rep=$2
    local base=$RUN_DIR/$cfg/rep$rep
    local src=$base/src mnt=$base/mnt repl=$base/replica st=$base/state dir v
    mkdir -p "$src" "$mnt" "$repl" "$st"
    if [ "$cfg" = native ]; then
        dir=$src
    else
        if ! do_mount "$cfg" "$src" "$mnt" "$repl" "$st"; then
            local wl
            for wl in seqwrite seqread_cold seqread_warm randwrite smallfiles; do
                record "$cfg" "$rep" "$wl" "FAIL: mount failed"
            done
            do_unmount "$cfg" "$mnt"; forget_mount "$cfg|$mnt"
            return 1
        fi
        dir=$mnt
    fi
    local f=$dir/seq.dat j=$LOG_DIR/$cfg-rep$rep
    alive() {
        if [ "$cfg" != native ] && ! is_mounted "$mnt"; then return 1; fi
        stat "$dir" >/dev/null 2>&1
    }

    # 1. sequential write
    drop_caches
    log "$cfg rep $rep: seq write $SIZE"
    local wrote=0
    if fio_step "$cfg" "$rep" seqwrite "$j-seqwrite.json" --name=seqwrite --filename="$f" \
        --rw=write --bs=1M --size="$SIZE" --end_fsync=1 \
        && v=$(python3 "$SCRIPT_DIR/report.py" fio "$j-seqwrite.json" write bw_mbs); then
        record "$cfg" "$rep" seqwrite "$v"; wrote=1; log "  $v MB/s"
    else
        record "$cfg" "$rep" seqwrite "FAIL: fio seq write"
    fi
    if [ $wrote = 1 ] && [ "$(stat -c %s "$f" 2>/dev/null)" != "$SIZE_BYTES" ]; then
        log "$cfg rep $rep: $f has size $(stat -c %s "$f" 2>/dev/null), expected $SIZE_BYTES"
        wrote=0
    fi

    # 2./3. sequential read, cold then warm
    if [ $wrote = 1 ] && alive; then
        drop_caches
        log "$cfg rep $rep: seq read cold"
        if fio_step "$cfg" "$rep" seqread_cold "$j-seqread_cold.json" --name=seqread_cold \
            --filename="$f" --rw=read --bs=1M --size="$SIZE" --invalidate=0 \
            && v=$(python3 "$SCRIPT_DIR/report.py" fio "$j-seqread_cold.json" read bw_mbs); then
            [ $IS_ROOT = 1 ] || v="FAIL: not root, page cache not dropped"
            record "$cfg" "$rep" seqread_cold "$v"; log "  $v MB/s"
        else
            record "$cfg" "$rep" seqread_cold "FAIL: fio cold read"
        fi
        log "$cfg rep $rep: seq read warm"
        if fio_step "$cfg" "$rep" seqread_warm "$j-seqread_warm.json" --name=seqread_warm \
            --filename="$f" --rw=read --bs=1M --size="$SIZE" --invalidate=0 \
            && v=$(python3 "$SCRIPT_DIR/report.py" fio "$j-seqread_warm.json" read bw_mbs); then
            record "$cfg" "$rep" seqread_warm "$v"; log "  $v MB/s"
        else
            record "$cfg" "$rep" seqread_warm "FAIL: fio warm read"
        fi
    else
        record "$cfg" "$rep" seqread_cold "FAIL: no file (seq write failed or mount died)"
        record "$cfg" "$rep" seqread_warm "FAIL: no file (seq write failed or mount died)"
    fi

    # 4. random 4 KiB writes over the (preallocated) file
    if [ $wrote = 1 ] && alive; then
        sync
        log "$cfg rep $rep: 4k random write ${RAND_SECS}s"
        if fio_step "$cfg" "$rep" randwrite "$j-randwrite.json" --name=randwrite --filename="$f" \
            --rw=randwrite --bs=4k --size="$SIZE" --time_based --runtime="$RAND_SECS" \
            && v=$(python3 "$SCRIPT_DIR/report.py" fio "$j-randwrite.json" write iops); then
            record "$cfg" "$rep" randwrite "$v"; log "  $v IOPS"
        else
            record "$cfg" "$rep" randwrite "FAIL: fio random write"
        fi
    else
        record "$cfg" "$rep" randwrite "FAIL: no file (seq write failed or mount died)"
    fi

    # 5. small files
    if alive; then
        sync
        log "$cfg rep $rep: create+stat+unlink $NFILES files"
        if run_bounded "$STEP_TIMEOUT" python3 "$SCRIPT_DIR/smallfiles.py" "$dir/small" "$NFILES" \
                >"$j-smallfiles.json" 2>"$LOG_DIR/$cfg-rep$rep-smallfiles.log" \
            && v=$(python3 "$SCRIPT_DIR/report.py" json "$j-smallfiles.json" files_per_s); then
            v=$(printf '%.0f' "$v"); record "$cfg" "$rep" smallfiles "$v"; log "  $v files/s"
        else
            log "$cfg rep $rep: smallfiles failed:"; tail -n 15 "$LOG_DIR/$cfg-rep$rep-smallfiles.log" >&2
            record "$cfg" "$rep" smallfiles "FAIL: smallfiles.py"
        fi
    else
        record "$cfg" "$rep" smallfiles "FAIL: mount died"
    fi

    if [ "$cfg" != native ]; then
        if do_unmount "$cfg" "$mnt"; then
            forget_mount "$cfg|$mnt"
        else
            log "$cfg: could not unmount $mnt"
            return 1
        fi
    fi
    # keep the daemon's own log (replicafs writes STATE_DIR/replicafs.log)
    local lf
    for lf in "$st"/*.log; do
        [ -f "$lf" ] && cp "$lf" "$LOG_DIR/$cfg-rep$rep-state-$(basename "$lf")"
    done
    if [ "$KEEP" != 1 ]; then
        safe_rm "$base"
        # ext4 here is mounted with 'discard': let the freed blocks settle
        sync; sleep 2
    fi
    return 0
}

# ---- run -------------------------------------------------------------------------------
versions() {
    echo "- fio: $(fio --version 2>&1 | head -1)"
    if wants bindfs && command -v bindfs >/dev/null; then
        echo "- bindfs: $(bindfs --version 2>&1 | head -1) ($(bindfs --fuse-version 2>&1 | sed -n 's/.*linked version /libfuse /p' | head -1))"
    fi
    if wants mergerfs && command -v mergerfs >/dev/null; then
        echo "- mergerfs: $(mergerfs --version 2>&1 | head -1)"
    fi
    if wants replicafs && [ -x "$REPLICAFS_BIN" ]; then
        local rv
        rv=$(timeout 10 "$REPLICAFS_BIN" --version 2>/dev/null | head -1)
        echo "- replicafs: ${rv:-unknown version} ($REPLICAFS_BIN, built $(date -r "$REPLICAFS_BIN" '+%Y-%m-%d %H:%M:%S'); git $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo none))"
    fi
    echo "- python3: $(python3 --version 2>&1)"
}

T0=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "work dir $RUN_DIR ($WD_FSTYPE on $WD_SOURCE); logs in $LOG_DIR"
log "configurations: ${SELECTED[*]}; reps=$REPS size=$SIZE rand=${RAND_SECS}s files=$NFILES"

declare -A CFG_STATUS=()
declare -A CFG_LOAD=()
for cfg in "${SELECTED[@]}"; do
    if [ -n "${SKIP[$cfg]:-}" ]; then CFG_STATUS[$cfg]="skipped: ${SKIP[$cfg]}"; continue; fi
    CFG_STATUS[$cfg]=ok
    CFG_LOAD[$cfg]=$(cut -d' ' -f1 /proc/loadavg)
    for rep in $(seq 1 "$REPS"); do
        log "=== $cfg: repetition $rep/$REPS (load average $(cut -d' ' -f1-3 /proc/loadavg)) ==="
        if ! run_rep "$cfg" "$rep"; then
            CFG_STATUS[$cfg]="failed: mount/unmount failed in repetition $rep (see $LOG_DIR/$cfg-mount.log)"
            loud "$cfg FAILED in repetition $rep; skipping its remaining repetitions"
            break
        fi
    done
    CFG_LOAD[$cfg]="${CFG_LOAD[$cfg]} → $(cut -d' ' -f1 /proc/loadavg)"
done
T1=$(date +%s)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

for cfg in "${SELECTED[@]}"; do
    printf '%s\t%s\t%s\n' "$cfg" "$(cfg_label "$cfg")" "${CFG_STATUS[$cfg]}" >>"$CONFIGS_TSV"
done

TABLES=$(python3 "$SCRIPT_DIR/report.py" table "$CONFIGS_TSV" "$RAW" "$SIZE" "$RAND_SECS" "$NFILES") \
    || die "report.py failed; raw numbers are in $RAW"
ELAPSED=$((T1 - T0))

mkdir -p "$RESULTS_DIR" || die "cannot create $RESULTS_DIR"
RESULT_FILE=$RESULTS_DIR/$STAMP.md
ENV_USED=""
for v in $(compgen -e | grep -E '^(BENCH_[A-Z_]+|REPLICAFS_BIN|REPLICAFS_ARGS)$' | sort); do
    ENV_USED+="$v=$(printf '%q' "${!v}") "
done
{
    echo "# replicafs e2e benchmark, $(date '+%Y-%m-%d %H:%M:%S %Z')"
    echo
    echo "Command (from $(pwd)):"
    echo
    echo '```'
    echo "$ENV_USED$ORIG_CMD"
    echo '```'
    echo
    echo "Settings: reps=$REPS (median reported), size=$SIZE ($SIZE_BYTES bytes), random write ${RAND_SECS} s, $NFILES small files. MB = 10^6 bytes."
    echo
    echo "## Machine"
    echo
    echo "- host: $(hostname), kernel $(uname -r) ($(uname -m)), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM"
    echo "- os: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
    echo "- work dir: $WORKDIR on $WD_FSTYPE ($WD_SOURCE mounted at $WD_TARGET, options $WD_OPTS)"
    echo "- fuse max_pages_limit: $(cat /proc/sys/fs/fuse/max_pages_limit 2>/dev/null || echo n/a)"
    echo "- load average (1/5/15 min): start $LOAD_START, end $LOAD_END"
    echo "- wall time of this run: $((ELAPSED / 60)) min $((ELAPSED % 60)) s"
    [ -n "$NOTE" ] && echo "- note: $NOTE"
    echo
    echo "## Tools"
    echo
    versions
    echo
    echo "## Mount commands"
    echo
    for cfg in "${SELECTED[@]}"; do
        case $cfg in
            native) echo "- native: plain directory on the work dir filesystem" ;;
            *) if [ -n "${MOUNT_CMDS[$cfg]:-}" ]; then echo "- $cfg: \`${MOUNT_CMDS[$cfg]}\`"
               else echo "- $cfg: not mounted (${CFG_STATUS[$cfg]})"; fi ;;
        esac
    done
    echo
    echo "## Workloads (per configuration and repetition, on a fresh source directory)"
    echo
    echo "DIR is the mount point (the source directory itself for native); fio common options: \`${FIO_COMMON[*]}\`."
    echo
    echo "1. sync; drop caches; \`fio --name=seqwrite --filename=DIR/seq.dat --rw=write --bs=1M --size=$SIZE --end_fsync=1\` → write bw_bytes / 10^6"
    echo "2. sync; drop caches; \`fio --name=seqread_cold --filename=DIR/seq.dat --rw=read --bs=1M --size=$SIZE --invalidate=0\` → read bw"
    echo "3. at once, the same read again (\`--name=seqread_warm\`) → read bw"
    echo "4. sync; \`fio --name=randwrite --filename=DIR/seq.dat --rw=randwrite --bs=4k --size=$SIZE --time_based --runtime=$RAND_SECS\` → write IOPS"
    echo "5. sync; \`python3 benches/e2e/smallfiles.py DIR/small $NFILES\` → files / (create+close, stat, unlink time)"
    echo
    echo "## Results"
    echo
    echo "$TABLES"
    echo
    echo "1-minute load average before → after each configuration:"
    for cfg in "${SELECTED[@]}"; do
        [ -n "${CFG_LOAD[$cfg]:-}" ] && echo "- $cfg: ${CFG_LOAD[$cfg]}"
    done
    echo
    echo "Raw fio/smallfiles output: $LOG_DIR"
} >"$RESULT_FILE"

echo
echo "$TABLES"
echo
log "total wall time: $((ELAPSED / 60)) min $((ELAPSED % 60)) s"
log "results written to $RESULT_FILE"
