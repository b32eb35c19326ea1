#!/usr/bin/env bash
# The replicafs demo: mounts demo/source at demo/mnt with the local
# directory target demo/replica, shows a change going through the mount,
# and leaves the mount up for you to try. Stop it with the command it prints.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ] && ! command -v fusermount3 >/dev/null; then
    echo "demo: FUSE needs root or fusermount3 (apt install fuse3)" >&2
    exit 2
fi

echo "==> building (cargo build --release)"
cargo build --release --quiet
bin=target/release/replicafs

# The demo's SOURCE starts as a copy of demo/example; demo/source, mnt,
# replica and .state are yours to play with (and git-ignored).
mkdir -p demo/source demo/mnt
cp -rn demo/example/. demo/source/

if grep -q " $(realpath demo/mnt) " /proc/self/mountinfo 2>/dev/null; then
    echo "==> demo/mnt is still mounted from an earlier run: unmounting it"
    "$bin" unmount demo/mnt
fi

echo "==> $bin mount demo/source demo/mnt --target demo/replica --create-target --daemon"
"$bin" mount demo/source demo/mnt --target demo/replica --create-target --state-dir demo/.state --daemon

echo "==> ls -l demo/mnt"
ls -l demo/mnt
echo "==> writing demo/mnt/hello.txt through the mount"
echo "hello from the mount, $(date)" > demo/mnt/hello.txt
echo "==> demo/source/hello.txt now holds:"
cat demo/source/hello.txt
echo "==> $bin sync demo/mnt   (waits until the replica has every change)"
"$bin" sync demo/mnt
echo "==> demo/replica/hello.txt:"
cat demo/replica/hello.txt
echo "==> $bin status demo/mnt"
"$bin" status demo/mnt
echo "==> $bin verify demo/source demo/replica"
"$bin" verify demo/source demo/replica && echo "identical"
echo
echo "The mount is live at demo/mnt; its log is demo/.state/replicafs.log."
echo "Stop it with:  $bin unmount demo/mnt"
