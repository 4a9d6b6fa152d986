"""Fusion layers: every way mmkeras merges an image branch with a text branch.

Each fusion is a Keras layer called on a list of two inputs, registered with
`@register_fusion(name, inputs=..., sizes=...)` (see `mmkeras.fusion.registry`).
`list_fusions()` names them, `fusion_info(name)` describes one (its class, inputs, sizes
and stage) and `get_fusion(name, **kwargs)` builds one. The inputs it takes:

- "vectors": `[image_vector (B, Di), text_vector (B, Dt)]`
- "map_vector": `[image_map (B, H, W, C), text_vector (B, Dt)]`
- "sequence_map": `[text_sequence (B, T, D), image_map (B, H, W, C)]`, text mask honoured
"""

from mmkeras.fusion.base import FusionLayer
from mmkeras.fusion.registry import (FusionSpec, fusion_info, get_fusion, list_fusions,
                                     register_fusion, subscribe)
# Importing the layer modules registers the fusions.
from mmkeras.fusion.attention import CoAttention, CrossModalAttention
from mmkeras.fusion.bilinear import BilinearFusion
from mmkeras.fusion.early import EarlyFusion
from mmkeras.fusion.film import FiLM
from mmkeras.fusion.tensor import LowRankTensorFusion, TensorFusion
from mmkeras.fusion.vector import ConcatFusion, GatedMultimodalUnit, WeightedSumFusion

__all__ = [
    "FusionSpec",
    "fusion_info",
    "get_fusion",
    "list_fusions",
    "register_fusion",
    "subscribe",
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
