#!/usr/bin/env python3
"""THREADS threads overwrite random 4 KiB blocks of one 64 MiB file opened
with O_DIRECT for SECS seconds; prints the writes per second.

    benches/odirect/parallel.py FILE THREADS SECS
"""
import mmap
import os
import random
import sys
import threading
import time

path, threads, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
size = 64 << 20
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT)
if os.fstat(fd).st_size < size:
    # Anonymous mappings are page-aligned, as O_DIRECT wants.
    buf = mmap.mmap(-1, 1 << 20)
    buf.write(b"x" * (1 << 20))
    for off in range(0, size, 1 << 20):
        os.pwrite(fd, buf, off)
counts = [0] * threads
stop = time.monotonic() + secs


def work(i):
    block = mmap.mmap(-1, 4096)
    block.write(os.urandom(4096))
    rng = random.Random(i)
    n = 0
    while time.monotonic() < stop:
        os.pwrite(fd, block, rng.randrange(size // 4096) * 4096)
        n += 1
    counts[i] = n


workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
print(f"{threads} threads: {sum(counts) / secs:.0f} 4k O_DIRECT writes/s")
