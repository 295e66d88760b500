"""Seconds per training epoch of two source trees on the real datasets, alternated in fresh processes.

    git worktree add ../before <commit>
    python benchmarks/train_ab.py --before ../before/src                 # the three datasets, 2 rounds
    python benchmarks/train_ab.py --before ../before/src --datasets osmfish_sscortex --epochs 60 --rounds 3

Each measurement builds ``semst.tl.SemST`` on the dataset with the defaults (semantics off, as in the
peers' table), trains it for ``--epochs`` epochs and reports the median of the per-epoch seconds after
the first five (the median shrugs off the odd slow epoch of a shared machine). The two trees run in
turn, ``before`` first in every round, each in a new interpreter with ``PYTHONPATH`` pointing at the
tree's ``src``; the ratio before / after is taken from the medians over the rounds. It also checks that
the two trees give the same embedding after those epochs (bit for bit), so that a speed-up which
changes the numbers does not pass unnoticed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import DATASETS, append_jsonl, run_in_tree, table  # noqa: E402

CODE = """
import hashlib, statistics, torch
torch.set_num_threads({threads})
sys.path.insert(0, {here!r})
from _common import load
import semst_sc
from semst_sc.tl import SemST
adata, _, _ = load({dataset!r})
model = SemST(adata, fusion="none", device="cpu", seed=0)
model.train({epochs}, progress=False)
sec = model.history["seconds"][5:]
emb = model.get_embedding()
res = {{"median_s": statistics.median(sec), "src": semst_sc.__file__,
        "emb_sha1": hashlib.sha1(emb.tobytes()).hexdigest()}}
"""


def measure(src: str, dataset: str, epochs: int, threads: int) -> dict:
    return run_in_tree(
        src, CODE.format(threads=threads, here=str(HERE), dataset=dataset, epochs=epochs), dataset
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="src folder of the earlier tree (e.g. a git worktree)")
    ap.add_argument("--after", default=str(HERE.parent / "src"), help="src folder of the later tree")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="append the JSON records to this file")
    args = ap.parse_args()
    rows, records = [], []
    for dataset in args.datasets:
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for _ in range(args.rounds):
            for name in ("before", "after"):
                runs[name].append(measure(getattr(args, name), dataset, args.epochs, args.threads))
        before = statistics.median(r["median_s"] for r in runs["before"])
        after = statistics.median(r["median_s"] for r in runs["after"])
        same = {r["emb_sha1"] for r in runs["before"]} == {r["emb_sha1"] for r in runs["after"]}
        row = {
            "dataset": dataset,
            "s/epoch before": before,
            "s/epoch after": after,
            "before / after": before / after,
            "same embedding": "yes" if same else "NO",
            "rounds": args.rounds,
        }
        rows.append(row)
        records.append(
            {
                **row,
                "epochs": args.epochs,
                "threads": args.threads,
                "load1": os.getloadavg()[0],
                "before_src": args.before,
                "after_src": args.after,
                "runs": runs,
            }
        )
        print(json.dumps(records[-1]), flush=True)
    print()
    print(table(rows, list(rows[0])))
    append_jsonl(args.out, records)


if __name__ == "__main__":
    main()
