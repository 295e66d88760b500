"""``semst.tl.recluster``: new domains from a trained embedding, without training again."""

from __future__ import annotations

from typing import Any

import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg

from .._constants import CLUSTER_METHODS, CLUSTER_METRICS, Default, Key
from .._validation import (
    check_anndata,
    check_choice,
    check_key,
    check_n_hops,
    check_not_users,
    check_obsm,
    check_seed,
    domains_records,
)
from ._cluster import DEFAULT_K_RANGE, cluster_embedding, estimate_n_domains, smooth_embedding, smooth_labels
from ._domains import _check_n_domains, labels_to_categorical

#: Clustering settings of ``tl.domains`` that ``recluster`` reads back from ``uns['semst']['params']``.
_SETTINGS = {
    "cluster_method": "gmm",
    "cluster_metric": Default.cluster_metric,
    "smooth": Default.smooth,
    "smooth_hops": Default.smooth_hops,
    "seed": Default.seed,
}


def _stored_run(adata: AnnData, uns_key: str) -> dict[str, Any]:
    records = domains_records(adata)  # never another function's record that happens to hold 'params'
    run = records.get(uns_key)
    if not isinstance(run, dict) or not isinstance(run.get("params"), dict):
        runs = sorted(k for k, r in records.items() if isinstance(r.get("params"), dict))
        hint = (
            f"; the runs recorded here are under uns_key={', '.join(map(repr, runs))}"
            if runs
            else "; run semst.tl.domains(adata) first"
        )
        raise KeyError(
            f"adata.uns[{uns_key!r}] is missing or is not the record of a semst.tl.domains run: recluster reuses "
            f"a trained embedding and its settings{hint}."
        )
    return run


def recluster(
    adata: AnnData,
    n_domains: int | None = None,
    *,
    key_added: str | None = None,
    cluster_method: str | None = None,
    cluster_metric: str | None = None,
    smooth: bool | None = None,
    smooth_hops: int | None = None,
    k_range: tuple[int, int] = DEFAULT_K_RANGE,
    seed: int | None = None,
    connectivity_key: str = Key.obsp.spatial_conn,
    uns_key: str = Key.uns.semst,
    copy: bool = False,
) -> AnnData | None:
    """Cluster the embedding that :func:`semst_sc.tl.domains` trained again, into another number of domains.

    Training is the slow part of :func:`~semst_sc.tl.domains`; the clustering after it takes seconds. This
    runs that clustering step alone on ``obsm['X_semst']`` (the embedding key the run recorded): the
    optional averaging over the spatial graph (``smooth_hops``), the mixture (or k-means, Leiden), the
    label vote (``smooth``), each setting taken from ``uns['semst']['params']`` unless given. With the
    settings of the run and its ``n_domains`` it gives the run's labels exactly. No label is read.

    Parameters
    ----------
    adata
        The AnnData a :func:`~semst_sc.tl.domains` run wrote to (``obsm['X_semst']``, ``uns['semst']``,
        ``obsp['spatial_connectivities']``).
    n_domains
        Number of domains; ``None`` estimates it over ``k_range`` by the silhouette, as ``tl.domains`` does.
    key_added
        Column of ``adata.obs`` to write. ``None``: the run's own (``obs['semst_domain']``), which is then
        replaced, and ``uns['semst']['params']`` is updated to say how it was made. Another name keeps the
        run's domains; its settings are stored in ``uns['semst']['reclustered'][key_added]``. A column
        semst-sc did not write (an annotation, say) is refused, as in :func:`~semst_sc.tl.domains`.
    cluster_method, cluster_metric, smooth, smooth_hops, seed
        As in :func:`~semst_sc.tl.domains`; ``None`` takes the run's value.
    k_range
        Candidates for ``n_domains=None``.
    connectivity_key
        Spatial graph in ``adata.obsp`` for the averaging and the label vote (the one ``tl.domains`` used).
    uns_key
        The record of the run to cluster again, the ``uns_key`` that :func:`~semst_sc.tl.domains` was given;
        its embedding is read and its record updated.
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy of ``adata`` when ``copy=True``, with ``obs[key_added]`` (categorical ``'1'..'K'``,
    the largest first) and the record in ``uns['semst']``.

    Examples
    --------
    >>> semst.tl.domains(adata, n_domains=7)
    >>> semst.tl.recluster(adata, n_domains=5, key_added="semst_domain_5")
    """
    check_anndata(adata, fn="semst.tl.recluster", reads_x=False)
    _check_n_domains(n_domains, adata.n_obs)
    check_key(uns_key, "uns_key")
    run = _stored_run(adata, uns_key)
    params = run["params"]
    given = {
        "cluster_method": cluster_method,
        "cluster_metric": cluster_metric,
        "smooth": smooth,
        "smooth_hops": smooth_hops,
        "seed": seed,
    }
    stored = dict(params)
    if "cluster_seed" in stored:  # an earlier recluster with a seed of its own
        stored["seed"] = stored["cluster_seed"]
    used = {k: stored.get(k, default) if given[k] is None else given[k] for k, default in _SETTINGS.items()}
    check_choice("cluster_method", used["cluster_method"], CLUSTER_METHODS)
    check_choice("cluster_metric", used["cluster_metric"], CLUSTER_METRICS)
    used["smooth_hops"] = check_n_hops(used["smooth_hops"], "smooth_hops")
    used["seed"], used["smooth"] = check_seed(used["seed"]), bool(used["smooth"])
    embedding_key = str(run.get("embedding_key", Key.obsm.semst))
    emb = check_obsm(adata, embedding_key, n_obs=adata.n_obs, made_by="semst.tl.domains")
    needs_graph = used["smooth"] or used["smooth_hops"] > 0
    if needs_graph and connectivity_key not in adata.obsp:
        raise KeyError(
            f"adata.obsp[{connectivity_key!r}] is missing: the averaging and the label vote run over the spatial "
            "graph tl.domains used. Pass connectivity_key= with its key, or smooth=False, smooth_hops=0."
        )
    own_key = str(run.get("domain_key", Key.obs.domain))
    key_added = own_key if key_added is None else key_added
    check_key(key_added)
    check_not_users(adata, "obs", key_added, "key_added", "semst.tl.recluster")
    if copy:
        adata = adata.copy()
        run = adata.uns[uns_key]

    adj = sp.csr_matrix(adata.obsp[connectivity_key]) if needs_graph else None
    emb_c = smooth_embedding(emb, adj, used["smooth_hops"]) if used["smooth_hops"] else emb
    selection = None
    if n_domains is None:
        selection = estimate_n_domains(
            emb_c,
            k_range=k_range,
            method=used["cluster_method"],
            metric=used["cluster_metric"],
            seed=used["seed"],
        )
        n_domains = selection.chosen
    labels, info = cluster_embedding(
        emb_c, int(n_domains), method=used["cluster_method"], metric=used["cluster_metric"], seed=used["seed"]
    )
    if used["smooth"]:
        labels = smooth_labels(labels, adj)

    record: dict[str, Any] = {
        "n_domains": int(n_domains),
        "cluster_method": used["cluster_method"],
        "cluster_metric": used["cluster_metric"],
        "smooth": used["smooth"],
        "smooth_hops": used["smooth_hops"],
        "cluster_seed": used["seed"],
        "estimated_n_domains": selection is not None,
    }
    record.update({f"cluster_{k}": v for k, v in info.items()})
    adata.obs[key_added] = labels_to_categorical(labels, adata.obs_names)
    colors = Key.colors(key_added)
    if colors in adata.uns and len(adata.uns[colors]) != adata.obs[key_added].cat.categories.size:
        del adata.uns[colors]  # a palette made for another number of domains
    if key_added == own_key:
        new_params = {k: v for k, v in params.items() if not k.startswith("cluster_")}
        new_params.update(record)
        new_params.pop("cluster_seed")
        if used["seed"] != params.get("seed", Default.seed):
            new_params["cluster_seed"] = used["seed"]  # the training seed stays what it was
        run["params"] = new_params
        if selection is not None:
            run["domain_selection"] = selection.to_uns()
        else:
            run.pop("domain_selection", None)
    else:
        if selection is not None:
            record["domain_selection"] = selection.to_uns()
        run.setdefault("reclustered", {})[key_added] = record
    logg.info(f"semst.tl.recluster: {n_domains} domains in .obs[{key_added!r}] from .obsm[{embedding_key!r}]")
    return adata if copy else None
