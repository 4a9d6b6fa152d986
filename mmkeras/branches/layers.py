"""Registered layers used by the branches (masking, pooling, positions, preprocessing).

All are written with `keras.ops`, keep every constructor argument in `get_config`, and
are registered under the "mmkeras" package so `keras.models.load_model` needs no
`custom_objects`.
"""

import keras
from keras import ops

from mmkeras.layers import PAD_ID


@keras.saving.register_keras_serializable(package="mmkeras")
class TokenPaddingMask(keras.layers.Layer):
    """(batch, T) int token ids -> (batch, T) bool, True where the id is not padding."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def call(self, token_ids):
        return ops.not_equal(token_ids, PAD_ID)

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="bool")


@keras.saving.register_keras_serializable(package="mmkeras")
class ZeroMaskedSteps(keras.layers.Layer):
    """Sets padded time steps to zero: `[x (batch, T, D), mask (batch, T)] -> x'`.

    With `attach_mask=True` the output carries `mask` as its Keras mask (for layers
    that read it); with False it carries none (for layers, such as `Conv1D`, that do
    not support masking and would otherwise warn).
    """

    def __init__(self, attach_mask=True, **kwargs):
        super().__init__(**kwargs)
        self.attach_mask = attach_mask

    def call(self, inputs):
        x, mask = inputs
        return ops.where(ops.expand_dims(mask, -1), x, ops.zeros_like(x))

    def compute_mask(self, inputs, previous_mask=None):
        return inputs[1] if self.attach_mask else None

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "attach_mask": self.attach_mask}


class _MaskedPooling1D(keras.layers.Layer):
    """Shared shape logic of the masked poolings: `[x (B, T, D), mask (B, T)] -> (B, D)`."""

    def compute_mask(self, inputs, previous_mask=None):
        return None

    def compute_output_shape(self, input_shape):
        x_shape = input_shape[0]
        return (x_shape[0], x_shape[2])


@keras.saving.register_keras_serializable(package="mmkeras")
class MaskedGlobalMaxPooling1D(_MaskedPooling1D):
    """Max over the valid time steps only: `[x (batch, T, D), mask (batch, T)] -> (batch, D)`.

    Padded steps never win the max, so adding padding cannot change the result. A row
    with no valid step pools to zeros.
    """

    def call(self, inputs):
        x, mask = inputs
        mask = ops.expand_dims(mask, -1)
        pooled = ops.max(ops.where(mask, x, ops.full_like(x, float("-inf"))), axis=1)
        any_valid = ops.any(mask, axis=1)
        return ops.where(any_valid, pooled, ops.zeros_like(pooled))


@keras.saving.register_keras_serializable(package="mmkeras")
class MaskedGlobalAveragePooling1D(_MaskedPooling1D):
    """Mean over the valid time steps only: `[x (batch, T, D), mask (batch, T)] -> (batch, D)`.

    Padded steps are excluded with `where` (not multiplied by 0), so even a non-finite
    value at a padded step cannot leak in. A row with no valid step pools to zeros.
    """

    def call(self, inputs):
        x, mask = inputs
        mask = ops.expand_dims(mask, -1)
        total = ops.sum(ops.where(mask, x, ops.zeros_like(x)), axis=1)
        count = ops.sum(ops.cast(mask, x.dtype), axis=1)
        return total / ops.maximum(count, ops.ones_like(count))


@keras.saving.register_keras_serializable(package="mmkeras")
class AddPositionEmbedding(keras.layers.Layer):
    """Adds a learned position embedding to (batch, T, D) token embeddings.

    Holds `sequence_length` positions; inputs may be shorter (T <= sequence_length,
    T possibly unknown until run time) and use the first T. The Keras mask of the
    input passes through unchanged.
    """

    def __init__(self, sequence_length, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = int(sequence_length)
        self.initializer = keras.initializers.get(initializer)
        self.supports_masking = True

    def build(self, input_shape):
        self.position_embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, input_shape[-1]),
            initializer=self.initializer,
            trainable=True,
        )

    def call(self, inputs):
        length = ops.shape(inputs)[1]
        positions = ops.slice(
            ops.convert_to_tensor(self.position_embeddings),
            (0, 0),
            (length, ops.shape(self.position_embeddings)[1]),
        )
        return inputs + ops.cast(positions, inputs.dtype)[None, :, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "sequence_length": self.sequence_length,
            "initializer": keras.initializers.serialize(self.initializer),
        }


def application_names():
    """Names of the `keras.applications` models, e.g. "MobileNetV2", "ResNet50"."""
    return sorted(
        n
        for n in dir(keras.applications)
        if n[:1].isupper() and callable(getattr(keras.applications, n))
    )


def application_preprocess_input(backbone):
    """The `preprocess_input` of the `keras.applications` module defining `backbone`."""
    if backbone not in application_names():
        raise ValueError(
            f"Unknown keras.applications backbone {backbone!r}. Received "
            f"backbone={backbone!r}; expected one of: {', '.join(application_names())}"
        )
    module_name = getattr(keras.applications, backbone).__module__.rsplit(".", 1)[-1]
    return getattr(keras.applications, module_name).preprocess_input


@keras.saving.register_keras_serializable(package="mmkeras")
class ApplicationPreprocessing(keras.layers.Layer):
    """Applies `keras.applications.<module>.preprocess_input` of `backbone` in the graph.

    Those functions expect pixels in [0, 255]; `input_scale` multiplies the input first
    (255 for pixels already rescaled to [0, 1], 1 for raw pixels).
    """

    def __init__(self, backbone, input_scale=255.0, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.input_scale = float(input_scale)
        self._preprocess_input = application_preprocess_input(backbone)

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        if self.input_scale != 1.0:
            images = images * ops.cast(self.input_scale, images.dtype)
        return self._preprocess_input(images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": self.backbone,
            "input_scale": self.input_scale,
        }
