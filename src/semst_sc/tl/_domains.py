"""``semst.tl.domains``: the one call that turns counts and coordinates into spatial domains."""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from .._constants import BACKENDS, CLUSTER_METHODS, CLUSTER_METRICS, FUSIONS, SPATIAL_WEIGHTINGS, Default, Key
from .._utils import check_ema_decay, check_zinb_fraction, user_stacklevel
from .._validation import (
    DOMAINS_RECORD,
    check_anndata,
    check_choice,
    check_key,
    check_n_hops,
    check_not_users,
    check_seed,
    check_uns_key,
    written_keys,
)
from ._cluster import DEFAULT_K_RANGE, cluster_embedding, estimate_n_domains, smooth_embedding, smooth_labels
from ._semst import SemST, _versions


def _check_n_domains(n_domains: int | None, n_obs: int) -> None:
    if n_domains is None:
        return
    if isinstance(n_domains, bool) or not isinstance(n_domains, int | np.integer):
        raise TypeError(f"n_domains must be an integer or None, got {type(n_domains).__name__}")
    if n_domains < 2 or n_domains > n_obs:
        raise ValueError(
            f"n_domains must be between 2 and the number of spots ({n_obs}), got {n_domains}; "
            "pass n_domains=None to estimate it"
        )


def labels_to_categorical(labels: np.ndarray, index: pd.Index) -> pd.Series:
    """Integer labels 0..K-1 -> categorical of strings '1'..'K' in natural order."""
    k = int(labels.max()) + 1
    cats = [str(i + 1) for i in range(k)]
    return pd.Series(pd.Categorical([cats[i] for i in labels], categories=cats), index=index)


def domains(
    adata: AnnData,
    n_domains: int | None = None,
    *,
    n_epochs: int = Default.n_epochs,
    zinb_fraction: float = Default.zinb_fraction,
    ema_decay: float = Default.ema_decay,
    lr: float = Default.lr,
    weight_decay: float = Default.weight_decay,
    fusion: str = "fsm",
    cluster_method: str = "gmm",
    cluster_metric: str = Default.cluster_metric,
    model: str | None = None,
    latent_dim: int = Default.latent_dim,
    hidden_dim: int = Default.hidden_dim,
    gamma: float = Default.gamma,
    lambda_s: float = Default.lambda_s,
    spatial_weighting: str = Default.spatial_weighting,
    decoder: str = "faithful",
    gcn_norm: str = "row",
    backend: str = "torch",
    layer: str | None = None,
    preprocess: bool = True,
    log_input: bool = Default.log_input,
    use_hvg: bool | str = False,
    n_top_genes: int = Default.n_top_genes,
    spatial_mode: str = "radius",
    n_spatial_neighbors: int = Default.spatial_k,
    n_feature_neighbors: int = Default.feature_k,
    library_key: str | None = None,
    k_range: tuple[int, int] = DEFAULT_K_RANGE,
    smooth: bool = Default.smooth,
    smooth_hops: int = Default.smooth_hops,
    early_stopping: bool = False,
    llm_key: str = Key.obsm.llm,
    key_added: str = Key.obs.domain,
    embedding_key: str = Key.obsm.semst,
    uns_key: str = Key.uns.semst,
    spatial_key: str = Key.obsm.spatial,
    seed: int = Default.seed,
    device: str | None = None,
    precision: str = Default.precision,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Find spatial domains with SemST: dual GCN + semantic modulation (FSM), trained label-free.

    Reads raw counts (``adata.X`` or ``layer``) and coordinates (``obsm[spatial_key]``); builds what is
    missing (spatial graph through squidpy, expression kNN graph, the method's preprocessing on a copy),
    trains the network, clusters its embedding into ``n_domains`` domains. ``adata.X`` and existing keys are
    never changed.

    Parameters
    ----------
    adata
        Annotated data matrix with raw integer counts and ``obsm['spatial']``.
    n_domains
        Number of domains. ``None`` estimates it: for each K in ``k_range`` the embedding is clustered and
        the K with the highest silhouette (on a fixed subsample of at most 3000 spots) is kept; the curve is
        stored in ``uns['semst']['domain_selection']``.
    n_epochs, lr, weight_decay
        Adam schedule: one full-graph step per epoch. The default of 300 epochs is three times the paper's
        DLPFC schedule: at 100 the model is under-trained on the DLPFC slice (label-free ARI 0.40 over five
        seeds; 0.50 with the defaults, 300 epochs and ``zinb_fraction=0.5``), while STARmap and osmFISH are
        the same at both (``benchmarks/README.md``). The time grows with ``n_epochs``: on a large tissue on
        a CPU (100k spots: about 15 s per epoch on two cores) ``n_epochs=100`` takes a third of the time;
        whether such tissues need the longer schedule was not measured.
    zinb_fraction
        Share of the spots, in (0, 1], whose expression the ZINB loss reconstructs at each epoch. ``1`` is the
        paper: every spot at every epoch. Below 1 the spots are split once at random (from ``seed``) into
        ``ceil(1 / zinb_fraction)`` blocks that the epochs take in turn; the encoder and the two other
        losses still see every spot at every epoch. The decoder heads and the element-wise ZINB loss are
        most of an epoch's cost: the default ``0.5`` makes an epoch about two thirds as long, for the same
        accuracy as full epochs within the seed spread (``benchmarks/README.md``). The recorded ``zinb``
        loss is then each epoch's block estimate, so its curve steps slightly between blocks.
    ema_decay
        In [0, 1). ``0`` (default): the embedding comes from the last epoch's weights. Above 0, training ends
        on an exponentially weighted mean of the weights over the epochs, bias-corrected so that the random
        initial weights take no part (a window of about ``1 / (1 - ema_decay)`` epochs; ``0.99``: the last
        hundred or so). The domains of a single epoch's weights move from epoch to epoch; the average makes
        them steadier. Measured over five seeds with ``0.99`` (``benchmarks/results/weight_average.md``):
        STARmap 0.826 +- 0.022 -> 0.847 +- 0.007 ARI, DLPFC 0.476 +- 0.043 -> 0.483 +- 0.025, osmFISH
        0.604 -> 0.608; not the default because it did not lift DLPFC by the 0.03 that was asked of it.
    fusion
        ``'fsm'`` (the method), ``'concat'``, ``'add'``, ``'cross_attention'`` or ``'none'``. Semantics come from
        ``obsm[llm_key]``; without it (and without ``model``) the model runs ``'none'`` and logs it.
    cluster_method
        ``'gmm'`` (Gaussian mixture with one shared full covariance, mclust's EEE, on a 20-component PCA of
        the embedding), ``'kmeans'`` or ``'leiden'`` (resolution searched to give exactly ``n_domains``).
    cluster_metric
        ``'cosine'`` (the default) scales each spot's row of the embedding to unit length before the PCA
        and the clustering, so spots are compared by the cosine of their embeddings, the similarity the
        spatial loss of training uses; ``'euclidean'`` clusters the embedding as learned (the default
        before 2026-11-27, with which the recorded peers' tables were made). On DLPFC cosine lifted all
        five seeds (ARI 0.43 to 0.48 on an AMD EPYC) and it left STARmap and osmFISH level
        (``benchmarks/README.md``). ``obsm[embedding_key]`` keeps the learned embedding either way.
    model
        A language model (hub name or local folder) to compute ``obsm[llm_key]`` with
        :func:`semst_sc.tl.semantic_embedding` first, when that slot is absent. Its genes are ranked on the
        network's input: with ``preprocess=True`` on the raw counts (``layer``), the paper's scaled ranking;
        with ``preprocess=False`` on the matrix as given (``ranking='lognorm'``: by value within each spot),
        or on the layer of :func:`semst_sc.pp.preprocess` when it is there.
    latent_dim, hidden_dim
        Embedding and hidden widths (the paper's DLPFC widths). Halved (``hidden_dim=128, latent_dim=64``),
        the DLPFC call took 0.60x the time at the same accuracy (ARI 0.474 +- 0.047 against 0.476 +- 0.043,
        five seeds, AMD EPYC), but STARmap lost 0.024 and osmFISH 0.014, so the defaults stay
        (``benchmarks/README.md``, "Network widths").
    gamma, lambda_s
        Weights of the correlation-reduction and spatial-regularisation losses.
    spatial_weighting
        Scale of the spatial loss: ``'balanced'`` (mean over neighbour pairs and mean over sampled
        non-neighbour pairs, weighted equally, independent of the number of spots) or ``'reference'`` (the
        reference code's all-pairs average, where neighbours weigh about E / N^2). See
        :func:`semst_sc.nn.spatial_regularization_loss` and the benchmarks for the measured difference.
    decoder
        ``'faithful'`` (ZINB on the scaled matrix, as in the paper's code) or ``'counts'`` (ZINB on raw HVG
        counts with size factors).
    gcn_norm
        ``'row'`` (``D^-1 (A+I)``) or ``'sym'`` (``D^-1/2 (A+I) D^-1/2``).
    backend
        Graph-convolution engine: ``'torch'`` (``torch.sparse``, the default, always available) or ``'dgl'``
        (DGL message passing, same numbers; needs DGL beside a torch it supports: ``semst-sc[dgl]``).
    layer
        Where the input matrix is (``None``: ``adata.X``).
    preprocess
        ``True``: the input is raw counts and the method's preprocessing runs on a copy. ``False``: the input
        is already preprocessed (non-negative) and is used as it is.
    log_input
        With ``preprocess=True``: feed ``log1p`` of the scaled matrix to the two GCNs (the feature graph and
        the ZINB target stay on the scaled matrix). ``False`` is the reference's input.
    use_hvg
        With ``preprocess=False``: restrict to ``var['highly_variable']`` (``True``) or to another boolean
        ``var`` column (its name).
    n_top_genes
        Highly variable genes selected (Seurat v3 on counts).
    spatial_mode, n_spatial_neighbors
        How the spatial graph is built when ``obsp['spatial_connectivities']`` is absent (see
        :func:`semst_sc.gr.spatial_graph`).
    library_key
        Column of ``adata.obs`` naming each spot's slice, for several slices in one AnnData: the spatial
        graph then has no edge between slices, so neither the spatial branch, the spatial loss nor the label
        smoothing mixes them (the expression graph may, by design). Used when the graph is built here; a
        reused ``obsp['spatial_connectivities']`` is taken as it is, with a warning if it joins slices.
        Without it, a warning is given when ``uns['spatial']`` describes several libraries.
    n_feature_neighbors
        k of the cosine kNN expression graph, when ``obsp['semst_feature_connectivities']`` is absent.
    k_range
        Candidates for the estimation of ``n_domains``.
    smooth
        Majority vote of each spot's label over itself and its spatial neighbours after clustering (on by
        default: it removes isolated spots inside a domain; ``False`` gives the raw clustering).
    smooth_hops
        Before clustering, average the embedding over each spot and its spatial neighbours this many times
        (:func:`~semst_sc.tl.smooth_embedding`); 0 (the default) clusters it without averaging. On
        single-cell-resolution data a domain is a neighbourhood of cells of several types, and averaging
        turns what the embedding says about a cell into what it says about its neighbourhood. Two passes
        lifted osmFISH (a 33-gene panel) by 0.10 to 0.14 ARI on two processors and with either
        ``cluster_metric``, so use 2 for small imaging panels. On STARmap (1020 genes) the effect depended on
        the processor and the metric (+0.02, -0.04, and -0.09 with the cosine default; five seeds each). On
        Visium, whose spots already pool several cells, it lowered DLPFC (0.50 to 0.43) and no number of
        passes helped. The passes use the spatial graph of training and so stay within a slice.
        ``obsm[embedding_key]`` keeps the learned embedding; to cluster it again with this setting, pass
        ``smooth_embedding(adata.obsm['X_semst'], adata.obsp['spatial_connectivities'], 2)`` to
        :func:`~semst_sc.tl.cluster_embedding`. The number of passes is recorded in
        ``uns['semst']['params']``.
    early_stopping
        Label-free early stopping on the training loss plateau.
    llm_key, key_added, embedding_key, spatial_key
        Slots read and written. ``obs[key_added]`` and ``obsm[embedding_key]`` are written over only when
        semst-sc wrote them (the default keys, or keys of earlier runs and reclusterings, listed in
        ``uns['semst']['written_keys']``): a column or array it did not write, such as an annotation,
        is refused with a ValueError before any work, and ``embedding_key`` may not name the coordinates
        or the semantics.
    uns_key
        Key of :attr:`~anndata.AnnData.uns` that receives the run's record (parameters, loss history, keys).
        A later run into the same key replaces the record, with a warning when it writes another domain
        column; give each run its own ``uns_key`` (``'semst_none'``, say) to keep both, e.g. to compare
        fusions in one object. :func:`~semst_sc.tl.recluster` and :func:`~semst_sc.pl.loss` take the same
        key. A key that holds anything else (the user's, a graph's, the semantics') is refused.
    seed
        One seed for numpy, torch and clustering. On the CPU the same seed gives the same labels with the
        same number of torch threads on the same kind of processor (both are recorded in
        ``uns['semst']['environment']``); another thread count or processor sums in another order, and
        training can turn that into different domains. On a GPU reruns are close, not identical.
    device
        ``None``: CUDA when available, else CPU; ``'cpu'``, ``'cuda'``, ``'cuda:1'``...
    precision
        ``'float32'`` (default) or ``'bfloat16'``: mixed precision for the two large matrix products of each
        epoch (operands rounded to bfloat16, float32 accumulation; the loss, the parameters and everything
        else stay float32). Faster on CPUs with native bfloat16 (AVX512-BF16, AMX); warns on a CPU
        without it. The benchmarks page gives the measured speed and ARI.
    progress
        Show a progress bar with the current loss.
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy of ``adata`` when ``copy=True``, with

    - ``obsm['X_semst']`` (``embedding_key``): the learned embedding, N x ``latent_dim``;
    - ``obs['semst_domain']`` (``key_added``): categorical domains ``'1'..'K'``, the largest first;
    - ``uns['semst']`` (``uns_key``): ``params``, ``versions``, ``environment`` (device name, torch
      threads: what besides the seed fixes the exact numbers), ``history`` (loss per epoch: ``loss``,
      ``zinb``, ``cr``, ``spatial``), ``runtime_s`` and ``train_s`` (seconds), the keys used and, when
      estimated, ``domain_selection``;
    - missing graphs: ``obsp['spatial_connectivities']``, ``obsp['spatial_distances']``,
      ``obsp['semst_feature_connectivities']``, and how they were built (``uns['spatial_neighbors']``,
      ``uns['semst_feature_neighbors']``). Existing graphs are reused, never overwritten; one built for
      other settings than the call's, or not by semst-sc, is reused with a warning that says so.
    """
    start = time.perf_counter()
    check_anndata(adata, fn="semst.tl.domains")
    _check_n_domains(n_domains, adata.n_obs)
    check_choice("fusion", fusion, FUSIONS)
    check_choice("cluster_method", cluster_method, CLUSTER_METHODS)
    check_choice("cluster_metric", cluster_metric, CLUSTER_METRICS)
    check_choice("backend", backend, BACKENDS)
    check_choice("spatial_weighting", spatial_weighting, SPATIAL_WEIGHTINGS)
    from ..gr._spatial import _library_codes

    check_zinb_fraction(zinb_fraction)
    check_ema_decay(ema_decay)
    smooth_hops = check_n_hops(smooth_hops, "smooth_hops")
    _library_codes(adata, library_key)  # before the semantic embedding writes anything
    seed = check_seed(seed)
    check_key(key_added)
    check_key(embedding_key, "embedding_key")
    if embedding_key in (spatial_key, llm_key):
        raise ValueError(
            f"embedding_key={embedding_key!r} is the key of an input of tl.domains (the coordinates or the "
            "semantics); pass another one."
        )
    check_not_users(adata, "obs", key_added, "key_added", "semst.tl.domains")
    check_not_users(adata, "obsm", embedding_key, "embedding_key", "semst.tl.domains")
    check_uns_key(adata, uns_key, "semst.tl.domains")
    earlier = adata.uns.get(uns_key)
    if isinstance(earlier, dict) and str(earlier.get("domain_key", key_added)) != key_added:
        warnings.warn(
            f"adata.uns[{uns_key!r}] holds the record of the run that wrote obs[{str(earlier['domain_key'])!r}]"
            f" (its parameters and loss history); this run's record replaces it. To keep both, pass each run "
            f"its own uns_key= (e.g. uns_key={key_added + '_run'!r}).",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    if backend == "dgl":
        from .._train import resolve_device
        from ..nn._dgl import check_dgl_device, require_dgl

        require_dgl()  # before any work: the AnnData stays as it was
        check_dgl_device(resolve_device(device))
    if copy:
        adata = adata.copy()

    if model is not None and llm_key not in adata.obsm:
        from ._semantic import semantic_embedding

        # genes are ranked on what the network reads: with preprocess=True the raw counts (``layer``), the
        # paper's scaled ranking; with preprocess=False the matrix as given, by value within each spot,
        # unless semst.pp.preprocess's own layer is there for the scaled ranking to reuse
        scaled_layer = Key.layers.scaled in adata.layers and Key.var.hvg in adata.var
        ranking = "scaled" if preprocess or scaled_layer else "lognorm"
        semantic_embedding(
            adata,
            model,
            key_added=llm_key,
            ranking=ranking,
            counts_layer=layer if ranking == "lognorm" or preprocess else None,
            device=device,
            progress=progress,
        )

    logg.info("semst.tl.domains: preparing inputs")
    semst = SemST(
        adata,
        fusion=fusion,
        latent_dim=latent_dim,
        hidden_dim=hidden_dim,
        decoder=decoder,
        gcn_norm=gcn_norm,
        backend=backend,
        seed=seed,
        device=device,
        precision=precision,
        layer=layer,
        preprocess=preprocess,
        log_input=log_input,
        use_hvg=use_hvg,
        n_top_genes=n_top_genes,
        spatial_key=spatial_key,
        spatial_mode=spatial_mode,
        n_spatial_neighbors=n_spatial_neighbors,
        n_feature_neighbors=n_feature_neighbors,
        library_key=library_key,
        llm_key=llm_key,
    )
    semst.train(
        n_epochs,
        lr=lr,
        weight_decay=weight_decay,
        gamma=gamma,
        lambda_s=lambda_s,
        spatial_weighting=spatial_weighting,
        zinb_fraction=zinb_fraction,
        ema_decay=ema_decay,
        early_stopping=early_stopping,
        progress=progress,
    )
    emb = semst.get_embedding()
    emb_c = smooth_embedding(emb, semst.data.adj_spa, smooth_hops) if smooth_hops else emb

    selection = None
    if n_domains is None:
        selection = estimate_n_domains(
            emb_c, k_range=k_range, method=cluster_method, metric=cluster_metric, seed=seed
        )
        n_domains = selection.chosen
        logg.info(f"    estimated n_domains = {n_domains} (silhouette over K = {k_range[0]}..{k_range[1]})")
    labels, cluster_info = cluster_embedding(
        emb_c, n_domains, method=cluster_method, metric=cluster_metric, seed=seed
    )
    if smooth:
        labels = smooth_labels(labels, semst.data.adj_spa)

    params: dict[str, Any] = dict(semst.params)
    params.update(
        n_domains=int(n_domains),
        cluster_method=cluster_method,
        cluster_metric=cluster_metric,
        smooth=bool(smooth),
        smooth_hops=int(smooth_hops),
        llm_key=llm_key,
        estimated_n_domains=selection is not None,
    )
    params.update({f"cluster_{k}": v for k, v in cluster_info.items()})
    params.update({k: v if isinstance(v, int | float) else str(v) for k, v in semst.data.info.items()})
    written = written_keys(adata)  # the keys earlier runs wrote, kept with this run's
    written["obs"].add(key_added)
    written["obsm"].add(embedding_key)
    uns: dict[str, Any] = {
        "function": DOMAINS_RECORD,
        "params": params,
        "versions": _versions(),
        "environment": dict(semst.environment),
        "history": {k: np.asarray(v) for k, v in semst.history.items()},
        "runtime_s": float(time.perf_counter() - start),
        "train_s": float(semst.train_time),
        "domain_key": key_added,
        "embedding_key": embedding_key,
        "written_keys": {slot: sorted(keys) for slot, keys in written.items()},
    }
    if selection is not None:
        uns["domain_selection"] = selection.to_uns()

    adata.obsm[embedding_key] = emb
    adata.obs[key_added] = labels_to_categorical(labels, adata.obs_names)
    colors = Key.colors(key_added)
    if colors in adata.uns and len(adata.uns[colors]) != adata.obs[key_added].cat.categories.size:
        del adata.uns[colors]  # a palette left by an earlier run with another number of domains
    adata.uns[uns_key] = uns
    logg.info(
        f"    finished in {uns['runtime_s']:.1f} s: added .obsm[{embedding_key!r}], .obs[{key_added!r}] "
        f"({n_domains} domains), .uns[{uns_key!r}]"
    )
    return adata if copy else None
