"""Outer-product fusions: full tensor fusion and its low-rank factorisation.

Both append a constant 1 to each vector first, so the fused features hold every
unimodal feature as well as every bimodal product.
"""

import keras
from keras import ops

from mmkeras.fusion.base import FusionLayer, check_optional_positive_int, check_positive_int
from mmkeras.fusion.registry import register_fusion


def append_one(x):
    """`(B, D)` -> `(B, D + 1)`, the last feature being 1."""
    return ops.concatenate([x, ops.ones_like(x[:, :1])], axis=-1)


@register_fusion("tensor", inputs="vectors",
                 sizes={"small": {"projection_dim": 16}, "base": {"projection_dim": 32}},
                 example={"units": 8, "projection_dim": 4})
class TensorFusion(FusionLayer):
    """Tensor Fusion (Zadeh et al., 2017, arXiv:1707.07250).

    Output is `flatten([x_v; 1] outer [x_t; 1])`, of width `(Di + 1) * (Dt + 1)`. That
    width grows with the product of the input widths, so keep inputs small: set
    `projection_dim` (e.g. 32) to project each modality with `Dense(relu)` first.

    Args:
        units: if set, the flattened product goes through `Dense(units, relu)`.
        projection_dim: if set, each modality is projected to this width first.

    Call: `[image (B, Di), text (B, Dt)]` -> `(B, (Di + 1) * (Dt + 1))`, where `Di` and
    `Dt` are `projection_dim` when it is set, or `(B, units)` when `units` is set.
    """

    def __init__(self, units=None, projection_dim=None, **kwargs):
        units = check_optional_positive_int("units", units)
        projection_dim = check_optional_positive_int("projection_dim", projection_dim)
        super().__init__(**kwargs)
        self.units = units
        self.projection_dim = projection_dim
        self.image_projection = None
        self.text_projection = None
        self.output_projection = None
        if projection_dim is not None:
            self.image_projection, self.text_projection = self.projections(projection_dim, "relu")
        if units is not None:
            self.output_projection = keras.layers.Dense(
                units, activation="relu", name="output_projection", dtype=self.dtype_policy
            )

    def _product_dims(self, image_shape, text_shape):
        if self.projection_dim is not None:
            return self.projection_dim + 1, self.projection_dim + 1
        return image_shape[-1] + 1, text_shape[-1] + 1

    def build(self, input_shape):
        image_shape, text_shape = self.build_projections(input_shape)
        image_dim, text_dim = self._product_dims(image_shape, text_shape)
        self._flat_dim = image_dim * text_dim
        if self.units is not None:
            self.output_projection.build((image_shape[0], self._flat_dim))

    def call(self, inputs, mask=None):
        image, text = inputs
        if self.projection_dim is not None:
            image = self.image_projection(image)
            text = self.text_projection(text)
        product = ops.einsum("bi,bj->bij", append_one(image), append_one(text))
        fused = ops.reshape(product, (-1, self._flat_dim))
        if self.units is not None:
            fused = self.output_projection(fused)
        return fused

    def compute_output_shape(self, input_shape):
        image_shape, text_shape = self.split_input_shapes(input_shape)
        if self.units is not None:
            return (image_shape[0], self.units)
        image_dim, text_dim = self._product_dims(image_shape, text_shape)
        return (image_shape[0], image_dim * text_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "projection_dim": self.projection_dim,
        }


@register_fusion("low_rank_tensor", inputs="vectors",
                 sizes={"small": {"units": 128, "rank": 4}, "base": {"units": 256, "rank": 8}},
                 example={"units": 8, "rank": 3})
class LowRankTensorFusion(FusionLayer):
    """Low-rank Multimodal Fusion (Liu et al., 2018, arXiv:1806.00064).

    The tensor-fusion weight is factored into `rank` modality-specific factors, so the
    outer product is never formed: `z_m = [x_m; 1] W_m` gives `(B, rank, units)` per
    modality, the two are multiplied elementwise, and the ranks are summed with learned
    fusion weights, plus a bias. Output is linear (no activation), as in the paper.

    Args:
        units: output width.
        rank: number of factors per modality.

    Call: `[image (B, Di), text (B, Dt)]` -> `(B, units)`.
    """

    def __init__(self, units, rank=4, **kwargs):
        units = check_positive_int("units", units)
        rank = check_positive_int("rank", rank)
        super().__init__(**kwargs)
        self.units = units
        self.rank = rank

    def build(self, input_shape):
        image_shape, text_shape = self.split_input_shapes(input_shape)
        self.image_factor = self.add_weight(
            name="image_factor",
            shape=(self.rank, image_shape[-1] + 1, self.units),
            initializer="glorot_normal",
        )
        self.text_factor = self.add_weight(
            name="text_factor",
            shape=(self.rank, text_shape[-1] + 1, self.units),
            initializer="glorot_normal",
        )
        self.fusion_weights = self.add_weight(
            name="fusion_weights", shape=(self.rank,), initializer="glorot_normal"
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, inputs, mask=None):
        image, text = inputs
        image_factors = ops.einsum("bi,riu->bru", append_one(image), self.image_factor)
        text_factors = ops.einsum("bi,riu->bru", append_one(text), self.text_factor)
        fused = ops.einsum("r,bru->bu", self.fusion_weights, image_factors * text_factors)
        return fused + self.bias

    def compute_output_shape(self, input_shape):
        image_shape, _ = self.split_input_shapes(input_shape)
        return (image_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "rank": self.rank}
