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

from _common import alternate, append_jsonl, table, tree_arguments  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tree_arguments(ap, before_required=True, epochs=40)
    args = ap.parse_args()
    rows, records = [], []
    for dataset in args.datasets:
        code = CODE.format(threads=args.threads, here=str(HERE), dataset=dataset, epochs=args.epochs)
        runs = alternate({"before": args.before, "after": args.after}, code, dataset, args.rounds)
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
