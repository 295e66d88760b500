"""Execute tutorial notebooks in place, with the Python that runs this script as the kernel.

Usage::

    python tutorials/run.py tutorials/fsm_in_your_model.ipynb [more.ipynb ...] [--timeout 1800]

Each notebook runs from its own folder (so relative paths in it resolve against ``tutorials/``) and is
written back with its outputs. The kernel is ``python3`` as ipykernel installs it; jupyter_client starts
it with this script's interpreter (``sys.executable``), so run this with the project's virtual
environment, e.g. ``.venv/bin/python tutorials/run.py ...`` (the Makefile does). Cells are not timed in
the saved file, so a re-run only changes what the code prints and draws.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def _as_shown(text: str) -> str:
    """What a terminal shows of a stream: on each line, only what follows the last carriage return."""
    lines = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    return "\n".join(line.rstrip() for line in lines)


def _clean_streams(nb) -> None:
    """Keep streams as they were last shown; drop those left blank (progress bars that cleared themselves)."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.outputs:
            if out.output_type == "stream":
                out.text = _as_shown(out.text)
                if not out.text.strip():
                    continue
            outputs.append(out)
        cell.outputs = outputs


def execute(path: Path, *, timeout: int) -> float:
    """Run every cell of ``path`` in a fresh kernel and save it with its outputs; returns seconds taken."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # a non-interactive backend would hide the figures of the notebook
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNELSPEC["name"],
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,
        coalesce_streams=True,
    )
    start = time.perf_counter()
    client.execute(env=env)
    seconds = time.perf_counter() - start
    _clean_streams(nb)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="+", type=Path, help="notebooks to execute in place")
    p.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default 1800)")
    a = p.parse_args(argv)
    missing = [str(nb) for nb in a.notebooks if not nb.is_file()]
    if missing:
        p.error(f"no such notebook: {', '.join(missing)}")
    for nb in a.notebooks:
        print(f"executing {nb} with {sys.executable} ...", flush=True)
        seconds = execute(nb.resolve(), timeout=a.timeout)
        print(f"    done in {seconds:.0f} s, outputs written to {nb}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
