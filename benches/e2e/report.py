#!/usr/bin/env python3
"""Helpers for benches/e2e/run.sh (python3 standard library only).

  report.py fio FILE.json read|write bw_mbs|iops
      Print one number from a fio --output-format=json file: bandwidth in
      MB/s (10^6 bytes/s, fio's bw_bytes, which for a write job with
      end_fsync=1 includes the final fsync) or IOPS.

  report.py json FILE KEY
      Print KEY from a one-object JSON file (smallfiles.py output).

  report.py table CONFIGS.tsv RAW.tsv SIZE RAND_SECS FILES
      Print the markdown results: medians (rows = workloads, columns =
      configurations), then every repetition's value.
      CONFIGS.tsv: name<TAB>label<TAB>status   (status: ok | skipped: why | failed: why)
      RAW.tsv:     name<TAB>rep<TAB>workload<TAB>value-or-FAIL:why
"""
import json
import statistics
import sys

WORKLOADS = [
    # key, label template, unit, thousands separators
    ("seqwrite", "seq write {size} bs=1M, MB/s", False),
    ("seqread_cold", "seq read cold, MB/s", False),
    ("seqread_warm", "seq read warm, MB/s", False),
    ("randwrite", "4k random write {secs} s, IOPS", True),
    ("smallfiles", "create+stat+unlink {files} files, files/s", True),
]


def load_json_lenient(path):
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        text = f.read()
    start = text.find("{")
    if start < 0:
        raise ValueError(f"{path}: no JSON object in file")
    return json.loads(text[start:])


def cmd_fio(path, ddir, metric):
    j = load_json_lenient(path)
    jobs = j.get("jobs") or []
    if not jobs:
        raise ValueError(f"{path}: no jobs in fio output")
    job = jobs[0]
    if job.get("error"):
        raise ValueError(f"{path}: fio job error {job['error']}")
    d = job[ddir]
    if d.get("io_bytes", 0) <= 0:
        raise ValueError(f"{path}: fio did no {ddir} I/O")
    if metric == "bw_mbs":
        print(f"{d['bw_bytes'] / 1e6:.1f}")
    elif metric == "iops":
        print(f"{d['iops']:.0f}")
    else:
        raise ValueError(f"unknown metric {metric}")


def cmd_json(path, key):
    print(load_json_lenient(path)[key])


def fmt(v, sep):
    if v >= 100 or sep:
        return f"{v:,.0f}" if sep else f"{v:.0f}"
    return f"{v:.1f}"


def cmd_table(configs_path, raw_path, size, secs, files):
    configs = []
    with open(configs_path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            name, label, status = (line.split("\t") + ["", ""])[:3]
            configs.append((name, label, status))
    raw = {}
    try:
        with open(raw_path) as f:
            for line in f:
                line = line.rstrip("\n")
                if not line:
                    continue
                name, rep, wl, val = line.split("\t", 3)
                raw.setdefault((name, wl), []).append((int(rep), val))
    except FileNotFoundError:
        pass

    def cell_values(name, wl):
        vals, fails = [], []
        for rep, val in sorted(raw.get((name, wl), [])):
            try:
                vals.append(float(val))
            except ValueError:
                fails.append(val)
        return vals, fails

    header = "| workload | " + " | ".join(c[1] for c in configs) + " |"
    rule = "|---|" + "---|" * len(configs)

    out = ["### Medians", "", header, rule]
    for wl, tmpl, sep in WORKLOADS:
        label = tmpl.format(size=size, secs=secs, files=files)
        cells = []
        for name, _label, status in configs:
            if status.startswith("skipped"):
                cells.append("skipped")
                continue
            vals, fails = cell_values(name, wl)
            if vals:
                c = fmt(statistics.median(vals), sep)
                if fails:
                    c += f" ({len(fails)} failed)"
                cells.append(c)
            elif fails:
                cells.append("FAILED")
            else:
                cells.append("—")
        out.append(f"| {label} | " + " | ".join(cells) + " |")

    notes = [(label, status) for _n, label, status in configs if status != "ok"]
    if notes:
        out.append("")
        for label, status in notes:
            out.append(f"- **{label}**: {status}")

    out += ["", "### Every repetition (in run order)", "", header, rule]
    for wl, tmpl, sep in WORKLOADS:
        label = tmpl.format(size=size, secs=secs, files=files)
        cells = []
        for name, _label, status in configs:
            if status.startswith("skipped"):
                cells.append("skipped")
                continue
            items = []
            for _rep, val in sorted(raw.get((name, wl), [])):
                try:
                    items.append(fmt(float(val), sep))
                except ValueError:
                    items.append("FAIL")
            cells.append(" / ".join(items) if items else "—")
        out.append(f"| {label} | " + " | ".join(cells) + " |")

    failures = []
    for name, _label, _status in configs:
        for wl, _tmpl, _sep in WORKLOADS:
            for rep, val in sorted(raw.get((name, wl), [])):
                if val.startswith("FAIL"):
                    failures.append(f"- {name} rep {rep} {wl}: {val}")
    if failures:
        out += ["", "### Failures", ""] + failures
    print("\n".join(out))


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    try:
        if cmd == "fio" and len(args) == 3:
            cmd_fio(*args)
        elif cmd == "json" and len(args) == 2:
            cmd_json(*args)
        elif cmd == "table" and len(args) == 5:
            cmd_table(*args)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (OSError, ValueError, KeyError) as e:
        print(f"report.py {cmd}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
