"""Every AnnData key and default used by semst-sc, in one place.

Public functions take these as keyword defaults (``key_added``, ``llm_key``, ``connectivity_key``, ...);
no module spells a slot name as a string literal of its own.
"""

from __future__ import annotations


class Key:
    """Names of the AnnData slots that semst-sc reads and writes."""

    class obsm:
        spatial = "spatial"
        llm = "X_llm"
        semst = "X_semst"

    class obsp:
        spatial_conn = "spatial_connectivities"
        spatial_dist = "spatial_distances"
        feature_conn = "semst_feature_connectivities"

    class obs:
        domain = "semst_domain"

    class layers:
        scaled = "semst_scaled"

    class var:
        hvg = "semst_hvg"

    class uns:
        semst = "semst"
        llm = "semst_llm"
        spatial_graph = "spatial_neighbors"
        feature_graph = "semst_feature_neighbors"
        evaluation = "semst_evaluation"
        preprocess = "semst_preprocess"
        spatial = "spatial"  # squidpy / scanpy: per-library images and scale factors of Visium data

    @staticmethod
    def colors(key: str) -> str:
        """Where scanpy looks for the palette of the categorical column ``key``."""
        return f"{key}_colors"


class Default:
    """Method defaults (see METHOD.md of the project for where each number comes from)."""

    # 2000 highly variable genes, not the reference's 3000 for DLPFC (benchmarks/results/n_top_genes.md): on
    # DLPFC 151673 (AMD EPYC, 2 threads, seeds 0-4) label-free ARI 0.476 +- 0.043 against 0.481 +- 0.032,
    # and the call takes 231 s against 300 s, because the first graph layer and the ZINB heads scale with the
    # gene count. Panels of up to 2000 genes (STARmap, osmFISH) keep every gene either way.
    n_top_genes = 2000
    min_cells = 100
    scale_max = 10.0
    target_sum = 1e4
    spatial_k = 15
    feature_k = 14
    top_k_genes = 10
    latent_dim = 128
    hidden_dim = 256
    # 300 epochs, each reconstructing half of the spots (benchmarks/results/epochs.md): on DLPFC 151673 the
    # paper's 100 full epochs leave the model under-trained (label-free ARI 0.40 +- 0.08 over five seeds;
    # 0.50 +- 0.01 with these defaults), and an epoch whose ZINB loss covers half of the spots costs about
    # two thirds of a full one (0.44 s against 0.67 s on two threads) for the same accuracy.
    n_epochs = 300
    zinb_fraction = 0.5
    ema_decay = 0.0
    lr = 1e-3
    weight_decay = 5e-4
    gamma = 0.1
    lambda_s = 0.1
    spatial_weighting = "reference"
    # Measured label-free on DLPFC 151673 and STARmap (benchmarks/README.md): log1p of the scaled input
    # lifts DLPFC ARI from about 0.27 to 0.39 and keeps STARmap; majority smoothing over the spatial graph
    # adds 0.01-0.05 on DLPFC and about 0.13 on STARmap. Departures from the reference code, both switchable.
    log_input = True
    smooth = True
    # Averaging the embedding over the spatial graph before clustering (tl.smooth_embedding) is opt-in: two
    # passes lift osmFISH's 33-gene panel by 0.10-0.14 ARI, move STARmap by +0.02 to -0.09 depending on the
    # processor and the clustering metric, and lower Visium DLPFC (0.50 -> 0.43) (benchmarks/README.md).
    smooth_hops = 0
    # Clustering unit-length rows of the embedding (the cosine geometry the spatial loss trains): on DLPFC
    # it lifted every one of five seeds (0.43 -> 0.48 ARI on an AMD EPYC) and left STARmap (0.83) and
    # osmFISH (0.59 -> 0.60) level (benchmarks/results/ablation_clustering.md).
    cluster_metric = "cosine"
    seed = 0
    precision = "float32"


# Valid choices, used by validation to list the options in error messages.
FUSIONS = ("fsm", "concat", "add", "cross_attention", "none")
CLUSTER_METHODS = ("gmm", "kmeans", "leiden")
#: Geometry the embedding is clustered in: as learned, or each row scaled to unit length.
CLUSTER_METRICS = ("euclidean", "cosine")
SPATIAL_MODES = ("radius", "knn", "adaptive")
GCN_NORMS = ("row", "sym")
SPATIAL_WEIGHTINGS = ("reference", "balanced")
BACKENDS = ("torch", "dgl")
# Operand type of the two large matrix products per epoch (the first GCN layer and the ZINB heads);
# everything else, the sums and the loss stay float32. "bfloat16": mixed precision, opt-in.
PRECISIONS = ("float32", "bfloat16")

# Semantic embedding (semst.tl.semantic_embedding).
LLM_MODES = ("prompt", "gene")
LLM_RANKINGS = ("scaled", "lognorm")
LLM_POOLINGS = ("mean", "last")
LLM_DEFAULT_BATCH_SIZE = 32
LLM_CACHE_ENV = "SEMST_CACHE_DIR"
