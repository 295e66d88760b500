"""Score predicted domains against an annotation stored in ``adata.obs``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from .._constants import Key
from .._validation import check_anndata, check_key
from ._metrics import scores

# Strings that mean "no label" in annotation columns (compared after stripping and lower-casing).
_MISSING = frozenset({"", "nan", "na", "n/a", "none", "null"})


def _unlabelled(col: pd.Series) -> np.ndarray:
    missing = col.isna().to_numpy()
    text = col.astype(str).str.strip().str.lower()
    return missing | text.isin(_MISSING).to_numpy()


def evaluate(
    adata: AnnData,
    truth_key: str,
    pred_key: str = Key.obs.domain,
    *,
    key_added: str = Key.uns.evaluation,
    copy: bool = False,
) -> dict[str, float | int | str] | AnnData:
    """Score predicted domains against an annotation: ARI, NMI, ACC and macro F1.

    ACC and F1 match predicted domains to annotated labels with the Hungarian algorithm; domains left
    without a label (more domains than labels) count as wrong. Spots whose annotation is missing (NaN, an
    empty string, ``'nan'``, ``'NA'``, ``'None'``) are left out of the scores. Annotations are only ever
    used here, for scoring, never in training or model selection.

    Parameters
    ----------
    adata
        Annotated data with both columns in :attr:`anndata.AnnData.obs`.
    truth_key
        Column with the annotation (e.g. ``'layer_guess_reordered'``).
    pred_key
        Column with the predicted domains, by default the one :func:`semst_sc.tl.domains` writes.
    key_added
        Key in :attr:`anndata.AnnData.uns` that receives the scores. Earlier scores there are replaced;
        anything else there (``'spatial'``, say) is refused with a ValueError.
    copy
        Return a copy of ``adata`` holding the scores instead of writing into ``adata``.

    Returns
    -------
    With ``copy=False``, the scores as a dict: ``ari``, ``nmi``, ``acc``, ``f1_macro`` (floats),
    ``n_scored`` and ``n_unlabelled`` (spots scored and left out), ``truth_key`` and ``pred_key``; the same
    dict is written to ``adata.uns[key_added]``. With ``copy=True``, a copy of ``adata`` with
    ``uns[key_added]`` filled in.
    """
    check_anndata(adata, fn="semst.tl.evaluate", reads_x=False)
    for what, key, hint in (
        ("annotation", truth_key, "pass the name of the obs column that holds the annotation"),
        ("predicted domains", pred_key, "run semst.tl.domains first, or pass pred_key="),
    ):
        if not isinstance(key, str):
            raise TypeError(f"the column name of the {what} must be a string, got {key!r}.")
        if key not in adata.obs:
            cols = ", ".join(map(repr, adata.obs.columns[:20])) or "none"
            raise KeyError(f"adata.obs has no column {key!r} for the {what} ({hint}); columns: {cols}.")
    check_key(key_added)
    held = adata.uns.get(key_added)
    if held is not None and not (isinstance(held, dict) and {"ari", "truth_key"} <= set(held)):
        raise ValueError(
            f"semst.tl.evaluate would overwrite adata.uns[{key_added!r}], which holds something other than "
            f"scores. Pass another key_added= (the default is {Key.uns.evaluation!r})."
        )

    truth, pred = adata.obs[truth_key], adata.obs[pred_key]
    unlabelled = _unlabelled(truth)
    scored = ~unlabelled
    if not scored.any():
        raise ValueError(f"adata.obs[{truth_key!r}] has no labelled spot to score against.")
    missing_pred = _unlabelled(pred) & scored
    if missing_pred.any():
        raise ValueError(
            f"adata.obs[{pred_key!r}] has no domain for {int(missing_pred.sum())} labelled spot(s); every "
            "spot needs a predicted domain."
        )

    result: dict[str, float | int | str] = dict(
        scores(truth.to_numpy()[scored].astype(str), pred.to_numpy()[scored].astype(str))
    )
    result.update(
        n_scored=int(scored.sum()), n_unlabelled=int(unlabelled.sum()), truth_key=truth_key, pred_key=pred_key
    )
    logg.info(
        f"{pred_key!r} vs {truth_key!r} on {result['n_scored']} spots: ARI {result['ari']:.3f}, "
        f"NMI {result['nmi']:.3f}, ACC {result['acc']:.3f}, F1 {result['f1_macro']:.3f}"
    )
    target = adata.copy() if copy else adata
    target.uns[key_added] = dict(result)
    return target if copy else result
