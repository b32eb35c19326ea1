#!/usr/bin/env python3
"""Small-file metadata workload for the replicafs end-to-end harness.

In DIR (created if missing): create + close N empty files, then stat each,
then unlink each. Prints one JSON object:
  {"files": N, "seconds": total, "files_per_s": N/total,
   "create_s": ..., "stat_s": ..., "unlink_s": ...}
The rate is N / (time of the whole create+stat+unlink sequence); the python
start-up and the mkdir of DIR are not timed.
"""
import json
import os
import sys
import time


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: smallfiles.py DIR COUNT", file=sys.stderr)
        return 2
    d = sys.argv[1]
    n = int(sys.argv[2])
    if n <= 0:
        print(f"smallfiles.py: COUNT must be > 0, got {n}", file=sys.stderr)
        return 2
    os.makedirs(d, exist_ok=True)
    if os.listdir(d):
        print(f"smallfiles.py: {d} is not empty", file=sys.stderr)
        return 2
    names = [os.path.join(d, f"f{i:07d}") for i in range(n)]
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)

    t0 = time.perf_counter()
    for p in names:
        os.close(os.open(p, flags, 0o644))
    t1 = time.perf_counter()
    for p in names:
        os.stat(p)
    t2 = time.perf_counter()
    for p in names:
        os.unlink(p)
    t3 = time.perf_counter()

    total = t3 - t0
    print(json.dumps({
        "files": n,
        "seconds": total,
        "files_per_s": n / total if total > 0 else float("inf"),
        "create_s": t1 - t0,
        "stat_s": t2 - t1,
        "unlink_s": t3 - t2,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
