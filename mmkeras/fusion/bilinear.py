"""Factorised bilinear pooling of two vectors."""

import keras
from keras import ops

from mmkeras.fusion.base import FusionLayer, check_positive_int, check_rate
from mmkeras.fusion.registry import register_fusion


@register_fusion("bilinear", inputs="vectors",
                 sizes={"small": {"units": 128, "factor": 4}, "base": {"units": 256, "factor": 5}},
                 example={"units": 8, "factor": 3})
class BilinearFusion(FusionLayer):
    """Multi-modal Factorized Bilinear pooling, MFB (Yu et al., 2017, arXiv:1708.01471).

    Both modalities are projected to `units * factor`, multiplied elementwise, (dropout),
    sum-pooled over each group of `factor` features, then power-normalised
    (`sign(x) * sqrt(|x|)`) and L2-normalised. Every output row has unit L2 norm.

    Args:
        units: output width.
        factor: number of factors summed per output unit (the paper's `k`).
        dropout: dropout rate on the elementwise product, in [0, 1).

    Call: `[image (B, Di), text (B, Dt)]` -> `(B, units)`.
    """

    def __init__(self, units, factor=4, dropout=0.0, **kwargs):
        units = check_positive_int("units", units)
        factor = check_positive_int("factor", factor)
        dropout = check_rate("dropout", dropout)
        super().__init__(**kwargs)
        self.units = units
        self.factor = factor
        self.dropout = dropout
        self.image_projection, self.text_projection = self.projections(units * factor)
        self.product_dropout = keras.layers.Dropout(
            dropout, name="product_dropout", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        image_shape, text_shape = self.build_projections(input_shape)

    def call(self, inputs, mask=None, training=None):
        image, text = inputs
        product = self.image_projection(image) * self.text_projection(text)
        product = self.product_dropout(product, training=training)
        pooled = ops.sum(ops.reshape(product, (-1, self.units, self.factor)), axis=-1)
        # The epsilon keeps the gradient of sqrt finite where a pooled value is exactly 0
        # (possible once dropout removes all `factor` terms of a unit).
        epsilon = keras.config.epsilon()
        pooled = ops.sign(pooled) * ops.sqrt(ops.abs(pooled) + epsilon)
        return pooled / ops.sqrt(ops.sum(ops.square(pooled), axis=-1, keepdims=True) + epsilon)

    def compute_output_shape(self, input_shape):
        image_shape, _ = self.split_input_shapes(input_shape)
        return (image_shape[0], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "factor": self.factor,
            "dropout": self.dropout,
        }
