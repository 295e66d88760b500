"""Run methods x datasets x seeds, each in its own process, and write the comparison tables.

    python run_all.py                                  # every method, the three datasets, seeds 0 1
    python run_all.py --methods graphst --datasets dlpfc_151673 --seeds 0
    python run_all.py --scaling --sizes 10000 50000 --methods banksy_l0.8 cellcharter semst --seeds 0
    python run_all.py --table-only                     # rebuild the tables from results/peers.jsonl

Each run is ``run_peer.py`` started with the method's own interpreter (the peers' venv for the peers, the
project's venv for semst-sc), under a wall-clock limit and a resident-memory guard: the process tree is
sampled every half second and killed when it passes ``--mem-limit-gb`` (recorded as ``oom``) or the time
limit (recorded as ``timeout``). Every run appends one JSON line to ``results/peers.jsonl`` (nothing is
deleted); the tables are rebuilt from that file: the latest record of each (method, dataset, seed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = HERE / "results"
DATASETS = ["dlpfc_151673", "starmap_mvc", "osmfish_sscortex"]
METHODS = ["semst", "semst_hops2", "graphst", "spagcn", "banksy_l0.2", "banksy_l0.8", "cellcharter"]
LABEL = {
    "semst": "semst-sc",
    "semst_hops2": "semst-sc, smooth_hops=2",
    "graphst": "GraphST",
    "spagcn": "SpaGCN",
    "banksy_l0.2": "BANKSY λ=0.2",
    "banksy_l0.8": "BANKSY λ=0.8",
    "cellcharter": "CellCharter (PCA)",
}


def default_python(method: str) -> str:
    if method.startswith("semst"):
        return os.environ.get("SEMST_PYTHON", str(REPO / ".venv" / "bin" / "python"))
    venv = os.environ.get("PEERS_VENV", "/work/peers-venv")
    return str(Path(venv) / "bin" / "python")


def _tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and all its descendants, from /proc (MiB)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            pid, ppid = int(entry), int(fields[1])
            rss[pid] = int(fields[21])  # pages
            children.setdefault(ppid, []).append(pid)
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


_TERMINATED: list[int] = []


def _on_sigterm(signum, _frame) -> None:
    """Record the run in progress as terminated (its child is killed) instead of vanishing silently."""
    _TERMINATED.append(signum)


def run_one(method, dataset, seed, *, python, timeout_s, mem_limit_mb, run_id, log_dir, semst_kwargs):
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{run_id}_{method}_{dataset}_s{seed}.log"
    cmd = [
        python,
        str(HERE / "run_peer.py"),
        "--method",
        method,
        "--dataset",
        dataset,
        "--seed",
        str(seed),
        "--run-id",
        run_id,
    ]
    if method.startswith("semst"):
        cmd += ["--semst-kwargs", semst_kwargs]
    load0 = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=str(HERE), start_new_session=True
        )
    status, peak_tree, ru = None, 0.0, None
    while True:
        if _TERMINATED and status is None:
            status = "terminated (SIGTERM to the harness)"
        pid, wstatus, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(wstatus)
            break
        peak_tree = max(peak_tree, _tree_rss_mb(proc.pid))
        elapsed = time.perf_counter() - t0
        if status is None and peak_tree > mem_limit_mb:
            status = "oom"
        elif status is None and elapsed > timeout_s:
            status = "timeout"
        if status is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    harness_s = round(time.perf_counter() - t0, 2)
    rec = None
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("RESULT "):
            rec = json.loads(line[len("RESULT ") :])
    if rec is None:
        tail = log.read_text(errors="replace")[-3000:]
        rec = {
            "method": method,
            "dataset": dataset,
            "seed": seed,
            "run_id": run_id,
            "status": status or f"crashed (exit {proc.returncode})",
            "error": tail,
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }
        if status == "timeout":
            rec["error"] = f"killed after {timeout_s} s wall-clock limit"
        elif status == "oom":
            rec["error"] = f"killed when its resident memory passed {mem_limit_mb / 1024:.1f} GiB"
    rec["harness_s"] = harness_s
    rec["peak_tree_mb"] = round(peak_tree, 1)
    rec["wait4_maxrss_mb"] = round(ru.ru_maxrss / 1024.0, 1) if ru is not None else None
    rec["loadavg_start"] = load0
    rec["python"] = python
    rec["log"] = str(log)
    return rec


# ------------------------------------------------------------------------------------------------ tables
def load_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            out.append(json.loads(line))
    return out


def latest(records: list[dict]) -> dict[tuple, dict]:
    best: dict[tuple, dict] = {}
    for r in records:
        best[(r["method"], r["dataset"], r["seed"])] = r  # file order: later wins
    return best


def _fmt(x, nd=3):
    return "–" if x is None else f"{x:.{nd}f}"


def _summ(recs: list[dict]) -> dict:
    ok = [r for r in recs if r.get("status") == "ok"]
    bad = sorted({r.get("status", "?") for r in recs if r.get("status") != "ok"})
    out = {"seeds": sorted(r["seed"] for r in ok), "bad": bad, "n": len(recs)}
    for k in ("ari", "nmi", "acc", "f1", "wall_s", "peak_rss_mb", "peak_tree_mb"):
        vals = [r[k] for r in ok if r.get(k) is not None]
        out[k] = statistics.fmean(vals) if vals else None
    aris = [r["ari"] for r in ok]
    out["ari_sd"] = statistics.pstdev(aris) if len(aris) > 1 else None
    out["load"] = statistics.fmean([r["loadavg"][0] for r in ok]) if ok else None
    return out


def accuracy_table(records: list[dict], methods: list[str], datasets: list[str]) -> str:
    best = latest(records)
    lines = [
        "| method | dataset | seeds | ARI | NMI | ACC | F1 | wall s | peak MB | time / semst-sc | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ds in datasets:
        ref = _summ([r for (m, d, _), r in best.items() if m == "semst" and d == ds])
        for m in methods:
            recs = [r for (mm, d, _), r in best.items() if mm == m and d == ds]
            if not recs:
                continue
            s = _summ(recs)
            if s["ari"] is None:
                err = "; ".join(s["bad"])
                why = next((r.get("error", "") for r in recs if r.get("error")), "")
                why = why.strip().splitlines()[-1][:120].replace("|", "/") if why.strip() else ""
                seeds = ",".join(str(r["seed"]) for r in recs)
                lines.append(f"| {LABEL.get(m, m)} | {ds} | {seeds} | {err}: {why} | | | | | | | |")
                continue
            ari = _fmt(s["ari"]) + (f" ± {s['ari_sd']:.3f}" if s["ari_sd"] is not None else "")
            ratio = (
                f"{s['wall_s'] / ref['wall_s']:.2f}"
                if ref.get("wall_s") and s["wall_s"] is not None
                else "n/a"
            )
            seeds = ",".join(map(str, s["seeds"])) + (
                f" ({'; '.join(s['bad'])} on others)" if s["bad"] else ""
            )
            lines.append(
                f"| {LABEL.get(m, m)} | {ds} | {seeds} | {ari} | {_fmt(s['nmi'])} | {_fmt(s['acc'])} | "
                f"{_fmt(s['f1'])} | {_fmt(s['wall_s'], 1)} | {_fmt(s['peak_rss_mb'], 0)} | {ratio} | "
                f"{_fmt(s['load'], 1)} |"
            )
    return "\n".join(lines)


def scaling_table(records: list[dict], methods: list[str]) -> str:
    best = latest(records)
    sizes = sorted({int(d.split("_")[1]) for (_, d, _) in best if d.startswith("synth_")})
    lines = [
        "| method | spots | status | wall s | peak MB (process) | peak MB (tree) | time / semst-sc | ARI | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        ds = f"synth_{n}"
        ref = _summ([r for (m, d, _), r in best.items() if m == "semst" and d == ds])
        for m in methods:
            recs = [r for (mm, d, _), r in best.items() if mm == m and d == ds]
            if not recs:
                continue
            s = _summ(recs)
            if s["wall_s"] is None:
                r0 = recs[0]
                peak = r0.get("peak_tree_mb") or r0.get("wait4_maxrss_mb")
                lines.append(
                    f"| {LABEL.get(m, m)} | {n} | {'; '.join(s['bad'])} | > {r0.get('harness_s', '?')} | "
                    f"{_fmt(r0.get('wait4_maxrss_mb'), 0)} | {_fmt(peak, 0)} | | | {_fmt(r0['loadavg'][0], 1)} |"
                )
                continue
            ratio = f"{s['wall_s'] / ref['wall_s']:.2f}" if ref.get("wall_s") else "n/a"
            lines.append(
                f"| {LABEL.get(m, m)} | {n} | ok | {_fmt(s['wall_s'], 1)} | {_fmt(s['peak_rss_mb'], 0)} | "
                f"{_fmt(s['peak_tree_mb'], 0)} | {ratio} | {_fmt(s['ari'])} | {_fmt(s['load'], 1)} |"
            )
    return "\n".join(lines)


def _processors(records: list[dict]) -> str:
    """' Processor: ...' naming the processors the records ran on (recorded since 2026-11-26)."""
    seen = sorted(
        {
            f"{h['processor']} ({h.get('simd') or '?'})"
            for r in records
            if (h := r.get("host") or {}).get("processor")
        }
    )
    if not seen:
        return ""
    missing = sum(1 for r in records if not (r.get("host") or {}).get("processor"))
    tail = f"; {missing} earlier records do not name theirs" if missing else ""
    return f" Processor: {', '.join(seen)}{tail}."


def write_tables(out_jsonl: Path) -> str:
    records = load_records(out_jsonl)
    acc = accuracy_table(records, METHODS, DATASETS)
    scal = scaling_table(records, METHODS)
    # results/peers.jsonl -> results/table.md and scaling.md; any other file -> <stem>_table.md and
    # <stem>_scaling.md beside it, so a run kept apart (another machine, say) never overwrites the main tables
    main = out_jsonl.resolve() == (RESULTS / "peers.jsonl").resolve()
    if main:
        table_md, scaling_md = RESULTS / "table.md", RESULTS / "scaling.md"
    else:
        table_md = out_jsonl.with_name(out_jsonl.stem + "_table.md")
        scaling_md = out_jsonl.with_name(out_jsonl.stem + "_scaling.md")
    table_md.parent.mkdir(parents=True, exist_ok=True)
    head = (
        "Label-free, true number of domains given to every method; mean over the seeds listed (ARI ± "
        "population sd). wall s: the method alone (preprocessing, training, clustering), mean over seeds; "
        "peak MB: the run's process peak resident memory (getrusage), including imports and data. "
        "Machine: 2 cores, shared with other work (load = 1-minute load average during the run). "
        f"Built from {out_jsonl.name} (latest record per method, dataset, seed)."
        f"{_processors(records)}\n\n"
    )
    table_md.write_text(head + acc + "\n")
    has_scaling = any(str(r.get("dataset", "")).startswith("synth_") for r in records)
    if main or has_scaling:
        scaling_md.write_text(
            "Synthetic tissues (synth.py: square lattice, 7 domains, 2000 genes, NB counts). Failed runs "
            "show the time and memory at which they were stopped.\n\n" + scal + "\n"
        )
    return acc + "\n\n" + scal


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--datasets", nargs="+", default=None, help=f"default: {' '.join(DATASETS)}")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--scaling", action="store_true", help="run on synthetic tissues of --sizes spots")
    ap.add_argument("--sizes", nargs="+", type=int, default=[10000, 50000, 100000])
    ap.add_argument(
        "--timeout", type=float, default=None, help="seconds per run (default 2400; 1200 scaling)"
    )
    ap.add_argument("--mem-limit-gb", type=float, default=14.0)
    ap.add_argument("--python", action="append", default=[], metavar="METHOD=PATH")
    ap.add_argument("--semst-kwargs", default="{}", help="JSON dict passed to semst.tl.domains")
    ap.add_argument("--out", default=str(RESULTS / "peers.jsonl"))
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.table_only:
        print(write_tables(out))
        return 0
    pythons = {m: default_python(m) for m in METHODS}
    for item in args.python:
        m, _, p = item.partition("=")
        if m not in METHODS or not p:
            ap.error(f"--python expects METHOD=PATH with METHOD in {METHODS}, got {item!r}")
        pythons[m] = p
    if args.scaling:
        datasets = [f"synth_{n}" for n in args.sizes]
        timeout = args.timeout or 1200.0
        sys.path.insert(0, str(HERE))
        import synth

        for n in args.sizes:  # generate once, before any timed run
            print(f"synthetic tissue {n}: {synth.tissue_path(n)}", flush=True)
    else:
        datasets = args.datasets or DATASETS
        timeout = args.timeout or 2400.0
    signal.signal(signal.SIGTERM, _on_sigterm)
    run_id = time.strftime("%Y%m%d-%H%M%S")
    log_dir = Path(os.environ.get("PEERS_CACHE", str(Path.home() / ".cache" / "semst-peers"))) / "logs"
    out.parent.mkdir(parents=True, exist_ok=True)
    for ds in datasets:
        for seed in args.seeds:
            for m in args.methods:
                rec = run_one(
                    m,
                    ds,
                    seed,
                    python=pythons[m],
                    timeout_s=timeout,
                    mem_limit_mb=args.mem_limit_gb * 1024,
                    run_id=run_id,
                    log_dir=log_dir,
                    semst_kwargs=args.semst_kwargs,
                )
                with open(out, "a") as fh:
                    fh.write(json.dumps(rec, default=str) + "\n")
                if _TERMINATED:
                    print("terminated by SIGTERM: stopping after recording the run in progress", flush=True)
                    return 143
                print(
                    f"[{run_id}] {m:12s} {ds:18s} seed {seed}: {rec.get('status')} "
                    f"ARI {_fmt(rec.get('ari'))} wall {rec.get('wall_s', rec.get('harness_s'))} s "
                    f"peak {rec.get('peak_rss_mb', rec.get('peak_tree_mb'))} MB "
                    f"load {rec.get('loadavg', ['?'])[0]}",
                    flush=True,
                )
    print(write_tables(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
