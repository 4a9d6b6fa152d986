"""Fusions of two feature vectors: concatenation, weighted sum, gated multimodal unit.

Each takes `[image (batch, Di), text (batch, Dt)]` and returns one vector per example.
"""

import keras
from keras import ops

from mmkeras.fusion.base import (
    FusionLayer,
    check_bool,
    check_optional_positive_int,
    check_positive_int,
)
from mmkeras.fusion.registry import register_fusion


@register_fusion("concat", inputs="vectors", sizes={"small": {}, "base": {"projection_dim": 256}},
                 example={"projection_dim": 8}, seed_preset="seed_concat")
class ConcatFusion(FusionLayer):
    """Concatenates the two vectors, each optionally projected first.

    Args:
        projection_dim: if set, each modality goes through `Dense(projection_dim, relu)`
            before concatenation, so neither dominates by width alone.

    Call: `[image (B, Di), text (B, Dt)]` -> `(B, Di + Dt)`, or `(B, 2 * projection_dim)`.
    """

    def __init__(self, projection_dim=None, **kwargs):
        projection_dim = check_optional_positive_int("projection_dim", projection_dim)
        super().__init__(**kwargs)
        self.projection_dim = projection_dim
        self.image_projection = None
        self.text_projection = None
        if projection_dim is not None:
            self.image_projection, self.text_projection = self.projections(projection_dim, "relu")

    def build(self, input_shape):
        image_shape, text_shape = self.build_projections(input_shape)

    def call(self, inputs, mask=None):
        image, text = inputs
        if self.projection_dim is not None:
            image = self.image_projection(image)
            text = self.text_projection(text)
        return ops.concatenate([image, text], axis=-1)

    def compute_output_shape(self, input_shape):
        image_shape, text_shape = self.split_input_shapes(input_shape)
        if self.projection_dim is not None:
            return (image_shape[0], 2 * self.projection_dim)
        return (image_shape[0], image_shape[-1] + text_shape[-1])

    def get_config(self):
        return {**super().get_config(), "projection_dim": self.projection_dim}


@register_fusion("weighted_sum", inputs="vectors",
                 sizes={"small": {"units": 128}, "base": {"units": 256}}, example={"units": 8})
class WeightedSumFusion(FusionLayer):
    """Projects each modality to `units` and takes a learned convex combination.

    Each projection is `Dense(units, tanh)`: bounded features, so the modality weights
    (not the projection scale) decide how much each modality contributes. The weights
    are `softmax(modality_logits)`, one scalar logit per modality, starting equal.

    Args:
        units: width of the projections and of the output.

    Call: `[image (B, Di), text (B, Dt)]` -> `(B, units)`.
    """

    def __init__(self, units, **kwargs):
        units = check_positive_int("units", units)
        super().__init__(**kwargs)
        self.units = units
        self.image_projection, self.text_projection = self.projections(units, "tanh")

    def build(self, input_shape):
        image_shape, text_shape = self.build_projections(input_shape)
        self.modality_logits = self.add_weight(
            name="modality_logits", shape=(2,), initializer="zeros"
        )

    @property
    def modality_weights(self):
        """The normalised `[image, text]` weights, shape `(2,)`, summing to 1."""
        return ops.softmax(self.modality_logits)

    def call(self, inputs, mask=None):
        image, text = inputs
        weights = ops.softmax(self.modality_logits)
        return weights[0] * self.image_projection(image) + weights[1] * self.text_projection(text)

    def compute_output_shape(self, input_shape):
        image_shape, _ = self.split_input_shapes(input_shape)
        return (image_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@register_fusion("gmu", inputs="vectors", sizes={"small": {"units": 128}, "base": {"units": 256}},
                 example={"units": 8})
class GatedMultimodalUnit(FusionLayer):
    """Gated Multimodal Unit (Arevalo et al., 2017, arXiv:1702.01992).

    `h_v = tanh(W_v x_v)`, `h_t = tanh(W_t x_t)`, `z = sigmoid(W_z [x_v; x_t])`,
    `h = z * h_v + (1 - z) * h_t`. The gate `z` is per example and per unit, so it
    shows how much each output unit draws on the image (z near 1) or the text.

    Args:
        units: width of the hidden features, the gate and the output.
        return_gate: if True, the layer returns `(h, z)` so the gate can be inspected.

    Call: `[image (B, Di), text (B, Dt)]` -> `h (B, units)`, or `(h, z)`, both `(B, units)`.
    """

    def __init__(self, units, return_gate=False, **kwargs):
        units = check_positive_int("units", units)
        return_gate = check_bool("return_gate", return_gate)
        super().__init__(**kwargs)
        self.units = units
        self.return_gate = return_gate
        self.image_hidden, self.text_hidden = self.projections(
            units, "tanh", names=("image_hidden", "text_hidden")
        )
        self.gate = keras.layers.Dense(
            units, activation="sigmoid", name="gate", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        image_shape, text_shape = self.split_input_shapes(input_shape)
        self.image_hidden.build(image_shape)
        self.text_hidden.build(text_shape)
        self.gate.build((image_shape[0], image_shape[-1] + text_shape[-1]))

    def call(self, inputs, mask=None):
        image, text = inputs
        z = self.gate(ops.concatenate([image, text], axis=-1))
        h = z * self.image_hidden(image) + (1.0 - z) * self.text_hidden(text)
        if self.return_gate:
            return h, z
        return h

    def compute_output_shape(self, input_shape):
        image_shape, _ = self.split_input_shapes(input_shape)
        shape = (image_shape[0], self.units)
        return (shape, shape) if self.return_gate else shape

    def get_config(self):
        return {**super().get_config(), "units": self.units, "return_gate": self.return_gate}
