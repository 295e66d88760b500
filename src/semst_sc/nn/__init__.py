"""Pure-torch building blocks of SemST (no AnnData here).

- graphs: :func:`normalize_adjacency`, :func:`edge_index`
- layers: :class:`GCNLayer`, :class:`GCN`
- fusion: :class:`FSM` (usable in any model), :func:`make_fusion` and the fusion classes
- decoder: :class:`ZINBDecoder`, :class:`ZINBTarget`, :func:`zinb_nll`
- losses: :func:`correlation_reduction_loss`, :func:`spatial_regularization_loss`
- the model: :class:`SemSTModule`, :class:`SemSTOutput`
"""

from __future__ import annotations

from ._dgl import DGLGCNLayer, check_dgl_device, dgl_problem, require_dgl, to_dgl_graph, use_dgl
from ._fusion import (
    FSM,
    AddFusion,
    ConcatFusion,
    CrossAttentionFusion,
    FSMFusion,
    Fusion,
    NoFusion,
    make_fusion,
)
from ._gat import AttentionGraph, GATAutoencoder, GATOutput, edge_aggregate, edge_softmax
from ._gcn import GCN, GCNLayer, feature_matmul
from ._graph import edge_index, normalize_adjacency, scipy_to_torch_csr
from ._losses import SPATIAL_WEIGHTINGS, correlation_reduction_loss, spatial_regularization_loss
from ._model import SemSTModule, SemSTOutput
from ._zinb import DECODER_MODES, ZINBDecoder, ZINBTarget, zinb_nll

__all__ = [
    "DECODER_MODES",
    "FSM",
    "GCN",
    "SPATIAL_WEIGHTINGS",
    "AddFusion",
    "AttentionGraph",
    "ConcatFusion",
    "CrossAttentionFusion",
    "DGLGCNLayer",
    "FSMFusion",
    "Fusion",
    "GATAutoencoder",
    "GATOutput",
    "GCNLayer",
    "NoFusion",
    "SemSTModule",
    "SemSTOutput",
    "ZINBDecoder",
    "ZINBTarget",
    "check_dgl_device",
    "correlation_reduction_loss",
    "dgl_problem",
    "edge_aggregate",
    "edge_index",
    "edge_softmax",
    "feature_matmul",
    "make_fusion",
    "normalize_adjacency",
    "require_dgl",
    "scipy_to_torch_csr",
    "spatial_regularization_loss",
    "to_dgl_graph",
    "use_dgl",
    "zinb_nll",
]
