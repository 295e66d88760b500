"""The fixed cost of a ``semst.tl.domains`` call in a fresh process, for one or two source trees.

    python benchmarks/startup.py                                        # this tree, the three datasets
    git worktree add ../before <commit>
    python benchmarks/startup.py --before ../before/src --rounds 3      # the two trees alternated

A call with ``--epochs`` epochs (default 1) in a new interpreter, as the command line or a first notebook
cell makes it: the seconds of ``import semst_sc`` plus the call (``wall_s``), the call's own
``uns['semst']['runtime_s']`` and ``train_s``, and whether the call imported torch's compiler
(``torch._dynamo``, ``torch._inductor``), which costs over a second the first time. The data are read
and torch imported before the clock starts, as in the peers' harness. Each tree runs with ``PYTHONPATH``
pointing at its ``src``; with ``--before`` the two run in turn, ``before`` first in every round, and the
table gives the median of each over the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import alternate, append_jsonl, table, tree_arguments  # noqa: E402

CODE = """
import time, torch
torch.set_num_threads({threads})
sys.path.insert(0, {here!r})
from _common import load, pop_truth
adata, truth_key, n_domains = load({dataset!r})
pop_truth(adata, truth_key)  # never read here
t0 = time.perf_counter()
import semst_sc
semst_sc.tl.domains(adata, n_domains=n_domains, n_epochs={epochs}, seed=0, progress=False)
wall = time.perf_counter() - t0
run = adata.uns["semst"]
res = {{"wall_s": wall, "runtime_s": float(run["runtime_s"]), "train_s": float(run["train_s"]),
        "compiler_imported": sorted(m for m in ("torch._dynamo", "torch._inductor") if m in sys.modules),
        "src": semst_sc.__file__}}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tree_arguments(ap, before_required=False, epochs=1)
    args = ap.parse_args()
    trees = {"after": args.after} if args.before is None else {"before": args.before, "after": args.after}
    rows, records = [], []
    for dataset in args.datasets:
        code = CODE.format(threads=args.threads, here=str(HERE), dataset=dataset, epochs=args.epochs)
        runs = alternate(trees, code, dataset, args.rounds)
        for name, got in runs.items():
            row = {"dataset": dataset, "tree": name, "src": trees[name]}
            for key in ("wall_s", "runtime_s", "train_s"):
                row[key] = statistics.median(r[key] for r in got)
            row["compiler imported"] = (
                ", ".join(sorted({m for r in got for m in r["compiler_imported"]})) or "no"
            )
            rows.append(row)
            records.append({**row, "epochs": args.epochs, "threads": args.threads, "runs": got})
        print(f"{dataset}: done", file=sys.stderr)
    print(table(rows, ["dataset", "tree", "wall_s", "runtime_s", "train_s", "compiler imported"]))
    if args.out:
        append_jsonl(args.out, records)


if __name__ == "__main__":
    main()
