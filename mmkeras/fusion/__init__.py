"""Fusion layers: every way mmkeras merges an image branch with a text branch.

Each fusion is a registered Keras layer called on a list of two inputs. `FUSIONS` maps
a short name to its class, `FUSION_INPUTS` says which features it consumes, and
`get_fusion(name, **kwargs)` builds one:

- "vectors": `[image_vector (B, Di), text_vector (B, Dt)]`
- "map_vector": `[image_map (B, H, W, C), text_vector (B, Dt)]`
- "sequence_map": `[text_sequence (B, T, D), image_map (B, H, W, C)]`, text mask honoured
"""

from mmkeras.fusion.attention import CoAttention, CrossModalAttention
from mmkeras.fusion.base import FusionLayer
from mmkeras.fusion.bilinear import BilinearFusion
from mmkeras.fusion.early import EarlyFusion
from mmkeras.fusion.film import FiLM
from mmkeras.fusion.tensor import LowRankTensorFusion, TensorFusion
from mmkeras.fusion.vector import ConcatFusion, GatedMultimodalUnit, WeightedSumFusion

FUSIONS = {
    "concat": ConcatFusion,
    "weighted_sum": WeightedSumFusion,
    "gmu": GatedMultimodalUnit,
    "tensor": TensorFusion,
    "low_rank_tensor": LowRankTensorFusion,
    "bilinear": BilinearFusion,
    "film": FiLM,
    "cross_attention": CrossModalAttention,
    "co_attention": CoAttention,
    "early": EarlyFusion,
}

FUSION_INPUTS = {
    "concat": "vectors",
    "weighted_sum": "vectors",
    "gmu": "vectors",
    "tensor": "vectors",
    "low_rank_tensor": "vectors",
    "bilinear": "vectors",
    "film": "map_vector",
    "early": "map_vector",
    "cross_attention": "sequence_map",
    "co_attention": "sequence_map",
}


def get_fusion(fusion, /, **kwargs):
    """Returns a new fusion layer: `FUSIONS[fusion](**kwargs)`.

    `fusion` is positional-only so that `name=` reaches the layer, e.g.
    `get_fusion("gmu", units=64, name="fusion")`.
    """
    if not isinstance(fusion, str) or fusion not in FUSIONS:
        raise ValueError(
            f"Unknown fusion {fusion!r}. Received fusion={fusion!r}; "
            f"expected one of: {', '.join(FUSIONS)}"
        )
    return FUSIONS[fusion](**kwargs)


__all__ = [
    "FUSIONS",
    "FUSION_INPUTS",
    "get_fusion",
    "FusionLayer",
    "ConcatFusion",
    "WeightedSumFusion",
    "GatedMultimodalUnit",
    "TensorFusion",
    "LowRankTensorFusion",
    "BilinearFusion",
    "FiLM",
    "CrossModalAttention",
    "CoAttention",
    "EarlyFusion",
]
