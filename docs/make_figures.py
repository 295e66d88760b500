"""Draw the figures of the docs that are not made by the package itself.

Run from the repository root (it writes ``docs/_static/method.png``; with ``--quickstart`` also
``docs/_static/quickstart.png``, the README's picture, made by running the README's quick start)::

    python docs/make_figures.py [--quickstart]

The figure is committed; the docs build does not run this script.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).resolve().parent / "_static"

# colours of the three kinds of step (same hues as the package's palette)
DATA = "#e8eef6"  # inputs and intermediate arrays
SEM = "#fbe3c8"  # the language-model branch
NET = "#d6eadf"  # trainable network parts
OUTC = "#f4d6dc"  # outputs and losses
EDGE = "#3a3a3a"


def box(ax, x, y, w, h, text, color, *, size=9.5, bold=False):
    """A rounded box centred at (x, y)."""
    patch = FancyBboxPatch(
        (x - w / 2, y - h / 2),
        w,
        h,
        boxstyle="round,pad=0.02,rounding_size=0.12",
        fc=color,
        ec=EDGE,
        lw=1.0,
    )
    ax.add_patch(patch)
    ax.text(
        x, y, text, ha="center", va="center", fontsize=size, weight="bold" if bold else "normal", wrap=True
    )
    return patch


def arrow(ax, a, b, *, text=None, rad=0.0, offset=(0.0, 0.12)):
    ax.add_patch(
        FancyArrowPatch(
            a, b, arrowstyle="-|>", mutation_scale=11, lw=1.1, color=EDGE, connectionstyle=f"arc3,rad={rad}"
        )
    )
    if text:
        ax.text((a[0] + b[0]) / 2 + offset[0], (a[1] + b[1]) / 2 + offset[1], text, ha="center", fontsize=8)


def method_figure(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(14, 6.2))
    ax.set_xlim(0, 17.4)
    ax.set_ylim(0, 7.6)
    ax.axis("off")

    # inputs
    box(ax, 1.3, 6.5, 2.2, 0.8, "gene symbols\n(var_names)", DATA)
    box(ax, 1.3, 3.9, 2.2, 0.8, "raw counts X\nspots × genes", DATA)
    box(ax, 1.3, 1.5, 2.2, 0.8, "coordinates\nobsm['spatial']", DATA)

    # semantics branch (top row)
    box(ax, 4.6, 6.5, 3.0, 0.8, "top-k genes of each spot\n→ one prompt per spot", SEM, size=9)
    box(ax, 8.1, 6.5, 2.9, 0.8, "frozen language model\n(MiniLM, Qwen3, ...)", SEM, size=9)
    box(ax, 11.3, 6.5, 2.0, 0.8, "$H_{llm}$\nobsm['X_llm']", SEM)
    arrow(ax, (2.4, 6.5), (3.1, 6.5))
    arrow(ax, (1.9, 4.3), (3.6, 6.1), text="rank", offset=(-0.45, 0.0))
    arrow(ax, (6.1, 6.5), (6.65, 6.5))
    arrow(ax, (9.55, 6.5), (10.3, 6.5))
    ax.text(9.92, 6.05, "mean\npool", ha="center", va="center", fontsize=7.5)

    # expression branch (middle)
    box(ax, 4.6, 3.9, 3.0, 0.8, "preprocess (on a copy)\nHVG, normalise, scale", DATA, size=9)
    arrow(ax, (2.4, 3.9), (3.1, 3.9))
    box(ax, 4.6, 2.4, 3.0, 0.7, "$A_{fea}$: cosine kNN graph\nof expression", DATA, size=9)
    box(ax, 4.6, 1.1, 3.0, 0.7, "$A_{spa}$: spatial graph\n(squidpy)", DATA, size=9)
    arrow(ax, (2.4, 1.5), (3.1, 1.2))
    arrow(ax, (4.6, 3.5), (4.6, 2.75))

    box(ax, 8.1, 4.3, 2.9, 0.75, "$GCN_{fea}$ (2 layers) → $H_{fea}$", NET, size=9)
    box(ax, 8.1, 2.9, 2.9, 0.75, "$GCN_{spa}$ (2 layers) → $H_{spa}$", NET, size=9)
    arrow(ax, (6.1, 3.9), (6.65, 4.2))
    arrow(ax, (6.1, 3.9), (6.65, 3.0))
    arrow(ax, (6.1, 2.4), (6.65, 4.0), rad=0.3)
    arrow(ax, (6.1, 1.1), (6.65, 2.7), rad=0.3)
    box(ax, 11.3, 3.6, 2.0, 0.8, "$Z_{gcn} = [H_{spa} \\| H_{fea}]$", NET, size=9)
    arrow(ax, (9.55, 4.3), (10.3, 3.8))
    arrow(ax, (9.55, 2.9), (10.3, 3.4))

    # FSM
    box(
        ax,
        14.2,
        5.0,
        3.3,
        1.5,
        "FSM (FiLM)\n$[\\alpha \\,|\\, \\beta] = f(H_{llm})$\n$Z = \\mathrm{MLP}((1+\\alpha) \\odot Z_{gcn} + \\beta)$",
        NET,
        size=9,
    )
    arrow(ax, (12.3, 6.5), (13.2, 5.78), rad=-0.2)
    arrow(ax, (12.3, 3.7), (12.8, 4.5), rad=-0.2)
    box(ax, 14.2, 3.0, 2.4, 0.7, "$Z$: obsm['X_semst']", OUTC, size=9)
    arrow(ax, (14.2, 4.25), (14.2, 3.35))
    box(ax, 16.3, 1.5, 2.0, 1.0, "clustering (GMM)\n→ domains\nobs['semst_domain']", OUTC, size=8)
    arrow(ax, (15.2, 2.65), (15.9, 2.0), rad=-0.2)

    # decoder and losses
    box(ax, 13.2, 1.5, 2.6, 0.7, "ZINB decoder $(\\mu, \\theta, \\pi)$", NET, size=9)
    arrow(ax, (13.6, 2.65), (13.4, 1.85))
    box(
        ax,
        8.9,
        0.75,
        5.2,
        0.8,
        "$L = L_{zinb} + \\gamma\\, L_{cr}(H_{spa}, H_{fea}) + \\lambda\\, L_{s}(Z, A_{spa})$",
        OUTC,
        size=9.5,
    )
    arrow(ax, (11.9, 1.3), (11.55, 1.05))

    ax.text(
        0.2,
        7.35,
        "SemST: gene semantics modulate a dual graph convolutional network",
        fontsize=12,
        weight="bold",
    )
    handles = [plt.Rectangle((0, 0), 1, 1, fc=c, ec=EDGE) for c in (DATA, SEM, NET, OUTC)]
    ax.legend(
        handles,
        ["data and graphs", "language model (frozen)", "trained network", "outputs and loss"],
        loc="lower left",
        bbox_to_anchor=(0.0, -0.04),
        ncol=4,
        frameon=False,
        fontsize=8.5,
    )
    fig.savefig(path, dpi=130, bbox_inches="tight", facecolor="white")
    plt.close(fig)


def quickstart_figure(path: Path) -> None:
    """The README's quick start on the bundled demo, drawn as annotation vs domains."""
    import semst_sc as semst

    adata = semst.datasets.demo()
    semst.tl.semantic_embedding(adata, progress=False)
    semst.tl.domains(adata, n_domains=7, progress=False)
    semst.pl.compare(adata, "layer_guess_reordered", "semst_domain", save=path)
    plt.close("all")


def main() -> None:
    import sys

    OUT.mkdir(parents=True, exist_ok=True)
    method_figure(OUT / "method.png")
    print(f"wrote {OUT / 'method.png'}")
    if "--quickstart" in sys.argv[1:]:
        quickstart_figure(OUT / "quickstart.png")
        print(f"wrote {OUT / 'quickstart.png'}")


if __name__ == "__main__":
    main()
