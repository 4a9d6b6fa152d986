"""Registered layers of the text branches: empty-text guard, masking, pooling, positions.

All are written with `keras.ops`, keep every constructor argument in `get_config`, and
are registered under the "mmkeras" package so `keras.models.load_model` needs no
`custom_objects`.
"""

import keras
from keras import ops

# Token id 0 is padding and 1 is the out-of-vocabulary token ([UNK]), as produced by
# keras.layers.TextVectorization.
PAD_ID = 0
OOV_ID = 1


@keras.saving.register_keras_serializable(package="mmkeras")
class NonEmptyTokens(keras.layers.Layer):
    """Gives every all-padding row one [UNK] token at position 0.

    An empty caption would otherwise produce a fully masked row, which has no defined
    recurrent output and breaks the cuDNN LSTM kernel on GPUs; with this guard an empty
    text reads as "unknown word", a defined input.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def call(self, token_ids):
        token_ids = ops.cast(token_ids, "int32")
        empty = ops.all(ops.equal(token_ids, PAD_ID), axis=-1, keepdims=True)
        first = ops.equal(ops.arange(ops.shape(token_ids)[-1]), 0)[None, :]
        return ops.where(ops.logical_and(empty, first), OOV_ID, token_ids)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype="int32")




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
