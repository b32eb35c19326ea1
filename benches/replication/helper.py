#!/usr/bin/env python3
"""Timing helper for benches/replication/peers.sh.

Every subcommand prints one JSON object on stdout (times in seconds, from
time.monotonic()) and never waits longer than its --timeout.

  overwrite  run the dd 4 KiB overwrite, then wait for the target:
             --mode poll  poll DST until its 4 KiB at the offset equal SRC's
             --mode sync  run the given barrier command, then check DST once
             --mode none  only make the change
  cmpat      compare the 4 KiB at an offset in two files (exit 0 when equal)
  files      create N files of SIZE bytes in DIR (open/write/close), then
             --mode none  nothing more
             --mode poll  poll TARGET until it holds all N with the right size
             --mode sync  run the given barrier command
  cmptree    compare the f* files of two flat directories (names + bytes)
  idle       wait until a process has no children
  report     render the markdown results from the JSON-lines records
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

now = time.monotonic


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def pread4k(path, offset, size=4096):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def children(pid):
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    kids += f.read().split()
            except OSError:
                pass
    except OSError:
        return None  # process gone
    return kids


def wait_idle(pid, deadline, sleep):
    """Wait until pid has no child processes; return True when idle."""
    while True:
        kids = children(pid)
        if not kids:
            return True
        if now() > deadline:
            return False
        time.sleep(sleep)


# ---------------------------------------------------------------- overwrite --
def cmd_overwrite(a):
    offset = a.seek * a.bs
    dd = ["dd", "if=/dev/urandom", f"of={a.write_file}", f"bs={a.bs}",
          "count=1", f"seek={a.seek}", "conv=notrunc", "status=none"]
    old = pread4k(a.src, offset, a.bs)
    # rsync's quick check (used by plain rsync and by lsyncd) compares mtimes
    # in whole seconds: an edit in the same second as the previous one, same
    # size, is skipped. Start the change in a later second than the file's
    # current mtime so every method has something to find (untimed).
    waited = 0.0
    if not a.same_second_ok:
        t_w = now()
        limit = int(os.stat(a.src).st_mtime) + 1 + 0.02
        while time.time() < limit and now() - t_w < 3:
            time.sleep(0.005)
        waited = now() - t_w
    t_start = now()
    r = subprocess.run(dd)
    t0 = now()  # dd has returned
    res = {"dd_s": t0 - t_start, "dd_rc": r.returncode, "waited_s": round(waited, 3)}
    if r.returncode != 0:
        res["ok"] = False
        res["error"] = "dd failed"
        out(res)
        return 1
    want = pread4k(a.src, offset, a.bs)
    if want == old:
        res["ok"] = False
        res["error"] = "source bytes did not change"
        out(res)
        return 1
    deadline = t0 + a.timeout
    if a.mode == "none":
        res["ok"] = True
    elif a.mode == "poll":
        polls = 0
        ok = False
        while True:
            polls += 1
            try:
                if pread4k(a.dst, offset, a.bs) == want:
                    ok = True
                    break
            except OSError:
                pass
            if now() > deadline:
                break
            time.sleep(a.poll_sleep)
        t1 = now()
        res.update(visible_s=t1 - t0, polls=polls, ok=ok)
        if not ok:
            res["error"] = f"target did not match within {a.timeout}s"
        if ok and a.idle_pid:
            idle = wait_idle(a.idle_pid, deadline, 0.001)
            res["idle_s"] = now() - t0
            res["idle_ok"] = idle
    elif a.mode == "sync":
        try:
            s = subprocess.run(a.cmd, timeout=a.timeout,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            rc, msg = s.returncode, s.stdout.decode(errors="replace").strip()
        except subprocess.TimeoutExpired:
            rc, msg = "timeout", f"barrier did not return within {a.timeout}s"
        t1 = now()
        same = pread4k(a.dst, offset, a.bs) == want
        res.update(sync_s=t1 - t0, sync_rc=rc, ok=(rc == 0 and same),
                   target_matches_after=same)
        if msg:
            res["sync_output"] = msg[-300:]
    out(res)
    return 0 if res["ok"] else 1


def cmd_cmpat(a):
    offset = a.seek * a.bs
    same = pread4k(a.src, offset, a.bs) == pread4k(a.dst, offset, a.bs)
    out({"same": same})
    return 0 if same else 1


# -------------------------------------------------------------------- files --
def names(n):
    return [f"f{i:05d}" for i in range(n)]


def cmd_files(a):
    n, size = a.n, a.size
    blob = os.urandom(n * size)  # distinct content per file, made before t0
    mv = memoryview(blob)
    nm = names(n)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    d = a.dir
    t0 = now()
    for i, name in enumerate(nm):
        fd = os.open(os.path.join(d, name), flags, 0o644)
        os.write(fd, mv[i * size:(i + 1) * size])
        os.close(fd)
    t1 = now()
    res = {"create_s": t1 - t0, "n": n}
    deadline = t1 + a.timeout
    if a.mode == "none":
        res["ok"] = True
    elif a.mode == "poll":
        remaining = set(nm)
        polls = 0
        while remaining:
            polls += 1
            try:
                present = remaining.intersection(os.listdir(a.target))
            except OSError:
                present = ()
            for name in present:
                try:
                    st = os.stat(os.path.join(a.target, name))
                except OSError:
                    continue
                if st.st_size == size:
                    remaining.discard(name)
            if not remaining or now() > deadline:
                break
            time.sleep(a.poll_sleep)
        t2 = now()
        res.update(done_s=t2 - t0, polls=polls, missing=len(remaining),
                   ok=not remaining)
        if remaining:
            res["error"] = (f"{len(remaining)} files not complete on the "
                            f"target within {a.timeout}s")
        if not remaining and a.idle_pid:
            res["idle_ok"] = wait_idle(a.idle_pid, deadline, 0.001)
            res["idle_s"] = now() - t0
    elif a.mode == "sync":
        try:
            s = subprocess.run(a.cmd, timeout=a.timeout,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            rc, msg = s.returncode, s.stdout.decode(errors="replace").strip()
        except subprocess.TimeoutExpired:
            rc, msg = "timeout", f"barrier did not return within {a.timeout}s"
        t2 = now()
        res.update(done_s=t2 - t0, sync_s=t2 - t1, sync_rc=rc, ok=(rc == 0))
        if msg:
            res["sync_output"] = msg[-300:]
    out(res)
    return 0 if res["ok"] else 1


def cmd_cmptree(a):
    want = set(names(a.n))
    got_src = {x for x in os.listdir(a.src) if x.startswith("f")}
    got_dst = {x for x in os.listdir(a.dst) if x.startswith("f")}
    bad = []
    if got_src != want:
        bad.append(f"source has {len(got_src)} f* files, expected {a.n}")
    missing = want - got_dst
    extra = got_dst - want
    if missing:
        bad.append(f"{len(missing)} missing on target")
    if extra:
        bad.append(f"{len(extra)} unexpected on target")
    differ = 0
    for name in sorted(want & got_dst & got_src):
        with open(os.path.join(a.src, name), "rb") as f1, \
                open(os.path.join(a.dst, name), "rb") as f2:
            if f1.read() != f2.read():
                differ += 1
    if differ:
        bad.append(f"{differ} differ in content")
    out({"same": not bad, "problems": bad})
    return 0 if not bad else 1


def cmd_idle(a):
    t0 = now()
    ok = wait_idle(a.pid, t0 + a.timeout, 0.005)
    out({"idle": ok, "waited_s": now() - t0})
    return 0 if ok else 1


# ------------------------------------------------------------------- report --
def fmt_s(x):
    if x is None:
        return "–"
    if x < 0.0095:
        return f"{x * 1000:.2f} ms"
    if x < 1:
        return f"{x * 1000:.0f} ms"
    return f"{x:.2f} s"


def fmt_b(x):
    return "–" if x is None else f"{int(x):,}"


def cmd_report(a):
    recs = [json.loads(l) for l in open(a.records) if l.strip()]
    meta = {"check": [], "overwrite_note": [], "files_note": []}
    for line in open(a.meta):
        k, _, v = line.rstrip("\n").partition("\t")
        if isinstance(meta.get(k), list):
            meta[k].append(v)
        else:
            meta[k] = v
    for k in ("reps", "size_mib", "files", "seek"):
        meta[k] = int(meta[k])
    for k in ("poll_sleep", "files_poll_sleep"):
        meta[k] = float(meta[k])
    by = {}
    for r in recs:
        by.setdefault(r["key"], []).append(r)

    def vals(key, field):
        return [r[field] for r in by.get(key, [])
                if r.get("ok") and r.get(field) is not None]

    def med(key, field):
        v = vals(key, field)
        return statistics.median(v) if v else None

    def rng(key, field):
        v = vals(key, field)
        if len(v) < 2:
            return ""
        return f" ({fmt_s(min(v))}–{fmt_s(max(v))})"

    def runs(key):
        rs = by.get(key, [])
        good = sum(1 for r in rs if r.get("ok"))
        s = f"{good}/{len(rs)}"
        errs = {r.get("error") for r in rs if not r.get("ok") and r.get("error")}
        if errs:
            s += " — " + "; ".join(sorted(errs))
        return s

    def load(key):
        v = [r["load1"] for r in by.get(key, []) if "load1" in r]
        if not v:
            return "–"
        return f"{min(v):.2f}–{max(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"

    def cell(key, field):
        m = med(key, field)
        return "–" if m is None else f"**{fmt_s(m)}**{rng(key, field)}"

    L = []
    P = L.append
    size_mib = meta["size_mib"]
    nfiles = meta["files"]
    P(f"# Replication peers benchmark — {meta['date']}")
    P("")
    P(f"Command: `{meta['command']}`")
    P("")
    if meta.get("note"):
        P(f"Note: {meta['note']}")
        P("")
    P(f"- host: {meta['host']}, {meta['cpus']} CPUs, {meta['mem']}, kernel {meta['kernel']}, {meta['os']}")
    P(f"- work dir: `{meta['workdir']}` ({meta['fstype']})")
    P(f"- tools: {meta['rsync']}; lsyncd {meta['lsyncd']}; python {meta['python']}")
    P(f"- replicafs: {meta['replicafs']}")
    P(f"- replicafs mount options: `{meta['replicafs_args'] or '(defaults: --consistency fsync)'}`")
    P(f"- repetitions: {meta['reps']} (median shown in bold, min–max in brackets); "
      f"target poll: python3 `pread` of the 4 KiB every {meta['poll_sleep'] * 1000:g} ms "
      f"(open/pread/close each time), file poll: `listdir` + `stat` every {meta['files_poll_sleep'] * 1000:g} ms")
    P(f"- load average at start: {meta['load_start']}; at end: {meta.get('load_end', '?')}; "
      f"run took {meta.get('elapsed', '?')}")
    if meta.get("busy_start"):
        P(f"- busiest processes at start (%CPU over 1 s): {meta['busy_start']}")
    if meta.get("busy_end"):
        P(f"- busiest processes at end: {meta['busy_end']}")
    P(f"- the 'load1' column is the 1-minute load average sampled before each repetition "
      f"(2 cores: anything near 2 means the other work on the VM competed for CPU)")
    P("")

    off_blocks = meta["seek"]
    dd = (f"dd if=/dev/urandom of=FILE bs=4096 count=1 seek={off_blocks} conv=notrunc")
    if "overwrite" in meta["sections"]:
        P(f"## 4 KiB overwrite in the middle of a {size_mib} MiB file, until identical on the target")
        P("")
        P(f"The change: `{dd}` (offset {off_blocks * 4096:,}), run from python3 via subprocess; "
          f"times start when dd returns. SRC and DST hold identical copies before each change; page cache warm.")
        P("")
        P("| method | command | time until the target has the 4 KiB | runs ok | bytes sent (rsync --stats) | load1 |")
        P("|---|---|---|---|---|---|")
        rows = [
            ("rsync_whole", "rsync, local (whole-file default)",
             "`rsync -a --inplace --stats SRC/ DST/` (time of the command)", "rsync_s"),
            ("rsync_delta", "rsync `--no-whole-file`",
             "`rsync -a --inplace --no-whole-file --stats SRC/ DST/`", "rsync_s"),
            ("lsyncd_cfg", "lsyncd, `delay=0`, `inplace=true, whole_file=false`",
             "`lsyncd -nodaemon lsyncd-cfg.lua`; lsyncd 2.2.3 passes nothing for `whole_file=false`, so its rsync runs whole-file",
             "visible_s"),
            ("lsyncd_delta", "lsyncd, `delay=0`, inplace + `_extra={\"--no-whole-file\"}`",
             "`lsyncd -nodaemon lsyncd-delta.lua`", "visible_s"),
            ("replicafs_poll", "replicafs (dd through the mount)",
             "`replicafs mount SRC MNT --target DST --daemon`; dd of=MNT/…; poll DST", "visible_s"),
            ("replicafs_sync", "replicafs, `replicafs sync MNT` after dd",
             "dd of=MNT/…; `replicafs sync MNT` (time from dd's return to sync's return)", "sync_s"),
        ]
        for key, label, cmd, field in rows:
            if key not in by:
                continue
            b = med(key, "bytes_sent")
            P(f"| {label} | {cmd} | {cell(key, field)} | {runs(key)} | {fmt_b(b)} | {load(key)} |")
        extra = []
        for key in ("lsyncd_cfg", "lsyncd_delta"):
            m = med(key, "idle_s")
            if m is not None:
                extra.append(f"{key}: lsyncd's rsync exited {fmt_s(m)} after dd (median)")
        for key in ("lsyncd_cfg", "lsyncd_delta", "replicafs_poll"):
            m2 = med(key, "polls")
            if m2 is not None:
                extra.append(f"{key}: {m2:g} target polls (median)")
        ones = sum(1 for r in by.get("replicafs_poll", []) if r.get("polls") == 1)
        if ones:
            extra.append(f"replicafs_poll: in {ones}/{len(by['replicafs_poll'])} runs the bytes were already on the "
                         "target at the first poll, so that time is the poll's own cost (an upper bound)")
        m = med("replicafs_poll", "dd_s")
        if m is not None:
            extra.append(f"dd through the mount took {fmt_s(m)} (median, incl. process start)")
        extra += meta["overwrite_note"]
        if extra:
            P("")
            for e in extra:
                P(f"- {e}")
        P("")

    cfgs = [c for c in meta.get("lsyncd_config", "").split(",") if c and os.path.exists(c)]
    if cfgs:
        P("lsyncd configuration (as written by the script; the files runs use the `_extra` variant):")
        P("")
        P("```lua")
        with open(cfgs[-1]) as f:
            P(f.read().rstrip())
        P("```")
        P("")

    if "files" in meta["sections"]:
        P(f"## {nfiles:,} × 4 KiB files created until all are on the target")
        P("")
        P("Files are created by one python3 loop (`os.open(O_CREAT|O_EXCL)`, `os.write` 4 KiB, `os.close`) "
          "in an empty directory; 'until on target' counts from the first create.")
        P("")
        P("| method | command | creating them | until all on the target | runs ok | load1 |")
        P("|---|---|---|---|---|---|")
        rows = [
            ("files_native", "native (plain dir, no replication)", "python3 loop into DIR", None),
            ("files_lsyncd", "lsyncd `delay=0`", "`lsyncd -nodaemon lsyncd-files-N.lua` (fresh dirs and lsyncd per run); create in SRC; poll DST (listdir + size 4096)", "done_s"),
            ("files_replicafs_sync", "replicafs, until `replicafs sync MNT` returns", "fresh mount per run; create in MNT; `replicafs sync MNT`", "done_s"),
            ("files_replicafs_poll", "replicafs, until DST's listing is complete", "fresh mount per run; create in MNT; poll DST (listdir + size 4096)", "done_s"),
        ]
        for key, label, cmd, field in rows:
            if key not in by:
                continue
            done = cell(key, field) if field else "–"
            P(f"| {label} | {cmd} | {cell(key, 'create_s')} | {done} | {runs(key)} | {load(key)} |")
        extra = []
        m = med("files_lsyncd", "idle_s")
        if m is not None:
            extra.append(f"lsyncd: its last rsync exited {fmt_s(m)} after the first create (median)")
        m = med("files_replicafs_sync", "sync_s")
        if m is not None:
            extra.append(f"replicafs: `replicafs sync MNT` itself took {fmt_s(m)} (median)")
        extra += meta["files_note"]
        if extra:
            P("")
            for e in extra:
                P(f"- {e}")
        P("")

    if meta["check"]:
        P("## Checks after each method (untimed)")
        P("")
        for c in meta["check"]:
            P(f"- {c}")
        P("")
    fails = [r for r in recs if not r.get("ok")]
    if fails:
        P("## Failed repetitions")
        P("")
        for r in fails:
            P(f"- `{json.dumps(r)}`")
        P("")
    P("<details><summary>Raw per-repetition records (JSON lines; times in seconds)</summary>")
    P("")
    P("```")
    for r in recs:
        P(json.dumps(r))
    P("```")
    P("")
    P("</details>")
    sys.stdout.write("\n".join(L) + "\n")
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)

    o = sub.add_parser("overwrite")
    o.add_argument("--write-file", required=True, help="file dd writes (SRC or MNT path)")
    o.add_argument("--src", required=True, help="source file read for the expected bytes")
    o.add_argument("--dst", required=True, help="target file to poll")
    o.add_argument("--seek", type=int, required=True, help="offset in blocks of --bs")
    o.add_argument("--bs", type=int, default=4096)
    o.add_argument("--mode", choices=["poll", "sync", "none"], required=True)
    o.add_argument("--timeout", type=float, default=120)
    o.add_argument("--poll-sleep", type=float, default=0.0002)
    o.add_argument("--idle-pid", type=int, default=0)
    o.add_argument("--same-second-ok", action="store_true",
                   help="do not wait for the next wall-clock second before dd")
    o.add_argument("cmd", nargs="*")
    o.set_defaults(fn=cmd_overwrite)

    c = sub.add_parser("cmpat")
    c.add_argument("--src", required=True)
    c.add_argument("--dst", required=True)
    c.add_argument("--seek", type=int, required=True)
    c.add_argument("--bs", type=int, default=4096)
    c.set_defaults(fn=cmd_cmpat)

    f = sub.add_parser("files")
    f.add_argument("--dir", required=True)
    f.add_argument("--n", type=int, required=True)
    f.add_argument("--size", type=int, default=4096)
    f.add_argument("--mode", choices=["poll", "sync", "none"], required=True)
    f.add_argument("--target", default="")
    f.add_argument("--timeout", type=float, default=300)
    f.add_argument("--poll-sleep", type=float, default=0.002)
    f.add_argument("--idle-pid", type=int, default=0)
    f.add_argument("cmd", nargs="*")
    f.set_defaults(fn=cmd_files)

    t = sub.add_parser("cmptree")
    t.add_argument("--src", required=True)
    t.add_argument("--dst", required=True)
    t.add_argument("--n", type=int, required=True)
    t.set_defaults(fn=cmd_cmptree)

    i = sub.add_parser("idle")
    i.add_argument("--pid", type=int, required=True)
    i.add_argument("--timeout", type=float, default=60)
    i.set_defaults(fn=cmd_idle)

    r = sub.add_parser("report")
    r.add_argument("--records", required=True)
    r.add_argument("--meta", required=True)
    r.set_defaults(fn=cmd_report)

    a = p.parse_args()
    sys.exit(a.fn(a))


if __name__ == "__main__":
    main()
